"""A database with no study patient is a finding (exit 1, one sentence with the likely cause), never an
empty "successful" build, extract or site package; ``site-run`` refuses sites below the minimum size."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from _helpers import concept_id, insert_row

from blina_study.adapter.cli import main
from blina_study.adapter.db import Database, connect
from blina_study.adapter.omop import create_cdm, load_study_vocabulary

D0 = dt.date(2020, 5, 4)


def _person(db: Database, pid: int, drug: tuple[str, str] | None) -> None:
    insert_row(db, "person", {"person_id": pid, "gender_concept_id": 0, "year_of_birth": 2012, "race_concept_id": 0,
                              "ethnicity_concept_id": 0, "person_source_value": f"M{pid}"})
    if drug:
        insert_row(db, "drug_exposure", {"drug_exposure_id": pid, "person_id": pid,
                                         "drug_concept_id": concept_id(db, *drug),
                                         "drug_exposure_start_date": D0,
                                         "drug_exposure_end_date": D0 + dt.timedelta(27), "drug_type_concept_id": 0})
    insert_row(db, "measurement", {"measurement_id": pid, "person_id": pid,
                                   "measurement_concept_id": concept_id(db, "LOINC", "11150-0"),
                                   "measurement_date": D0 - dt.timedelta(2), "measurement_type_concept_id": 0,
                                   "value_as_number": 2.0, "unit_concept_id": concept_id(db, "UCUM", "%")})


def _make(url: str, *, drug: tuple[str, str] | None, persons: int = 1, sql: str | None = None) -> list[str]:
    with connect(url, cdm_schema="cdm", vocab_schema="vocab") as db:
        create_cdm(db)
        load_study_vocabulary(db)
        for pid in range(1, persons + 1):
            _person(db, pid, drug)
        if sql:
            db.execute(sql.format(vocab='"vocab"'))
    return ["--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab", "--site-id", "c9"]


@pytest.mark.parametrize(("drug", "sql", "cause"), [
    (None, None, "none of the"),                                                          # no exposure
    (("RxNorm", "1597262"), "delete from {vocab}.concept_ancestor", "CONCEPT_ANCESTOR is empty"),
    (None, "delete from {vocab}.concept where concept_code like '1597%' or concept_code like '1651%'",
     "no blinatumomab concept resolved"),
])
def test_no_study_patient_is_a_finding_with_the_cause(engine_url: str, tmp_path: Path, capsys, drug, sql,
                                                      cause) -> None:
    base = _make(engine_url, drug=drug, sql=sql)
    assert main(["build", *base]) == 1
    err = capsys.readouterr().err
    assert err.startswith("data findings: no study patient: ") and cause in err and "Traceback" not in err
    if "concept resolved" in cause:  # after load-omop of an export's own CONCEPT (Eunomia), not load-omop again
        assert "blina load-vocab" in err and "load-omop" not in err, err
    assert main(["extract", *base, "--out", str(tmp_path / "out")]) == 1
    assert cause in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                    # no empty "successful" files
    assert main(["site-run", *base, "--out", str(tmp_path / "c9.zip")]) == 1
    assert cause in capsys.readouterr().err
    assert not (tmp_path / "c9.zip").exists()


def test_build_with_results_schema_persists_nothing_for_an_empty_cohort(tmp_path: Path, capsys) -> None:
    url = str(tmp_path / "site.duckdb")
    base = _make(url, drug=None)
    assert main(["build", *base, "--results-schema", "blina"]) == 1
    with connect(url) as db:
        assert not db.table_exists("blina", "course")


def test_site_run_refuses_a_site_below_the_minimum_size(engine_url: str, tmp_path: Path, capsys) -> None:
    base = _make(engine_url, drug=("RxNorm", "1597258"), persons=2)
    assert main(["build", *base]) == 0                        # 2 patients: a real (small) cohort
    assert main(["site-run", *base, "--out", str(tmp_path / "c9.zip")]) == 1
    err = capsys.readouterr().err
    assert "has 2 study patients, fewer than the minimum site size 5: no package written" in err
    assert not (tmp_path / "c9.zip").exists()
    assert main(["site-run", *base, "--out", str(tmp_path / "c9.zip"), "--min-patients", "0"]) == 2
    assert main(["site-run", *base, "--out", str(tmp_path / "c9.zip"), "--min-patients", "2"]) == 0
    assert (tmp_path / "c9.zip").exists()


def test_site_run_minimum_is_the_vantage6_node_default() -> None:
    from blina_study.adapter.commands.site_run import MIN_SITE_PATIENTS

    text = (Path(__file__).resolve().parents[1] / "vantage6" / "v6_blina" / "__init__.py").read_text()
    assert f"DEFAULT_MIN_PATIENTS = {MIN_SITE_PATIENTS}\n" in text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_analyze_and_report_with_no_patient_say_nothing_to_analyse(tmp_path: Path, capsys, fmt: str) -> None:
    """Issue 11, 3: analyze/report on tables with 0 patients exit 1 with one sentence and write nothing
    (no Fisher "P = 1.000" on 0/0, no published figure "reproduced" from n = 0)."""
    import pandas as pd

    from blina_study.analysis.io import COURSE_SCHEMA, PATIENT_SCHEMA

    files = []
    for name, schema in (("course", COURSE_SCHEMA), ("patient", PATIENT_SCHEMA)):
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in schema})
        path = tmp_path / f"{name}.{fmt}"
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
        files += [f"--{name}", str(path)]
    assert main(["analyze", *files, "--out", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("data findings: nothing to analyse: ") and "0 patients" in err and "Traceback" not in err
    assert main(["report", *files, "--out", str(tmp_path / "report.html")]) == 1
    assert "nothing to analyse" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "report.html").exists()
