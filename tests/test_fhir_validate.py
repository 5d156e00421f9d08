"""The generated FHIR validation (blina_study.adapter.fhir.validate): each invalid variant is rejected naming the
element and the rule, the committed spec equals a fresh generation, and on valid inputs it accepts exactly what
fhir.resources R4B accepts (synthetic generator, the ingest tests' fixtures, the Synthea bulk export)."""

from __future__ import annotations

import copy
import io
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import SHARED
from test_fhir_ingest import blina_admin, ingest, patient, quantity_obs, transaction_bundle, write_ndjson

from blina_study.adapter.db import Database
from blina_study.adapter.fhir.mapper import ResourceMapper, load_config, load_views
from blina_study.adapter.fhir.validate import SPEC_PATH, Validator, generate_spec, load_validator
from blina_study.adapter.resources import mappings_dir

SYNTHEA = SHARED / "external" / "synthea-bulk-10"
VIEWS, CONFIG = load_views(), load_config()
FAST = ResourceMapper(VIEWS, CONFIG)
FULL = ResourceMapper(VIEWS, CONFIG, validation="full")


def _obs() -> dict[str, Any]:
    return quantity_obs("o1", "P", "8122-4", 12, "/uL", comparator="<")


def _set(path: str, value: Any) -> Any:
    def edit(res: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node = res
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value
    return edit


_DROP = object()
_ENC = {"resourceType": "Encounter", "id": "e", "status": "finished", "class": {"code": "AMB"}}

# variant -> (resource builder, edit, expected "<element path>: <rule>")
INVALID: dict[str, tuple[Any, Any, str]] = {
    "string_value": (_obs, _set("valueQuantity.value", "12"), "Observation.valueQuantity.value: type"),
    "bogus_status": (_obs, _set("status", "bogus"), "Observation.status: required binding"),
    "comparator_tilde": (_obs, _set("valueQuantity.comparator", "~"),
                         "Observation.valueQuantity.comparator: required binding"),
    "two_value_x": (_obs, _set("valueString", "12"), "Observation.value[x]: choice"),
    "two_effective_x": (_obs, _set("effectivePeriod", {"start": "2023-01-01"}), "Observation.effective[x]: choice"),
    "missing_status": (_obs, _set("status", _DROP), "Observation.status: required"),
    "missing_code": (_obs, _set("code", _DROP), "Observation.code: required"),
    "missing_medication_x": (lambda: blina_admin("m", "P", "2023-01-01", "2023-01-02"),
                             _set("medicationCodeableConcept", _DROP),
                             "MedicationAdministration.medication[x]: required"),
    "bad_datetime": (_obs, _set("effectiveDateTime", "2023-05-14T10:00"), "Observation.effectiveDateTime: regex"),
    "bad_datetime_month": (_obs, _set("effectiveDateTime", "2023-13-01"), "Observation.effectiveDateTime: regex"),
    "not_a_day": (_obs, _set("effectiveDateTime", "2023-02-30"), "Observation.effectiveDateTime: calendar"),
    "code_not_object": (_obs, _set("code", ["x"]), "Observation.code: type"),
    "coding_not_array": (_obs, _set("code", {"coding": {"code": "x"}}), "Observation.code.coding: type"),
    "status_not_string": (_obs, _set("status", 1), "Observation.status: type"),
    "system_with_space": (_obs, _set("code.coding.0.system", "http://x y"), "Observation.code.coding[0].system: regex"),
    "id_too_long": (_obs, _set("id", "x" * 65), "Observation.id: regex"),
    "integer_as_float": (_obs, lambda r: (r.pop("valueQuantity"), r.update(valueInteger=1.5)),
                         "Observation.valueInteger: type"),
    "boolean_as_string": (_obs, lambda r: (r.pop("valueQuantity"), r.update(valueBoolean="true")),
                          "Observation.valueBoolean: type"),
    "bad_gender": (lambda: patient("P"), _set("gender", "F"), "Patient.gender: required binding"),
    "bad_birthdate": (lambda: patient("P"), _set("birthDate", "03/04/2012"), "Patient.birthDate: regex"),
    "encounter_status": (lambda: dict(_ENC), _set("status", "done"), "Encounter.status: required binding"),
    "encounter_no_class": (lambda: dict(_ENC), _set("class", _DROP), "Encounter.class: required"),
    "unknown_key": (_obs, lambda r: r.update(valueQuanity={"value": 1}),
                    "Observation: unknown element: 'valueQuanity' is not an element of R4B Observation"),
    "unknown_nested_key": (_obs, _set("valueQuantity.valu", 1),
                           "Observation.valueQuantity: unknown element: 'valu' is not an element of R4B Quantity"),
    "contained_medication": (lambda: blina_admin("m", "P", "2023-01-01", "2023-01-02"),
                             lambda r: r.update(contained=[{"resourceType": "Medication", "id": "m1",
                                                            "code": {"coding": [{"code": 5}]}}]),
                             "MedicationAdministration.contained[0].code.coding[0].code: type"),
}


@pytest.mark.parametrize("variant", sorted(INVALID))
def test_each_invalid_variant_is_rejected_naming_element_and_rule(variant: str) -> None:
    build, edit, expected = INVALID[variant]
    res = build()
    assert FAST.validation_problem(res) is None, "the base resource must be valid"
    edit(res)
    problem = FAST.validation_problem(res)
    assert problem is not None and problem.startswith(f"invalid FHIR R4: {expected}"), problem


def test_the_issue_variants_are_rejected_by_the_ingest(db: Database, tmp_path: Path) -> None:
    """valueQuantity.value "12", status bogus and comparator ~ are rejected (fhir.resources R4B 8.3 accepts
    all three: the old default loaded them)."""
    good = _obs()
    bad = []
    for i, key in enumerate(("string_value", "bogus_status", "comparator_tilde")):
        res = copy.deepcopy(good)
        INVALID[key][1](res)
        res["id"] = f"bad{i}"
        assert FULL.validation_problem(res) is None  # the old default (fhir.resources R4B) lets it through
        bad.append(res)
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), _obs() | {"valueQuantity": {
        "value": 12, "unit": "/uL", "system": "http://unitsofmeasure.org", "code": "/uL"}}, *bad])
    quarantine = io.StringIO()
    rep = ingest(db, path, quarantine=quarantine)
    reasons = sorted(r.reason for r in rep.rejected)
    assert [r.split(":")[1].strip() for r in reasons] == [
        "Observation.status", "Observation.valueQuantity.comparator", "Observation.valueQuantity.value"], reasons
    assert rep.n_loaded == 2
    assert len(quarantine.getvalue().splitlines()) == 3


