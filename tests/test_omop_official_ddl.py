"""Real hospital-shaped CDMs: the Eunomia sample (real OHDSI vocabulary rows) in PostgreSQL databases
created with the official OHDSI DDL, v5.3 and v5.4 (tables, primary keys, indices), read by a role that
may only SELECT. ``check`` names the version and never fails internally; ``build``/``extract`` read both
versions (v5.3 has no procedure_end_date)."""

from __future__ import annotations

import csv
import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from blina_study.adapter.cli import main
from blina_study.adapter.omop.vocabulary import study_concepts
from tests.conftest import PG_EXTERNAL, PG_HOST, PG_PORT, PG_USER

pytestmark = pytest.mark.skipif(not PG_EXTERNAL, reason="needs the PostgreSQL server at 127.0.0.1:5432")

DDL = "omop-cdm-ddl"
EUNOMIA = "eunomia-synthea27nj-5.4/Synthea27Nj_5.4.zip"
# The tables the study reads plus CDM_SOURCE and the vocabulary (Eunomia's DEVICE_EXPOSURE ids are
# longer than v5.3's varchar(50), and the study does not read that table).
LOADED = ("person", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
          "procedure_occurrence", "measurement", "observation", "death", "cdm_source", "concept",
          "concept_ancestor", "concept_relationship", "vocabulary", "domain", "concept_class", "relationship",
          "concept_synonym", "drug_strength")


def _admin(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


def _copy_csv(conn: psycopg.Connection, path: Path, table: str) -> None:
    """COPY the columns of ``path`` that the official table has (v5.3 lacks some v5.4 columns)."""
    cols = [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema = 'cdm' and table_name = %s",
        (table,))]
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader)]
        keep = [i for i, h in enumerate(header) if h in cols]
        with conn.cursor().copy(f"copy cdm.{table} ({', '.join(header[i] for i in keep)}) from stdin") as cp:
            for row in reader:
                cp.write_row([None if row[i] == "" else row[i] for i in keep])


