"""SQL-on-FHIR v2: the official conformance suite, plus unit tests of the FHIRPath subset/runner.

The suite lives beside the repository (``../shared/conformance/sql-on-fhir-v2``); every case runs
as its own test (id ``file::title``). A case is either run or listed in ``NOT_SUPPORTED`` with a
reason (then skipped); every ``shareable`` case must pass or be listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _helpers import find_shared

from blina_study.adapter.fhir.fhirpath import (
    NOT_SCALAR,
    Env,
    FhirPathError,
    FhirPathEvaluationError,
    compile_path,
)
from blina_study.adapter.fhir.viewdef import (
    NOT_SUPPORTED,
    ViewDefinition,
    ViewDefinitionError,
    ViewEvaluationError,
    load_view,
    run_conformance,
    run_view,
    write_conformance_report,
)

SUITE = find_shared() / "conformance" / "sql-on-fhir-v2"
REPORT = Path(__file__).resolve().parents[1] / "docs" / "sof-conformance.md"


def _load_cases() -> list[Any]:
    if not (SUITE / "tests").is_dir():
        return [pytest.param(None, id="suite-missing")]
    cases = []
    for path in sorted((SUITE / "tests").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        file_tags = data.get("tags") or []
        for test in data["tests"]:
            tags = test.get("tags") or file_tags
            case = {"file": path.stem, "resources": data["resources"], "test": test, "tags": tags}
            cases.append(pytest.param(case, id=f"{path.stem}::{test['title']}"))
    return cases


CASES = _load_cases()


def _canon(value: Any) -> Any:
    """Hashable form: booleans stay distinct from numbers, 5 and 5.0 compare equal."""
    if value is None or isinstance(value, (bool, str)):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    if isinstance(value, list):
        return ("list", tuple(_canon(v) for v in value))
    if isinstance(value, dict):
        return ("obj", tuple(sorted((k, _canon(v)) for k, v in value.items())))
    raise AssertionError(f"unexpected value in a row: {value!r}")


def _run_case(case: dict[str, Any]) -> tuple[ViewDefinition, list[dict[str, Any]]]:
    view = ViewDefinition(case["test"]["view"])
    return view, list(run_view(view, case["resources"]))


@pytest.mark.parametrize("case", CASES)
def test_official_case(case: dict[str, Any] | None) -> None:
    if case is None:
        pytest.skip(f"conformance suite not found at {SUITE} (clone shared/ beside the repo)")
    test = case["test"]
    case_id = f"{case['file']}::{test['title']}"
    if case_id in NOT_SUPPORTED:
        pytest.skip(NOT_SUPPORTED[case_id])
    if test.get("expectError"):
        with pytest.raises(ViewDefinitionError):
            _run_case(case)
        return
    view, rows = _run_case(case)
    if "expectColumns" in test:
        assert list(view.column_names) == test["expectColumns"]
    if "expect" in test:
        got = sorted(_canon(r) for r in rows)
        want = sorted(_canon(r) for r in test["expect"])
        assert got == want, f"rows differ:\n got  {rows}\n want {test['expect']}"
        for row in rows:
            assert list(row) == list(view.column_names), "row keys must follow column order"
    if "expectCount" in test:
        assert len(rows) == test["expectCount"]


def test_every_shareable_case_passes_or_is_declared_unsupported() -> None:
    if not (SUITE / "tests").is_dir():
        pytest.skip(f"conformance suite not found at {SUITE}")
    results = run_conformance(SUITE)
    ids = {r.case_id for r in results}
    assert set(NOT_SUPPORTED) <= ids, f"stale NOT_SUPPORTED entries: {set(NOT_SUPPORTED) - ids}"
    assert all(reason.strip() for reason in NOT_SUPPORTED.values())
    bad = [
        (r.case_id, r.detail)
        for r in results
        if "shareable" in r.tags and r.status != "passed" and r.case_id not in NOT_SUPPORTED
    ]
    assert not bad
    assert sum("shareable" in r.tags for r in results) >= 100  # the whole suite was found


def test_committed_report_is_current(tmp_path: Path) -> None:
    if not (SUITE / "tests").is_dir():
        pytest.skip(f"conformance suite not found at {SUITE}")
    fresh = write_conformance_report(run_conformance(SUITE), tmp_path / "r.md", SUITE)
    assert REPORT.read_text(encoding="utf-8") == fresh, (
        "docs/sof-conformance.md is stale: run "
        "`python -m blina_study.adapter.fhir.viewdef --conformance-report docs/sof-conformance.md`"
    )


# --------------------------------------------------------------------------------------------
# FHIRPath unit tests.

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "birthDate": "1970-06",
    "deceasedDateTime": "2020-03-04T10:00:00+02:00",
    "name": [
        {"use": "official", "family": "Doe", "given": ["Jane", "Ann"]},
        {"use": "maiden", "family": "Roe"},
    ],
    "identifier": [{"system": "urn:mrn", "value": "MRN-7"}],
    "managingOrganization": {"reference": "https://h.example/fhir/Organization/o9/_history/2"},
    "generalPractitioner": [
        {"reference": "urn:uuid:6f1c"},
        {"reference": "urn:uuid:77aa", "type": "Practitioner"},
        {"reference": "#contained1"},
        {"reference": "Practitioner?identifier=x|1"},
    ],
}


def ev(expression: str, resource: Any = PATIENT, **constants: Any) -> list:
    return compile_path(expression, constants).evaluate(resource)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("name.family", ["Doe", "Roe"]),
        ("Patient.name.given", ["Jane", "Ann"]),
        ("Observation.id", []),
        ("name[1].family", ["Roe"]),
        ("name[5].family", []),
        ("name.where(use = 'maiden').family", ["Roe"]),
        ("name.where(family.startsWith('D')).use", ["official"]),
        ("name.select(given.count())", [2, 0]),
        ("name.given.join('|')", ["Jane|Ann"]),
        ("name.exists(use = 'nickname')", [False]),
        ("name.all(family.exists())", [True]),
        ("name.first().given.last()", ["Ann"]),
        ("name.tail().family", ["Roe"]),
        ("name.skip(1).count() + name.take(1).count()", [2]),
        ("identifier.value.empty()", [False]),
        ("deceased.ofType(dateTime) > @2020-03-04T07:59:00Z", [True]),
        ("deceased.ofType(boolean)", []),
        ("deceased is FHIR.dateTime", [True]),
        ("birthDate < @1970-07", [True]),
        ("birthDate = @1970-06-15", []),  # different precision: unknown
        ("birthDate.lowBoundary()", ["1970-06-01"]),
        ("birthDate.highBoundary()", ["1970-06-30"]),
        ("(2 + 3) * 4 - 6 / 4", [18.5]),
        ("7 div 2 = 3 and 7 mod 2 = 1", [True]),
        ("'a' & {} & 'b'", ["ab"]),
        ("'a' + {}", []),
        ("{} and false", [False]),
        ("{} or true", [True]),
        ("{} and true", []),
        ("true xor false", [True]),
        ("false implies {}", [True]),
        ("(name.family = 'Doe').not()", [True]),
        ("name.family contains 'Roe'", [True]),
        ("'Roe' in name.family", [True]),
        ("name.family | name.family", ["Doe", "Roe"]),
        ("iif(active, 'yes', 'no')", ["yes"]),
        ("active = 1", [False]),  # boolean is not a number
        ("%x.upper() & %n.toString()", ["HI3"]),
        ("getResourceKey()", ["Patient/p1"]),
        ("managingOrganization.getReferenceKey()", ["Organization/o9"]),
        ("managingOrganization.getReferenceKey(Patient)", []),
        ("generalPractitioner.getReferenceKey(Practitioner)", ["Practitioner/6f1c", "Practitioner/77aa"]),
        ("generalPractitioner.getReferenceKey()", ["Practitioner/77aa"]),
        ("%rowIndex", [0]),
        ("%resource.id", ["p1"]),
        ("name.given ~ ('ANN' | 'jane')", [True]),
    ],
)
def test_fhirpath_expressions(expression: str, expected: list) -> None:
    assert ev(expression, x="hi", n=3) == expected


def test_decimal_boundaries_follow_precision() -> None:
    obs = {"resourceType": "Observation", "valueQuantity": {"value": 1.587}}
    assert ev("value.ofType(Quantity).value.lowBoundary()", obs) == [1.5865]
    assert ev("value.ofType(Quantity).value.highBoundary()", obs) == [1.5875]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("name.", "expected a name"),
        ("name.family = ", "unexpected end"),
        ("@@", "unexpected character"),
        ("name.resolve()", "resolve() is not supported"),
        ("name.memberOf('x')", "memberOf() is not supported"),
        ("today()", "today() is not supported"),
        ("%undefined", "undefined constant %undefined"),
        ("value.ofType(Qty)", "unknown type 'Qty'"),
        ("name.where()", "where() takes 1"),
        ("4 'mg'", "quantity literals are not supported"),
        ("$index", "$index is not supported"),
    ],
)
def test_unsupported_or_malformed_expressions_fail_at_compile_time(expression: str, message: str) -> None:
    with pytest.raises(FhirPathError) as info:
        compile_path(expression)
    assert message in str(info.value)
    assert repr(expression) in str(info.value)  # the error names the expression


def test_data_dependent_errors_are_evaluation_errors() -> None:
    with pytest.raises(FhirPathEvaluationError, match="single item"):
        ev("name.family < 'Z'")


def test_compiled_once_and_reusable() -> None:
    path = compile_path("name.where(use = %u).family", {"u": "official"})
    other = {"resourceType": "Patient", "name": [{"use": "official", "family": "X"}]}
    assert path([PATIENT], Env(PATIENT)) == ["Doe"]
    assert path([other], Env(other)) == ["X"]
    assert path.evaluate(PATIENT) == ["Doe"]


SCALAR_EXPRESSIONS = [
    "id",
    "active",
    "birthDate",
    "name",
    "name.family",
    "managingOrganization.reference",
    "managingOrganization.getReferenceKey()",
    "managingOrganization.getReferenceKey(Organization)",
    "subject.getReferenceKey(Patient)",
    "getResourceKey()",
    "deceased.ofType(dateTime)",
    "deceased.ofType(boolean)",
    "value.ofType(Quantity).value",
    "value.ofType(Quantity).unit",
    "effective.ofType(dateTime)",
    "status = 'final'",
    "status != 'final'",
    "'final' = status",
    "active = true",
    "code.text",
    "value",
    "value.ofType(decimal)",
]
SCALAR_INPUTS: list[dict[str, Any]] = [
    PATIENT,
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Patient", "id": "p3", "active": "yes", "name": {"family": "odd"}},
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 2.5, "unit": "mg"},
        "effectiveDateTime": "2021-01-02",
        "code": {"text": "x"},
    },
    {
        "resourceType": "Observation",
        "id": "o2",
        "status": "amended",
        "valueString": "x",
        "subject": [{"reference": "Patient/p1"}],
        "effectivePeriod": {"start": "2021"},
    },
    {
        "resourceType": "Observation",
        "id": "o3",
        "status": 5,
        "valueQuantity": [{"value": 1}],
        "value": 3,
        "code": [{"text": "a"}, {"text": "b"}],
    },
    # Plain (non-choice) elements named like a choice base: ofType() must test their type.
    {"resourceType": "Patient", "id": "p4", "deceased": True, "value": 3.5},
]


@pytest.mark.parametrize("expression", SCALAR_EXPRESSIONS)
def test_scalar_fast_path_agrees_with_general_evaluator(expression: str) -> None:
    path = compile_path(expression)
    assert path.scalar is not None, "expected a fast path for this shape"
    for resource in SCALAR_INPUTS:
        fast = path.scalar(resource)
        try:
            general = path.evaluate(resource)
        except FhirPathEvaluationError:
            assert fast is NOT_SCALAR
            continue
        if fast is NOT_SCALAR:
            continue
        assert general == ([] if fast is None else [fast]), (expression, resource["id"])


# --------------------------------------------------------------------------------------------
# ViewDefinition unit tests.

OBS_VIEW: dict[str, Any] = {
    "resourceType": "ViewDefinition",
    "resource": "Observation",
    "name": "obs",
    "constant": [{"name": "loinc", "valueUri": "http://loinc.org"}],
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "string"},
                {"name": "person", "path": "subject.getReferenceKey(Patient)", "type": "string"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "comparator", "path": "value.ofType(Quantity).comparator", "type": "code"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
            ]
        },
        {
            "forEach": "code.coding.where(system = %loinc)",
            "column": [
                {"name": "code", "path": "code", "type": "code"},
                {"name": "coding_index", "path": "%rowIndex", "type": "integer"},
            ],
        },
    ],
    "where": [{"path": "status != 'entered-in-error'"}],
}


def _obs(i: int, **extra: Any) -> dict[str, Any]:
    base = {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "1"},
                {"system": "http://loinc.org", "code": "11150-0"},
            ]
        },
        "subject": {"reference": f"Patient/p{i}"},
        "effectiveDateTime": "2021-03-04T10:00:00+01:00",
        "valueQuantity": {"value": 12.5, "comparator": "<", "unit": "%"},
    }
    base.update(extra)
    return base


def test_view_flattens_and_filters() -> None:
    view = ViewDefinition(OBS_VIEW)
    assert view.column_names == ("id", "person", "value", "comparator", "effective", "code", "coding_index")
    assert view.column_types["value"] == "decimal"
    resources = [
        _obs(1),
        _obs(2, status="entered-in-error"),
        {"resourceType": "Patient", "id": "p1"},
        _obs(3, valueString="n/a", valueQuantity=None),
    ]
    rows = list(run_view(view, resources))
    assert rows == [
        {
            "id": "Observation/o1",
            "person": "Patient/p1",
            "value": 12.5,
            "comparator": "<",
            "effective": "2021-03-04T10:00:00+01:00",
            "code": "11150-0",
            "coding_index": 0,
        },
        {
            "id": "Observation/o3",
            "person": "Patient/p3",
            "value": None,
            "comparator": None,
            "effective": "2021-03-04T10:00:00+01:00",
            "code": "11150-0",
            "coding_index": 0,
        },
    ]
    assert type(rows[0]["effective"]) is str  # typed temporals never leak into rows


def test_other_resource_types_are_not_evaluated() -> None:
    view = ViewDefinition(OBS_VIEW)

    class Exploding(dict):
        def get(self, key: str, default: Any = None) -> Any:
            if key != "resourceType":
                raise AssertionError("a Patient must not be evaluated by an Observation view")
            return super().get(key, default)

    assert view.rows(Exploding(resourceType="Patient", id="x")) == []


def test_multiple_values_for_scalar_column_name_resource_and_fix() -> None:
    view = ViewDefinition({"resource": "Patient", "select": [{"column": [{"name": "family", "path": "name.family"}]}]})
    with pytest.raises(ViewEvaluationError) as info:
        view.rows(PATIENT)
    err = info.value
    assert err.resource_key == "Patient/p1" and err.location == "select[0].column[0]"
    assert "returned 2 values" in str(err) and '"collection": true' in str(err)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda v: v.pop("resource"), "resource: missing"),
        (lambda v: v.update(resource="Observaton"), "not a FHIR R4 resource type"),
        (lambda v: v.update(select=[]), "select: missing"),
        (lambda v: v["select"][0]["column"].append({"name": "id", "path": "id"}), "column 'id' is already defined"),
        (lambda v: v["select"][0]["column"][0].update(name="1bad"), "must match"),
        (lambda v: v["select"][0]["column"][0].update(type="interger"), "unknown FHIR type"),
        (lambda v: v["select"][0]["column"][0].update(collection="yes"), "'collection' must"),
        (lambda v: v["select"][0].update(forEeach="x"), "unknown element(s) ['forEeach']"),
        (lambda v: v["select"][1].update(forEachOrNull="code"), "use only one of"),
        (lambda v: v["constant"][0].update(valueString="x"), "exactly one value[x]"),
        (lambda v: v["constant"].append({"name": "d", "valueDate": "2020-13"}), "not a valid Date literal"),
        (lambda v: v["constant"].append({"name": "rowIndex", "valueInteger": 1}), "reserved"),
        (lambda v: v["where"].append({"path": "status ="}), "where[1].path"),
        (lambda v: v["select"][1].update(forEach="code.coding.where(system = %snomed)"), "undefined constant %snomed"),
    ],
)
def test_invalid_views_are_rejected_with_location(mutate: Any, message: str) -> None:
    definition = json.loads(json.dumps(OBS_VIEW))
    mutate(definition)
    with pytest.raises(ViewDefinitionError) as info:
        ViewDefinition(definition, source="mappings/fhir/obs.json")
    assert message in str(info.value)
    assert str(info.value).startswith("mappings/fhir/obs.json: ")


def test_load_view_reports_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "resource": "Patient",\n  "select": [\n}\n', encoding="utf-8")
    with pytest.raises(ViewDefinitionError, match=r"bad\.json: invalid JSON at line 4"):
        load_view(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(OBS_VIEW), encoding="utf-8")
    assert load_view(good).resource == "Observation"
    with pytest.raises(ViewDefinitionError, match="cannot read"):
        load_view(tmp_path / "missing.json")


def test_repeat_is_depth_first_with_row_index() -> None:
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "q",
        "item": [
            {"linkId": "1", "item": [{"linkId": "1.1", "answer": [{"item": [{"linkId": "1.1.1"}]}]}]},
            {"linkId": "2"},
        ],
    }
    view = ViewDefinition(
        {
            "resource": "QuestionnaireResponse",
            "select": [
                {
                    "repeat": ["item", "answer.item"],
                    "column": [{"name": "link", "path": "linkId"}, {"name": "i", "path": "%rowIndex"}],
                }
            ],
        }
    )
    assert [(r["link"], r["i"]) for r in view.rows(qr)] == [("1", 0), ("1.1", 1), ("1.1.1", 2), ("2", 3)]