def test_committed_spec_equals_a_fresh_generation() -> None:
    """The structure (elements, types, cardinality, required, choice groups) is generated afresh from the R4B
    models and the views; the bindings and regexes of the committed spec stand in for the official
    definitions, which are read too when BLINA_FHIR_DEFINITIONS names their folder."""
    committed = json.loads((mappings_dir() / SPEC_PATH).read_text(encoding="utf-8"))
    assert generate_spec(VIEWS, CONFIG, spec=committed) == committed
    folder = os.environ.get("BLINA_FHIR_DEFINITIONS")
    if folder:
        fresh = generate_spec(VIEWS, CONFIG, definitions=Path(folder))
        assert {k: v for k, v in fresh.items() if k != "sources"} == {
            k: v for k, v in committed.items() if k != "sources"}


def test_other_views_get_a_spec_generated_for_them() -> None:
    views = load_views()
    obs = views["observation"]
    extra = {"name": "issued", "path": "issued", "type": "instant"}
    obs.definition["select"][0]["column"].append(extra)
    validator = load_validator(views, CONFIG)
    assert validator is not load_validator(VIEWS, CONFIG)
    res = _obs() | {"issued": "yesterday"}
    assert validator.problem(res).startswith("invalid FHIR R4: Observation.issued: regex")
    assert load_validator(VIEWS, CONFIG).problem(res) is None  # the study's views do not read it


def test_spec_covers_every_view_and_a_validator_pickles() -> None:
    import pickle

    v = load_validator()
    assert v.types == {view.resource for view in VIEWS.values()}
    again = pickle.loads(pickle.dumps(v))
    assert isinstance(again, Validator) and again.problem(_obs() | {"status": "x"}) == v.problem(
        _obs() | {"status": "x"})