def _official_db(shared: Path, version: str, tmp: Path) -> tuple[str, str]:
    """Create a database with the official DDL of ``version`` holding Eunomia; return (db, reader role)."""
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    dbname, role = f"blina_omop{version.replace('.', '')}_{suffix}", f"blina_reader_{suffix}"
    with _admin() as conn:
        conn.execute(f"create database {dbname}")
        conn.execute(f"create role {role} login")
    folder = tmp / "eunomia"
    with zipfile.ZipFile(shared / "external" / EUNOMIA) as zf:
        zf.extractall(folder, [n for n in zf.namelist() if not n.startswith("__MACOSX")])
    ddl = shared / "external" / DDL
    with _admin(dbname) as conn:
        conn.execute("create schema cdm")
        conn.execute((ddl / f"OMOPCDM_postgresql_{version}_ddl.sql").read_text().replace("@cdmDatabaseSchema", "cdm"))
        tables = {r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'cdm'")}
        for path in sorted(folder.glob("*.csv")):
            if path.stem.lower() in tables and path.stem.lower() in LOADED:
                _copy_csv(conn, path, path.stem.lower())
        if version == "5.3":  # the export says 5.4; a v5.3 database says 5.3
            conn.execute("update cdm.cdm_source set cdm_version = 'v5.3.1'")
        for part in ("primary_keys", "indices"):
            conn.execute((ddl / f"OMOPCDM_postgresql_{version}_{part}.sql").read_text()
                         .replace("@cdmDatabaseSchema", "cdm"))
        conn.execute(f"grant usage on schema cdm to {role}")
        conn.execute(f"grant select on all tables in schema cdm to {role}")
    return dbname, role


@pytest.fixture(params=["5.3", "5.4"])
def official_cdm(request: pytest.FixtureRequest, shared_dir: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    version = request.param
    dbname, role = _official_db(shared_dir, version, tmp_path)
    try:
        yield version, f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{dbname}"
    finally:
        with _admin() as conn:
            conn.execute(f"drop database if exists {dbname} with (force)")
            conn.execute(f"drop role if exists {role}")


def _args(url: str) -> list[str]:
    return ["--db", url, "--cdm-schema", "cdm", "--vocab-schema", "cdm"]


def test_check_names_version_and_findings_on_official_ddl(official_cdm, capsys) -> None:
    version, url = official_cdm
    rc = main(["check", *_args(url)])
    out, err = capsys.readouterr()
    assert rc == 1, out + err  # no study patient: a finding, not an error
    assert "internal error" not in out + err and "select " not in (out + err).lower()
    assert f"CDM version: v{version}" in out
    assert "vocabulary version: v5.0 09-APR-22*" in out
    assert "CONCEPT_ANCESTOR is empty" in out and "blina load-vocab" in out
    if version == "5.3":
        assert "procedure_occurrence.procedure_end_date is absent" in out
    assert "persons with blinatumomab: 0" in out


def test_build_and_extract_read_both_versions_as_select_only_role(official_cdm, capsys, tmp_path) -> None:
    _, url = official_cdm
    for cmd in (["build", *_args(url), "--site-id", "eunomia"],
                ["extract", *_args(url), "--site-id", "eunomia", "--out", str(tmp_path / "out")]):
        rc = main(cmd)
        out, err = capsys.readouterr()
        # No column error on v5.3, no permission error for the SELECT-only role; no study patient is a
        # finding (exit 1) in one sentence.
        assert rc == 1, out + err
        assert "does not exist" not in err and "permission denied" not in err and "internal error" not in err
        assert "select " not in err.lower() and len(err.strip().splitlines()) == 1, err


def _add_study_patients(url: str) -> None:
    """As the DBA: the study concepts Eunomia's vocabulary lacks (blinatumomab ingredient, marrow blasts,
    MRD, from the study subset), a hospital clinical drug under the ingredient (CONCEPT_ANCESTOR), and two
    patients coded with them; units are Eunomia's own (UCUM % = 8554)."""
    dbname = url.rsplit("/", 1)[1]
    subset = study_concepts().set_index(["vocabulary_id", "concept_code"])
    codes = (("RxNorm", "1597258"), ("LOINC", "11150-0"), ("BLINA", "MRD-FCM-BM"))
    rows = [subset.loc[k] for k in codes]
    with _admin(dbname) as conn:
        for (voc, code), r in zip(codes, rows, strict=True):
            conn.execute("insert into cdm.concept values (%s, %s, %s, %s, %s, %s, %s, '1970-01-01', "
                         "'2099-12-31', null)",
                         (int(r.concept_id), r.concept_name, r.domain_id, voc, r.concept_class_id,
                          r.standard_concept or None, code))
        ingredient, blasts, mrd = (int(r.concept_id) for r in rows)
        conn.execute("insert into cdm.concept values (2100000001, 'blinatumomab 35 MCG kit', 'Drug', 'HOSP_RX', "
                     "'Clinical Drug', 'S', 'BLINA-KIT-35', '2015-01-01', '2099-12-31', null)")
        conn.execute("insert into cdm.concept_ancestor values (%s, %s, 0, 0), (%s, 2100000001, 2, 2)",
                     (ingredient, ingredient, ingredient))
        pct = conn.execute("select concept_id from cdm.concept where vocabulary_id = 'UCUM' "
                           "and concept_code = %s", ("%",)).fetchone()[0]
        for pid, mrd_pct in ((900001, 0.5), (900002, 0.004)):
            conn.execute("insert into cdm.person (person_id, gender_concept_id, year_of_birth, month_of_birth, "
                         "day_of_birth, race_concept_id, ethnicity_concept_id, person_source_value) "
                         "values (%s, 8532, 2012, 6, 15, 0, 0, %s)", (pid, f"H-{pid}"))
            conn.execute("insert into cdm.observation_period values (%s, %s, '2020-01-01', '2022-03-01', 32817)",
                         (pid, pid))
            conn.execute("insert into cdm.drug_exposure (drug_exposure_id, person_id, drug_concept_id, "
                         "drug_exposure_start_date, drug_exposure_end_date, drug_type_concept_id) "
                         "values (%s, %s, 2100000001, '2021-03-01', '2021-03-28', 32818)", (9_000_000 + pid, pid))
            for j, (concept, value) in enumerate(((blasts, 1.0), (mrd, mrd_pct))):
                conn.execute("insert into cdm.measurement (measurement_id, person_id, measurement_concept_id, "
                             "measurement_date, measurement_type_concept_id, value_as_number, unit_concept_id) "
                             "values (%s, %s, %s, '2021-02-24', 32856, %s, %s)",
                             (9_000_000 + 10 * pid + j, pid, concept, value, pct))


def test_study_patients_added_to_eunomia_give_the_study_tables(official_cdm, capsys, tmp_path) -> None:
    _, url = official_cdm
    _add_study_patients(url)
    assert main(["extract", *_args(url), "--site-id", "eunomia", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    course = pd.read_csv(tmp_path / "out" / "course.csv", dtype=str, keep_default_na=False)
    patient = pd.read_csv(tmp_path / "out" / "patient.csv", dtype=str, keep_default_na=False)
    assert list(course.person_id) == ["900001", "900002"] and set(course.course_number) == {"1"}
    assert set(course.course_start) == {"2021-03-01"} and set(course.course_end) == {"2021-03-28"}
    assert set(course.infusion_days) == {"28"}
    assert list(course.pre_status) == ["CR-MRDpos", "CR-MRDneg"]
    assert [float(x) for x in course.pre_mrd] == [0.005, 0.00004]
    assert list(patient.person_id) == ["900001", "900002"] and set(patient.index_date) == {"2021-03-01"}
    assert main(["check", *_args(url)]) == 0, capsys.readouterr().out
