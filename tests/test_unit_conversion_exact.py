"""Issue 12 point 2: converted values are the exact decimal product (570 /uL x 0.001 = 0.57).

The same results written in 10^9/L and in /uL must give identical ``course`` values and an identical
paired Wilcoxon result (statistic and P), on DuckDB and PostgreSQL. Before the rounding rule of
sql/intermediate/int_measurement_values.sql, 570 x 0.001 = 0.5700000000000001 broke ties.
"""

from __future__ import annotations

import csv
import math
from decimal import Decimal
from pathlib import Path

import pandas as pd
from _helpers import concept_id

from blina_study.adapter.db import Database, connect
from blina_study.adapter.omop import create_cdm, load_omop_csv, load_study_vocabulary
from blina_study.adapter.study import load_study
from blina_study.adapter.views import build
from blina_study.analysis.io import coerce_table
from blina_study.analysis.tables import tcell_change


def _rewrite_in_per_microlitre(src: Path, dst: Path, per_litre_ids: set[str], per_ul_id: str) -> int:
    """Copy an OMOP CSV export, writing every cell count (10^9/L or 10^3/uL) in /uL as a person
    would (0.57 -> 570: exact decimal arithmetic). Returns the number of rows rewritten."""
    dst.mkdir()
    changed = 0
    for f in src.glob("*.csv"):
        if f.name != "measurement.csv":
            (dst / f.name).write_bytes(f.read_bytes())
            continue
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        for r in rows:
            if r["unit_concept_id"] in per_litre_ids and r["value_as_number"]:
                r["value_as_number"] = format((Decimal(r["value_as_number"]) * 1000).normalize(), "f")
                r["unit_concept_id"] = per_ul_id
                r["unit_source_value"] = "/uL"
                changed += 1
        with open(dst / f.name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    return changed


def _study_tables(engine_url: str, cdm: str, folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    db = connect(engine_url, cdm_schema=cdm, vocab_schema="vocab")
    try:
        create_cdm(db)
        report = load_omop_csv(db, folder)
        assert report.rejected == []
        return build(db, load_study(), None, site_id="center3")
    finally:
        db.close()


def test_same_results_in_per_microlitre_and_per_litre_are_identical(
    engine_url: str, synth_dir: Path, tmp_path: Path
) -> None:
    vocab_db: Database = connect(engine_url, cdm_schema="cdm_litre", vocab_schema="vocab")
    try:
        create_cdm(vocab_db)
        load_study_vocabulary(vocab_db)
        per_litre = {str(concept_id(vocab_db, "UCUM", u)) for u in ("10*9/L", "10*3/uL")}
        per_ul = str(concept_id(vocab_db, "UCUM", "/uL"))
    finally:
        vocab_db.close()
    src = synth_dir / "center3_omop_standard"
    n = _rewrite_in_per_microlitre(src, tmp_path / "per_ul", per_litre, per_ul)
    assert n > 100  # cell counts of every CD marker, pre and post
    course_l, patient_l = _study_tables(engine_url, "cdm_litre", src)
    course_u, patient_u = _study_tables(engine_url, "cdm_ul", tmp_path / "per_ul")

    # identical course and patient values (==, not approximately), every column
    pd.testing.assert_frame_equal(course_u, course_l, check_exact=True)
    pd.testing.assert_frame_equal(patient_u, patient_l, check_exact=True)
    # a value a person writes in 10^9/L, e.g. 0.57, not 0.5700000000000001
    cells = course_u[["cd4_pre", "cd4_post", "cd8_pre", "cd8_post"]].stack().astype(float)
    assert len(cells) > 20
    assert all(float(repr(round(v, 3))) == v for v in cells)

    wl = tcell_change(coerce_table(course_l, "course"))
    wu = tcell_change(coerce_table(course_u, "course"))
    for a, b in zip(wl.markers, wu.markers, strict=True):
        assert a.n > 5
        assert (b.test.statistic, b.test.p_value, b.test.n_zero) == (
            a.test.statistic, a.test.p_value, a.test.n_zero)
        assert not math.isnan(a.test.p_value)


_CASES = [  # (variable, LOINC/BLINA code, value, source unit, value in the canonical unit)
    ("cd4_abs", ("LOINC", "24467-3"), 570.0, "/uL", 0.57),        # 570 * 0.001 = 0.5700000000000001
    ("cd4_abs", ("LOINC", "24467-3"), 1063.0, "/uL", 1.063),
    ("cd4_abs", ("LOINC", "24467-3"), 0.57, "10*9/L", 0.57),      # canonical unit: unchanged
    ("mrd", ("BLINA", "MRD-FCM-BM"), 0.07, "%", 0.0007),          # 0.07 * 0.01 = 0.0007000000000000001
    ("mrd", ("BLINA", "MRD-FCM-BM"), 0.5, "%", 0.005),
    ("il6", ("LOINC", "26881-3"), 1.234, "ng/mL", 1234.0),         # 1.234 * 1000 = 1233.9999999999998
]


def test_conversion_is_the_exact_decimal_product(db: Database, synth_dir: Path) -> None:
    """The SQL rule value by value, on both engines (the same double on each)."""
    from _helpers import insert_row

    from blina_study.adapter.views import render_query

    assert load_omop_csv(db, synth_dir / "center3_omop_standard").rejected == []
    person = db.query(f"select min(person_id) from {db.qualified('cdm', 'person')}")[0][0]
    for i, (_, (vocab, code), value, unit, _) in enumerate(_CASES):
        insert_row(db, "measurement", {
            "measurement_id": 900_000_000 + i, "person_id": person,
            "measurement_concept_id": concept_id(db, vocab, code),
            "measurement_date": "2021-01-01", "measurement_type_concept_id": 32817,
            "value_as_number": value, "unit_concept_id": 0, "unit_source_value": unit,
        })
    sql, params = render_query(load_study(), None, db, """
select measurement_id, variable, value, value_status from int_measurement_values
where measurement_id >= 900000000 order by measurement_id""", ("int_measurement_values",))
    got = db.query(sql, params)
    assert [(r[1], r[3]) for r in got] == [(c[0], "ok") for c in _CASES]
    for (_, _, value, unit, expected), row in zip(_CASES, got, strict=True):
        assert float(row[2]) == expected, f"{value} {unit} -> {row[2]!r}, expected {expected!r}"
