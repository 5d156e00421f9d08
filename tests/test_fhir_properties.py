"""Property-based tests (hypothesis) of the FHIR reader, mapper and validator (issue 15, point 5): whatever
the bytes of a line or the JSON types inside a resource, the reader yields one item per non-blank unit, and
the mapper and validator either answer or raise only the per-record errors the ingest catches and turns into
one rejected record. Bounded: ~200 examples each, no deadline (the machine is shared). The soak over 1e5
mutated inputs end to end is bench/fuzz_ingest.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blina_study.adapter.fhir.ingest import _RECORD_ERRORS
from blina_study.adapter.fhir.mapper import ResourceMapper, load_config, load_views
from blina_study.adapter.fhir.reader import iter_items
from blina_study.adapter.fhir.shape import malformed_element

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])

LOINC = "http://loinc.org"
BASE: list[dict] = [
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": LOINC, "code": "8122-4"}]}, "subject": {"reference": "Patient/P"},
     "effectiveDateTime": "2023-05-14", "valueQuantity": {"value": 2, "unit": "10*9/L",
                                                          "system": "http://unitsofmeasure.org", "code": "10*9/L"}},
    {"resourceType": "Condition", "id": "c1", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                                                   "code": "C91.02"}]},
     "subject": {"reference": "Patient/P"}, "onsetDateTime": "2022-01-10",
     "verificationStatus": {"coding": [{"code": "confirmed"}]}},
    {"resourceType": "MedicationAdministration", "id": "m1", "status": "completed",
     "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                               "code": "1597262"}]},
     "subject": {"reference": "Patient/P"}, "effectivePeriod": {"start": "2023-05-01", "end": "2023-05-28"}},
    {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
     "subject": {"reference": "Patient/P"}, "period": {"start": "2023-05-01T09:00:00Z"}},
    {"resourceType": "Patient", "id": "P", "gender": "female", "birthDate": "2012-04-03"},
    {"resourceType": "Procedure", "id": "p1", "status": "completed", "code": {"coding": [{"code": "x"}]},
     "subject": {"reference": "Patient/P"}, "performedDateTime": "2023-04-01"},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)
DATES = st.sampled_from(["2023", "2023-05", "2023-13-01", "2023-02-30", "", "x", "2023-05-14T25:00:00Z",
                         "2016-12-31T23:59:60Z", "0001-01-01", "9999-12-31", "2023-05-14T10:00:00+14:00"])


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_resources(draw: st.DrawFn) -> dict:
    """A valid resource of a study type with one to three elements replaced by a JSON value of any type
    (or a bad date where a date is)."""
    res = copy.deepcopy(draw(st.sampled_from(BASE)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(res)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        target = res
        try:
            for step in path[:-1]:
                target = target[step]
            is_date = isinstance(path[-1], str) and ("Date" in path[-1] or path[-1] in ("start", "end"))
            target[path[-1]] = draw(DATES if is_date and draw(st.booleans()) else json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed the path
    return res


_MAPPER: ResourceMapper | None = None


def mapper() -> ResourceMapper:
    global _MAPPER
    if _MAPPER is None:
        _MAPPER = ResourceMapper(load_views(), load_config(), study_codes=frozenset({(LOINC, "8122-4")}))
    return _MAPPER


@SETTINGS
@given(mutated_resources())
def test_mapper_and_validator_answer_or_raise_only_record_errors(res: dict) -> None:
    m = mapper()
    rtype = res.get("resourceType")
    try:
        problem = m.validation_problem(res) if isinstance(rtype, str) else None
        assert problem is None or isinstance(problem, str)
        if isinstance(rtype, str) and rtype in m.relevant:
            m.status_skip(res)
            m.is_study(res)
            if rtype in m.config.followup:
                m.followup_dates(res)
            rid = res.get("id")
            result = m.map(res, f"{rtype}/{rid}", None, problem)
            assert result.status in ("staged", "skipped", "rejected")
            if result.status == "rejected":
                assert result.reason
    except _RECORD_ERRORS as exc:
        # caught per record by the ingest: the rejection names the element when it is one of the known kinds
        from blina_study.adapter.fhir.shape import reason_for

        assert reason_for(res, exc)


@SETTINGS
@given(st.lists(st.one_of(
    st.binary(max_size=60),
    mutated_resources().map(lambda r: json.dumps(r).encode()),
    st.builds(lambda r, cut: json.dumps(r).encode()[:cut], mutated_resources(), st.integers(1, 40)),
), min_size=1, max_size=8), st.booleans(), st.booleans())
def test_reader_yields_one_item_per_line(tmp_path_factory: Any, lines: list[bytes], crlf: bool, bom: bool) -> None:
    """Every non-blank NDJSON line that is not a Bundle is one item (a resource, or an error with its line
    number), whatever its bytes; blank lines are none."""
    lines = [ln.replace(b"\n", b" ").replace(b"\r", b" ") for ln in lines]
    path = Path(tmp_path_factory.mktemp("r")) / "in.ndjson"
    sep = b"\r\n" if crlf else b"\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + sep.join(lines) + sep)
    items = list(iter_items(path))
    expected = []
    for i, ln in enumerate(lines, 1):
        # one BOM opening a line is dropped: on the first line of a file written with one, that is the file's
        if i == 1 and bom:
            text = ln
        else:
            text = ln[3:] if ln.startswith(b"\xef\xbb\xbf") else ln
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("resourceType") == "Bundle":
            return  # a Bundle line expands to its entries: not this property
        expected.append(i)
    assert [it.line for it in items] == expected
    for it in items:
        assert (it.resource is None) == (it.error is not None)


@SETTINGS
@given(json_values)
def test_malformed_element_never_raises(value: Any) -> None:
    """The element finder walks any JSON without recursion and returns a path or None."""
    found = malformed_element({"resourceType": "Observation", "code": value, "extension": [value]})
    assert found is None or ":" in found
