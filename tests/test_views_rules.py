"""Golden cases for the study views, one per derivation rule (protocol sections 3 and 3b).

Each test writes a few hand-made OMOP rows into a fresh CDM (DuckDB and PostgreSQL, fixture ``db``),
builds ``course`` / ``patient`` and checks the rows. Concept ids are looked up by (vocabulary, code),
never written here. Day numbers are offsets from ``D0``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from blina_study.adapter.db import Database
from blina_study.adapter.study import SiteOverlay, StudyDefinition, load_study
from blina_study.adapter.views import COURSE_COLUMNS, PATIENT_COLUMNS, build

D0 = dt.date(2021, 3, 1)
BLINA = ("RxNorm", "1597262")        # blinatumomab 0.035 MG Injection (a product: ingredient roll-up)
DEXA = ("RxNorm", "3264")
CYTARABINE = ("RxNorm", "3041")
BLASTS = ("LOINC", "11150-0")
MRD = ("BLINA", "MRD-FCM-BM")
CD3, CD4, CD8, CD19 = ("LOINC", "8122-4"), ("LOINC", "24467-3"), ("LOINC", "14135-8"), ("LOINC", "8116-6")
IL6 = ("LOINC", "26881-3")
BCR_ABL1 = ("LOINC", "46434-7")
KMT2A = ("BLINA", "CYTO-KMT2A")
CD19NEG = ("BLINA", "CD19NEG-BLASTS")
RELAPSE_ICD = ("ICD10CM", "C91.02")
HSCT = ("CPT4", "38240")
CART = ("ICD10PCS", "XW033J7")
DETECTED, NOT_DETECTED = ("LOINC", "LA11882-0"), ("LOINC", "LA11883-8")


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


class Cdm:
    """Writes small OMOP CDM rows; concept ids come from the database's own CONCEPT table."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ids = itertools.count(1)
        self._concepts: dict[tuple[str, str], int] = {}

    def concept(self, code: tuple[str, str]) -> int:
        if code not in self._concepts:
            rows = self.db.query(
                f"select concept_id from {self.db.qualified('vocab', 'concept')} "
                "where vocabulary_id = :v and concept_code = :c", {"v": code[0], "c": code[1]})
            assert rows, f"concept {code} not in the study vocabulary"
            self._concepts[code] = int(rows[0][0])
        return self._concepts[code]

    def unit(self, ucum: str | None) -> int | None:
        return None if ucum is None else self.concept(("UCUM", ucum))

    def operator(self, op: str | None) -> int | None:
        if op is None:
            return None
        rows = self.db.query(
            f"select concept_id from {self.db.qualified('vocab', 'concept')} "
            "where domain_id = 'Meas Value Operator' and concept_name = :n", {"n": op})
        return int(rows[0][0])

    def _insert(self, table: str, row: dict) -> None:
        cols = ", ".join(row)
        vals = ", ".join(f":{k}" for k in row)
        self.db.execute(f"insert into {self.db.qualified('cdm', table)} ({cols}) values ({vals})", row)

    def person(self, pid: int, *, birth: dt.date = dt.date(2012, 6, 15), sex: str | None = "F",
               mrn: str | None = None, followup_end: int | None = None) -> None:
        self._insert("person", {
            "person_id": pid, "gender_concept_id": self.concept(("Gender", sex)) if sex else 0,
            "year_of_birth": birth.year, "month_of_birth": birth.month, "day_of_birth": birth.day,
            "race_concept_id": 0, "ethnicity_concept_id": 0, "person_source_value": mrn or f"MRN{pid}"})
        if followup_end is not None:
            self._insert("observation_period", {
                "observation_period_id": next(self._ids), "person_id": pid,
                "observation_period_start_date": day(-400), "observation_period_end_date": day(followup_end),
                "period_type_concept_id": 0})

    def drug(self, pid: int, start: int, end: int | None = None, code: tuple[str, str] = BLINA, *,
             source_value: str | None = None, concept: bool = True) -> int:
        i = next(self._ids)
        self._insert("drug_exposure", {
            "drug_exposure_id": i, "person_id": pid, "drug_concept_id": self.concept(code) if concept else 0,
            "drug_exposure_start_date": day(start), "drug_exposure_end_date": day(start if end is None else end),
            "drug_type_concept_id": 0, "drug_source_value": source_value})
        return i

    def meas(self, pid: int, when: int, code: tuple[str, str] | None, value: float | None = None, *,
             unit: str | None = None, op: str | None = None, answer: tuple[str, str] | None = None,
             source_value: str | None = None, unit_source_value: str | None = None) -> int:
        i = next(self._ids)
        self._insert("measurement", {
            "measurement_id": i, "person_id": pid, "measurement_concept_id": self.concept(code) if code else 0,
            "measurement_date": day(when), "measurement_type_concept_id": 0,
            "operator_concept_id": self.operator(op), "value_as_number": value,
            "value_as_concept_id": self.concept(answer) if answer else None,
            "unit_concept_id": self.unit(unit), "measurement_source_value": source_value,
            "unit_source_value": unit_source_value})
        return i

    def blasts(self, pid: int, when: int, pct: float, op: str | None = None) -> int:
        return self.meas(pid, when, BLASTS, pct, unit="%", op=op)

    def mrd(self, pid: int, when: int, pct: float | None, op: str | None = None,
            answer: tuple[str, str] | None = None) -> int:
        """MRD in percent of nucleated cells (converted to a fraction by the views)."""
        return self.meas(pid, when, MRD, pct, unit="%", op=op, answer=answer)

    def condition(self, pid: int, when: int, code: tuple[str, str], *, source: bool = True) -> int:
        """A condition; non-standard codes (ICD-10-CM) go to condition_source_concept_id as ETLs do."""
        i = next(self._ids)
        cid = self.concept(code)
        self._insert("condition_occurrence", {
            "condition_occurrence_id": i, "person_id": pid, "condition_concept_id": 0 if source else cid,
            "condition_source_concept_id": cid if source else None, "condition_start_date": day(when),
            "condition_type_concept_id": 0})
        return i

    def procedure(self, pid: int, when: int, code: tuple[str, str]) -> int:
        i = next(self._ids)
        self._insert("procedure_occurrence", {
            "procedure_occurrence_id": i, "person_id": pid, "procedure_concept_id": self.concept(code),
            "procedure_date": day(when), "procedure_type_concept_id": 0})
        return i

    def visit(self, pid: int, start: int, end: int | None = None) -> None:
        self._insert("visit_occurrence", {
            "visit_occurrence_id": next(self._ids), "person_id": pid, "visit_concept_id": 0,
            "visit_start_date": day(start), "visit_end_date": day(start if end is None else end),
            "visit_type_concept_id": 0})

    def death(self, pid: int, when: int) -> None:
        self._insert("death", {"person_id": pid, "death_date": day(when)})


