"""Section-5 analyses on hand-made course/patient tables with known answers.

The main fixture rebuilds the paper's cohort as protocol section 1 reconstructs it (105 patients;
R/R 30 = 8 direct + 22 after burden reduction -> 3 R/R, 10 CR-MRDpos, 9 CR-MRDneg; ...), with the
responses of the abstract (9/11, 33/40, 73/74) and survival that reproduces the published 1-year
estimates. Independent checks use scipy (Fisher, Wilcoxon) and lifelines (log-rank).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import multivariate_logrank_test
from scipy.stats import fisher_exact, wilcoxon

from blina_study.analysis.io import (
    COURSE_SCHEMA,
    PATIENT_SCHEMA,
    StudyTableError,
    coerce_table,
    read_course,
    read_patient,
    write_results,
)
from blina_study.analysis.tables import (
    analyze,
    cox_efs,
    cytokine_peaks,
    next_therapy_by_referral,
    patient_flow,
    poor_response_predictors,
    response,
    survival_by_referral,
    tcell_change,
)

INDEX = pd.Timestamp("2023-01-02")


def _patient(site: str, pid: int, **kw) -> dict:
    row = {c: None for c in PATIENT_SCHEMA}
    row.update(
        site_id=site,
        person_id=pid,
        person_source_value=f"MRN{pid}",
        sex="F" if pid % 2 else "M",
        age_at_index_years=4.0 + (pid % 11),
        index_date=INDEX,
        n_courses=1,
        burden_reduction=False,
        poor_cytogenetics=False,
        bcr_abl1=False,
        next_therapy="none",
        efs_event=False,
        efs_days=400 + pid,
        os_event=False,
        os_days=400 + pid,
    )
    row.update(kw)
    row["last_followup"] = INDEX + pd.Timedelta(days=row["os_days"])
    return row


def _course(site: str, pid: int, number: int, pre: str, **kw) -> dict:
    row = {c: None for c in COURSE_SCHEMA}
    start = INDEX + pd.Timedelta(days=60 * (number - 1))
    row.update(
        site_id=site,
        person_id=pid,
        person_source_value=f"MRN{pid}",
        course_number=number,
        course_start=start,
        course_end=start + pd.Timedelta(days=27),
        infusion_days=28,
        pre_status=pre,
    )
    row.update(kw)
    return row


def paper_cohort(sites: tuple[str, ...] = ("A",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 105-patient cohort of protocol section 1, patients spread round-robin over ``sites``."""
    groups = [  # (n, status at referral, burden reduction, pre-status course 1, indication)
        (8, "R/R", False, "R/R", "R/R"),
        (3, "R/R", True, "R/R", "R/R"),
        (10, "R/R", True, "CR-MRDpos", "R/R"),
        (9, "R/R", True, "CR-MRDneg", "R/R"),
        (21, "CR-MRDpos", False, "CR-MRDpos", "CR-MRDpos"),
        (9, "CR-MRDpos", False, "CR-MRDpos", "chemo_delay"),
        (45, "CR-MRDneg", False, "CR-MRDneg", "chemo_delay"),
    ]
    pats, courses = [], []
    pid = 0
    n_rr_cr = n_pos_cr = n_neg_second = 0
    counts = {"R/R": 0, "CR-MRDpos": 0, "CR-MRDneg": 0}
    for n, ref, br, pre, ind in groups:
        for _ in range(n):
            pid += 1
            site = sites[pid % len(sites)]
            counts[pre] += 1
            c1: dict = {}
            if pre == "R/R":
                ok = n_rr_cr < 9
                n_rr_cr += ok
                c1 = dict(cr=ok, post_status="CR-MRDneg" if ok else "R/R", pre_blasts_pct=30.0)
            elif pre == "CR-MRDpos":
                ok = n_pos_cr < 33
                n_pos_cr += ok
                c1 = dict(cr=ok, post_status="CR-MRDneg" if ok else "CR-MRDpos", pre_mrd=2e-3)
            else:
                c1 = dict(mrd_maintained=True, post_status="CR-MRDneg", pre_mrd=0.0)
            courses.append(_course(site, pid, 1, pre, **c1))
            pk = dict(status_at_referral=ref, burden_reduction=br, indication=ind)
            if pre == "CR-MRDneg" and n_neg_second < 20:
                # 20 of the 54 CR-MRDneg patients get a second CR-MRDneg course: 74 courses.
                n_neg_second += 1
                kept = n_neg_second != 20  # the last one loses MRD negativity: 73/74
                courses.append(
                    _course(site, pid, 2, "CR-MRDneg", mrd_maintained=kept,
                            post_status="CR-MRDneg" if kept else "CR-MRDpos")
                )
                pk["n_courses"] = 2
            pats.append(_patient(site, pid, **pk))
    # One CR-MRDpos patient gets a second course without a response assessment (NE).
    first = next(c for c in courses if c["pre_status"] == "CR-MRDpos")
    first_pos = first["person_id"]
    courses.append(_course(first["site_id"], first_pos, 2, "CR-MRDpos", post_status="NE"))
    patient = pd.DataFrame(pats)
    course = pd.DataFrame(courses)
    patient.loc[patient["person_id"] == first_pos, "n_courses"] = 2
    _set_survival(patient, course)
    return course, patient


