"""Analyses of the paper added for issue 12: CRS/ICANS by maximum grade, cytokine peaks overall,
indication by status, courses per patient, baseline by indication, median follow-up (reverse
Kaplan-Meier), KM 95% limits and pairwise log-rank tests in the tidy output."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test as ll_logrank
from test_analysis_tables import paper_cohort

from blina_study.analysis.io import coerce_table
from blina_study.analysis.tables import (
    adverse_events,
    analyze,
    baseline_by_indication,
    courses_per_patient,
    cytokine_peaks,
    follow_up,
    indication_by_status,
)


@pytest.fixture(scope="module")
def typed():
    course, patient = paper_cohort()
    return coerce_table(course, "course"), coerce_table(patient, "patient")


def test_crs_icans_by_maximum_grade_per_course_and_worst_per_patient(typed):
    course, _ = typed
    c = course.copy()
    # Patient of the NE second course: grade 1 in course 1, grade 3 in course 2 -> worst 3.
    two = c.groupby("person_id")["course_number"].transform("max") == 2
    pid = int(c.loc[two & (c["pre_status"] == "CR-MRDpos"), "person_id"].iloc[0])
    c.loc[(c.person_id == pid) & (c.course_number == 1), "crs_max_grade"] = 1
    c.loc[(c.person_id == pid) & (c.course_number == 2), "crs_max_grade"] = 3
    rr = c.index[c["pre_status"] == "R/R"]
    c.loc[rr[:4], "crs_max_grade"] = [2, 2, 1, 4]
    c.loc[rr[:1], "icans_max_grade"] = 2
    res = adverse_events(coerce_table(c, "course"))
    rows = {(g.event, g.unit, g.group): g for g in res.rows}
    allc = rows[("CRS", "courses", "all")]
    assert allc.counts == {"none recorded": 126 - 6, "1": 2, "2": 2, "3": 1, "4": 1, "5": 0}
    assert (allc.any_grade.k, allc.any_grade.n, allc.grade_3_plus.k) == (6, 126, 2)
    assert rows[("CRS", "courses", "R/R")].counts["2"] == 2
    assert rows[("CRS", "courses", "R/R")].n == 11
    pat = rows[("CRS", "patients", "all")]
    # 5 patients with CRS: the 4 R/R course-1 patients and pid (worst grade 3, not 1 and 3).
    assert pat.n == 105 and pat.any_grade.k == 5
    assert pat.counts == {"none recorded": 100, "1": 1, "2": 2, "3": 1, "4": 1, "5": 0}
    assert rows[("ICANS", "patients", "all")].counts["2"] == 1
    tidy = analyze(c, paper_cohort()[1], by_center=False).to_tidy()["adverse_events"]
    sel = tidy.query("event == 'CRS' and unit == 'courses' and group == 'all'")
    assert sel["n"].sum() == 126 and sel.set_index("max_grade").loc["3", "n"] == 1


def test_cytokine_peaks_overall_include_courses_without_a_response_group(typed):
    course, _ = typed
    c = course.copy()
    ne = c.index[c["post_status"] == "NE"]
    rr_cr = c.index[(c["pre_status"] == "R/R") & (c["cr"] == True)]  # noqa: E712
    c.loc[rr_cr[:2], "il6_peak"] = [10.0, 30.0]
    c.loc[ne, "il6_peak"] = 500.0  # NE course: no response group, still a peak
    res = cytokine_peaks(coerce_table(c, "course"))
    rows = {(r.variable, r.group): r.summary for r in res.rows}
    assert rows[("il6_peak", "all courses")].n == 3
    assert rows[("il6_peak", "all courses")].format(1) == "30.0 (10.0-500.0)"
    assert rows[("il6_peak", "CR")].n == 2
    assert rows[("il10_peak", "all courses")].n == 0


def test_indication_by_status_at_referral_and_before_course_1(typed):
    course, patient = typed
    res = indication_by_status(course, patient)
    assert res.by_referral["chemo_delay"] == {"R/R": 0, "CR-MRDpos": 9, "CR-MRDneg": 45, "unknown": 0}
    assert res.by_referral["R/R"]["R/R"] == 30
    assert res.by_precourse["R/R"] == {"R/R": 11, "CR-MRDpos": 10, "CR-MRDneg": 9, "unknown": 0}
    total = sum(sum(d.values()) for d in res.by_referral.values())
    assert total == res.n == 105


def test_courses_per_patient(typed):
    course, patient = typed
    res = courses_per_patient(course, patient)
    rows = {r.group: r for r in res.rows}
    a = rows["all"]
    assert a.distribution == {1: 84, 2: 21} and a.total == 126 == len(course)
    assert (a.summary.median, a.summary.minimum, a.summary.maximum) == (1.0, 1.0, 2.0)
    assert sum(rows[g].n for g in ("CR-MRDneg", "CR-MRDpos", "R/R")) == 105
    assert sum(rows[g].total for g in ("CR-MRDneg", "CR-MRDpos", "R/R")) == 126


def test_baseline_by_indication(typed):
    _, patient = typed
    res = baseline_by_indication(patient)
    rows = {(r.group, r.variable, r.level): r for r in res.rows}
    assert rows[("all", "sex", "F")].count.k == 53  # odd person_ids
    assert rows[("chemo_delay", "sex", "M")].count.n == 54
    assert rows[("R/R", "burden_reduction", "yes")].count.k == 22
    age = rows[("all", "age_at_index_years", "years")].summary
    ages = 4.0 + (np.arange(1, 106) % 11)
    assert (age.median, age.minimum, age.maximum) == (np.median(ages), 4.0, 14.0)


def test_median_follow_up_is_the_reverse_km_not_the_median_time():
    # Death at 100 censors follow-up; alive at 200, 300, 400. Reverse KM: 1, 2/3, 1/3, 0 -> 300.
    # (The median observed time would be 250.)
    p = pd.DataFrame({"os_days": [100, 200, 300, 400], "os_event": [True, False, False, False],
                      "status_at_referral": ["R/R"] * 4})
    res = follow_up(p)
    allrow = res.rows[0]
    assert allrow.group == "all" and allrow.median.median == 300.0 and allrow.n_censored == 3
    assert [r.group for r in res.rows] == ["all", "R/R"]
    # Nobody alive: median not reached, stated as NaN (and a message in analyze).
    dead = p.assign(os_event=True)
    assert math.isnan(follow_up(dead).rows[0].median.median)


def test_survival_tidy_has_km_limits_with_their_transform_and_pairwise_tests():
    course, patient = paper_cohort()
    res = analyze(course, patient, by_center=False)
    tidy = res.to_tidy()
    surv = tidy["survival"].query("endpoint == 'EFS'").set_index("group")
    rr = {g.group: g for g in res.pooled.efs.groups}["R/R"]
    assert (surv.loc["R/R", "ci_low"], surv.loc["R/R", "ci_high"]) == rr.km.survival_ci_at(365, "log")
    assert set(tidy["survival"]["conf_type"]) == {"log"}
    assert 0 < surv.loc["R/R", "ci_low"] < surv.loc["R/R", "surv"] < surv.loc["R/R", "ci_high"] <= 1
    km = tidy["km_curves"]
    assert {"ci_low", "ci_high", "conf_type"} <= set(km.columns) and km["ci_low"].notna().any()
    ll = analyze(course, patient, by_center=False, km_conf_type="log-log").to_tidy()
    s2 = ll["survival"].query("endpoint == 'EFS'").set_index("group")
    assert set(ll["survival"]["conf_type"]) == {"log-log"}
    assert s2.loc["R/R", "ci_low"] != surv.loc["R/R", "ci_low"]
    assert dict(zip(ll["settings"]["key"], ll["settings"]["value"], strict=True))["km_conf_type"] == "log-log"
    with pytest.raises(ValueError, match="km_conf_type"):
        analyze(course, patient, by_center=False, km_conf_type="plain")
    tests = tidy["survival_tests"].query("endpoint == 'EFS' and comparison == 'pairwise'")
    assert len(tests) == 3
    p = coerce_table(patient, "patient")
    for groups, pval in zip(tests["groups"], tests["p_value"], strict=True):
        a, b = groups.split(" vs ")
        ma, mb = p["status_at_referral"] == a, p["status_at_referral"] == b
        ref = ll_logrank(p.loc[ma, "efs_days"].astype(float), p.loc[mb, "efs_days"].astype(float),
                         p.loc[ma, "efs_event"].astype(bool), p.loc[mb, "efs_event"].astype(bool))
        assert pval == pytest.approx(ref.p_value, rel=1e-9)


def test_new_tables_on_empty_input_do_not_crash():
    course, patient = paper_cohort()
    empty = analyze(course.iloc[:0], patient.iloc[:0])
    tidy = empty.to_tidy()
    for name in ("baseline", "indication_by_status", "courses_per_patient", "adverse_events",
                 "follow_up"):
        assert name in tidy
    assert tidy["follow_up"]["n"].tolist() == [0]


def test_efs_event_types_by_status_at_referral(typed):
    from blina_study.analysis.tables import efs_event_types

    _, patient = typed
    res = efs_event_types(patient)
    # The paper cohort's events (test_analysis_tables._set_survival): CR-MRDneg 1 death, CR-MRDpos 4
    # relapses, R/R 2 non-responses + 6 relapses.
    assert res.counts["CR-MRDneg"] == {"relapse": 0, "non_response": 0, "death": 1, "no event": 44}
    assert res.counts["CR-MRDpos"] == {"relapse": 4, "non_response": 0, "death": 0, "no event": 26}
    assert res.counts["R/R"] == {"relapse": 6, "non_response": 2, "death": 0, "no event": 22}
    p = patient.copy()
    p.loc[p.index[0], "efs_event_type"] = None  # an event without its type is shown, not dropped
    p.loc[p.index[1], "efs_event"] = None
    c = efs_event_types(p).counts[p.loc[p.index[0], "status_at_referral"]]
    assert c.get("event, type missing", 0) + c.get("missing", 0) >= 1
    assert sum(sum(v.values()) for v in efs_event_types(p).counts.values()) == 105
    tidy = analyze(*paper_cohort(), by_center=False).to_tidy()["efs_events"]
    assert tidy["n"].sum() == 105
