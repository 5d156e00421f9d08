"""The truth equals the rules re-derived from the OMOP CSVs the generator wrote, once loaded into
a real database (DuckDB and PostgreSQL): center3 (standard codes) and center4 (local codes +
overlay)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from _helpers import same_text, truth_rows

from blina_study.adapter.omop import load_omop_csv
from blina_study.adapter.resources import mappings_dir
from blina_study.adapter.study import load_overlay, load_study
from blina_study.adapter.synth import oracle
from blina_study.adapter.synth.generate import _cell
from blina_study.adapter.synth.omop_events import timelines_from_omop


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
    truth_c = truth_rows(synth_dir / "truth" / "course.csv", site)
    truth_p = truth_rows(synth_dir / "truth" / "patient.csv", site)
    assert len(patients) == len(truth_p) > 15
    assert len(courses) == len(truth_c)
    key_c = {(r["person_source_value"], r["course_number"]): r for r in truth_c}
    for row in courses:
        want = key_c[(row["person_source_value"], str(row["course_number"]))]
        for col in oracle.COURSE_COLUMNS:
            assert same_text(_cell(row[col]), want[col]), (row["person_source_value"], row["course_number"], col)
    key_p = {r["person_source_value"]: r for r in truth_p}
    for row in patients:
        want = key_p[row["person_source_value"]]
        for col in oracle.PATIENT_COLUMNS:
            assert same_text(_cell(row[col]), want[col]), (row["person_source_value"], col)


def test_center4_lab_rows_carry_only_local_codes(synth_dir: Path) -> None:
    overlay = load_overlay(mappings_dir() / "sites" / "center4.yaml")
    local = {c.source_value for codes in overlay.variables.values() for c in codes}
    with open(synth_dir / "center4_omop_local" / "measurement.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["measurement_source_value"] in local]
    assert {r["measurement_source_value"] for r in rows} == local
    assert all(r["measurement_concept_id"] == "0" and r["unit_concept_id"] == "0" for r in rows)
    assert "cells/uL" in {r["unit_source_value"] for r in rows}