def _set_survival(patient: pd.DataFrame, course: pd.DataFrame) -> None:
    """Events before one year: CR-MRDneg 1/45 (a death), CR-MRDpos 4/30 (relapses),
    R/R 8/30 (2 non-responses at day 0, 6 relapses; 2 of the 8 die); none censored before 1 year."""
    c1 = course[course["course_number"] == 1].set_index("person_id")
    by_ref = {g: patient.index[patient["status_at_referral"] == g].tolist() for g in
              ("CR-MRDneg", "CR-MRDpos", "R/R")}
    i = by_ref["CR-MRDneg"][0]
    patient.loc[i, ["efs_event", "efs_event_type", "efs_days", "os_event", "os_days"]] = [
        True, "death", 200, True, 200]
    for k, i in enumerate(by_ref["CR-MRDpos"][:4]):
        patient.loc[i, ["efs_event", "efs_event_type", "efs_days"]] = [True, "relapse", 100 + 50 * k]
    rr = by_ref["R/R"]
    non_resp = [i for i in rr if c1.loc[patient.loc[i, "person_id"], "cr"] is False]
    assert len(non_resp) == 2
    others = [i for i in rr if i not in non_resp][:6]
    for i in non_resp:
        patient.loc[i, ["efs_event", "efs_event_type", "efs_days"]] = [True, "non_response", 0]
    for k, i in enumerate(others):
        patient.loc[i, ["efs_event", "efs_event_type", "efs_days"]] = [True, "relapse", 60 + 45 * k]
    for i, day in zip(non_resp, (200, 340), strict=True):
        patient.loc[i, ["os_event", "os_days"]] = [True, day]
    patient["last_followup"] = INDEX + pd.to_timedelta(patient["os_days"].astype(int), unit="D")


@pytest.fixture(scope="module")
def cohort():
    return paper_cohort()


@pytest.fixture(scope="module")
def typed(cohort):
    course, patient = cohort
    return coerce_table(course, "course"), coerce_table(patient, "patient")


def test_patient_flow_matches_protocol_section_1(typed):
    course, patient = typed
    f = patient_flow(course, patient)
    assert f.n == 105
    assert f.indication == {"R/R": 30, "CR-MRDpos": 21, "chemo_delay": 54}
    assert f.status_at_referral == {"R/R": 30, "CR-MRDpos": 30, "CR-MRDneg": 45, "unknown": 0}
    assert f.status_before_course_1 == {"R/R": 11, "CR-MRDpos": 40, "CR-MRDneg": 54, "unknown": 0}
    assert f.courses_by_pre_status["CR-MRDneg"] == 74
    assert f.pathway["R/R > direct > R/R"] == 8
    assert f.pathway["R/R > burden reduction > R/R"] == 3
    assert f.pathway["R/R > burden reduction > CR-MRDpos"] == 10
    assert f.pathway["R/R > burden reduction > CR-MRDneg"] == 9


def test_response_reproduces_paper(typed):
    course, _ = typed
    r1 = response(course, first_course_only=True)
    rr, pos, neg = r1.rates
    assert (rr.group, rr.rate.k, rr.rate.n) == ("R/R", 9, 11)
    assert (pos.group, pos.rate.k, pos.rate.n) == ("CR-MRDpos", 33, 40)
    assert rr.rate.format() == "81.8% (9/11)" and pos.rate.format() == "82.5% (33/40)"
    # Fisher on [[9, 2], [33, 7]]: exactly 1 (the paper prints P = 1.000).
    assert r1.comparison.p_value == pytest.approx(1.0, abs=1e-12)
    assert (r1.comparison.a, r1.comparison.b, r1.comparison.c, r1.comparison.d) == (9, 2, 33, 7)
    assert (neg.rate.k, neg.rate.n) == (54, 54)
    ra = response(course, first_course_only=False)
    rr, pos, neg = ra.rates
    assert (neg.rate.k, neg.rate.n) == (73, 74) and neg.rate.format() == "98.6% (73/74)"
    assert (pos.rate.k, pos.rate.n, pos.n_not_evaluable) == (33, 40, 1)  # the NE course


