"""The ingest outcome does not depend on the order of the records nor on the number of reading processes.

Two findings of issue 14's work on the reader: (1) a non-study record's status was checked only when its dates
moved the patient's first or last date, so a record whose status is malformed (a coding code that is a list)
was rejected or counted depending on the records read before it; (2) with worker processes the copies of a
duplicate id were listed in the order the workers handed them over (a range's non-study copies first), not
in input order, so the report differed from the one-process report. Both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_fhir_ingest import LOINC, ingest, patient, quantity_obs, write_ndjson

from blina_study.adapter.db import Database

SNOMED = "http://snomed.info/sct"


def other_condition(cid: str, onset: str, abatement: str | None = None, status: object = None) -> dict:
    """A Condition the study does not read (hypertension): counted, its dates count for follow-up."""
    res: dict = {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/P"},
                 "code": {"coding": [{"system": SNOMED, "code": "38341003"}]}, "onsetDateTime": onset}
    if abatement:
        res["abatementDateTime"] = abatement
    if status is not None:
        res["verificationStatus"] = status
    return res


def _report(rep) -> dict:  # noqa: ANN001 - IngestReport
    d = rep.to_dict()
    d.pop("seconds")
    for r in d["rejected"]["listed"]:  # the two runs' files differ by folder only
        folder = str(Path(r["file"]).parent) + "/"
        r["file"] = Path(r["file"]).name
        r["reason"] = r["reason"].replace(folder, "")
    d["files"] = [Path(f).name for f in d["files"]]
    return d


@pytest.mark.parametrize("malformed_first", [True, False])
def test_a_malformed_status_rejects_the_record_whatever_comes_before(db: Database, tmp_path: Path,
                                                                      malformed_first: bool) -> None:
    wide = other_condition("wide", "2019-01-01", "2021-06-01")  # spans the malformed record's date
    bad = other_condition("bad", "2020-01-01", status={"coding": [{"code": ["entered-in-error"]}]})
    records = [patient("P"), quantity_obs("cd3", "P", "8122-4", 950, "/uL", date="2020-03-01")]
    records += [bad, wide] if malformed_first else [wide, bad]
    rep = ingest(db, write_ndjson(tmp_path / "in.ndjson", records))
    assert rep.n_rejected == 1 and "verificationStatus" in rep.rejected[0].reason, rep.rejected
    assert rep.rejected[0].line == (3 if malformed_first else 4)
    assert rep.read == 4  # each line once: the rejected record is not also counted as not relevant
    assert rep.skipped["not_relevant"] == {"Condition": 1}
    assert rep.balanced()
    period = db.query("SELECT CAST(observation_period_start_date AS VARCHAR), "
                      "CAST(observation_period_end_date AS VARCHAR) FROM cdm.observation_period")
    assert period == [("2019-01-01", "2021-06-01")]


def _assert_same(one: dict, two: dict) -> None:
    """The one-process and two-process reports, equal once the runs' folders are left out."""
    for r in (one, two):
        for d in r["duplicate_ids"]["listed"]:
            d["locations"] = [Path(x).name for x in d["locations"]]
    assert one == two


def vital(oid: str, date: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}, "subject": {"reference": "Patient/P"},
            "effectiveDateTime": date, "valueQuantity": {"value": 120, "unit": "cm"}}


def test_duplicate_copies_are_listed_in_input_order_with_worker_processes(db: Database, tmp_path: Path) -> None:
    # the study copy of id x comes first in the file, the non-study copy (other content) after it
    records = [patient("P"), quantity_obs("x", "P", "8122-4", 950, "/uL", date="2020-03-01"),
               vital("x", "2020-04-01"), vital("y", "2020-05-01"), vital("y", "2020-05-01")]
    reports = []
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        path = write_ndjson(folder / "in.ndjson", records)
        rep = ingest(db, path, workers=workers)
        listed = {d["resource_key"]: d["locations"] for d in rep.duplicate_ids["listed"]}
        assert listed == {"Observation/x": [f"{path}:2", f"{path}:3"], "Observation/y": [f"{path}:4", f"{path}:5"]}
        reports.append(_report(rep))
    _assert_same(*reports)


def test_many_duplicate_non_study_ids_with_worker_processes(db: Database, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An export read twice: every non-study id repeats. The workers hand those ids over without a digest,
    which is taken from the lines afterwards; with more than a batch of them the index is rewritten by a join
    (an UPDATE ran out of memory at 1e6). Same outcome as one process."""
    import blina_study.adapter.fhir.dupes as dupes

    monkeypatch.setattr(dupes, "BATCH", 4)  # so that 12 repeated ids take the many-digests path
    noise = [vital(f"v{i}", f"2020-0{1 + i % 9}-01") for i in range(12)]
    reports = []
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        a = write_ndjson(folder / "a.ndjson", [patient("P"), quantity_obs("x", "P", "8122-4", 950, "/uL",
                                                                             date="2020-03-01"), *noise])
        changed = dict(noise[5], valueQuantity={"value": 99, "unit": "cm"})  # one id with other content
        b = write_ndjson(folder / "b.ndjson", [*noise[:5], changed, *noise[6:]])
        rep = ingest(db, a, b, workers=workers)
        assert rep.duplicate_ids["identical"] == 11 and rep.duplicate_ids["conflicting"] == 1, rep.duplicate_ids
        assert rep.skipped["duplicate"] == {"Observation": 11}
        assert sorted(r.where for r in rep.rejected) == sorted([f"{a}:8", f"{b}:6"])
        reports.append(_report(rep))
    _assert_same(*reports)
