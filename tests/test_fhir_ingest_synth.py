"""The generator's FHIR centers (center1 transaction Bundles, center2 Bulk NDJSON) ingest with zero
rejects, and the OMOP rows they give re-derive the generator's truth: through the generator's own
OMOP re-reader + oracle, and through the project's SQL views. Both engines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _helpers import same_text, truth_rows

from blina_study.adapter import views
from blina_study.adapter.db import Database
from blina_study.adapter.fhir.ingest import ingest_fhir
from blina_study.adapter.study import load_study
from blina_study.adapter.synth import oracle
from blina_study.adapter.synth.generate import _cell
from blina_study.adapter.synth.omop_events import timelines_from_omop

CENTERS = [("center1", "center1_fhir_bundles"), ("center2", "center2_bulk_ndjson")]



def _text(v: Any) -> str:
    if v is None or (not isinstance(v, str | dt.date) and pd.isna(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return _cell(v)


def _compare(rows: list[dict[str, Any]], truth: list[dict[str, str]], key: tuple[str, ...],
             columns: tuple[str, ...]) -> list[tuple]:
    # person_id is assigned by the adapter on the FHIR route: the truth leaves it empty
    want = {tuple(r[k] for k in key): r for r in truth}
    diffs = []
    assert len(rows) == len(truth)
    for row in rows:
        k = tuple(_text(row[c]) for c in key)
        for col in columns:
            if col != "person_id" and not same_text(_text(row[col]), want[k][col], 1e-9, 1e-12):
                diffs.append((k, col, _text(row[col]), want[k][col]))
    return diffs


@pytest.mark.parametrize("site,folder", CENTERS)
def test_fhir_center_ingests_cleanly_and_rederives_the_truth(db: Database, synth_dir: Path, site: str,
                                                             folder: str) -> None:
    study = load_study()
    report = ingest_fhir(db, [synth_dir / folder], site_id=site, study=study)
    assert report.balanced() and report.n_rejected == 0, report.rejected[:5]
    assert report.n_loaded > 500
    # the generator writes records that did not happen with a not-done status: skipped, never loaded
    assert sum(report.skipped["status"].values()) == sum(
        1 for _ in _not_done(synth_dir / folder))

    truth_c = truth_rows(synth_dir / "truth" / "course.csv", site)
    truth_p = truth_rows(synth_dir / "truth" / "patient.csv", site)
    courses, patients = [], []
    for tl in timelines_from_omop(db, study, site, None):
        rows, prow = oracle.derive(tl, study.params)
        courses += rows
        if prow is not None:
            patients.append(prow)
    assert _compare(courses, truth_c, ("person_source_value", "course_number"), oracle.COURSE_COLUMNS) == []
    assert _compare(patients, truth_p, ("person_source_value",), oracle.PATIENT_COLUMNS) == []

    course, patient = views.build(db, study, None, site_id=site)
    assert _compare(course.to_dict("records"), truth_c, ("person_source_value", "course_number"),
                    tuple(course.columns)) == []
    assert _compare(patient.to_dict("records"), truth_p, ("person_source_value",), tuple(patient.columns)) == []

    # a second run of the same export changes nothing
    before = {t: sorted(db.query(f"SELECT * FROM cdm.{t}"), key=repr) for t in ("person", "measurement",
                                                                               "drug_exposure", "blina_lineage")}
    again = ingest_fhir(db, [synth_dir / folder], site_id=site, study=study)
    assert again.n_rejected == 0 and again.n_loaded == report.n_loaded
    assert before == {t: sorted(db.query(f"SELECT * FROM cdm.{t}"), key=repr) for t in before}


def _not_done(folder: Path):
    import orjson

    from blina_study.adapter.fhir.reader import discover_files, iter_items

    files, _ = discover_files([folder])
    for f in files:
        for item in iter_items(f):
            res = item.resource or {}
            statuses = {res.get("status")} | {c.get("code") for c in
                                             (res.get("verificationStatus") or {}).get("coding", [])}
            if statuses & {"entered-in-error", "not-done", "cancelled"}:
                yield orjson.dumps(res)
