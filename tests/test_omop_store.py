"""The OMOP store: DDL on both engines, the vocabulary subset, the CSV loader."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from blina_study.adapter.db import connect, quote_ident
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.omop import create_cdm, field_spec, load_omop_csv, load_study_vocabulary, render_ddl


def test_ddl_creates_every_table_with_the_spec_columns(db):
    for table, fields in field_spec().items():
        schema = "vocab" if fields[0].schema_role == "vocab" else "cdm"
        assert db.table_columns(schema, table) == [f.column for f in fields], table


def test_ddl_is_idempotent(db):
    create_cdm(db)  # second run must not fail nor duplicate anything
    assert db.query("SELECT count(*) FROM vocab.concept")[0][0] > 100


def test_numeric_keeps_small_fractions(db):
    # DuckDB's bare NUMERIC is DECIMAL(18,3); an MRD of 1e-5 must survive a round trip.
    db.execute(
        "INSERT INTO cdm.measurement (measurement_id, person_id, measurement_concept_id, measurement_date,"
        " measurement_type_concept_id, value_as_number) VALUES (1, 1, 0, DATE '2024-01-02', 0, 0.00001)"
    )
    assert float(db.query("SELECT value_as_number FROM cdm.measurement")[0][0]) == pytest.approx(1e-5)


def test_vocabulary_reload_is_idempotent(db):
    before = db.query("SELECT count(*) FROM vocab.concept")[0][0]
    load_study_vocabulary(db)
    assert db.query("SELECT count(*) FROM vocab.concept")[0][0] == before


def test_postgres_ddl_has_primary_keys_and_indexes(db):
    if db.dialect != "postgresql":
        pytest.skip("indexes are PostgreSQL-only")
    idx = {r[0] for r in db.query("SELECT indexname FROM pg_indexes WHERE schemaname IN ('cdm', 'vocab')")}
    assert {"xpk_measurement", "idx_measurement_concept_id_1", "idx_concept_ancestor_id_1"} <= idx


def test_render_differs_only_in_numeric_type():
    duck = render_ddl("duckdb", cdm_schema="cdm", vocab_schema="vocab")
    pg = render_ddl("postgresql", cdm_schema="cdm", vocab_schema="vocab")
    assert [s.replace("DOUBLE", "NUMERIC") for s in duck] == pg


@pytest.mark.parametrize("bad", ["cdm;drop", "1abc", "a b", "x" * 64, ""])
def test_identifiers_are_validated(bad):
    with pytest.raises(BlinaError):
        quote_ident(bad)
    with pytest.raises(BlinaError):
        connect(":memory:", cdm_schema=bad)


def _write(folder: Path, name: str, text: str, gz: bool = False) -> None:
    if gz:
        with gzip.open(folder / (name + ".gz"), "wt") as fh:
            fh.write(text)
    else:
        (folder / name).write_text(text)


def test_csv_loader_accounts_for_every_row(db, tmp_path):
    tmp_path = tmp_path / "export"
    tmp_path.mkdir()
    _write(tmp_path, "PERSON.csv",
           "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id,person_source_value\n"
           "1,8507,2012,0,0,MRN1\n2,8532,2014,0,0,MRN2\nx,8532,2014,0,0,MRN3\n")
    _write(tmp_path, "measurement.csv",
           "measurement_id,person_id,measurement_concept_id,measurement_date,measurement_type_concept_id,"
           "value_as_number,measurement_source_value\n"
           "1,1,0,2024-01-05,32817,0.02,MRD-FCM\n"
           "2,1,0,20240106,32817,,MRD-FCM\n"
           "3,1,0,2024-13-01,32817,1,MRD-FCM\n"
           "4,1,0,2024-01-07,32817,abc,MRD-FCM\n"
           "5,1,0,,32817,1,MRD-FCM\n", gz=True)
    _write(tmp_path, "notes.txt", "not a table")
    report = load_omop_csv(db, tmp_path)
    assert report.rows_read == 8
    assert report.loaded == {"person": 2, "measurement": 2}
    assert report.balanced()
    lines = {(Path(r.file).name, r.line) for r in report.rejected}
    assert lines == {("PERSON.csv", 4), ("measurement.csv.gz", 4), ("measurement.csv.gz", 5),
                     ("measurement.csv.gz", 6)}
    reasons = " | ".join(r.reason for r in report.rejected)
    assert "person_id: 'x' is not a whole number" in reasons
    assert "measurement_date: '2024-13-01' is not a date" in reasons
    assert "value_as_number: 'abc' is not a number" in reasons
    assert "measurement_date is required but empty" in reasons
    assert report.skipped_files == ["notes.txt"]
    # replace mode: loading the same folder again leaves the same rows
    load_omop_csv(db, tmp_path)
    assert db.query("SELECT count(*) FROM cdm.measurement")[0][0] == 2


def test_csv_loader_refuses_unknown_columns_atomically(db, tmp_path):
    tmp_path = tmp_path / "export"
    tmp_path.mkdir()
    _write(tmp_path, "person.csv",
           "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id\n1,8507,2012,0,0\n")
    _write(tmp_path, "visit_occurrence.csv", "visit_occurrence_id,person_id,bogus\n1,1,2\n")
    with pytest.raises(BlinaError, match="unknown column.*bogus"):
        load_omop_csv(db, tmp_path)
    assert db.query("SELECT count(*) FROM cdm.person")[0][0] == 0  # the whole load rolled back


def test_csv_loader_refuses_missing_required_column(db, tmp_path):
    tmp_path = tmp_path / "export"
    tmp_path.mkdir()
    _write(tmp_path, "person.csv", "person_id,year_of_birth\n1,2012\n")
    with pytest.raises(BlinaError, match="missing required column"):
        load_omop_csv(db, tmp_path)


def test_connection_survives_a_failed_statement(db):
    # PostgreSQL leaves a failed implicit transaction aborted unless it is rolled back.
    with pytest.raises(Exception):  # noqa: B017 - engine-specific error classes
        db.query("SELECT * FROM cdm.no_such_table")
    assert db.query("SELECT count(*) FROM vocab.concept")[0][0] > 100
