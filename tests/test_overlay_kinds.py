"""Site overlays (issue 11, finding 5): every kind of match and the site's own unit factors.

- a local source concept matched by (vocabulary_id, concept_code) of the row's ``*_source_concept_id``,
  resolved through the database's CONCEPT (the test writes the hospital's local concepts, ids above
  2,000,000,000, into CONCEPT; the overlay names only the pair);
- ``system:`` on an OMOP CDM not written by ``blina ingest`` is refused before any query;
- a unit the study does not list, with the site's factor to the canonical unit (validated, stamped into
  extract.json).

Both engines (fixture ``db``). Patients written with local codes are compared with a twin written
with standard codes: the course and patient rows must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_views_rules import CD3, NOT_DETECTED, Cdm, run

from blina_study.adapter.db import Database
from blina_study.adapter.study import StudyDefinition, StudyDefinitionError, load_overlay, load_study
from blina_study.adapter.views import extract

# The hospital's local vocabulary (written into CONCEPT by the test, as a hospital's own vocabulary is).
LOCAL = [  # (concept_id, vocabulary_id, concept_code, domain_id, concept_class_id)
    (2_000_500_001, "xyz_lab", "MRD_FLOW", "Measurement", "Lab Test"),
    (2_000_500_002, "xyz_lab", "BLAST_BM", "Measurement", "Lab Test"),
    (2_000_500_003, "xyz_rx", "BLINA_BAG", "Drug", "Clinical Drug"),
    (2_000_500_004, "xyz_lab", "CD3_ABS", "Measurement", "Lab Test"),
]


@pytest.fixture
def cdm(db: Database) -> Cdm:
    for cid, vocab, code, domain, cls in LOCAL:
        db.execute(f"insert into {db.qualified('vocab', 'concept')} (concept_id, concept_name, domain_id, "
                   "vocabulary_id, concept_class_id, standard_concept, concept_code, valid_start_date, "
                   "valid_end_date) values (:i, :n, :d, :v, :k, null, :c, :s, :e)",
                   {"i": cid, "n": f"local {code}", "d": domain, "v": vocab, "k": cls, "c": code,
                    "s": pd.Timestamp("2000-01-01").date(), "e": pd.Timestamp("2099-12-31").date()})
    return Cdm(db)


@pytest.fixture(scope="module")
def study() -> StudyDefinition:
    return load_study()


def _local(db: Database, vocab: str, code: str) -> int:
    return int(db.query(f"select concept_id from {db.qualified('vocab', 'concept')} "
                        "where vocabulary_id = :v and concept_code = :c", {"v": vocab, "c": code})[0][0])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _meas(cdm: Cdm, pid: int, when: int, source: tuple[str, str], value: float | None, *,
          answer: tuple[str, str] | None = None) -> None:
    """A lab row as a hospital ETL writes an unmapped local code: concept 0, the local source concept,
    no unit concept (the unit is the overlay's)."""
    i = next(cdm._ids)
    cdm._insert("measurement", {
        "measurement_id": i, "person_id": pid, "measurement_concept_id": 0,
        "measurement_source_concept_id": _local(cdm.db, *source), "measurement_source_value": "lab " + source[1],
        "measurement_date": pd.Timestamp("2021-03-01").date() + pd.Timedelta(days=when),
        "measurement_type_concept_id": 0, "value_as_number": value,
        "value_as_concept_id": cdm.concept(answer) if answer else None, "unit_concept_id": 0})


def _drug(cdm: Cdm, pid: int, start: int, end: int) -> None:
    i = next(cdm._ids)
    d0 = pd.Timestamp("2021-03-01").date()
    cdm._insert("drug_exposure", {
        "drug_exposure_id": i, "person_id": pid, "drug_concept_id": 0,
        "drug_source_concept_id": _local(cdm.db, "xyz_rx", "BLINA_BAG"), "drug_source_value": "bag",
        "drug_exposure_start_date": d0 + pd.Timedelta(days=start),
        "drug_exposure_end_date": d0 + pd.Timedelta(days=end), "drug_type_concept_id": 0})


def _standard_twin(cdm: Cdm, pid: int) -> None:
    cdm.person(pid, followup_end=400)
    cdm.blasts(pid, -5, 1.0)
    cdm.mrd(pid, -5, 0.3)
    cdm.meas(pid, -3, CD3, 0.45, unit="10*9/L")
    cdm.mrd(pid, 28, None, answer=NOT_DETECTED)
    cdm.meas(pid, 27, CD3, 0.9, unit="10*9/L")
    cdm.drug(pid, 0, 13)
    cdm.drug(pid, 14, 27)


def _same_rows(course: pd.DataFrame, a: int, b: int) -> None:
    x = course[course.person_id == a].drop(columns=["person_id", "person_source_value"]).reset_index(drop=True)
    y = course[course.person_id == b].drop(columns=["person_id", "person_source_value"]).reset_index(drop=True)
    assert len(x) == 1
    pd.testing.assert_frame_equal(x, y)


# ------------------------------------------------------------------ source concepts by (vocabulary, code)
def test_local_source_concepts_match_by_vocabulary_and_code(db: Database, cdm: Cdm, study: StudyDefinition,
                                                            tmp_path: Path) -> None:
    overlay = load_overlay(_write(tmp_path, (
        "site_id: test\n"
        "variables:\n"
        "  blinatumomab: [{vocabulary_id: xyz_rx, concept_code: BLINA_BAG}]\n"
        "  marrow_blasts: [{vocabulary_id: xyz_lab, concept_code: BLAST_BM, unit: '%'}]\n"
        "  mrd: [{vocabulary_id: xyz_lab, concept_code: MRD_FLOW, unit: '%'}]\n"
        "  cd3_abs: [{vocabulary_id: xyz_lab, concept_code: CD3_ABS, unit: /uL}]\n")), study)
    _standard_twin(cdm, 1)
    cdm.person(2, followup_end=400)
    _meas(cdm, 2, -5, ("xyz_lab", "BLAST_BM"), 1.0)
    _meas(cdm, 2, -5, ("xyz_lab", "MRD_FLOW"), 0.3)
    _meas(cdm, 2, -3, ("xyz_lab", "CD3_ABS"), 450.0)
    _meas(cdm, 2, 28, ("xyz_lab", "MRD_FLOW"), None, answer=NOT_DETECTED)
    _meas(cdm, 2, 27, ("xyz_lab", "CD3_ABS"), 900.0)
    _drug(cdm, 2, 0, 13)
    _drug(cdm, 2, 14, 27)
    course, patient = run(db, study, overlay)
    assert sorted(patient.person_id) == [1, 2]
    _same_rows(course, 1, 2)
    _same_rows(patient, 1, 2)
    row = course[course.person_id == 2].iloc[0]
    assert (row.pre_status, row.post_status) == ("CR-MRDpos", "CR-MRDneg")
    assert row.pre_mrd == pytest.approx(0.003) and row.cd3_pre == pytest.approx(0.45)
    # the local rows are study data only through the overlay
    course_std, _ = run(db, study)
    assert course_std.person_id.tolist() == [1]


def test_local_source_concept_is_resolved_through_concept_not_an_id(db: Database, cdm: Cdm,
                                                                    study: StudyDefinition, tmp_path: Path) -> None:
    """The same overlay on a database whose local MRD concept has another id still matches; a pair
    that is not in CONCEPT matches nothing (no fallback on the code alone)."""
    overlay = load_overlay(_write(tmp_path, (
        "site_id: test\nvariables:\n"
        "  blinatumomab: [{vocabulary_id: xyz_rx, concept_code: BLINA_BAG}]\n"
        "  mrd: [{vocabulary_id: xyz_lab, concept_code: MRD_FLOW, unit: '%'}]\n")), study)
    db.execute(f"update {db.qualified('vocab', 'concept')} set concept_id = 2000700001 "
               "where vocabulary_id = 'xyz_lab' and concept_code = 'MRD_FLOW'")
    cdm.person(1, followup_end=400)
    cdm.blasts(1, -5, 1.0)
    _meas(cdm, 1, -5, ("xyz_lab", "MRD_FLOW"), 0.3)
    _drug(cdm, 1, 0, 27)
    course, _ = run(db, study, overlay)
    assert course.pre_mrd.tolist() == [pytest.approx(0.003)]
    other = load_overlay(_write(tmp_path, (
        "site_id: test\nvariables:\n"
        "  blinatumomab: [{vocabulary_id: xyz_rx, concept_code: BLINA_BAG}]\n"
        "  mrd: [{vocabulary_id: other_lab, concept_code: MRD_FLOW, unit: '%'}]\n")), study)
    course, _ = run(db, study, other)
    assert course.pre_mrd.isna().tolist() == [True]


# ------------------------------------------------------------------ system: on OMOP
def test_system_on_an_omop_cdm_is_refused_before_any_query(db: Database, cdm: Cdm, study: StudyDefinition,
                                                           tmp_path: Path) -> None:
    overlay = load_overlay(_write(tmp_path, (
        "site_id: test\nvariables:\n"
        "  mrd: [{source_value: MRD-LOC, system: 'urn:oid:1.2.3.4.5.lab', unit: '%'}]\n")), study)
    _standard_twin(cdm, 1)
    with pytest.raises(StudyDefinitionError, match=r"variables\.mrd\[0\]\.system: a FHIR code system cannot be "
                       r"matched on this OMOP CDM") as err:
        run(db, study, overlay)
    assert "vocabulary_id" in err.value.hint and "drop system" in err.value.hint
    from blina_study.adapter.check import run_check

    with pytest.raises(StudyDefinitionError, match="FHIR code system"):
        run_check(db, study, overlay)
    with pytest.raises(StudyDefinitionError, match="FHIR code system"):
        extract(db, study, overlay, site_id="test", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_system_and_source_concept_entries_are_malformed_together(tmp_path: Path, study: StudyDefinition) -> None:
    cases = {
        "{vocabulary_id: xyz_lab, concept_code: MRD_FLOW, system: 'urn:x', unit: '%'}": "system qualifies a "
        "source_value",
        "{vocabulary_id: xyz_lab, unit: '%'}": "vocabulary_id and concept_code go together",
        "{source_value: M, vocabulary_id: xyz_lab, concept_code: MRD_FLOW, unit: '%'}": "either source_value",
        "{unit: '%'}": "give source_value, or vocabulary_id \\+ concept_code",
    }
    for entry, msg in cases.items():
        with pytest.raises(StudyDefinitionError, match=r"variables\.mrd\.0: .*" + msg):
            load_overlay(_write(tmp_path, f"site_id: test\nvariables:\n  mrd: [{entry}]\n"), study)


def test_source_concept_entry_is_refused_for_fhir_input(db: Database, study: StudyDefinition,
                                                        tmp_path: Path) -> None:
    from blina_study.adapter.fhir.ingest import ingest_fhir

    overlay = load_overlay(_write(tmp_path, (
        "site_id: test\nvariables:\n  mrd: [{vocabulary_id: xyz_lab, concept_code: MRD_FLOW, unit: '%'}]\n")),
        study)
    (tmp_path / "in.ndjson").write_text(json.dumps({"resourceType": "Patient", "id": "P"}) + "\n")
    with pytest.raises(StudyDefinitionError, match=r"variables\.mrd\[0\]: vocabulary_id \+ concept_code"):
        ingest_fhir(db, [tmp_path / "in.ndjson"], site_id="test", study=study, overlay=overlay)


# ------------------------------------------------------------------ the site's own units
def test_site_unit_with_its_factor_converts_and_is_stamped(db: Database, cdm: Cdm, study: StudyDefinition,
                                                           tmp_path: Path) -> None:
    overlay = load_overlay(_write(tmp_path, (
        "site_id: test\nvariables:\n"
        "  blinatumomab: [{vocabulary_id: xyz_rx, concept_code: BLINA_BAG}]\n"
        "  marrow_blasts: [{vocabulary_id: xyz_lab, concept_code: BLAST_BM, unit: '%'}]\n"
        "  mrd: [{vocabulary_id: xyz_lab, concept_code: MRD_FLOW, unit: fraction, unit_factor: 1}]\n"
        "  cd3_abs: [{vocabulary_id: xyz_lab, concept_code: CD3_ABS, unit: cells/uL, unit_factor: 0.001}]\n")),
        study)
    _standard_twin(cdm, 1)
    cdm.person(2, followup_end=400)
    _meas(cdm, 2, -5, ("xyz_lab", "BLAST_BM"), 1.0)
    _meas(cdm, 2, -5, ("xyz_lab", "MRD_FLOW"), 0.003)     # a fraction: 0.3 %
    _meas(cdm, 2, -3, ("xyz_lab", "CD3_ABS"), 450.0)      # cells/uL: 0.45 10^9/L
    _meas(cdm, 2, 28, ("xyz_lab", "MRD_FLOW"), None, answer=NOT_DETECTED)
    _meas(cdm, 2, 27, ("xyz_lab", "CD3_ABS"), 900.0)
    _drug(cdm, 2, 0, 13)
    _drug(cdm, 2, 14, 27)
    course, patient = run(db, study, overlay)
    _same_rows(course, 1, 2)
    paths = extract(db, study, overlay, site_id="test", out_dir=tmp_path / "out")
    stamp = json.loads(paths["extract.json"].read_text())["site_unit_factors"]
    assert stamp == [
        {"unit_family": "cells_per_litre", "unit": "cells/uL", "factor": 0.001, "canonical": "10*9/L"},
        {"unit_family": "fraction", "unit": "fraction", "factor": 1.0, "canonical": "1"},
    ]


@pytest.mark.parametrize("factor,msg", [
    ("0", "positive finite"), ("-0.001", "positive finite"), (".inf", "positive finite"),
    (".nan", "positive finite"), ("'0.001'", "valid number"), ("true", "valid number"),
])
def test_unit_factor_must_be_a_positive_finite_number(tmp_path: Path, study: StudyDefinition, factor: str,
                                                      msg: str) -> None:
    with pytest.raises(StudyDefinitionError, match=r"variables\.cd3_abs\.0.*" + msg) as e:
        load_overlay(_write(tmp_path, ("site_id: test\nvariables:\n"
                                       f"  cd3_abs: [{{source_value: C, unit: cells/uL, unit_factor: {factor}}}]\n")),
                     study)
    assert "Value error" not in str(e.value) and "(got dict)" not in str(e.value)


def test_unit_factor_rules(tmp_path: Path, study: StudyDefinition) -> None:
    def err(text: str) -> str:
        with pytest.raises(StudyDefinitionError) as e:
            load_overlay(_write(tmp_path, "site_id: test\nvariables:\n" + text), study)
        return str(e.value)

    # an unknown unit without a factor: refused with the form of the fix
    with pytest.raises(StudyDefinitionError, match="cannot be converted") as e:
        load_overlay(_write(tmp_path, "site_id: test\nvariables:\n  cd3_abs: [{source_value: C, unit: cells/uL}]\n"),
                     study)
    assert "unit_factor" in e.value.hint
    # a factor that contradicts the study's own factor for a listed unit
    assert "contradicts the study's factor 0.001" in err(
        "  cd3_abs: [{source_value: C, unit: /uL, unit_factor: 0.002}]\n")
    # one unit, two factors in one unit family
    assert "has factor 0.002 here and 0.001" in err(
        "  cd3_abs: [{source_value: C, unit: cells/uL, unit_factor: 0.001}]\n"
        "  cd4_abs: [{source_value: D, unit: cells/uL, unit_factor: 0.002}]\n")
    # a factor on a variable without a unit family
    assert "is not a quantity" in err("  blinatumomab: [{source_value: B, unit: x, unit_factor: 2}]\n")
    # a unit stated once with its factor serves the family's other entries
    ok = load_overlay(_write(tmp_path, "site_id: test\nvariables:\n"
                             "  cd3_abs: [{source_value: C, unit: cells/uL, unit_factor: 0.001}]\n"
                             "  cd4_abs: [{source_value: D, unit: cells/uL}]\n"), study)
    assert ok.site_units(study) == {("cells_per_litre", "cells/uL"): 0.001}


def test_system_is_applied_by_the_ingest_and_accepted_on_its_cdm(db: Database, study: StudyDefinition,
                                                                 tmp_path: Path) -> None:
    """On a CDM written by blina ingest the same overlay builds: the ingest loaded the coding of that
    system as MRD and left the same code of another system out."""
    from test_fhir_ingest import blina_admin, patient, quantity_obs, write_ndjson

    from blina_study.adapter.fhir.ingest import ingest_fhir

    overlay = load_overlay(_write(tmp_path, (
        "site_id: test\nvariables:\n  mrd: [{source_value: MRD-LOC, system: 'urn:lab', unit: '%'}]\n")), study)
    path = write_ndjson(tmp_path / "in.ndjson", [
        patient("P"),
        blina_admin("a1", "P", "2023-05-01", "2023-05-28"),
        quantity_obs("b1", "P", "11150-0", 1.0, "%", date="2023-04-26"),            # marrow blasts (LOINC)
        quantity_obs("m1", "P", "MRD-LOC", 0.3, "%", system="urn:lab", date="2023-04-26"),
        quantity_obs("m2", "P", "MRD-LOC", 9.0, "%", system="urn:elsewhere", date="2023-04-27"),
    ])
    rep = ingest_fhir(db, [path], site_id="test", study=study, overlay=overlay)
    assert rep.n_rejected == 0, rep.rejected
    course, _ = run(db, study, overlay)
    assert course.pre_mrd.tolist() == [pytest.approx(0.003)]
    assert course.pre_status.tolist() == ["CR-MRDpos"]


def test_report_run_info_shows_the_site_unit_factors() -> None:
    from blina_study.adapter.commands.report import run_info_parts

    info = {"parameters": {"course_gap_days": 7}, "site_unit_factors": [
        {"unit_family": "cells_per_litre", "unit": "cells/uL", "factor": 0.001, "canonical": "10*9/L"}]}
    _, fp, _ = run_info_parts(info)
    assert fp["site_unit_factors"] == "cells/uL = 0.001 10*9/L (cells_per_litre)"
    assert "site_unit_factors" not in run_info_parts({"parameters": {}, "site_unit_factors": []})[1]
