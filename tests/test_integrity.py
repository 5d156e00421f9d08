"""Issue 16 (points 3 and 5): secrets never printed, identifiers validated before any work, the
hospital's CDM never altered, and failed runs leave nothing behind. Database tests run on both engines."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from blina_study.adapter.cli import main
from blina_study.adapter.db import Database, connect, mask_url, validate_schema, validate_site_id
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.omop import create_cdm, load_study_vocabulary

SECRET = "hunter2"


# ------------------------------------------------------------------------------------- URL masking
@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}@h:5432/db",
    f"postgresql://u@h/db?password={SECRET}",
    f"postgresql://u@h/db?sslmode=require&sslpassword={SECRET}&application_name=x",
    f"postgresql://u@h/db?sslkey=/keys/{SECRET}.key",
    f"postgresql://u@h/db?PassFile=/home/{SECRET}",
    f"postgresql://u:ab@{SECRET}@h/db",  # an unencoded @ in the password
    f"postgresql://u:{SECRET}?x@h/db",
    f"postgresql://u:a/{SECRET}@h/db",
])
def test_mask_url_hides_every_secret(url: str) -> None:
    masked = mask_url(url)
    assert SECRET not in masked and "***" in masked
    assert masked.startswith("postgresql://u")


def test_mask_url_keeps_what_is_not_secret() -> None:
    assert mask_url("postgresql://u@h:5432/db?application_name=a") == "postgresql://u@h:5432/db?application_name=a"
    assert mask_url("site.duckdb") == "site.duckdb"
    assert mask_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db"


@pytest.mark.parametrize("url", [
    f"postgresql://postgres@127.0.0.1:1/x?password={SECRET}",
    f"postgresql://postgres:ab@{SECRET}@127.0.0.1:1/x",
])
def test_connection_errors_never_print_secrets(url: str, capsys) -> None:
    rc = main(["init-db", "--db", url])
    err = capsys.readouterr().err
    assert rc == 2 and SECRET not in err and "***" in err


def test_success_message_never_prints_a_query_password(engine_url: str, capsys) -> None:
    if not engine_url.startswith("postgresql"):
        pytest.skip("a URL with a password is a PostgreSQL URL")
    schema = f"s_{uuid.uuid4().hex[:8]}"
    url = f"{engine_url}?password={SECRET}&sslpassword={SECRET}"  # trust auth: the server ignores both
    try:
        assert main(["init-db", "--db", url, "--cdm-schema", schema, "--no-vocabulary"]) == 0
        out = capsys.readouterr()
        assert SECRET not in out.out + out.err and "password=***" in out.out
    finally:
        with connect(engine_url) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_port_that_is_not_a_number_is_a_usage_error(capsys) -> None:
    rc = main(["init-db", "--db", f"postgresql://u:{SECRET}@127.0.0.1:abc/x"])
    err = capsys.readouterr().err
    assert rc == 2 and "internal error" not in err and SECRET not in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------- identifiers
BAD_SITE_IDS = ["", " ", "c 1", "c1\n", "c1\t", "x" * 41, "a'; DROP TABLE person; --", "c\u00e91", "c1\x00"]


@pytest.mark.parametrize("site", BAD_SITE_IDS)
def test_site_id_pattern(site: str) -> None:
    with pytest.raises(BlinaError):
        validate_site_id(site)


@pytest.mark.parametrize("site", ["c1", "center-2", "A_b-9", "x" * 40])
def test_good_site_ids_pass(site: str) -> None:
    assert validate_site_id(site) == site


@pytest.mark.parametrize("name", ["cdm\n", "cdm ", "", "a;b", "x" * 64, "information_schema", "pg_catalog",
                                  "pg_toast", "PG_temp_1", "Information_Schema"])
def test_schema_pattern_and_system_schemas(name: str) -> None:
    with pytest.raises(BlinaError):
        validate_schema(name)
    with pytest.raises(BlinaError):
        connect(":memory:", cdm_schema=name)


@pytest.mark.parametrize(("flag", "value"), [("--site", "c1\n"), ("--site", "x" * 41), ("--site", "a b"),
                                             ("--cdm-schema", "cdm\n"), ("--cdm-schema", "information_schema"),
                                             ("--vocab-schema", "pg_catalog")])
def test_ingest_refuses_bad_identifiers_before_any_work(engine_url: str, tmp_path: Path, capsys,
                                                        flag: str, value: str) -> None:
    folder = _one_patient_export(tmp_path)
    args = {"--site": "c1", "--cdm-schema": "cdm", "--vocab-schema": "vocab", flag: value}
    if engine_url.startswith("postgresql"):
        with connect(engine_url) as db:
            before = _schemas(db)
    rc = main(["ingest", str(folder), "--db", engine_url, *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: invalid") or "system schema" in err, err
    assert err.count("\n") == 1
    if engine_url.startswith("postgresql"):
        with connect(engine_url) as db:
            assert _schemas(db) == before
    else:
        assert not Path(engine_url).exists()  # not even opened


def test_site_run_refuses_a_trailing_newline_in_the_site_id(tmp_path: Path, capsys) -> None:
    rc = main(["site-run", "--db", str(tmp_path / "x.duckdb"), "--site-id", "c1\n", "--out", str(tmp_path / "o.zip")])
    assert rc == 2 and "invalid --site-id" in capsys.readouterr().err
    assert not (tmp_path / "x.duckdb").exists()


def test_init_db_refuses_system_schemas(engine_url: str, capsys) -> None:
    rc = main(["init-db", "--db", engine_url, "--cdm-schema", "information_schema", "--no-vocabulary"])
    assert rc == 2 and "system schema" in capsys.readouterr().err


# --------------------------------------------------------------------- the hospital CDM is not altered
def test_existing_cdm_with_other_key_names_is_never_altered(engine_url: str) -> None:
    """A hospital CDM whose person key is not named xpk_person: create_cdm (run by ingest) neither fails
    nor adds keys or indexes to it."""
    if not engine_url.startswith("postgresql"):
        pytest.skip("keys and indexes are made on PostgreSQL only")
    schema = f"h_{uuid.uuid4().hex[:8]}"
    with connect(engine_url, cdm_schema=schema, vocab_schema=schema) as db:
        try:
            db.execute(f'CREATE SCHEMA "{schema}"')
            db.execute(f'CREATE TABLE "{schema}".person (person_id BIGINT NOT NULL, gender_concept_id INTEGER, '
                       "year_of_birth INTEGER, race_concept_id INTEGER, ethnicity_concept_id INTEGER, "
                       "CONSTRAINT hospital_person_pk PRIMARY KEY (person_id))")
            create_cdm(db)
            cons = db.query("SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                            "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = :s "
                            "AND t.relname = 'person'", {"s": schema})
            idx = db.query("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND tablename = 'person'",
                           {"s": schema})
            assert [c[0] for c in cons] == ["hospital_person_pk"]
            assert [i[0] for i in idx] == ["hospital_person_pk"]
            # tables created now do get their keys
            assert db.query("SELECT count(*) FROM pg_constraint WHERE conname = 'xpk_visit_occurrence' AND "
                            "connamespace = (SELECT oid FROM pg_namespace WHERE nspname = :s)", {"s": schema})[0][0]
        finally:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ------------------------------------------------------------------------ failures leave nothing behind
def _one_patient_export(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    (folder / "Patient.ndjson").write_text(json.dumps(
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "2012-03-04"}) + "\n")
    return folder


def _schemas(db: Database) -> set[str]:
    return {r[0] for r in db.query("SELECT schema_name FROM information_schema.schemata")}


def _prepared(engine_url: str) -> None:
    with connect(engine_url, cdm_schema="cdm", vocab_schema="vocab") as db:
        create_cdm(db)
        load_study_vocabulary(db)


def test_mistyped_cdm_schema_leaves_no_schema(engine_url: str, tmp_path: Path, capsys) -> None:
    _prepared(engine_url)
    with connect(engine_url) as db:
        before = _schemas(db)
    typo = f"cmd_{uuid.uuid4().hex[:6]}"
    rc = main(["ingest", str(_one_patient_export(tmp_path)), "--site", "c1", "--db", engine_url,
               "--cdm-schema", typo])  # vocabulary defaults to the (empty, new) CDM schema: the run fails
    assert rc == 2, capsys.readouterr()
    with connect(engine_url) as db:
        assert _schemas(db) == before


def test_missing_duckdb_file_is_not_created(tmp_path: Path, capsys) -> None:
    target = tmp_path / "typo.duckdb"
    rc = main(["ingest", str(_one_patient_export(tmp_path)), "--site", "c1", "--db", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and "init-db" in err and not target.exists()
    assert not list(tmp_path.glob("typo.duckdb*"))


def test_report_into_a_missing_folder_fails_before_any_commit(engine_url: str, tmp_path: Path, capsys) -> None:
    _prepared(engine_url)
    rc = main(["ingest", str(_one_patient_export(tmp_path)), "--site", "c1", "--db", engine_url,
               "--cdm-schema", "cdm", "--vocab-schema", "vocab", "--report", str(tmp_path / "nope" / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "folder does not exist" in err
    with connect(engine_url, cdm_schema="cdm", vocab_schema="vocab") as db:
        assert db.query("SELECT count(*) FROM cdm.person")[0][0] == 0


def test_ingest_of_a_folder_without_fhir_files_is_a_finding(engine_url: str, tmp_path: Path, capsys) -> None:
    _prepared(engine_url)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("not FHIR")
    rc = main(["ingest", str(empty), "--site", "c1", "--db", engine_url, "--cdm-schema", "cdm",
               "--vocab-schema", "vocab"])
    err = capsys.readouterr().err
    assert rc == 1 and "no FHIR file" in err and err.count("\n") == 1


def test_failed_ingest_leaves_no_quarantine_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rejected.ndjson"
    db_path = tmp_path / "x.duckdb"
    connect(str(db_path)).close()  # exists, but has no vocabulary: the run fails
    rc = main(["ingest", str(_one_patient_export(tmp_path)), "--site", "c1", "--db", str(db_path),
               "--quarantine", str(out)])
    assert rc == 2, capsys.readouterr()
    assert not out.exists()


def test_load_omop_of_a_folder_without_csv_is_a_finding(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    rc = main(["load-omop", str(folder), "--db", str(tmp_path / "x.duckdb")])
    err = capsys.readouterr().err
    assert rc == 1 and "no OMOP CSV file" in err and err.count("\n") == 1
    assert not (tmp_path / "x.duckdb").exists()


def test_site_run_out_folder_leaves_no_partial(tmp_path: Path, capsys) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    rc = main(["site-run", "--db", str(tmp_path / "x.duckdb"), "--site-id", "c1", "--out", str(out)])
    assert rc == 2 and "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "pkg.partial").exists() and not (tmp_path / "x.duckdb").exists()


def test_non_utf8_study_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    study = tmp_path / "study.yaml"
    study.write_bytes(b"study_id: caf\xe9\n")
    rc = main(["build", "--db", str(tmp_path / "x.duckdb"), "--study", str(study)])
    err = capsys.readouterr().err
    assert rc == 2 and "not UTF-8" in err and "internal error" not in err
