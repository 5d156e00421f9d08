"""The SQL layer itself: headers match what each file reads, dependency order, no concept ids, bound
site-local strings, read-only build (a SELECT-only PostgreSQL role), persist, extract, and the two
engines giving equal frames."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pandas as pd
import pytest
from _helpers import concept_id, insert_row

from blina_study.adapter.db import Database, connect
from blina_study.adapter.omop import create_cdm, load_study_vocabulary
from blina_study.adapter.resources import sql_dir
from blina_study.adapter.study import SiteOverlay, StudyDefinition, load_overlay, load_study
from blina_study.adapter.views import (
    COURSE_COLUMNS,
    INPUT_RELATIONS,
    PATIENT_COLUMNS,
    SqlModel,
    ViewsError,
    build,
    creation_order,
    extract,
    input_fingerprint,
    load_models,
    persist,
    render,
)

D0 = dt.date(2022, 1, 10)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


@pytest.fixture(scope="module")
def study() -> StudyDefinition:
    return load_study()


@pytest.fixture(scope="module")
def models() -> dict[str, SqlModel]:
    return load_models()


# ----------------------------------------------------------------------------- static checks
def test_every_model_declares_exactly_what_it_reads(models: dict[str, SqlModel]) -> None:
    for m in models.values():
        assert m.grain and m.keys, f"{m.path}: grain and keys must be stated"
        assert set(m.depends_on) == m.referenced(), (
            f"{m.path}: depends_on {sorted(m.depends_on)} != relations read {sorted(m.referenced())}")


def test_layers_read_only_from_lower_layers(models: dict[str, SqlModel]) -> None:
    rank = {"staging": 0, "intermediate": 1, "study": 2}
    for m in models.values():
        sources = [d for d in m.depends_on if "." in d]
        if m.layer == "staging":
            assert len(sources) == 1 and not m.relation_deps(), f"{m.path}: staging reads one CDM table"
            assert m.name == "stg_" + sources[0].split(".")[1]
            assert not re.search(r"\b(join|group by)\b", m.body, re.I), f"{m.path}: staging only renames/filters"
        else:
            assert not sources, f"{m.path}: only staging reads CDM tables"
            for dep in m.relation_deps():
                if dep not in INPUT_RELATIONS:
                    assert rank[models[dep].layer] <= rank[m.layer], f"{m.path} reads {dep} of a later layer"


def test_no_concept_id_or_long_number_in_sql() -> None:
    for path in sorted(sql_dir().glob("*/*.sql")):
        if path.parent.name == "ddl":
            continue
        code = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        assert not re.search(r"\d{7,}", code), f"{path}: a 7+ digit number (concept id?) in SQL"
        assert not re.search(r"concept_id\s*(=|in)\s*\(?\s*\d", code), f"{path}: a concept id literal"


def test_creation_order_is_topological(models: dict[str, SqlModel]) -> None:
    order = creation_order(models)
    pos = {n: i for i, n in enumerate(order)}
    assert set(order) == set(models)
    for m in models.values():
        for dep in m.relation_deps():
            if dep not in INPUT_RELATIONS:
                assert pos[dep] < pos[m.name], f"{dep} must come before {m.name}"
    assert set(creation_order(models, ("course",))) < set(order)


def test_cycle_and_unknown_dependency_are_reported(tmp_path: Path) -> None:
    for layer in ("staging", "intermediate", "study"):
        (tmp_path / layer).mkdir()
    head = "-- grain: one row\n-- keys: k\n"
    (tmp_path / "intermediate" / "int_a.sql").write_text(head + "-- depends_on: int_b\nselect * from int_b\n")
    (tmp_path / "intermediate" / "int_b.sql").write_text(head + "-- depends_on: int_a\nselect * from int_a\n")
    models = load_models(tmp_path)
    with pytest.raises(ViewsError, match="cycle"):
        creation_order(models)
    (tmp_path / "study" / "out.sql").write_text(head + "-- depends_on: int_nope\nselect 1\n")
    with pytest.raises(ViewsError, match="int_nope"):
        load_models(tmp_path)
    (tmp_path / "study" / "out.sql").write_text("-- grain: x\nselect 1\n")
    with pytest.raises(ViewsError, match=r"out\.sql:1: header line '-- keys"):
        load_models(tmp_path)


# ----------------------------------------------------------------------------- data helpers
def _small_site(db: Database) -> None:
    """Two patients: one with standard codes, one with local MRD codes (for an overlay)."""
    blina = concept_id(db, "RxNorm", "1597262")
    blasts, mrd = concept_id(db, "LOINC", "11150-0"), concept_id(db, "BLINA", "MRD-FCM-BM")
    pct = concept_id(db, "UCUM", "%")
    female = concept_id(db, "Gender", "F")
    mid = iter(range(1, 1000))
    for pid in (1, 2):
        insert_row(db, "person", {"person_id": pid, "gender_concept_id": female, "year_of_birth": 2014,
                               "month_of_birth": 2, "day_of_birth": 3, "race_concept_id": 0,
                               "ethnicity_concept_id": 0, "person_source_value": f"P{pid}"})
        insert_row(db, "observation_period", {"observation_period_id": pid, "person_id": pid,
                                           "observation_period_start_date": day(-100),
                                           "observation_period_end_date": day(200),
                                           "period_type_concept_id": 0})
        insert_row(db, "drug_exposure", {"drug_exposure_id": pid, "person_id": pid, "drug_concept_id": blina,
                                      "drug_exposure_start_date": day(0), "drug_exposure_end_date": day(27),
                                      "drug_type_concept_id": 0})
        insert_row(db, "measurement", {"measurement_id": next(mid), "person_id": pid,
                                    "measurement_concept_id": blasts, "measurement_date": day(-3),
                                    "measurement_type_concept_id": 0, "value_as_number": 1.5,
                                    "unit_concept_id": pct})
    insert_row(db, "measurement", {"measurement_id": next(mid), "person_id": 1, "measurement_concept_id": mrd,
                                "measurement_date": day(-3), "measurement_type_concept_id": 0,
                                "value_as_number": 0.2, "unit_concept_id": pct})
    insert_row(db, "measurement", {"measurement_id": next(mid), "person_id": 2, "measurement_concept_id": 0,
                                "measurement_date": day(-3), "measurement_type_concept_id": 0,
                                "value_as_number": 0.2, "measurement_source_value": "LOCAL-MRD-X7",
                                "unit_source_value": "pct"})


def _overlay(tmp_path: Path, study: StudyDefinition) -> SiteOverlay:
    path = tmp_path / "overlay.yaml"
    path.write_text("site_id: siteA\nvariables:\n  mrd: [{source_value: LOCAL-MRD-X7, unit: '%'}]\n")
    return load_overlay(path, study)


# ----------------------------------------------------------------------------- render / build
def test_render_binds_site_local_strings(db: Database, study: StudyDefinition, tmp_path: Path) -> None:
    overlay = _overlay(tmp_path, study)
    r = render(study, overlay, db)
    assert set(r.queries) == {"course", "patient", "lineage"}
    for name, sql in r.queries.items():
        assert "LOCAL-MRD-X7" not in sql and "siteA" not in sql, f"{name}: a site-local string was pasted"
        assert "LOCAL-MRD-X7" in r.params[name].values() and "siteA" in r.params[name].values()
        assert not re.search(r"\b(create|insert|update|delete|drop|alter)\b", re.sub(r"--[^\n]*", "", sql), re.I)
    text = r.text()
    assert text.count("-- ===== output:") == 3 and '"cdm".measurement' in text


def test_overlay_rows_counted_only_with_overlay(db: Database, study: StudyDefinition, tmp_path: Path) -> None:
    _small_site(db)
    course, _ = build(db, study, site_id="siteA")
    assert course.pre_status.tolist() == ["CR-MRDpos", "unknown"]
    course, patient = build(db, study, _overlay(tmp_path, study))
    assert course.pre_status.tolist() == ["CR-MRDpos", "CR-MRDpos"]
    assert course.pre_mrd.tolist() == pytest.approx([2e-3, 2e-3])
    assert (course.site_id == "siteA").all() and len(patient) == 2


def test_site_id_required_and_validated(db: Database, study: StudyDefinition) -> None:
    from blina_study.adapter.errors import BlinaError

    with pytest.raises(BlinaError, match="no site id"):
        render(study, None, db)
    with pytest.raises(BlinaError, match="invalid site id"):
        render(study, None, db, site_id="a'; drop table x; --")


def test_missing_table_is_a_clear_error(study: StudyDefinition, tmp_path: Path) -> None:
    from blina_study.adapter.errors import BlinaError

    db = connect(str(tmp_path / "empty.duckdb"))
    with pytest.raises(BlinaError, match="building course and patient failed") as err:
        build(db, study, site_id="x")
    assert "blina check" in str(err.value)
    db.close()


def test_persist_creates_views_in_results_schema(db: Database, study: StudyDefinition, tmp_path: Path) -> None:
    _small_site(db)
    overlay = _overlay(tmp_path, study)
    created = persist(db, study, overlay, results_schema="results")
    assert "results.course" in created and "results.study_codes" in created
    course, patient = build(db, study, overlay)
    from_view = db.query_df('select * from "results"."course" order by person_id, course_number')
    assert list(from_view.columns) == list(COURSE_COLUMNS)
    assert from_view.pre_status.tolist() == course.pre_status.tolist()
    assert db.query('select count(*) from "results"."patient"')[0][0] == len(patient)
    persist(db, study, overlay, results_schema="results")      # idempotent: replaces


def test_extract_writes_contract_files_and_sidecar(db: Database, study: StudyDefinition, tmp_path: Path) -> None:
    _small_site(db)
    paths = extract(db, study, _overlay(tmp_path, study), out_dir=tmp_path / "out")
    course = pd.read_parquet(paths["course.parquet"])
    patient = pd.read_csv(paths["patient.csv"])
    assert list(course.columns) == list(COURSE_COLUMNS) and list(patient.columns) == list(PATIENT_COLUMNS)
    assert len(course) == 2
    lineage = pd.read_csv(paths["lineage.csv"])
    sources = set(lineage[lineage.derived == "course"].source)
    assert sources == {"drug_exposure:1", "drug_exposure:2"}
    assert "measurement:3" in set(lineage[lineage.derived == "pre_mrd"].source)
    side = json.loads(paths["extract.json"].read_text())
    assert side["parameters"]["course_gap_days"] == 7 and side["study_fingerprint"] == study.fingerprint()
    assert side["input_fingerprint"]["tables"]["measurement"] == {"rows": 4, "max": "4"}
    assert side["version"] and side["site_id"] == "siteA" and side["rows"]["course"] == 2


def test_engines_give_equal_frames(request: pytest.FixtureRequest, tmp_path: Path, study: StudyDefinition) -> None:
    pg = request.getfixturevalue("postgresql").info
    frames = []
    for url in (str(tmp_path / "a.duckdb"), f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}"):
        with connect(url, cdm_schema="cdm", vocab_schema="vocab") as db:
            create_cdm(db)
            load_study_vocabulary(db)
            _small_site(db)
            frames.append(build(db, study, _overlay(tmp_path, study)))
    for a, b in zip(frames[0], frames[1], strict=True):
        pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------- SELECT-only role
def _pg_counts(db: Database) -> tuple[int, int]:
    return db.query("select (select count(*) from pg_class), (select count(*) from pg_namespace)")[0]


def test_build_as_select_only_role_creates_nothing(request: pytest.FixtureRequest, study: StudyDefinition,
                                                  tmp_path: Path) -> None:
    from blina_study.adapter.errors import BlinaError

    pg = request.getfixturevalue("postgresql").info
    admin_url = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}"
    role = "blina_reader_" + uuid.uuid4().hex[:8]
    admin = connect(admin_url, cdm_schema="cdm", vocab_schema="vocab")
    create_cdm(admin)
    load_study_vocabulary(admin)
    _small_site(admin)
    expected = build(admin, study, _overlay(tmp_path, study))
    admin.execute(f'create role "{role}" login')
    try:
        admin.execute(f'revoke all on database "{pg.dbname}" from public')   # no TEMP via PUBLIC
        admin.execute(f'grant connect on database "{pg.dbname}" to "{role}"')
        admin.execute("revoke create on schema public from public")
        for schema in ("cdm", "vocab"):
            admin.execute(f'grant usage on schema "{schema}" to "{role}"')
            admin.execute(f'grant select on all tables in schema "{schema}" to "{role}"')
        before = _pg_counts(admin)
        reader_url = f"postgresql://{role}@{pg.host}:{pg.port}/{pg.dbname}"
        with connect(reader_url, cdm_schema="cdm", vocab_schema="vocab") as reader:
            got = build(reader, study, _overlay(tmp_path, study))
        assert _pg_counts(admin) == before
        for stmt in ('create table "cdm".x (i int)', "create temporary table x (i int)",
                     'create view "vocab".v as select 1 as i', "create schema results"):
            with connect(reader_url) as reader, pytest.raises(Exception, match="permission denied"):
                reader.execute(stmt)
        with connect(reader_url, cdm_schema="cdm", vocab_schema="vocab") as reader, \
                pytest.raises(BlinaError, match="cannot create the study views"):
            persist(reader, study, _overlay(tmp_path, study), results_schema="results")
        assert _pg_counts(admin) == before
        for a, b in zip(expected, got, strict=True):
            pd.testing.assert_frame_equal(a, b)
    finally:
        admin.execute(f'drop owned by "{role}"')
        admin.execute(f'drop role "{role}"')
        admin.close()


def test_input_fingerprint_covers_the_study_patients_only(db: Database, study: StudyDefinition) -> None:
    _small_site(db)
    before = input_fingerprint(db, study, site_id="siteA")
    assert before["tables"]["measurement"] == {"rows": 4, "max": "4"} and before["tables"]["person"]["rows"] == 2
    # a person who never had blinatumomab: nothing the outputs depend on, the fingerprint stays
    insert_row(db, "person", {"person_id": 3, "gender_concept_id": 0, "year_of_birth": 2010, "race_concept_id": 0,
                           "ethnicity_concept_id": 0, "person_source_value": "P3"})
    insert_row(db, "measurement", {"measurement_id": 50, "person_id": 3, "measurement_concept_id": 0,
                                "measurement_date": day(5), "measurement_type_concept_id": 0})
    assert input_fingerprint(db, study, site_id="siteA") == before
    assert input_fingerprint(db)["tables"]["person"]["rows"] == 3       # whole-table form still counts them
    # any new record of a study patient (even an irrelevant one: it can move follow-up) changes it
    insert_row(db, "measurement", {"measurement_id": 51, "person_id": 1, "measurement_concept_id": 0,
                                "measurement_date": day(300), "measurement_type_concept_id": 0})
    after = input_fingerprint(db, study, site_id="siteA")
    assert after["sha256"] != before["sha256"] and after["tables"]["measurement"] == {"rows": 5, "max": "51"}
    # the vocabulary counts by what the study resolves from it and by its versions, never by a CONCEPT scan
    assert after["tables"]["vocab.concept_sets"]["rows"] > 20 and "vocab.concept" not in after["tables"]
    db.execute("insert into vocab.concept (concept_id, concept_name, domain_id, vocabulary_id, concept_class_id, "
               "concept_code, valid_start_date, valid_end_date) values (987654321, 'unrelated', 'Drug', 'RxNorm', "
               "'Ingredient', 'X-UNRELATED', DATE '2000-01-01', DATE '2099-12-31')")
    assert input_fingerprint(db, study, site_id="siteA") == after
    # a descendant of a study code joins a concept set: the outputs may change, so does the fingerprint
    blina = db.query("select concept_id from vocab.concept where vocabulary_id = 'RxNorm' and concept_code = '1597258'")
    db.execute(f"insert into vocab.concept_ancestor (ancestor_concept_id, descendant_concept_id, "
               f"min_levels_of_separation, max_levels_of_separation) values ({blina[0][0]}, 987654321, 1, 1)")
    db.execute("update vocab.concept set standard_concept = 'S' where concept_id = 987654321")
    moved = input_fingerprint(db, study, site_id="siteA")
    assert moved["tables"]["vocab.concept_sets"] != after["tables"]["vocab.concept_sets"]
    db.execute("update vocab.vocabulary set vocabulary_version = 'v5.0 01-JAN-27' where vocabulary_id = 'RxNorm'")
    assert input_fingerprint(db, study, site_id="siteA")["tables"]["vocab.vocabulary"] != \
        moved["tables"]["vocab.vocabulary"]
