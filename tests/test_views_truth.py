"""The views against the synthetic cohort's ground truth: generate, load the OMOP centers (center3 with
standard codes, center4 with local codes + its overlay) into DuckDB and PostgreSQL, build, and compare
every contract column of every row to ``truth/course.csv`` / ``truth/patient.csv``."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest
from _helpers import truth_rows

from blina_study.adapter.db import Database
from blina_study.adapter.omop import load_omop_csv
from blina_study.adapter.resources import mappings_dir
from blina_study.adapter.study import load_overlay, load_study
from blina_study.adapter.synth import generate
from blina_study.adapter.views import COURSE_COLUMNS, PATIENT_COLUMNS, build


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, noise=3)   # irrelevant records around every relevant one: they must not change a thing
    return out


def _parse(text: str, kind: str) -> object:
    if text == "":
        return None
    if kind == "date":
        return dt.date.fromisoformat(text)
    if kind in ("int", "bigint"):
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "boolean":
        return {"true": True, "false": False}[text.lower()]
    return text


def _value(v: object) -> object:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _equal(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _compare(got: pd.DataFrame, truth: list[dict[str, str]], columns: dict[str, str], key: list[str]) -> list[str]:
    rows = {tuple(_value(r[k]) for k in key): r for r in got.to_dict("records")}
    want = {tuple(_parse(t[k], columns[k]) for k in key): t for t in truth}
    problems = []
    if set(rows) != set(want):
        problems.append(f"keys differ: only built {sorted(set(rows) - set(want))[:5]}, "
                        f"only truth {sorted(set(want) - set(rows))[:5]}")
    for k in sorted(set(rows) & set(want)):
        for col, kind in columns.items():
            if col == "person_id" and want[k][col] == "":
                continue
            a, b = _value(rows[k][col]), _parse(want[k][col], kind)
            if not _equal(a, b):
                problems.append(f"{k} {col}: built {a!r}, truth {b!r}")
    return problems


@pytest.mark.parametrize("site,folder,overlay", [
    ("center3", "center3_omop_standard", None),
    ("center4", "center4_omop_local", "center4.yaml"),
])
def test_views_match_truth(db: Database, synth_dir: Path, site: str, folder: str, overlay: str | None) -> None:
    study = load_study()
    ov = load_overlay(mappings_dir() / "sites" / overlay, study) if overlay else None
    report = load_omop_csv(db, synth_dir / folder)
    assert report.rejected == [] and report.balanced()
    course, patient = build(db, study, ov, site_id=site)
    truth_c = truth_rows(synth_dir / "truth" / "course.csv", site)
    truth_p = truth_rows(synth_dir / "truth" / "patient.csv", site)
    assert len(truth_p) > 15 and len(patient) == len(truth_p) and len(course) == len(truth_c)
    problems = _compare(course, truth_c, COURSE_COLUMNS, ["person_source_value", "course_number"])
    problems += _compare(patient, truth_p, PATIENT_COLUMNS, ["person_source_value"])
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:25])
