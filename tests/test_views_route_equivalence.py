"""FHIR route == OMOP route (issue 4, acceptance): the same synthetic patients rendered once as FHIR
(Bulk NDJSON and transaction Bundles) and once as OMOP CSV give identical ``course`` and ``patient``
tables after ``ingest`` / ``load-omop`` + ``build``. Every contract column is compared except
``person_id``, which each route assigns itself (OMOP: the hospital's id; FHIR: the adapter's stable id
per Patient); rows are matched on ``person_source_value`` (+ ``course_number``). Both engines.

The generator's own centers each use one route; here every center's timelines are rendered in both,
so the comparison covers all four centers' designs (center4's site-local laboratory codes go through
its overlay on both routes).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pandas as pd
import pytest

from blina_study.adapter.db import Database
from blina_study.adapter.fhir.ingest import ingest_fhir
from blina_study.adapter.omop import load_omop_csv
from blina_study.adapter.resources import mappings_dir
from blina_study.adapter.study import load_overlay, load_study
from blina_study.adapter.synth.catalog import Catalog
from blina_study.adapter.synth.cohort import CENTERS
from blina_study.adapter.synth.generate import build_cohort, render_timelines
from blina_study.adapter.views import COURSE_COLUMNS, PATIENT_COLUMNS, build

FHIR_ROUTES = ("fhir_ndjson", "fhir_bundle")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<route>/<site>/`` folders: every center's timelines in every route (noise 2 on top)."""
    out = tmp_path_factory.mktemp("routes")
    res = build_cohort(noise=2)
    cat = Catalog(res.study)
    for style in CENTERS:
        timelines = [tl for tl in res.timelines if tl.site_id == style.site_id]
        for number, tl in enumerate(timelines, start=1):
            # the FHIR centers' timelines carry no hospital person_id; the OMOP rendering needs one
            tl.person_id = tl.person_id or number
        omop_kind = "omop_local" if style.local else "omop_standard"
        for route in (*FHIR_ROUTES, omop_kind):
            folder = out / ("omop" if route.startswith("omop") else route) / style.site_id
            render_timelines(timelines, route, folder, cat, random.Random(f"equivalence:{style.site_id}:{route}"))
    return out


def _rows(frame: pd.DataFrame, key: list[str], columns: list[str]) -> dict[tuple, dict[str, object]]:
    def clean(v: object) -> object:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if hasattr(v, "item") else v

    out = {}
    for rec in frame.to_dict("records"):
        out[tuple(clean(rec[k]) for k in key)] = {c: clean(rec[c]) for c in columns}
    assert len(out) == len(frame), f"duplicate keys {key}"
    return out


def _differences(fhir: pd.DataFrame, omop: pd.DataFrame, key: list[str], columns: list[str]) -> list[str]:
    a, b = _rows(fhir, key, columns), _rows(omop, key, columns)
    problems = []
    if set(a) != set(b):
        only_fhir, only_omop = sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5]
        problems.append(f"rows differ: only FHIR {only_fhir}, only OMOP {only_omop}")
    for k in sorted(set(a) & set(b)):
        for col in columns:
            x, y = a[k][col], b[k][col]
            same = (math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15)
                    if isinstance(x, float) and isinstance(y, float) else x == y)
            if not same:
                problems.append(f"{k} {col}: FHIR {x!r}, OMOP {y!r}")
    return problems


@pytest.mark.parametrize("fhir_route", FHIR_ROUTES)
@pytest.mark.parametrize("style", CENTERS, ids=[c.site_id for c in CENTERS])
def test_fhir_route_equals_omop_route(db: Database, rendered: Path, style, fhir_route: str) -> None:
    study = load_study()
    site = style.site_id
    overlay = load_overlay(mappings_dir() / "sites" / f"{site}.yaml", study) if style.local else None

    ingest = ingest_fhir(db, [rendered / fhir_route / site], site_id=site, study=study, overlay=overlay)
    assert ingest.balanced() and ingest.n_rejected == 0, ingest.rejected[:5]
    fhir_course, fhir_patient = build(db, study, overlay, site_id=site)

    loaded = load_omop_csv(db, rendered / "omop" / site)   # replaces the CDM tables the ingest filled
    assert loaded.rejected == [] and loaded.balanced()
    omop_course, omop_patient = build(db, study, overlay, site_id=site)

    assert len(omop_patient) > 15 and len(omop_course) >= len(omop_patient)
    compared = [c for c in PATIENT_COLUMNS if c != "person_id"]
    problems = _differences(fhir_patient, omop_patient, ["person_source_value"], compared)
    compared = [c for c in COURSE_COLUMNS if c != "person_id"]
    problems += _differences(fhir_course, omop_course, ["person_source_value", "course_number"], compared)
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:25])
    # the identity is not vacuous: both routes give every derived column at least one non-NULL value
    for col in ("post_status", "cr", "high_mrd", "cd3_post", "efs_event", "os_event", "next_therapy"):
        table = fhir_course if col in COURSE_COLUMNS else fhir_patient
        assert table[col].notna().any(), col