def _add_predictors(course: pd.DataFrame, patient: pd.DataFrame):
    """Known 2x2 tables among the 51 evaluable course-1 R/R + CR-MRDpos courses (9 poor)."""
    course, patient = course.copy(), patient.copy()
    c1 = course[(course["course_number"] == 1) & course["pre_status"].isin(["R/R", "CR-MRDpos"])]
    poor = c1.loc[c1["cr"] == False, "person_id"].tolist()  # noqa: E712
    good = c1.loc[c1["cr"] == True, "person_id"].tolist()  # noqa: E712
    assert (len(poor), len(good)) == (9, 42)
    pid = patient["person_id"]
    patient.loc[pid.isin(poor[:5] + good[:2]), "poor_cytogenetics"] = True  # 5/9 vs 2/42
    patient.loc[pid.isin(poor[:4] + good[10:13]), "bcr_abl1"] = True  # 4/9 vs 3/42
    patient.loc[pid.isin(poor[:3] + good[:12]), "age_at_index_years"] = 10.0  # >= 10: 3 / 12
    patient.loc[pid.isin(poor[3:] + good[12:]), "age_at_index_years"] = 6.5
    patient.loc[pid.isin(poor[:2]), "sex"] = "unknown"  # left out of the sex test
    m1 = course["course_number"] == 1
    course.loc[m1 & course["person_id"].isin(poor[:3] + good[:4]), "cd19_loss"] = True
    course.loc[m1 & course["person_id"].isin(poor[3:8] + good[4:30]), "cd19_loss"] = False
    # cd19_loss missing for 1 poor + 12 good courses
    course.loc[m1 & course["person_id"].isin(poor + good), "high_mrd"] = False
    course.loc[m1 & course["person_id"].isin(poor[:6] + good[:5]), "high_mrd"] = True
    # A course-2 value must not leak into the course-1 analysis.
    course.loc[course["course_number"] == 2, "high_mrd"] = True
    return course, patient, poor, good


def test_poor_response_predictors_known_tables(typed):
    course, patient, poor, good = _add_predictors(*typed)
    res = poor_response_predictors(course, patient, first_course_only=True)
    assert (res.n, res.n_poor, res.courses) == (51, 9, "course 1")
    by = {p.variable: p for p in res.predictors}
    expected = {
        # [[poor, not poor] exposed, [poor, not poor] reference]
        "poor_cytogenetics": (5, 2, 4, 40),
        "bcr_abl1": (4, 3, 5, 39),
        "cd19_loss": (3, 4, 5, 26),
        "high_mrd": (6, 5, 3, 37),
        "age_group": (3, 12, 6, 30),
    }
    for var, (a, b, c, d) in expected.items():
        p = by[var]
        assert (p.exposed.k, p.exposed.n - p.exposed.k, p.reference.k,
                p.reference.n - p.reference.k) == (a, b, c, d), var
        assert p.test.p_value == pytest.approx(fisher_exact([[a, b], [c, d]])[1], rel=1e-9)
    assert by["cd19_loss"].n_missing == 13
    assert by["age_group"].exposed_label == ">= 10 y"  # age exactly 10 counts as >= 10
    sex = by["sex"]
    assert sex.n_missing == 2 and sex.n == 49 and sex.exposed_label == "M"
    # Poor cytogenetics is a strong predictor here (P well below 0.05).
    assert by["poor_cytogenetics"].test.p_value < 0.001
    allc = poor_response_predictors(course, patient, first_course_only=False)
    assert allc.n == 51  # the only extra R/R/CR-MRDpos course is NE (cr NULL)


