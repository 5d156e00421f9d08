"""The SQL-compiled ViewDefinitions (blina_study.adapter.fhir.compile_sql) against the Python runner.

Three checks: the official SQL-on-FHIR v2 suite (every case the compiler accepts passes, the rest
are declined by name), the project's mappings/fhir views give the same rows as the runner on the
generator's centers and the Synthea bulk export (multisets: the compiled query has no row order),
and data errors fail the query instead of being coerced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from _helpers import find_shared

from blina_study.adapter.fhir.compile_sql import CompileDeclined, compile_view, run_compiled
from blina_study.adapter.fhir.viewdef import (
    ViewDefinition,
    ViewDefinitionError,
    ViewEvaluationError,
    load_view,
    run_view,
)
from tests.test_sof_conformance import _canon

REPO = Path(__file__).resolve().parents[1]
_SUITE = find_shared() / "conformance" / "sql-on-fhir-v2"
SUITE = _SUITE if (_SUITE / "tests").is_dir() else None
VIEWS = sorted((REPO / "mappings" / "fhir").glob("*.json"))


def _cases() -> list[Any]:
    if SUITE is None:
        return [pytest.param(None, id="suite-missing")]
    out = []
    for path in sorted((SUITE / "tests").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for test in data["tests"]:
            out.append(pytest.param((data["resources"], test), id=f"{path.stem}::{test['title']}"))
    return out


@pytest.mark.parametrize("case", _cases())
def test_official_case_compiled(case: Any) -> None:
    if case is None:
        pytest.skip("conformance suite not found")
    resources, test = case
    try:
        view = ViewDefinition(test["view"])
    except ViewDefinitionError:
        assert test.get("expectError"), "the runner rejected a valid view"
        return
    try:
        if test.get("expectError"):
            with pytest.raises(ViewDefinitionError):
                run_compiled(view, resources)
            return
        rows = run_compiled(view, resources)
    except CompileDeclined as declined:
        pytest.skip(f"declined: {declined}")
    if "expect" in test:
        assert sorted(_canon(r) for r in rows) == sorted(_canon(r) for r in test["expect"])
    if "expectCount" in test:
        assert len(rows) == test["expectCount"]
    # And the compiled path agrees with the runner on the same input.
    assert sorted(_canon(r) for r in rows) == sorted(_canon(r) for r in run_view(view, resources))


@pytest.mark.parametrize("view_path", VIEWS, ids=[p.stem for p in VIEWS])
def test_every_mapping_view_compiles(view_path: Path) -> None:
    compiled = compile_view(load_view(view_path), "read_ndjson_objects('x.ndjson')")
    assert compiled.columns == load_view(view_path).column_names


def _resources(folder: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(folder.rglob("*.ndjson")):
        out.extend(orjson.loads(line) for line in f.read_bytes().splitlines() if line.strip())
    return out


def _assert_same_rows(resources: list[dict[str, Any]]) -> int:
    total = 0
    for view_path in VIEWS:
        view = load_view(view_path)
        expected = sorted(_canon(r) for r in run_view(view, resources))
        got = sorted(_canon(r) for r in run_compiled(view, resources))
        assert got == expected, f"{view_path.name}: compiled rows differ from the runner"
        total += len(got)
    return total


def test_mapping_views_same_rows_as_runner_on_synthea_bulk(shared_dir: Path) -> None:
    resources = _resources(shared_dir / "external" / "synthea-bulk-10")
    assert _assert_same_rows(resources) > 100


def test_mapping_views_same_rows_as_runner_on_generated_centers(synth_dir: Path) -> None:
    resources = _resources(synth_dir)
    assert resources, "the generator wrote no NDJSON"
    assert _assert_same_rows(resources) > 100


def test_odd_shapes_same_as_runner() -> None:
    """Arrays where scalars are expected, plain keys named like a choice base, JSON nulls."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Observation", "id": "a", "value": 3, "code": {"coding": [None, {"code": "x"}]}},
        {"resourceType": "Observation", "id": "b", "valueInteger": 4, "effectiveDateTime": None},
        {"resourceType": "Observation", "id": "c", "code": {"coding": {"system": "s", "code": "y"}}},
        {"resourceType": "Observation", "id": "d", "valueCodeableConcept": {"coding": [{"code": "v"}, {"code": "w"}]}},
        {"resourceType": "Patient", "id": "p", "deceasedBoolean": False, "gender": "female"},
    ]
    _assert_same_rows(resources)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"resourceType": "Observation", "id": "o", "valueQuantity": {"value": "12"}}, "not a FHIR decimal"),
        (
            {"resourceType": "Observation", "id": "o", "subject": [{"reference": "a"}, {"reference": "b"}]},
            "returned several values",
        ),
    ],
)
def test_data_errors_fail_the_query_not_coerced(resource: dict[str, Any], message: str) -> None:
    view = load_view(REPO / "mappings" / "fhir" / "observation.json")
    with pytest.raises(ViewEvaluationError, match=message):
        run_compiled(view, [resource])