@pytest.fixture
def cdm(db: Database) -> Cdm:
    return Cdm(db)


@pytest.fixture(scope="module")
def study() -> StudyDefinition:
    return load_study()


def run(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None,
        **params: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    s = study.with_params(**params) if params else study
    return build(db, s, overlay, site_id="test")


def course_row(course: pd.DataFrame, pid: int, n: int = 1) -> pd.Series:
    rows = course[(course.person_id == pid) & (course.course_number == n)]
    assert len(rows) == 1, f"expected one course {n} for person {pid}, got\n{course}"
    return _native(rows.iloc[0])


def patient_row(patient: pd.DataFrame, pid: int) -> pd.Series:
    rows = patient[patient.person_id == pid]
    assert len(rows) == 1, f"expected one patient row for {pid}, got\n{patient}"
    return _native(rows.iloc[0])


def _native(row: pd.Series) -> pd.Series:
    """Plain Python values (bool, int, float, None) so ``is True`` / ``== (...)`` compare as written."""
    out = {}
    for k, v in row.items():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out[k] = None
        elif hasattr(v, "item"):
            out[k] = v.item()
        else:
            out[k] = v
    return pd.Series(out, dtype=object)


def isnull(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def standard_course(cdm: Cdm, pid: int, *, start: int = 0, end: int = 27, pre_mrd_pct: float | None = 0.5,
                    pre_blasts: float | None = 1.0, **person: object) -> None:
    """A patient in CR-MRDpos (by default) with one 28-day course starting at day ``start``."""
    cdm.person(pid, **person)
    if pre_blasts is not None:
        cdm.blasts(pid, start - 5, pre_blasts)
    if pre_mrd_pct is not None:
        cdm.mrd(pid, start - 5, pre_mrd_pct)
    cdm.drug(pid, start, end)


# ----------------------------------------------------------------------------- contract
def test_contract_columns_and_types(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    course, patient = run(db, study)
    assert list(course.columns) == list(COURSE_COLUMNS)
    assert list(patient.columns) == list(PATIENT_COLUMNS)
    assert str(course.person_id.dtype) == "Int64" and str(course.course_number.dtype) == "Int64"
    assert str(course.cr.dtype) == "boolean" and str(course.pre_mrd.dtype) == "float64"
    assert isinstance(course.course_start.iloc[0], dt.date)
    assert course.site_id.iloc[0] == "test" and course.person_source_value.iloc[0] == "MRN1"
    assert isinstance(patient.index_date.iloc[0], dt.date)


# ----------------------------------------------------------------------------- rule 1
def test_rule1_gap_of_7_days_continues_course(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, end=27)
    cdm.drug(1, 34, 41)                 # gap = 34 - 27 = 7: the same course
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert len(course) == 1
    assert (c.course_start, c.course_end, c.infusion_days) == (day(0), day(41), 36)


def test_rule1_gap_of_8_days_starts_new_course(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, end=27)
    cdm.drug(1, 35, 41)                 # gap 35 - 27 = 8 > 7: course 2
    course, patient = run(db, study)
    c1, c2 = course_row(course, 1, 1), course_row(course, 1, 2)
    assert (c1.course_start, c1.course_end, c1.infusion_days) == (day(0), day(27), 28)
    assert (c2.course_start, c2.course_end, c2.infusion_days) == (day(35), day(41), 7)
    assert patient_row(patient, 1).n_courses == 2


def test_rule1_infusion_days_count_touched_dates_once(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, end=9)      # days 0..9 (10 days)
    cdm.drug(1, 5, 12)                  # overlaps: adds 10..12
    cdm.drug(1, 16, 16)                 # gap 16 - 12 = 4: same course, one more day
    course, patient = run(db, study)
    c = course_row(course, 1)
    assert (c.course_start, c.course_end, c.infusion_days) == (day(0), day(16), 14)
    assert patient_row(patient, 1).n_courses == 1


def test_rule1_gap_uses_latest_end_so_far(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, end=30)     # long bag 0..30
    cdm.drug(1, 2, 3)                   # short one inside it
    cdm.drug(1, 36, 40)                 # 36 - 30 = 6 (not 36 - 3): same course
    course, _ = run(db, study)
    assert len(course) == 1 and course_row(course, 1).course_end == day(40)


def test_rule1_gap_param_changes_courses(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, end=27)
    cdm.drug(1, 37, 41)                 # gap 10
    assert len(run(db, study)[0]) == 2
    assert len(run(db, study, course_gap_days=10)[0]) == 1


def test_rule1_ingredient_code_and_product_code_both_count(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    cdm.person(1)
    cdm.drug(1, 0, 3, ("RxNorm", "1597258"))    # ingredient
    cdm.drug(1, 4, 8, ("RxNorm", "1597267"))    # branded drug (descendant)
    cdm.drug(1, 9, 9, CYTARABINE)               # not blinatumomab
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert (c.course_end, c.infusion_days) == (day(8), 9)


# ----------------------------------------------------------------------------- rule 2 / 3
def test_rule2_lookback_edge_30_vs_31_days(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None, pre_blasts=None)
    cdm.blasts(1, -30, 1.0)
    cdm.mrd(1, -30, 0.05)
    standard_course(cdm, 2, pre_mrd_pct=None, pre_blasts=None)
    cdm.blasts(2, -31, 1.0)
    cdm.mrd(2, -31, 0.05)
    course, _ = run(db, study)
    assert course_row(course, 1).pre_status == "CR-MRDpos"
    assert course_row(course, 1).pre_mrd == pytest.approx(5e-4)
    c2 = course_row(course, 2)
    assert c2.pre_status == "unknown" and isnull(c2.pre_mrd) and isnull(c2.pre_blasts_pct)


def test_rule3_assessment_on_start_day_counts(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None, pre_blasts=None)
    cdm.blasts(1, 0, 2.0)
    cdm.mrd(1, 0, 0.001)
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert (c.pre_status, c.pre_blasts_pct) == ("CR-MRDneg", 2.0)
    assert c.pre_mrd == pytest.approx(1e-5)


def test_rule2_latest_results_decide(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None, pre_blasts=None)
    cdm.blasts(1, -20, 40.0)             # R/R earlier ...
    cdm.blasts(1, -3, 1.0)               # ... CR later: the latest counts
    cdm.mrd(1, -3, 0.5)
    course, _ = run(db, study)
    assert course_row(course, 1).pre_status == "CR-MRDpos"
    assert course_row(course, 1).pre_blasts_pct == 1.0


def test_rule2_blasts_at_threshold_are_rr(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_blasts=5.0, pre_mrd_pct=None)
    standard_course(cdm, 2, pre_blasts=4.9, pre_mrd_pct=None)
    standard_course(cdm, 3, pre_blasts=None, pre_mrd_pct=None)
    cdm.blasts(3, -5, 5.0, op="<")       # "< 5 %": below the threshold
    course, _ = run(db, study)
    assert course_row(course, 1).pre_status == "R/R"
    assert course_row(course, 2).pre_status == "unknown"   # blasts < 5 % but no MRD
    assert course_row(course, 3).pre_status == "unknown"


def test_rule2_mrd_rr_only_without_blast_result(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_blasts=None, pre_mrd_pct=6.0)   # no blasts, MRD 6 %: R/R
    standard_course(cdm, 2, pre_blasts=2.0, pre_mrd_pct=6.0)    # blasts < 5 %: MRD decides CR-MRDpos
    course, _ = run(db, study)
    assert course_row(course, 1).pre_status == "R/R"
    assert course_row(course, 1).pre_mrd == pytest.approx(0.06)
    assert course_row(course, 2).pre_status == "CR-MRDpos"


def test_rule2_relapse_record_after_latest_cr_blast_is_rr(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=0.001)      # blasts 1 % and MRD at day -5
    cdm.condition(1, -2, RELAPSE_ICD)                # relapse recorded after them
    standard_course(cdm, 2, pre_mrd_pct=0.001)
    cdm.condition(2, -8, RELAPSE_ICD)                # relapse before the CR marrow: superseded
    standard_course(cdm, 3, pre_mrd_pct=None, pre_blasts=None)
    cdm.condition(3, -8, ("BLINA", "RELAPSE"), source=False)   # standard study concept, no marrow
    course, _ = run(db, study)
    assert course_row(course, 1).pre_status == "R/R"
    assert course_row(course, 2).pre_status == "CR-MRDneg"
    assert course_row(course, 3).pre_status == "R/R"


def test_rule2_mrd_below_limit_counts_negative(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None)
    cdm.mrd(1, -5, 0.01, op="<")                    # "< 0.01 %" = < 1e-4: negative, stored as 1e-4
    standard_course(cdm, 2, pre_mrd_pct=None)
    cdm.mrd(2, -5, 0.01)                            # exactly 0.01 % = 1e-4: positive
    standard_course(cdm, 3, pre_mrd_pct=None)
    cdm.mrd(3, -5, None, answer=NOT_DETECTED)       # "not detected": 0
    course, _ = run(db, study)
    c1, c2, c3 = (course_row(course, p) for p in (1, 2, 3))
    assert (c1.pre_status, c2.pre_status, c3.pre_status) == ("CR-MRDneg", "CR-MRDpos", "CR-MRDneg")
    assert c1.pre_mrd == pytest.approx(1e-4) and c3.pre_mrd == 0.0


def test_rule2_same_day_worst_value_counts(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=0.001)
    cdm.mrd(1, -5, 0.2)                              # same day, higher: counts
    course, _ = run(db, study)
    assert course_row(course, 1).pre_status == "CR-MRDpos"
    assert course_row(course, 1).pre_mrd == pytest.approx(2e-3)


def test_rule2_mrd_fraction_unit(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None)
    cdm.meas(1, -5, MRD, 0.0003, unit="1")
    course, _ = run(db, study)
    assert course_row(course, 1).pre_mrd == pytest.approx(3e-4)
    assert course_row(course, 1).pre_status == "CR-MRDpos"


def test_rule2_mrd_below_a_limit_above_threshold_is_undetermined(db: Database, cdm: Cdm,
                                                                 study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None)
    cdm.mrd(1, -5, 0.1, op="<")                     # "< 0.1 %" = < 1e-3: neither >= 1e-4 nor < 1e-4
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert c.pre_status == "unknown" and c.pre_mrd == pytest.approx(1e-3)
    assert c.high_mrd is False                      # < 1e-3 is not >= 1e-3


# ----------------------------------------------------------------------------- rule 7
def test_rule7_response_window_edges(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    # course 0..27: window [14, 41]
    standard_course(cdm, 1)
    cdm.mrd(1, 13, 0.5)                              # before the window: ignored
    cdm.mrd(1, 14, 0.001)                            # first date in the window
    cdm.mrd(1, 20, 0.5)
    standard_course(cdm, 2)
    cdm.mrd(2, 41, 0.001)                            # last day of the window
    standard_course(cdm, 3)
    cdm.mrd(3, 42, 0.001)                            # after the window: NE
    course, _ = run(db, study)
    c1, c2, c3 = (course_row(course, p) for p in (1, 2, 3))
    assert (c1.post_status, c1.cr) == ("CR-MRDneg", True)
    assert c1.post_mrd == pytest.approx(1e-5)
    assert (c2.post_status, c2.cr) == ("CR-MRDneg", True)
    assert c3.post_status == "NE" and isnull(c3.cr) and isnull(c3.mrd_maintained) and isnull(c3.post_mrd)


def test_rule7_post_status_uses_that_date_alone(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)                          # CR-MRDpos before
    cdm.mrd(1, 10, 0.001)                            # MRD before the window (not used for post)
    cdm.blasts(1, 28, 1.0)                           # response date: blasts only
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert c.post_status == "unknown" and isnull(c.post_mrd)
    assert isnull(c.cr)                              # MRD clearance cannot be judged without MRD


def test_rule7_rr_cr_by_blasts_even_if_post_unknown(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_blasts=30.0, pre_mrd_pct=None)
    cdm.blasts(1, 28, 2.0)
    standard_course(cdm, 2, pre_blasts=30.0, pre_mrd_pct=None)
    cdm.blasts(2, 28, 12.0)
    cdm.mrd(2, 28, 8.0)
    course, _ = run(db, study)
    c1, c2 = course_row(course, 1), course_row(course, 2)
    assert (c1.pre_status, c1.post_status, c1.cr) == ("R/R", "unknown", True)
    assert isnull(c1.mrd_maintained)
    assert (c2.post_status, c2.cr) == ("R/R", False)


def test_rule7_mrdpos_cr_and_mrdneg_maintained(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=0.5)         # CR-MRDpos, stays positive
    cdm.mrd(1, 28, 0.02)
    standard_course(cdm, 2, pre_mrd_pct=0.001)       # CR-MRDneg, stays negative
    cdm.mrd(2, 28, 0.0, op="<")
    standard_course(cdm, 3, pre_mrd_pct=0.001)       # CR-MRDneg, becomes positive
    cdm.mrd(3, 28, 0.05)
    course, _ = run(db, study)
    c1, c2, c3 = (course_row(course, p) for p in (1, 2, 3))
    assert (c1.post_status, c1.cr) == ("CR-MRDpos", False) and isnull(c1.mrd_maintained)
    assert (c2.post_status, c2.mrd_maintained) == ("CR-MRDneg", True) and isnull(c2.cr)
    assert (c3.post_status, c3.mrd_maintained) == ("CR-MRDpos", False)


def test_rule7_unknown_pre_status_gives_null_response(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=None)        # blasts < 5 %, no MRD: unknown
    cdm.mrd(1, 28, 0.001)
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert (c.pre_status, c.post_status) == ("unknown", "CR-MRDneg")
    assert isnull(c.cr) and isnull(c.mrd_maintained)


def test_rule7_relapse_record_is_not_a_result(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.mrd(1, 28, 0.001)
    cdm.condition(1, 28, RELAPSE_ICD)               # same day as the response MRD
    course, _ = run(db, study)
    assert course_row(course, 1).post_status == "CR-MRDneg"


# ----------------------------------------------------------------------------- rule 8
def test_rule8_high_mrd(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=0.1)                     # 1e-3: high
    standard_course(cdm, 2, pre_mrd_pct=0.09)                    # 9e-4: not high
    standard_course(cdm, 3, pre_blasts=20.0, pre_mrd_pct=None)   # R/R, blasts / 100 = 0.2: high
    standard_course(cdm, 4, pre_mrd_pct=None)                    # unknown, no MRD: NULL
    standard_course(cdm, 5, pre_mrd_pct=None)
    cdm.mrd(5, -5, 0.1, op="<")                                  # "< 1e-3": not high
    course, _ = run(db, study)
    got = [course_row(course, p).high_mrd for p in (1, 2, 3, 4, 5)]
    assert got[:3] == [True, False, True] and isnull(got[3]) and got[4] is False
    assert isnull(course_row(course, 3).pre_mrd)                 # 3b.4: blasts/100 only for high_mrd


# ----------------------------------------------------------------------------- rule 9
def test_rule9_cd19_loss_latest_value_in_window(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.meas(1, -10, CD19, 500.0, unit="/uL")            # 0.5 x10^9/L ...
    cdm.meas(1, -2, CD19, 5.0, unit="/uL")               # ... latest: 0.005 < 0.01: loss
    standard_course(cdm, 2)
    cdm.meas(2, -15, CD19, 1.0, unit="/uL")              # outside [start - 14, start]
    cdm.meas(2, -14, CD19, 0.2, unit="10*9/L")           # edge, inside: no loss
    standard_course(cdm, 3)                              # no value: NULL
    standard_course(cdm, 4)
    cdm.meas(4, -60, CD19NEG, answer=DETECTED)           # CD19-negative blasts recorded
    course, _ = run(db, study)
    assert course_row(course, 1).cd19_loss is True
    assert course_row(course, 2).cd19_loss is False
    assert isnull(course_row(course, 3).cd19_loss)
    assert course_row(course, 4).cd19_loss is True


def test_rule9_negative_finding_without_count_is_no_loss(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.meas(1, -3, CD19NEG, answer=NOT_DETECTED)
    course, _ = run(db, study)
    assert course_row(course, 1).cd19_loss is False


# ----------------------------------------------------------------------------- rule 10
def test_rule10_post_tie_goes_to_earlier(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)                              # end day 27
    cdm.meas(1, 24, CD3, 1.5, unit="10*9/L")             # 3 days before the end
    cdm.meas(1, 30, CD3, 2.5, unit="10*9/L")             # 3 days after: tie, the earlier wins
    cdm.meas(1, 35, CD3, 9.9, unit="10*9/L")             # outside [20, 34]
    course, _ = run(db, study)
    assert course_row(course, 1).cd3_post == pytest.approx(1.5)


def test_rule10_pre_latest_and_post_closest(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.meas(1, -14, CD4, 300.0, unit="/uL")             # window edge
    cdm.meas(1, -1, CD4, 0.4, unit="10*3/uL")            # latest: 0.4
    cdm.meas(1, -15, CD8, 0.9, unit="10*9/L")            # outside: no pre value
    cdm.meas(1, 26, CD4, 0.6, unit="10*9/L")             # 1 day from the end
    cdm.meas(1, 22, CD4, 0.1, unit="10*9/L")
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert c.cd4_pre == pytest.approx(0.4) and c.cd4_post == pytest.approx(0.6)
    assert isnull(c.cd8_pre) and isnull(c.cd3_pre)


def test_rule10_cytokine_peak_window(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)                              # window [0, 30]
    cdm.meas(1, -1, IL6, 900.0, unit="pg/mL")            # before the course
    cdm.meas(1, 2, IL6, 0.05, unit="ng/mL")              # 50 pg/mL
    cdm.meas(1, 30, IL6, 80.0, unit="ng/L")              # end + 3: counts (80 pg/mL)
    cdm.meas(1, 31, IL6, 999.0, unit="pg/mL")            # end + 4: no
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert c.il6_peak == pytest.approx(80.0) and isnull(c.tnfa_peak)


def test_unconvertible_unit_is_excluded_not_zero(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.meas(1, -1, CD3, 1.2, unit="pg/mL")              # wrong family: excluded
    cdm.meas(1, -2, CD3, 0.8, unit="10*9/L")
    cdm.meas(1, -1, CD4, 0.5)                            # no unit at all: excluded
    course, _ = run(db, study)
    c = course_row(course, 1)
    assert c.cd3_pre == pytest.approx(0.8) and isnull(c.cd4_pre)


# ----------------------------------------------------------------------------- 3b.8
def test_3b8_crs_icans_max_grade_during_course(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.condition(1, 1, ("ICD10CM", "D89.831"))
    cdm.condition(1, 3, ("ICD10CM", "D89.833"))
    cdm.condition(1, 28, ("ICD10CM", "D89.835"))         # after course_end: not during the course
    cdm.condition(1, 5, ("ICD10CM", "G92.00"))           # ungraded: no grade
    standard_course(cdm, 2)
    cdm.condition(2, 27, ("ICD10CM", "G92.02"))          # on course_end
    course, _ = run(db, study)
    c1, c2 = course_row(course, 1), course_row(course, 2)
    assert c1.crs_max_grade == 3 and isnull(c1.icans_max_grade)
    assert isnull(c2.crs_max_grade) and c2.icans_max_grade == 2


# ----------------------------------------------------------------------------- rules 4-6
def test_rule4_burden_reduction_needs_rr_at_chemo_start(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    # person 1: R/R at referral, chemotherapy from day -30, CR-MRDpos before course 1
    standard_course(cdm, 1)
    cdm.blasts(1, -35, 40.0)
    cdm.drug(1, -30, -24, CYTARABINE)
    # person 2: chemotherapy at day -43 only (outside [index - 42, index)): no burden reduction
    standard_course(cdm, 2)
    cdm.blasts(2, -45, 40.0)
    cdm.drug(2, -43, -43, CYTARABINE)
    # person 3: chemotherapy in the window but the patient was not R/R at its start
    standard_course(cdm, 3)
    cdm.mrd(3, -35, 0.5)
    cdm.blasts(3, -35, 1.0)
    cdm.drug(3, -30, -24, CYTARABINE)
    _, patient = run(db, study)
    p1, p2, p3 = (patient_row(patient, p) for p in (1, 2, 3))
    assert (p1.burden_reduction, p1.status_at_referral, p1.indication) == (True, "R/R", "R/R")
    assert (p2.burden_reduction, p2.status_at_referral) == (False, "CR-MRDpos")
    assert (p3.burden_reduction, p3.status_at_referral) == (False, "CR-MRDpos")


def test_rule6_indication_mrdpos_needs_chemo_in_delay_window(db: Database, cdm: Cdm,
                                                              study: StudyDefinition) -> None:
    standard_course(cdm, 1)                              # CR-MRDpos
    cdm.drug(1, -20, -10, ("RxNorm", "6851"))            # methotrexate within [index - 28, index)
    standard_course(cdm, 2)                              # CR-MRDpos, no chemotherapy
    standard_course(cdm, 3)                              # CR-MRDpos, dexamethasone premedication on day 0
    cdm.drug(3, 0, 0, DEXA)
    standard_course(cdm, 4, pre_mrd_pct=0.001)           # CR-MRDneg with chemotherapy: chemo_delay
    cdm.drug(4, -20, -10, ("RxNorm", "6851"))
    standard_course(cdm, 5)
    cdm.drug(5, -29, -29, ("RxNorm", "6851"))            # day -29: outside the window
    _, patient = run(db, study)
    got = [patient_row(patient, p).indication for p in (1, 2, 3, 4, 5)]
    assert got == ["CR-MRDpos", "chemo_delay", "chemo_delay", "chemo_delay", "chemo_delay"]
    assert patient_row(patient, 4).status_at_referral == "CR-MRDneg"


# ----------------------------------------------------------------------------- rule 11
def test_rule11_cytogenetics_on_or_before_index(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)
    cdm.meas(1, 0, BCR_ABL1, answer=DETECTED)            # on the index date
    cdm.meas(1, -100, KMT2A, answer=NOT_DETECTED)
    standard_course(cdm, 2)
    cdm.meas(2, 1, BCR_ABL1, answer=DETECTED)            # after index: not counted
    cdm.meas(2, -100, KMT2A, answer=("SNOMED", "10828004"))
    standard_course(cdm, 3)
    cdm.meas(3, -5, ("LOINC", "50195-7"), 0.12)          # BCR-ABL1 ratio > 0: detected
    _, patient = run(db, study)
    p1, p2, p3 = (patient_row(patient, p) for p in (1, 2, 3))
    assert (p1.bcr_abl1, p1.poor_cytogenetics) == (True, False)
    assert (p2.bcr_abl1, p2.poor_cytogenetics) == (False, True)
    assert p3.bcr_abl1 is True


# ----------------------------------------------------------------------------- rule 12
def test_rule12_next_therapy_window(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1)                              # last course_end = day 27
    cdm.procedure(1, 27 + 180, HSCT)                     # day 180 after: counts
    standard_course(cdm, 2)
    cdm.procedure(2, 27 + 181, HSCT)                     # day 181: no
    cdm.drug(2, 60, 65, ("RxNorm", "103"))               # chemotherapy resumed: protocol
    standard_course(cdm, 3)
    cdm.procedure(3, 100, HSCT)
    cdm.procedure(3, 90, CART)                           # CAR-T first
    standard_course(cdm, 4)
    cdm.procedure(4, 27, HSCT)                           # on course_end: not after it
    _, patient = run(db, study)
    got = [patient_row(patient, p).next_therapy for p in (1, 2, 3, 4)]
    assert got == ["HSCT", "protocol", "CAR-T", "none"]


# ----------------------------------------------------------------------------- rules 13-15
def test_rule13_followup_is_latest_record_of_any_kind(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, followup_end=200)
    cdm.visit(1, 250, 252)                               # a visit (not study-relevant) counts
    standard_course(cdm, 2, followup_end=300)
    cdm.blasts(2, 100, 1.0)
    _, patient = run(db, study)
    assert patient_row(patient, 1).last_followup == day(252)
    p2 = patient_row(patient, 2)
    assert p2.last_followup == day(300)
    assert (p2.efs_event, p2.efs_days, p2.os_event, p2.os_days) == (False, 300, False, 300)


def test_rule14_relapse_after_cr(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    # R/R at index, CR at the response date, relapse later
    standard_course(cdm, 1, pre_blasts=30.0, pre_mrd_pct=None, followup_end=400)
    cdm.blasts(1, 28, 1.0)
    cdm.mrd(1, 28, 0.001)
    cdm.blasts(1, 150, 25.0)
    # CR-MRDpos at index (index counts as the CR date), relapse record later
    standard_course(cdm, 2, followup_end=400)
    cdm.condition(2, 200, RELAPSE_ICD)
    # R/R at index that never reaches CR: blasts >= 5 % later are not a relapse (non-response instead)
    standard_course(cdm, 3, pre_blasts=30.0, pre_mrd_pct=None, followup_end=400)
    cdm.blasts(3, 28, 20.0)
    cdm.blasts(3, 100, 40.0)
    _, patient = run(db, study)
    p1, p2, p3 = (patient_row(patient, p) for p in (1, 2, 3))
    assert (p1.efs_event, p1.efs_event_type, p1.efs_days) == (True, "relapse", 150)
    assert (p2.efs_event, p2.efs_event_type, p2.efs_days) == (True, "relapse", 200)
    assert (p3.efs_event, p3.efs_event_type, p3.efs_days) == (True, "non_response", 0)


def test_rule14_mrd_rise_alone_is_not_relapse(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=0.001, followup_end=365)
    cdm.mrd(1, 100, 8.0)                                 # MRD 8 % without a marrow blast count
    _, patient = run(db, study)
    p = patient_row(patient, 1)
    assert (p.efs_event, p.efs_days) == (False, 365) and isnull(p.efs_event_type)


def test_rule14_unknown_cr_is_no_non_response_event(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_blasts=30.0, pre_mrd_pct=None, followup_end=120)   # R/R, NE response
    _, patient = run(db, study)
    p = patient_row(patient, 1)
    assert (p.efs_event, p.efs_days) == (False, 120)


def test_rule14_15_death(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, pre_mrd_pct=0.001, followup_end=90)
    cdm.death(1, 90)
    standard_course(cdm, 2, pre_mrd_pct=0.5, followup_end=300)
    cdm.blasts(2, 100, 30.0)                             # relapse at day 100 ...
    cdm.death(2, 250)                                    # ... then death: EFS event is the relapse
    _, patient = run(db, study)
    p1, p2 = patient_row(patient, 1), patient_row(patient, 2)
    assert (p1.efs_event_type, p1.efs_days, p1.os_event, p1.os_days) == ("death", 90, True, 90)
    assert (p2.efs_event_type, p2.efs_days, p2.os_event, p2.os_days) == ("relapse", 100, True, 250)
    assert p2.last_followup == day(300)


# ----------------------------------------------------------------------------- person
def test_sex_age_and_source_value(db: Database, cdm: Cdm, study: StudyDefinition) -> None:
    standard_course(cdm, 1, sex="M", birth=dt.date(2011, 3, 1), mrn="A-17")
    standard_course(cdm, 2, sex=None)
    _, patient = run(db, study)
    p1, p2 = patient_row(patient, 1), patient_row(patient, 2)
    assert (p1.sex, p1.person_source_value, p2.sex) == ("M", "A-17", "unknown")
    assert p1.age_at_index_years == pytest.approx((D0 - dt.date(2011, 3, 1)).days / 365.25)
    assert p1.index_date == D0 and p1.n_courses == 1


# ----------------------------------------------------------------------------- overlay route
def _clinical_story(cdm: Cdm, pid: int, *, local: bool) -> None:
    """One patient written with standard codes, or with the site's local source values and units."""
    cdm.person(pid, followup_end=400)
    if local:
        cdm.meas(pid, -5, None, 1.0, source_value="BM-BLAST", unit_source_value="pct")
        cdm.meas(pid, -5, None, 0.3, source_value="MRD-FCM", unit_source_value="%")
        cdm.meas(pid, -3, None, 450.0, source_value="CD3ABS", unit_source_value="cells/uL")
        cdm.meas(pid, 28, None, None, source_value="MRD-FCM", answer=NOT_DETECTED)
        cdm.meas(pid, 27, None, 900.0, source_value="CD3ABS")
        cdm.drug(pid, 0, 13, source_value="BLINCYTO-BAG", concept=False)
        cdm.drug(pid, 14, 27, source_value="BLINCYTO-BAG", concept=False)
    else:
        cdm.blasts(pid, -5, 1.0)
        cdm.mrd(pid, -5, 0.3)
        cdm.meas(pid, -3, CD3, 0.45, unit="10*9/L")
        cdm.mrd(pid, 28, None, answer=NOT_DETECTED)
        cdm.meas(pid, 27, CD3, 0.9, unit="10*9/L")
        cdm.drug(pid, 0, 13)
        cdm.drug(pid, 14, 27)


def test_overlay_local_codes_give_same_result_as_standard_codes(db: Database, cdm: Cdm, study: StudyDefinition,
                                                                tmp_path: Path) -> None:
    from blina_study.adapter.study import load_overlay

    path = tmp_path / "site.yaml"
    path.write_text(
        "site_id: test\n"
        "variables:\n"
        "  blinatumomab: [{source_value: BLINCYTO-BAG}]\n"
        "  marrow_blasts: [{source_value: BM-BLAST, unit: '%'}]\n"
        "  mrd: [{source_value: MRD-FCM, unit: '%'}]\n"
        "  cd3_abs: [{source_value: CD3ABS, unit: /uL}]\n", encoding="utf-8")
    overlay = load_overlay(path, study)
    _clinical_story(cdm, 1, local=False)
    _clinical_story(cdm, 2, local=True)
    course, patient = run(db, study, overlay)
    assert len(course) == 2
    a = course[course.person_id == 1].drop(columns=["person_id", "person_source_value"]).reset_index(drop=True)
    b = course[course.person_id == 2].drop(columns=["person_id", "person_source_value"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[0, "pre_status"] == "CR-MRDpos" and a.loc[0, "post_status"] == "CR-MRDneg"
    assert a.loc[0, "cd3_pre"] == pytest.approx(0.45) and a.loc[0, "cd3_post"] == pytest.approx(0.9)
    pa = patient[patient.person_id == 1].drop(columns=["person_id", "person_source_value"]).reset_index(drop=True)
    pb = patient[patient.person_id == 2].drop(columns=["person_id", "person_source_value"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(pa, pb)
    # without the overlay the local rows are not study data
    course_std, _ = run(db, study)
    assert course_std.person_id.tolist() == [1]
