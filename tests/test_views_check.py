"""``blina check`` (pre-flight counts) and the ``build`` / ``extract`` / ``check`` command lines."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from _helpers import concept_id, insert_row

from blina_study.adapter.check import run_check
from blina_study.adapter.cli import main
from blina_study.adapter.db import Database, connect
from blina_study.adapter.omop import create_cdm, load_study_vocabulary
from blina_study.adapter.study import load_study

D0 = dt.date(2020, 5, 4)


def _site(db: Database, *, with_mrd: bool = True) -> None:
    pct, ul = concept_id(db, "UCUM", "%"), concept_id(db, "UCUM", "pg/mL")
    insert_row(db, "person", {"person_id": 1, "gender_concept_id": 0, "year_of_birth": 2012, "race_concept_id": 0,
                           "ethnicity_concept_id": 0, "person_source_value": "M1"})
    insert_row(db, "drug_exposure", {"drug_exposure_id": 1, "person_id": 1,
                                  "drug_concept_id": concept_id(db, "RxNorm", "1597258"),
                                  "drug_exposure_start_date": D0, "drug_exposure_end_date": D0 + dt.timedelta(27),
                                  "drug_type_concept_id": 0})
    rows = [(concept_id(db, "LOINC", "11150-0"), 2.0, pct, None),
            (concept_id(db, "LOINC", "8122-4"), 1.1, ul, None),          # CD3 in pg/mL: not convertible
            (0, 7.0, None, "LOCAL-XYZ"), (0, 8.0, None, "LOCAL-XYZ"), (0, 1.0, None, "OTHER")]
    if with_mrd:
        rows.append((concept_id(db, "BLINA", "MRD-FCM-BM"), 0.1, pct, None))
    for i, (cid, value, unit, sv) in enumerate(rows, start=1):
        insert_row(db, "measurement", {"measurement_id": i, "person_id": 1, "measurement_concept_id": cid,
                                    "measurement_date": D0 - dt.timedelta(2), "measurement_type_concept_id": 0,
                                    "value_as_number": value, "unit_concept_id": unit,
                                    "measurement_source_value": sv})


def test_check_counts_and_passes(db: Database) -> None:
    _site(db)
    db.execute(f"insert into {db.qualified('cdm', 'cdm_source')} (cdm_source_name, cdm_source_abbreviation, "
               "cdm_holder, source_release_date, cdm_release_date, cdm_version, cdm_version_concept_id, "
               "vocabulary_version) values ('t', 't', 't', :d, :d, 'v5.4', 0, 'subset')", {"d": D0})
    rep = run_check(db, load_study())
    assert rep.ok and rep.cdm_version == "5.4" and not rep.missing_tables
    assert rep.persons_with_blinatumomab == 1
    assert rep.rows_per_year["marrow_blasts"] == {2020: 1} and rep.rows_per_year["mrd"] == {2020: 1}
    assert rep.unmapped["measurement"][:2] == [("LOCAL-XYZ", 2), ("OTHER", 1)]
    assert {"variable": "cd3_abs", "reason": "unit not convertible to the canonical unit",
            "unit": "pg/mL", "rows": 1} in rep.unusable_values
    assert rep.codes_found["blinatumomab"] == (1, 1)
    assert any(m.startswith("no il6 rows") for m in rep.messages)
    assert "check passed" in rep.text()


def test_check_missing_mrd_fails_with_a_clear_message(db: Database) -> None:
    _site(db, with_mrd=False)
    rep = run_check(db, load_study())
    assert not rep.ok and rep.missing_required == ["mrd"]
    assert any("no MRD rows: add your lab's MRD code to the site overlay" in m for m in rep.messages)


def test_check_missing_tables(tmp_path: Path) -> None:
    with connect(str(tmp_path / "empty.duckdb")) as db:
        rep = run_check(db, load_study())
    assert not rep.ok and "cdm.person" in rep.missing_tables


@pytest.fixture
def site_file(tmp_path: Path) -> str:
    path = str(tmp_path / "site.duckdb")
    with connect(path, cdm_schema="cdm", vocab_schema="vocab") as db:
        create_cdm(db)
        load_study_vocabulary(db)
        _site(db)
    return path


def test_cli_build_extract_check(site_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--db", site_file, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]
    assert main(["check", *base, "--json", str(tmp_path / "check.json")]) == 0
    assert json.loads((tmp_path / "check.json").read_text())["ok"] is True
    assert main(["build", *base, "--site-id", "c9"]) == 0
    assert "built 1 courses of 1 patients (pre-course status: CR-MRDpos 1)" in capsys.readouterr().out
    assert main(["build", *base, "--site-id", "c9", "--sql-only", str(tmp_path / "r.sql")]) == 0
    assert "nothing was run" in capsys.readouterr().out
    assert (tmp_path / "r.sql").read_text().count("-- ===== output:") == 3
    assert main(["build", *base, "--site-id", "c9", "--results-schema", "blina"]) == 0
    with connect(site_file) as db:
        assert db.query('select count(*) from "blina"."course"')[0][0] == 1
    assert main(["extract", *base, "--site-id", "c9", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "course.parquet").exists() and (tmp_path / "out" / "extract.json").exists()
    assert main(["build", *base, "--site-id", "c9", "--param", "course_gap_days=-1"]) == 2
    assert main(["build", *base]) == 2                       # no site id
    assert "no site id" in capsys.readouterr().err


def test_cli_check_exit_1_when_required_variable_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "nomrd.duckdb")
    with connect(path, cdm_schema="cdm", vocab_schema="vocab") as db:
        create_cdm(db)
        load_study_vocabulary(db)
        _site(db, with_mrd=False)
    assert main(["check", "--db", path, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]) == 1
    out = capsys.readouterr()
    assert "no MRD rows" in out.out and "variable mrd" in out.err


def test_check_gives_the_fix_for_unusable_units_and_unresolved_overlay_codes(db: Database, tmp_path: Path) -> None:
    """Issue 11, Deliver 4: units check cannot convert, rows with no unit, and overlay source concepts
    missing from CONCEPT: each is one message with its fix (the overlay's unit_factor where it helps)."""
    from blina_study.adapter.study import load_overlay

    _site(db)
    # CD3 with a number and no unit at all
    insert_row(db, "measurement", {"measurement_id": 99, "person_id": 1,
                                   "measurement_concept_id": concept_id(db, "LOINC", "8122-4"),
                                   "measurement_date": D0, "measurement_type_concept_id": 0,
                                   "value_as_number": 0.5, "unit_concept_id": 0})
    site = tmp_path / "site.yaml"
    site.write_text("site_id: c1\nvariables:\n"
                    "  cd4_abs: [{vocabulary_id: xyz_lab, concept_code: CD4_ABS, unit: cells/uL, "
                    "unit_factor: 0.001}]\n", encoding="utf-8")
    study = load_study()
    rep = run_check(db, study, load_overlay(site, study))
    msgs = "\n".join(rep.messages)
    assert ("1 cd3_abs rows have unit 'pg/mL', which cannot be converted to '10*9/L' (fix: map the rows' "
            "unit_concept_id to one of 10*9/L, 10*3/uL, /uL, {cells}/uL, 10*6/L, or state the site's factor in "
            "the site overlay: variables: cd3_abs: [{<its code>, unit: 'pg/mL', unit_factor: <10*9/L per pg/mL>}])"
            ) in msgs
    assert "1 cd3_abs rows have a number but no unit" in msgs and "fill unit_concept_id" in msgs
    assert ("overlay entry cd4_abs: {vocabulary_id: xyz_lab, concept_code: CD4_ABS} is not in CONCEPT of schema "
            "'vocab', so it matches no row (fix: load the hospital's vocabulary") in msgs
    assert rep.unresolved_overlay == [{"variable": "cd4_abs", "vocabulary_id": "xyz_lab", "concept_code": "CD4_ABS"}]
    # study variables with 0 rows: one message each, with the fix
    assert any(m.startswith("no il6 rows") and "site overlay" in m for m in rep.messages)
    assert any(m.startswith("no cd4_abs rows") for m in rep.messages)
