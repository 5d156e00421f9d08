"""One malformed record never aborts an ingest (issue 15, point 0): each crash kind of the fuzzing
report is one record in a file of valid records; it is rejected naming file, line, element and reason,
the valid records load and the counts add up. Both engines; the parallel reader (workers) too."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_fhir_ingest import ingest, patient, quantity_obs, write_ndjson

from blina_study.adapter.db import Database

GOOD = quantity_obs("ok", "P", "8122-4", 2, "10*9/L")


def _nested(depth: int, leaf: Any = "x", as_list: bool = False) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


def _bad(change: Any) -> dict:
    res = copy.deepcopy(GOOD)
    res["id"] = "bad"
    change(res)
    return res


# crash kind -> (the malformed record, what its rejection reason names). Before the fix each of these
# aborted the run ("internal error: TypeError: unhashable type", "Recursion limit reached", ...).
CRASHES: dict[str, tuple[dict, str]] = {
    "coding_code_is_object": (_bad(lambda r: r["code"]["coding"][0].update(code={"a": 1})),
                              "code.coding[0].code: expected a string, found an object"),
    "coding_system_is_array": (_bad(lambda r: r["code"]["coding"][0].update(system=["x"])),
                               "code.coding[0].system: expected a string, found an array"),
    "resource_type_is_object": (_bad(lambda r: r.update(resourceType={"a": 1})), "no resourceType"),
    "resource_type_is_array": (_bad(lambda r: r.update(resourceType=["Observation"])), "no resourceType"),
    "deep_nesting_objects": (_bad(lambda r: r.update(extension=[_nested(300)])), "nested deeper than"),
    "deep_nesting_arrays": (_bad(lambda r: r.update(extension=[_nested(900, as_list=True)])),
                            "nested deeper than"),
    "deep_nesting_in_code": (_bad(lambda r: r.update(code=_nested(900))), "code.a.a"),
    # a non-study record (not relevant to the study) with a code system that is an object
    "noise_system_is_object": ({"resourceType": "Observation", "id": "n1", "status": "final",
                                "code": {"coding": [{"system": {"a": 1}, "code": "x"}]},
                                "subject": {"reference": "Patient/P"}, "effectiveDateTime": "2023-01-01"},
                               "code.coding[0].system: expected a string, found an object"),
    "bundle_request_is_array": ({"resourceType": "Bundle", "type": "batch", "entry": [{"request": [1]}]},
                                "Bundle entry has no resource"),
    "bundle_entry_type_is_object": ({"resourceType": "Bundle", "type": "batch",
                                     "entry": [{"resource": {"resourceType": {"a": 1}}}]}, "no resourceType"),
}


@pytest.mark.parametrize("kind", sorted(CRASHES))
def test_each_crash_kind_is_one_rejected_record(db: Database, tmp_path: Path, kind: str) -> None:
    bad, reason = CRASHES[kind]
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), GOOD, bad, quantity_obs("ok2", "P", "8122-4", 3,
                                                                                        "10*9/L")])
    quarantine = io.StringIO()
    rep = ingest(db, path, quarantine=quarantine)  # asserts read = loaded + skipped + rejected
    assert rep.read == 4
    assert rep.n_rejected == 1, rep.rejected
    rej = rep.rejected[0]
    assert (rej.file, rej.line) == (str(path), 3)
    assert reason in rej.reason, rej.reason
    assert rep.n_loaded == 3
    assert db.query("SELECT COUNT(*) FROM cdm.measurement")[0][0] == 2
    q = [orjson.loads(x) for x in quarantine.getvalue().splitlines()]
    assert len(q) == 1 and q[0]["line"] == 3
    assert q[0]["resource"] is not None or kind == "bundle_request_is_array"  # an entry without a resource


@pytest.mark.parametrize("kind", ["coding_code_is_object", "deep_nesting_in_code", "noise_system_is_object"])
def test_crash_kinds_in_the_parallel_reader(db: Database, tmp_path: Path, kind: str) -> None:
    bad, reason = CRASHES[kind]
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), GOOD, bad])
    rep = ingest(db, path, workers=2)
    assert rep.n_rejected == 1 and reason in rep.rejected[0].reason and rep.rejected[0].line == 3
    assert rep.n_loaded == 2


def test_byte_order_mark_does_not_reject_the_first_record(db: Database, tmp_path: Path) -> None:
    ndjson = tmp_path / "bom.ndjson"
    ndjson.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(patient("P")) + b"\r\n" + orjson.dumps(GOOD) + b"\r\n")
    single = tmp_path / "bom.json"
    single.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(quantity_obs("o2", "P", "8122-4", 3, "10*9/L")))
    rep = ingest(db, ndjson, single)
    assert rep.n_rejected == 0, rep.rejected
    assert rep.n_loaded == 3