def test_cox_efs_uses_course_1_high_mrd_and_complete_cases(typed):
    course, patient, poor, good = _add_predictors(*typed)
    res = cox_efs(course, patient)
    # high_mrd is set only for the 51 R/R + CR-MRDpos course-1 courses; others are complete-case
    # exclusions (course-2 values must not be used).
    assert res.n == 51 and res.n_excluded == 105 - 51
    assert res.estimated and [t.covariate for t in res.terms] == [
        "high_mrd", "bcr_abl1", "poor_cytogenetics"]
    for t in res.terms:
        assert t.hr == pytest.approx(math.exp(t.coef))
        assert t.ci_low < t.hr < t.ci_high and 0 <= t.p_value <= 1
    # All events among bcr_abl1 = False (monotone likelihood): as R, a finite coefficient and a
    # warning naming the variable; no crash, nothing silently dropped.
    p2 = patient.assign(bcr_abl1=patient["efs_event"].astype(bool) == False)  # noqa: E712
    res2 = cox_efs(course, p2)
    assert res2.estimated and "bcr_abl1" not in dict(res2.dropped)
    assert any("Loglik converged before variable 2 (bcr_abl1)" in m for m in res2.messages)
    assert any("monotone likelihood" in m and "bcr_abl1" in m for m in res2.messages)


def test_tcells_course_1_pairs_and_wilcoxon(cohort):
    course, patient = cohort
    course = course.copy()
    pre = [0.96, 0.35, 0.41, 1.2, 0.03, 3.79, 0.5, 0.8, 0.22, 1.1, 0.64, 0.9]
    post = [1.13, 0.47, 0.56, 1.2, 0.26, 7.74, 0.62, 0.7, 0.4, 1.1, 0.8, 1.02]
    idx = course.index[course["course_number"] == 1][:14]
    course.loc[idx[:12], "cd3_pre"] = pre
    course.loc[idx[:12], "cd3_post"] = post
    course.loc[idx[12], "cd3_pre"] = 5.0  # pre only
    course.loc[idx[13], "cd3_post"] = 5.0  # post only
    course.loc[course["course_number"] == 2, ["cd3_pre", "cd3_post"]] = [100.0, 0.0]  # ignored
    res = tcell_change(coerce_table(course, "course"))
    cd3 = res.markers[0]
    assert cd3.marker == "CD3" and cd3.n == 12 and (cd3.n_pre_only, cd3.n_post_only) == (1, 1)
    assert cd3.pre.median == pytest.approx(float(np.median(pre)))
    assert (cd3.pre.minimum, cd3.pre.maximum, cd3.post.maximum) == (0.03, 3.79, 7.74)
    ref = wilcoxon(post, pre, zero_method="wilcox", correction=False, method="approx")
    assert cd3.test.p_normal == pytest.approx(ref.pvalue, rel=1e-9)
    assert cd3.test.n_zero == 2 and cd3.test.p_exact is None
    assert "normal approximation without continuity correction" in cd3.test.method
    cd4 = res.markers[1]
    assert cd4.n == 0 and math.isnan(cd4.test.p_value)


def test_cytokine_peaks_by_response(cohort):
    course, _ = cohort
    course = course.copy()
    rr_cr = course.index[(course["pre_status"] == "R/R") & (course["cr"] == True)]  # noqa: E712
    rr_no = course.index[(course["pre_status"] == "R/R") & (course["cr"] == False)]  # noqa: E712
    course.loc[rr_cr[:3], "il6_peak"] = [10.0, 250.0, 40.0]
    course.loc[rr_no, "il6_peak"] = [5.0, 7.0]
    res = cytokine_peaks(coerce_table(course, "course"))
    rows = {(r.variable, r.group): r.summary for r in res.rows}
    assert rows[("il6_peak", "CR")].format(1) == "40.0 (10.0-250.0)"
    assert rows[("il6_peak", "no CR")].median == 6.0
    assert rows[("il6_peak", "MRD-neg maintained")].n == 0
    assert res.n == 11 + 40 + 74  # every course with a response assessment


