"""The truth equals the rules re-derived from the FHIR files the generator wrote (center1 Bundles,
center2 Bulk NDJSON), read back with a minimal independent reader: records whose status says they
did not happen are skipped (protocol 3b.3), and dates are the date part (3b.1)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helpers import same_text

from blina_study.adapter.resources import mappings_dir
from blina_study.adapter.study import load_study
from blina_study.adapter.synth import oracle
from blina_study.adapter.synth.catalog import Catalog
from blina_study.adapter.synth.generate import _cell
from blina_study.adapter.synth.timeline import (
    Administration,
    ConditionRecord,
    Measurement,
    PatientTimeline,
    ProcedureRecord,
)

STUDY = load_study()
CAT = Catalog(STUDY)
SYSTEMS = yaml.safe_load((mappings_dir() / "fhir" / "systems.yaml").read_text())
NOT_DONE = set(SYSTEMS["not_done_status"])



def _day(text: str) -> date:
    return date.fromisoformat(text[:10])


def _coding(cc: dict[str, Any]) -> tuple[str, str]:
    c = cc["coding"][0]
    return SYSTEMS["systems"].get(c["system"], c["system"]), c["code"]


def _answer(cc: dict[str, Any]) -> bool | None:
    vc = _coding(cc)
    pos = {(c.vocabulary_id, c.code) for c in STUDY.value_sets.positive}
    neg = {(c.vocabulary_id, c.code) for c in STUDY.value_sets.negative}
    return True if vc in pos else False if vc in neg else None


def _var(vc: tuple[str, str], wanted: tuple[str, ...]) -> str:
    hits = CAT.variables_of(*vc) & set(wanted)
    assert len(hits) <= 1, (vc, hits)
    return hits.pop() if hits else "other"


MEAS = tuple(n for n, v in STUDY.variables.items() if v.domain == "measurement")


def _did_not_happen(res: dict[str, Any]) -> bool:
    if res["resourceType"] == "Condition":
        return any(c["code"] in NOT_DONE for c in res.get("verificationStatus", {}).get("coding", []))
    return res.get("status") in NOT_DONE


def _timelines(resources: list[dict[str, Any]], site: str, skip: bool = True) -> list[PatientTimeline]:
    by_ref: dict[str, dict[str, Any]] = {}
    for r in resources:
        by_ref[f"{r['resourceType']}/{r['id']}"] = r
        by_ref[f"urn:uuid:{r['id']}"] = r
    tls: dict[str, PatientTimeline] = {}
    for r in resources:
        if r["resourceType"] == "Patient":
            t = PatientTimeline(site, r["identifier"][0]["value"], None, {"female": "F", "male": "M"}[r["gender"]],
                                date.fromisoformat(r["birthDate"]))
            if "deceasedDateTime" in r:
                t.death_date = _day(r["deceasedDateTime"])
            tls[r["id"]] = t
    skipped = 0
    for r in resources:
        if "subject" not in r:
            continue
        if skip and _did_not_happen(r):
            skipped += 1
            continue
        t = tls[by_ref[r["subject"]["reference"]]["id"]]
        rt = r["resourceType"]
        if rt == "MedicationAdministration":
            cc = r.get("medicationCodeableConcept") or by_ref[r["medicationReference"]["reference"]]["code"]
            kind = _var(_coding(cc), ("blinatumomab", "chemotherapy"))
            p = r["effectivePeriod"]
            t.administrations.append(Administration(kind, _day(p["start"]), _day(p["end"]), ""))
        elif rt == "Observation":
            var = _var(_coding(r["code"]), MEAS)
            day = _day(r["effectiveDateTime"])
            if "valueQuantity" in r:
                q = r["valueQuantity"]
                factor = CAT.factor(var, q["code"]) if var != "other" else None
                canonical = q["value"] * factor if factor is not None else q["value"]
                t.measurements.append(Measurement(var, day, q["value"], q["code"], canonical, q.get("comparator")))
            else:
                t.measurements.append(Measurement(var, day, None, None, None,
                                                  detected=_answer(r["valueCodeableConcept"])))
        elif rt == "Condition":
            vc = _coding(r["code"])
            t.conditions.append(ConditionRecord(_var(vc, ("relapse", "crs", "icans")),
                                                _day(r["onsetDateTime"]), vc, CAT.grade_of(*vc)))
        elif rt == "Procedure":
            t.procedures.append(ProcedureRecord(_var(_coding(r["code"]), ("hsct", "car_t")),
                                                _day(r["performedDateTime"]), ("", "")))
        elif rt == "Encounter":
            t.visits.append((_day(r["period"]["start"]), _day(r["period"]["end"])))
    assert not skip or site != "center2" or skipped >= 4
    return list(tls.values())


def _load(synth_dir: Path, site: str) -> list[dict[str, Any]]:
    if site == "center1":
        return [e["resource"] for p in sorted((synth_dir / "center1_fhir_bundles").glob("*.json"))
                for e in json.loads(p.read_text())["entry"]]
    return [json.loads(line) for p in sorted((synth_dir / "center2_bulk_ndjson").glob("*.ndjson"))
            for line in p.read_text().splitlines()]


def test_records_that_did_not_happen_would_change_the_truth(synth_dir: Path) -> None:
    """The entered-in-error / not-done / cancelled records at center2 are not inert: read as data
    they would change derived values, so a reader that keeps them fails the truth comparison."""
    resources = _load(synth_dir, "center2")
    derived = {}
    for skip in (True, False):
        derived[skip] = [oracle.derive(t, STUDY.params) for t in _timelines(resources, "center2", skip=skip)]
    assert derived[True] != derived[False]


@pytest.mark.parametrize("site", ["center1", "center2"])
def test_truth_rederived_from_fhir(synth_dir: Path, site: str) -> None:
    resources = _load(synth_dir, site)
    got_c, got_p = [], []
    for t in _timelines(resources, site):
        rows, prow = oracle.derive(t, STUDY.params)
        got_c += rows
        got_p.append(prow)
    with open(synth_dir / "truth" / "course.csv", newline="") as fh:
        want_c = {(r["person_source_value"], r["course_number"]): r for r in csv.DictReader(fh) if r["site_id"] == site}
    with open(synth_dir / "truth" / "patient.csv", newline="") as fh:
        want_p = {r["person_source_value"]: r for r in csv.DictReader(fh) if r["site_id"] == site}
    assert len(got_p) == len(want_p) and len(got_c) == len(want_c)
    diffs = defaultdict(list)
    for row in got_c:
        want = want_c[(row["person_source_value"], str(row["course_number"]))]
        for col in oracle.COURSE_COLUMNS:
            if not same_text(_cell(row[col]), want[col]):
                diffs[col].append(row["person_source_value"])
    for row in got_p:
        want = want_p[row["person_source_value"]]
        for col in oracle.PATIENT_COLUMNS:
            if not same_text(_cell(row[col]), want[col]):
                diffs[col].append(row["person_source_value"])
    assert not diffs
