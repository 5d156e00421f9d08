"""The truth equals the rules re-derived from the OMOP CSVs the generator wrote, once loaded into
a real database (DuckDB and PostgreSQL): center3 (standard codes) and center4 (local codes +
overlay)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from adapter.omop import load_omop_csv
from adapter.resources import mappings_dir
from adapter.study import load_overlay, load_study
from adapter.synth import generate, oracle
from adapter.synth.generate import _cell
from adapter.synth.omop_events import timelines_from_omop


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out)
    return out


def _truth(path: Path, site: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["site_id"] == site]


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)
    except ValueError:
        return False


@pytest.mark.parametrize("site,folder,overlay", [
    ("center3", "center3_omop_standard", None),
    ("center4", "center4_omop_local", "center4.yaml"),
])
def test_truth_rederived_from_loaded_omop(db, synth_dir: Path, site: str, folder: str, overlay: str | None) -> None:
    study = load_study()
    ov = load_overlay(mappings_dir() / "sites" / overlay, study) if overlay else None
    report = load_omop_csv(db, synth_dir / folder)
    assert report.rejected == [] and report.balanced()
    courses, patients = [], []
    for tl in timelines_from_omop(db, study, site, ov):
        rows, prow = oracle.derive(tl, study.params)
        assert prow is not None, tl.mrn
        courses += rows
        patients.append(prow)
    truth_c = _truth(synth_dir / "truth" / "course.csv", site)
    truth_p = _truth(synth_dir / "truth" / "patient.csv", site)
    assert len(patients) == len(truth_p) > 15
    assert len(courses) == len(truth_c)
    key_c = {(r["person_source_value"], r["course_number"]): r for r in truth_c}
    for row in courses:
        want = key_c[(row["person_source_value"], str(row["course_number"]))]
        for col in oracle.COURSE_COLUMNS:
            assert _same(_cell(row[col]), want[col]), (row["person_source_value"], row["course_number"], col)
    key_p = {r["person_source_value"]: r for r in truth_p}
    for row in patients:
        want = key_p[row["person_source_value"]]
        for col in oracle.PATIENT_COLUMNS:
            assert _same(_cell(row[col]), want[col]), (row["person_source_value"], col)


def test_center4_lab_rows_carry_only_local_codes(synth_dir: Path) -> None:
    overlay = load_overlay(mappings_dir() / "sites" / "center4.yaml")
    local = {c.source_value for codes in overlay.variables.values() for c in codes}
    with open(synth_dir / "center4_omop_local" / "measurement.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["measurement_source_value"] in local]
    assert {r["measurement_source_value"] for r in rows} == local
    assert all(r["measurement_concept_id"] == "0" and r["unit_concept_id"] == "0" for r in rows)
    assert "cells/uL" in {r["unit_source_value"] for r in rows}