def test_survival_reproduces_published_one_year_estimates(typed):
    _, patient = typed
    efs = survival_by_referral(patient, "EFS")
    texts = {g.group: g.text for g in efs.groups}
    assert texts == {"CR-MRDneg": "97.8% ± 2.2%", "CR-MRDpos": "86.7% ± 6.2%",
                     "R/R": "73.3% ± 8.1%"}
    os_ = survival_by_referral(patient, "OS")
    assert {g.group: g.text for g in os_.groups} == {
        "CR-MRDneg": "97.8% ± 2.2%", "CR-MRDpos": "100%", "R/R": "93.3% ± 4.6%"}
    for res, tcol, ecol in ((efs, "efs_days", "efs_event"), (os_, "os_days", "os_event")):
        ref = multivariate_logrank_test(
            patient[tcol].astype(float), patient["status_at_referral"].astype(str),
            patient[ecol].astype(bool),
        )
        assert res.logrank.chisq == pytest.approx(ref.test_statistic, rel=1e-9)
        assert res.logrank.p_value == pytest.approx(ref.p_value, rel=1e-9)
        assert res.logrank.df == 2 and res.n == 105 and res.n_excluded == 0
    rr = {g.group: g for g in efs.groups}["R/R"]
    # At risk (time >= t): 30 at day 0 (the day-0 non-responses count); by day 90 the two
    # day-0 events and the relapse at day 60 have left: 27.
    assert rr.at_risk[:2] == (30, 27)
    assert efs.risk_times_days[:2] == (0.0, 90.0)


def test_next_therapy_counts(typed):
    _, patient = typed
    p = patient.copy()
    p.loc[p.index[:3], "next_therapy"] = "HSCT"  # first 3 patients are R/R at referral
    p.loc[p.index[3], "next_therapy"] = "CAR-T"
    res = next_therapy_by_referral(p)
    assert res.counts["R/R"] == {"HSCT": 3, "CAR-T": 1, "protocol": 0, "none": 26}
    assert res.counts["CR-MRDneg"]["none"] == 45 and "unknown" not in res.counts


def test_analyze_pooled_and_per_center(tmp_path):
    course, patient = paper_cohort(sites=("A", "B", "C"))
    res = analyze(course, patient, by_center=True, parameters={"landmark_days": 365, "x": 1})
    assert list(res.by_site) == ["A", "B", "C"]
    assert res.pooled.n_patients == 105
    assert sum(s.n_patients for s in res.by_site.values()) == 105
    # Pooled = the cohort as one: same as analysing the single-site cohort.
    course1, patient1 = paper_cohort(sites=("A",))
    single = analyze(course1, patient1, by_center=False)
    assert single.by_site == {}
    assert res.pooled.response == single.pooled.response
    assert res.pooled.efs.logrank == single.pooled.efs.logrank
    # Per center = analysing that center alone.
    only_b = analyze(course[course.site_id == "B"], patient[patient.site_id == "B"],
                     by_center=False)
    assert only_b.pooled.response == res.by_site["B"].response
    assert only_b.pooled.efs.groups == res.by_site["B"].efs.groups

    tidy = res.to_tidy()
    for name in ("flow", "response", "response_tests", "predictors", "cox", "tcells",
                 "cytokines", "survival", "survival_tests", "risk_table", "km_curves",
                 "next_therapy", "messages", "settings"):
        assert name in tidy
    assert set(tidy["response"]["scope"]) == {"pooled", "A", "B", "C"}
    row = tidy["response"].query("scope == 'pooled' and courses == 'course 1' and group == 'R/R'")
    assert row["text"].item() == "81.8% (9/11)"
    surv = tidy["survival"].query("scope == 'pooled' and endpoint == 'EFS'")
    assert surv["text"].tolist() == ["97.8% ± 2.2%", "86.7% ± 6.2%", "73.3% ± 8.1%"]
    settings = dict(zip(tidy["settings"]["key"], tidy["settings"]["value"], strict=True))
    assert settings["landmark_days"] == "365" and settings["param.x"] == "1"
    # Exclusions are reported per site (here: the NE course sits at one site only).
    ne = [k for k, s in res.by_site.items() if any("NE or unknown" in m for _, m in s.messages)]
    assert len(ne) == 1

    paths = write_results(res, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"response.csv", "survival.csv", "results.json"} <= names
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["settings"]["landmark_days"] == 365
    rows = doc["tables"]["response_tests"]
    assert rows[0]["p_value"] == pytest.approx(1.0)
    back = pd.read_csv(tmp_path / "out" / "survival.csv")
    assert len(back) == len(tidy["survival"])
    json.dumps(res.to_dict(), default=str)  # the dataclasses are plain data