# ------------------------------------------------------------------------------------ differential
def _synth_resources() -> Iterator[tuple[str, dict[str, Any]]]:
    from blina_study.adapter.synth.catalog import Catalog
    from blina_study.adapter.synth.generate import build_cohort
    from blina_study.adapter.synth.render_fhir import patient_resources

    res = build_cohort(seed=7, patients=40, noise=3)
    cat = Catalog(res.study)
    r = random.Random(7)
    for tl in res.timelines:
        for with_time in (False, True):
            for x in patient_resources(tl, cat, r, lambda t, i: f"{t}/{i}", with_time=with_time):
                yield f"synth {tl.site_id}", x


def _fixture_resources(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from test_fhir_ingest import clean_input

    root = clean_input.__wrapped__(tmp_path)
    for f in sorted(root.rglob("*")):
        if f.suffix == ".json":
            doc = json.loads(f.read_text())
            for e in doc.get("entry", [{"resource": doc}]):
                yield f.name, e["resource"]
        elif f.name.endswith((".ndjson", ".ndjson.gz")):
            import gzip

            opener = gzip.open if f.suffix == ".gz" else open
            with opener(f, "rt") as fh:
                for line in fh:
                    yield f.name, json.loads(line)
    yield "transaction", transaction_bundle([patient("T")])["entry"][0]["resource"]


def _synthea() -> Iterator[tuple[str, dict[str, Any]]]:
    for f in sorted(SYNTHEA.glob("*.ndjson")):
        with open(f, "rb") as fh:
            for n, line in enumerate(fh, start=1):
                yield f"{f.name}:{n}", orjson.loads(line)


def _differ(items: Iterator[tuple[str, dict[str, Any]]]) -> tuple[int, list[str]]:
    n, out = 0, []
    for where, res in items:
        if res.get("resourceType") not in FAST.relevant:
            continue
        n += 1
        fast, full = FAST.validation_problem(res), FULL.validation_problem(res)
        if (fast is None) != (full is None):
            out.append(f"{where} {res['resourceType']}/{res.get('id')}: fast {fast!r}, full {full!r}")
    return n, out


def test_differential_synthetic_and_fixtures_accept_the_same(tmp_path: Path) -> None:
    n, differ = _differ(_synth_resources())
    m, differ2 = _differ(_fixture_resources(tmp_path))
    assert n > 1000 and m >= 10
    assert differ + differ2 == []


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason=f"{SYNTHEA} not present (shared artefacts)")
def test_differential_synthea_bulk_accepts_the_same() -> None:
    n, differ = _differ(_synthea())
    assert n > 3000
    assert differ == []


def test_cli_validate_switch(engine_url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`blina ingest` rejects the issue's three variants by default (exit 1, each named as invalid FHIR R4);
    with `--validate full` fhir.resources finds none of them invalid (later rules may still reject)."""
    from test_fhir_bulk_export import cli_db

    from blina_study.adapter.cli import main

    url = cli_db.__wrapped__(engine_url)
    bad = []
    for i, key in enumerate(("string_value", "bogus_status", "comparator_tilde")):
        res = _obs() | {"id": f"bad{i}"}
        INVALID[key][1](res)
        bad.append(res)
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), *bad])
    args = ["ingest", str(path), "--site", "s1", "--db", url, "--cdm-schema", "cdm", "--vocab-schema", "cdm"]
    assert main([*args, "--quiet", "--report", str(tmp_path / "r.json")]) == 1
    reasons = sorted(r["reason"] for r in json.loads((tmp_path / "r.json").read_text())["rejected"]["listed"])
    assert [r.split(":")[1].strip() for r in reasons] == [
        "Observation.status", "Observation.valueQuantity.comparator", "Observation.valueQuantity.value"]
    main([*args, "--quiet", "--validate", "full", "--report", str(tmp_path / "full.json")])
    full = json.loads((tmp_path / "full.json").read_text())
    assert not [r for r in full["rejected"]["listed"] if r["reason"].startswith("invalid FHIR")]
    # status "bogus" is loaded under full; the string value and "~" are caught by later rules
    assert sorted(r["resource_key"] for r in full["rejected"]["listed"]) == ["Observation/bad0", "Observation/bad2"]
