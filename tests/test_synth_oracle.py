"""The rule oracle on tiny hand-made timelines: one test per rule edge (protocol 3 + 3b)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from blina_study.adapter.study import load_study
from blina_study.adapter.synth.oracle import derive, find_courses, status_at
from blina_study.adapter.synth.timeline import (
    Administration,
    ConditionRecord,
    Measurement,
    PatientTimeline,
    ProcedureRecord,
)

P = load_study().params
D0 = date(2021, 3, 1)


def d(n: int) -> date:
    return D0 + timedelta(days=n)


def tl(*admins: tuple[int, int], death: int | None = None) -> PatientTimeline:
    t = PatientTimeline("s1", "MRN1", 1, "F", date(2012, 3, 1))
    for a, b in admins:
        t.administrations.append(Administration("blinatumomab", d(a), d(b), "x"))
    t.visits.append((d(400), d(400)))
    if death is not None:
        t.death_date = d(death)
    return t


def blasts(t: PatientTimeline, day: int, pct: float) -> None:
    t.measurements.append(Measurement("marrow_blasts", d(day), pct, "%", pct))


def mrd(t: PatientTimeline, day: int, frac: float, comparator: str | None = None) -> None:
    t.measurements.append(Measurement("mrd", d(day), frac * 100, "%", frac, comparator))


def mrd_not_detected(t: PatientTimeline, day: int) -> None:
    t.measurements.append(Measurement("mrd", d(day), None, None, None, detected=False))


def meas(t: PatientTimeline, var: str, day: int, value: float) -> None:
    t.measurements.append(Measurement(var, d(day), value, "10*9/L", value))


def chemo(t: PatientTimeline, day: int, days: int = 1) -> None:
    t.administrations.append(Administration("chemotherapy", d(day), d(day + days - 1), "3041"))


# -- rule 1: courses ---------------------------------------------------------------------------
def test_gap_of_7_days_continues_the_course_and_8_starts_a_new_one() -> None:
    seven = find_courses(tl((0, 9), (16, 27)), P.course_gap_days)
    assert [(c.start, c.end, c.infusion_days) for c in seven] == [(d(0), d(27), 22)]
    eight = find_courses(tl((0, 9), (17, 27)), P.course_gap_days)
    assert [(c.number, c.start, c.end, c.infusion_days) for c in eight] == [
        (1, d(0), d(9), 10), (2, d(17), d(27), 11)]


def test_gap_is_measured_from_the_latest_end_and_overlaps_count_days_once() -> None:
    courses = find_courses(tl((0, 20), (2, 5), (25, 27)), P.course_gap_days)
    assert len(courses) == 1 and courses[0].infusion_days == 21 + 3


# -- rule 2: status and lookback -----------------------------------------------------------------
@pytest.mark.parametrize("age,expected", [(30, "CR-MRDneg"), (31, "unknown")])
def test_lookback_edge_30_vs_31_days(age: int, expected: str) -> None:
    t = tl((0, 27))
    blasts(t, -2, 1.0)
    mrd(t, -age, 0.00005)
    assert status_at(t, d(0), P).status == expected


def test_status_thresholds_and_comparators() -> None:
    t = tl((0, 27))
    blasts(t, 0, 5.0)
    assert status_at(t, d(0), P).status == "R/R"  # >= 5 %
    t = tl((0, 27))
    blasts(t, 0, 4.9)
    mrd(t, 0, 1e-4)
    assert status_at(t, d(0), P).status == "CR-MRDpos"  # MRD >= 1e-4
    t = tl((0, 27))
    blasts(t, 0, 4.9)
    mrd(t, 0, 1e-4, "<")
    assert status_at(t, d(0), P).status == "CR-MRDneg"  # "< 0.01 %" is negative
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    mrd_not_detected(t, 0)
    s = status_at(t, d(0), P)
    assert s.status == "CR-MRDneg" and s.mrd.value == 0.0
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    assert status_at(t, d(0), P).status == "unknown"
    t = tl((0, 27))
    mrd(t, 0, 0.05)
    assert status_at(t, d(0), P).status == "R/R"  # no blast result, MRD >= 5 %
    t = tl((0, 27))
    mrd(t, 0, 0.049)
    assert status_at(t, d(0), P).status == "CR-MRDpos"


def test_relapse_record_after_the_latest_blasts_is_rr_but_not_before() -> None:
    t = tl((0, 27))
    blasts(t, -10, 1.0)
    mrd(t, -10, 0.0)
    t.conditions.append(ConditionRecord("relapse", d(-5), ("ICD10CM", "C91.02")))
    assert status_at(t, d(0), P).status == "R/R"
    t = tl((0, 27))
    blasts(t, -3, 1.0)
    mrd(t, -3, 0.0)
    t.conditions.append(ConditionRecord("relapse", d(-5), ("ICD10CM", "C91.02")))
    assert status_at(t, d(0), P).status == "CR-MRDneg"


def test_same_day_results_take_the_highest_value() -> None:
    t = tl((0, 27))
    blasts(t, -1, 1.0)
    blasts(t, -1, 6.0)
    assert status_at(t, d(0), P).status == "R/R"


def test_assessment_on_the_start_day_counts_for_the_pre_status() -> None:
    t = tl((0, 27))
    blasts(t, -5, 30.0)
    blasts(t, 0, 1.0)
    mrd(t, 0, 0.001)
    rows, _ = derive(t, P)
    assert rows[0]["pre_status"] == "CR-MRDpos" and rows[0]["pre_blasts_pct"] == 1.0


# -- rule 7: response window -------------------------------------------------------------------
@pytest.mark.parametrize("day,expected", [(13, "NE"), (14, "CR-MRDneg"), (27 + 14, "CR-MRDneg"), (27 + 15, "NE")])
def test_response_window_edges(day: int, expected: str) -> None:
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    mrd(t, 0, 0.002)
    blasts(t, day, 0.5)
    mrd(t, day, 0.0, "<")
    rows, _ = derive(t, P)
    assert rows[0]["post_status"] == expected
    assert rows[0]["cr"] is (True if expected != "NE" else None)


def test_response_is_the_first_date_and_reads_that_date_alone() -> None:
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    mrd(t, 0, 0.002)
    blasts(t, 20, 0.5)  # first date: blasts only -> unknown (the MRD of day 0 is not read)
    mrd(t, 30, 0.0, "<")
    rows, _ = derive(t, P)
    assert rows[0]["post_status"] == "unknown" and rows[0]["cr"] is None and rows[0]["post_mrd"] is None


def test_rr_course_cr_by_blasts_even_when_post_status_unknown() -> None:
    t = tl((0, 27))
    blasts(t, 0, 40.0)
    blasts(t, 28, 2.0)
    rows, patient = derive(t, P)
    r = rows[0]
    assert (r["pre_status"], r["post_status"], r["cr"], r["mrd_maintained"]) == ("R/R", "unknown", True, None)
    assert r["pre_mrd"] is None and r["high_mrd"] is True  # blasts / 100 >= 1e-3
    assert patient["efs_event"] is False


def test_rr_non_response_is_an_event_at_day_0() -> None:
    t = tl((0, 27))
    blasts(t, 0, 40.0)
    blasts(t, 28, 12.0)
    rows, patient = derive(t, P)
    assert rows[0]["cr"] is False
    assert (patient["efs_event"], patient["efs_event_type"], patient["efs_days"]) == (True, "non_response", 0)


def test_mrd_maintained_and_high_mrd() -> None:
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    mrd(t, 0, 1e-4, "<")
    blasts(t, 30, 1.0)
    mrd(t, 30, 5e-4)
    rows, _ = derive(t, P)
    r = rows[0]
    assert (r["pre_status"], r["post_status"], r["mrd_maintained"], r["cr"]) == ("CR-MRDneg", "CR-MRDpos", False, None)
    assert r["pre_mrd"] == 1e-4 and r["post_mrd"] == 5e-4 and r["high_mrd"] is False
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    mrd(t, 0, 1e-3)
    assert derive(t, P)[0][0]["high_mrd"] is True
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    assert derive(t, P)[0][0]["high_mrd"] is None  # unknown pre-status, no MRD


# -- rules 9, 10, 3b.8: CD19, T cells, cytokines, CRS ----------------------------------------------
def test_cd19_loss_window_and_null() -> None:
    t = tl((0, 27))
    meas(t, "cd19_abs", -14, 0.005)
    assert derive(t, P)[0][0]["cd19_loss"] is True
    t = tl((0, 27))
    meas(t, "cd19_abs", -15, 0.005)
    assert derive(t, P)[0][0]["cd19_loss"] is None
    t = tl((0, 27))
    meas(t, "cd19_abs", -3, 0.01)
    assert derive(t, P)[0][0]["cd19_loss"] is False
    t.measurements.append(Measurement("cd19_negative_blasts", d(-200), None, None, None, detected=True))
    assert derive(t, P)[0][0]["cd19_loss"] is True  # a finding counts on or before the start
    t = tl((0, 27))
    t.measurements.append(Measurement("cd19_negative_blasts", d(1), None, None, None, detected=True))
    assert derive(t, P)[0][0]["cd19_loss"] is None  # after the start: not read


def test_tcell_windows_and_tie_goes_to_the_earlier_value() -> None:
    t = tl((0, 27))
    meas(t, "cd3_abs", -14, 0.9)
    meas(t, "cd3_abs", -15, 5.0)
    meas(t, "cd3_abs", 24, 1.1)   # end - 3
    meas(t, "cd3_abs", 30, 2.2)   # end + 3: same distance, later
    r = derive(t, P)[0][0]
    assert (r["cd3_pre"], r["cd3_post"]) == (0.9, 1.1)
    t = tl((0, 27))
    meas(t, "cd4_abs", 34, 0.5)   # end + 7: in
    meas(t, "cd8_abs", 35, 0.5)   # end + 8: out
    r = derive(t, P)[0][0]
    assert (r["cd4_post"], r["cd8_post"], r["cd4_pre"]) == (0.5, None, None)


def test_cytokine_peak_window() -> None:
    t = tl((0, 27))
    for day, v in ((-1, 99.0), (2, 10.0), (30, 20.0), (31, 500.0)):
        t.measurements.append(Measurement("il6", d(day), v, "pg/mL", v))
    assert derive(t, P)[0][0]["il6_peak"] == 20.0


def test_crs_icans_grades_during_the_course_only() -> None:
    t = tl((0, 27))
    t.conditions += [ConditionRecord("crs", d(0), ("ICD10CM", "D89.832"), 2),
                     ConditionRecord("crs", d(28), ("ICD10CM", "D89.833"), 3),
                     ConditionRecord("icans", d(3), ("ICD10CM", "G92.00"), None)]
    r = derive(t, P)[0][0]
    assert (r["crs_max_grade"], r["icans_max_grade"]) == (2, None)


# -- rules 4-6, 11-15: patient level --------------------------------------------------------------
def _rr_then_cr(br_day: int) -> PatientTimeline:
    t = tl((0, 27))
    blasts(t, br_day - 2, 40.0)
    chemo(t, br_day, 1)
    blasts(t, -2, 1.0)
    mrd(t, -2, 0.001)
    return t


@pytest.mark.parametrize("br_day,burden,referral,indication", [
    (-42, True, "R/R", "R/R"),
    (-43, False, "CR-MRDpos", "chemo_delay"),
])
def test_burden_window_edge(br_day: int, burden: bool, referral: str, indication: str) -> None:
    _, p = derive(_rr_then_cr(br_day), P)
    assert (p["burden_reduction"], p["status_at_referral"], p["indication"]) == (burden, referral, indication)


@pytest.mark.parametrize("chemo_day,indication", [(-28, "CR-MRDpos"), (-29, "chemo_delay"), (0, "chemo_delay")])
def test_delay_window_edge_and_day0_premedication(chemo_day: int, indication: str) -> None:
    t = tl((0, 27))
    blasts(t, -1, 1.0)
    mrd(t, -1, 0.001)
    chemo(t, chemo_day)
    assert derive(t, P)[1]["indication"] == indication


def test_mrd_negative_patient_is_chemo_delay_even_with_chemotherapy() -> None:
    t = tl((0, 27))
    blasts(t, -1, 1.0)
    mrd(t, -1, 0.0, "<")
    chemo(t, -5)
    assert derive(t, P)[1]["indication"] == "chemo_delay"


def test_cytogenetics_on_or_before_index_only() -> None:
    t = tl((0, 27))
    t.measurements.append(Measurement("bcr_abl1", d(0), None, None, None, detected=True))
    t.measurements.append(Measurement("poor_cytogenetics", d(1), None, None, None, detected=True))
    t.measurements.append(Measurement("bcr_abl1", d(-400), 0.0, "1", 0.0))
    _, p = derive(t, P)
    assert (p["bcr_abl1"], p["poor_cytogenetics"]) == (True, False)


@pytest.mark.parametrize("proc_day,chemo_day,expected", [
    (27 + 180, None, "HSCT"), (27 + 181, None, "none"), (27 + 181, 27 + 30, "protocol"), (None, 27, "none"),
])
def test_next_therapy_window(proc_day: int | None, chemo_day: int | None, expected: str) -> None:
    t = tl((0, 27))
    if proc_day is not None:
        t.procedures.append(ProcedureRecord("hsct", d(proc_day), ("CPT4", "38240")))
    if chemo_day is not None:
        chemo(t, chemo_day)
    assert derive(t, P)[1]["next_therapy"] == expected


def test_hsct_or_cart_whichever_first() -> None:
    t = tl((0, 27))
    t.procedures += [ProcedureRecord("hsct", d(100), ("CPT4", "38240")),
                     ProcedureRecord("car_t", d(60), ("ICD10PCS", "XW033C3"))]
    assert derive(t, P)[1]["next_therapy"] == "CAR-T"


def test_relapse_needs_a_cr_date_first_and_mrd_rise_is_not_relapse() -> None:
    t = tl((0, 27))
    blasts(t, 0, 1.0)
    mrd(t, 0, 0.0, "<")
    mrd(t, 100, 0.02)  # MRD rise alone
    blasts(t, 200, 30.0)
    _, p = derive(t, P)
    assert (p["efs_event_type"], p["efs_days"], p["os_event"], p["os_days"]) == ("relapse", 200, False, 400)
    t = tl((0, 27))
    blasts(t, 0, 30.0)  # R/R at index, response not evaluable (NE): no CR date, so no relapse
    blasts(t, 200, 30.0)
    _, p = derive(t, P)
    assert (p["efs_event"], p["efs_days"]) == (False, 400)


def test_death_and_followup() -> None:
    t = tl((0, 27), death=300)
    blasts(t, 0, 1.0)
    mrd(t, 0, 0.0, "<")
    t.visits = [(d(250), d(260))]
    _, p = derive(t, P)
    assert (p["efs_event_type"], p["efs_days"], p["os_event"], p["os_days"]) == ("death", 300, True, 300)
    assert p["last_followup"] == d(300)
    assert p["age_at_index_years"] == (D0 - date(2012, 3, 1)).days / 365.25


def test_no_course_no_rows() -> None:
    t = tl()
    assert derive(t, P) == ([], None)