def test_degenerate_sites_do_not_crash():
    course, patient = paper_cohort()
    # One patient, censored, no T cells, NE course.
    c = course[course.person_id == 1].assign(cr=None, post_status="NE")
    p = patient[patient.person_id == 1].assign(efs_event=False, os_event=False, efs_days=30,
                                               os_days=30, efs_event_type=None)
    res = analyze(c, p)
    r = res.pooled
    assert r.response[0].rates[0].n_not_evaluable == 1
    assert math.isnan(r.response[0].rates[0].rate.pct)
    assert not r.cox_efs.estimated
    assert math.isnan(r.efs.groups[0].surv)  # follow-up ends before one year
    assert math.isnan(r.efs.logrank.p_value)
    msgs = " | ".join(m for _, m in r.messages)
    assert "not estimable" in msgs and "no model" in msgs
    # Empty tables (a site with no patients) also run.
    empty = analyze(course.iloc[:0], patient.iloc[:0])
    assert empty.pooled.n_patients == 0 and empty.by_site == {}
    assert empty.pooled.efs.groups == ()
    tidy = empty.to_tidy()
    assert tidy["survival"].empty
    # Status at referral unknown: left out of survival and counted.
    p2 = patient.copy()
    p2.loc[p2.index[:2], "status_at_referral"] = "unknown"
    r2 = analyze(course, p2, by_center=False).pooled
    assert r2.efs.n_excluded == 2 and r2.flow.status_at_referral["unknown"] == 2


def test_bad_input_gives_clear_errors(tmp_path):
    course, patient = paper_cohort()
    with pytest.raises(StudyTableError, match="missing course column"):
        analyze(course.drop(columns=["cr"]), patient)
    bad = patient.copy()
    bad["status_at_referral"] = bad["status_at_referral"].astype(object)
    bad.loc[3, "status_at_referral"] = "CR"
    with pytest.raises(StudyTableError, match=r"row 4: column 'status_at_referral'.*'CR'"):
        analyze(course, bad)
    with pytest.raises(StudyTableError, match="patients without a course 1"):
        analyze(course[course.person_id != 5], patient)
    dup = pd.concat([patient, patient.iloc[[0]]], ignore_index=True)
    with pytest.raises(StudyTableError, match="duplicated key"):
        analyze(course, dup)
    # CSV: the error names the file and the physical line.
    path = tmp_path / "course.csv"
    c = course.copy().astype(object)
    c.loc[2, "pre_mrd"] = "<0.01"
    c.loc[4, "cr"] = "maybe"
    c.to_csv(path, index=False)
    with pytest.raises(StudyTableError) as err:
        read_course(path)
    text = str(err.value)
    assert f"{path} line 4: column 'pre_mrd'" in text and "'<0.01'" in text
    assert "line 6: column 'cr'" in text and "hint:" in text
    with pytest.raises(StudyTableError, match="file not found"):
        read_patient(tmp_path / "nope.csv")


def test_io_round_trip_csv_and_parquet(tmp_path, cohort):
    course, patient = cohort
    for ext in ("csv", "parquet"):
        cp, pp = tmp_path / f"course.{ext}", tmp_path / f"patient.{ext}"
        typed_c = coerce_table(course, "course")
        typed_p = coerce_table(patient, "patient")
        if ext == "csv":
            typed_c.to_csv(cp, index=False)
            typed_p.to_csv(pp, index=False)
        else:
            typed_c.to_parquet(cp)
            typed_p.to_parquet(pp)
        c2, p2 = read_course(cp), read_patient(pp)
        assert str(c2["course_start"].dtype) == "datetime64[ns]"
        assert str(c2["cr"].dtype) == "boolean" and c2["cr"].isna().sum() == 74 + 1
        assert str(p2["efs_days"].dtype) == "Int64" and str(p2["sex"].dtype) == "string"
        assert p2["last_followup"].iloc[0] == typed_p["last_followup"].iloc[0]
        pd.testing.assert_frame_equal(c2, typed_c, check_dtype=True)
        pd.testing.assert_frame_equal(p2, typed_p, check_dtype=True)


def test_pooled_cox_can_be_stratified_by_site():
    course, patient = paper_cohort(sites=("A", "B"))
    course, patient, _, _ = _add_predictors(coerce_table(course, "course"),
                                            coerce_table(patient, "patient"))
    plain = analyze(course, patient, by_center=False).pooled.cox_efs
    strat = analyze(course, patient, by_center=False, cox_strata_by_site=True).pooled.cox_efs
    assert "stratified by site_id" in strat.method and "stratified" not in plain.method
    assert strat.n == plain.n and strat.terms[0].coef != pytest.approx(plain.terms[0].coef)
