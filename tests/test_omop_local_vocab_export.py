"""Acceptance (issue 11): an OMOP CSV export that carries its own vocabulary, with the hospital's local
concepts above 2,000,000,000 (a clinical-drug blinatumomab concept linked to the RxNorm ingredient by
CONCEPT_ANCESTOR), gives the right course / patient tables through the README's commands alone
(``blina load-omop``, then ``blina extract``), on both engines. Without the export's CONCEPT_ANCESTOR row
the local drug is not blinatumomab: extract finds no study patient and says why (exit 1)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from blina_study.adapter.cli import main
from blina_study.adapter.omop.vocabulary import study_concepts

LOCAL_DRUG = 2100000001  # the hospital's own concept: above 2,000,000,000
LOCAL_MRD = 2100000002  # the hospital lab's MRD test (a source concept, not standard)
INGREDIENT = ("RxNorm", "1597258")


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _export(folder: Path, *, with_ancestor: bool = True, local_mrd: bool = False) -> None:
    """``local_mrd``: MRD rows as a hospital ETL writes an unmapped lab test: measurement_concept_id 0,
    measurement_source_concept_id = the hospital's own concept (vocabulary xyz_lab, code MRD_FLOW), no
    unit concept; the site overlay names the pair and the unit."""
    folder.mkdir()
    subset = study_concepts()
    # the export's vocabulary: real study codes (the subset's rows) minus the subset's blinatumomab
    # products, plus the hospital's own clinical drug
    subset = subset[~((subset.vocabulary_id == "RxNorm") & (subset.concept_class_id == "Clinical Drug"))]
    concepts = [{k: r[k] for k in ("concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
                                   "standard_concept", "concept_code")}
                | {"valid_start_date": "1970-01-01", "valid_end_date": "2099-12-31", "invalid_reason": ""}
                for _, r in subset.iterrows()]
    concepts.append({"concept_id": LOCAL_DRUG, "concept_name": "blinatumomab 35 MCG kit (hospital formulary)",
                     "domain_id": "Drug", "vocabulary_id": "HOSP_RX", "concept_class_id": "Clinical Drug",
                     "standard_concept": "S", "concept_code": "BLINA-KIT-35", "valid_start_date": "2015-01-01",
                     "valid_end_date": "2099-12-31", "invalid_reason": ""})
    if local_mrd:
        concepts.append({"concept_id": LOCAL_MRD, "concept_name": "MRD flow cytometry, bone marrow (hospital lab)",
                         "domain_id": "Measurement", "vocabulary_id": "xyz_lab", "concept_class_id": "Lab Test",
                         "standard_concept": "", "concept_code": "MRD_FLOW", "valid_start_date": "2015-01-01",
                         "valid_end_date": "2099-12-31", "invalid_reason": ""})
    _write(folder / "CONCEPT.csv", concepts)
    ids = {(r["vocabulary_id"], r["concept_code"]): r["concept_id"] for r in concepts}
    ingredient = ids[INGREDIENT]
    ancestors = [{"ancestor_concept_id": ingredient, "descendant_concept_id": ingredient,
                  "min_levels_of_separation": 0, "max_levels_of_separation": 0}]
    if with_ancestor:
        ancestors.append({"ancestor_concept_id": ingredient, "descendant_concept_id": LOCAL_DRUG,
                          "min_levels_of_separation": 2, "max_levels_of_separation": 2})
    _write(folder / "CONCEPT_ANCESTOR.csv", ancestors)
    _write(folder / "VOCABULARY.csv", [
        {"vocabulary_id": "None", "vocabulary_name": "OMOP Standardized Vocabularies",
         "vocabulary_reference": "hospital", "vocabulary_version": "v5.0 31-AUG-23 + HOSP_RX 2024-01",
         "vocabulary_concept_id": 44819096},
        {"vocabulary_id": "HOSP_RX", "vocabulary_name": "Hospital formulary", "vocabulary_reference": "local",
         "vocabulary_version": "2024-01", "vocabulary_concept_id": 0}])
    blasts, mrd, pct = ids[("LOINC", "11150-0")], ids[("BLINA", "MRD-FCM-BM")], ids[("UCUM", "%")]
    female = ids[("Gender", "F")]
    persons, periods, drugs, meas = [], [], [], []
    for pid, mrd_pct in ((1, "0.5"), (2, "0.004")):
        persons.append({"person_id": pid, "gender_concept_id": female, "year_of_birth": 2012, "month_of_birth": 6,
                        "day_of_birth": 15, "race_concept_id": 0, "ethnicity_concept_id": 0,
                        "person_source_value": f"H-{pid:03d}"})
        periods.append({"observation_period_id": pid, "person_id": pid, "observation_period_start_date": "2020-01-01",
                        "observation_period_end_date": "2022-03-01", "period_type_concept_id": 32817})
        drugs.append({"drug_exposure_id": pid, "person_id": pid, "drug_concept_id": LOCAL_DRUG,
                      "drug_exposure_start_date": "2021-03-01", "drug_exposure_end_date": "2021-03-28",
                      "drug_type_concept_id": 32818, "drug_source_value": "BLINA-KIT-35",
                      "drug_source_concept_id": LOCAL_DRUG})
        for j, (concept, value) in enumerate(((blasts, "1.0"), (mrd, mrd_pct))):
            row = {"measurement_id": 10 * pid + j, "person_id": pid, "measurement_concept_id": concept,
                   "measurement_date": "2021-02-24", "measurement_type_concept_id": 32856,
                   "value_as_number": value, "unit_concept_id": pct, "measurement_source_concept_id": 0,
                   "measurement_source_value": ""}
            if local_mrd and concept == mrd:
                row |= {"measurement_concept_id": 0, "measurement_source_concept_id": LOCAL_MRD,
                        "measurement_source_value": "MRD FCM BM", "unit_concept_id": 0}
            meas.append(row)
    _write(folder / "PERSON.csv", persons)
    _write(folder / "OBSERVATION_PERIOD.csv", periods)
    _write(folder / "DRUG_EXPOSURE.csv", drugs)
    _write(folder / "MEASUREMENT.csv", meas)


def _db_args(url: str) -> list[str]:
    return ["--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]


def test_export_with_own_vocabulary_gives_the_study_tables(engine_url: str, tmp_path: Path, capsys) -> None:
    _export(tmp_path / "export")
    assert main(["load-omop", str(tmp_path / "export"), *_db_args(engine_url)]) == 0
    assert main(["extract", *_db_args(engine_url), "--site-id", "hosp", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    course = pd.read_csv(tmp_path / "out" / "course.csv", dtype=str, keep_default_na=False)
    patient = pd.read_csv(tmp_path / "out" / "patient.csv", dtype=str, keep_default_na=False)
    assert list(course.person_source_value) == ["H-001", "H-002"]
    assert list(course.course_number) == ["1", "1"]
    assert set(course.course_start) == {"2021-03-01"} and set(course.course_end) == {"2021-03-28"}
    assert set(course.infusion_days) == {"28"}
    assert list(course.pre_status) == ["CR-MRDpos", "CR-MRDneg"]  # 0.5 % >= 1e-4; 0.004 % < 1e-4
    assert [float(x) for x in course.pre_mrd] == [0.005, 0.00004]
    assert set(course.pre_blasts_pct) == {"1.0"}
    assert list(patient.person_source_value) == ["H-001", "H-002"]
    assert set(patient.n_courses) == {"1"} and set(patient.index_date) == {"2021-03-01"}
    assert set(patient.sex) == {"F"}


def test_export_without_the_ancestor_row_finds_no_blinatumomab(engine_url: str, tmp_path: Path, capsys) -> None:
    _export(tmp_path / "export", with_ancestor=False)
    assert main(["load-omop", str(tmp_path / "export"), *_db_args(engine_url)]) == 0
    capsys.readouterr()
    assert main(["extract", *_db_args(engine_url), "--site-id", "hosp", "--out", str(tmp_path / "out")]) == 1
    assert "no study patient" in capsys.readouterr().err


def test_export_with_mrd_under_a_local_source_concept_and_its_overlay(engine_url: str, tmp_path: Path,
                                                                       capsys) -> None:
    """MRD under the hospital's own source concept: the site overlay names it by (vocabulary_id,
    concept_code); load-omop and extract --overlay (the README's commands) give the same tables."""
    _export(tmp_path / "export", local_mrd=True)
    site = tmp_path / "hosp.yaml"
    site.write_text("site_id: hosp\nvariables:\n"
                    "  mrd: [{vocabulary_id: xyz_lab, concept_code: MRD_FLOW, unit: '%'}]\n", encoding="utf-8")
    assert main(["load-omop", str(tmp_path / "export"), *_db_args(engine_url)]) == 0
    # without the overlay the local rows are not MRD: the patients have no pre-course MRD
    assert main(["extract", *_db_args(engine_url), "--site-id", "hosp", "--out", str(tmp_path / "bare")]) == 0
    assert pd.read_csv(tmp_path / "bare" / "course.csv").pre_mrd.isna().all()
    assert main(["extract", *_db_args(engine_url), "--overlay", str(site), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    course = pd.read_csv(tmp_path / "out" / "course.csv", dtype=str, keep_default_na=False)
    assert list(course.person_source_value) == ["H-001", "H-002"]
    assert list(course.pre_status) == ["CR-MRDpos", "CR-MRDneg"]
    assert [float(x) for x in course.pre_mrd] == [0.005, 0.00004]
