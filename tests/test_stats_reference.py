"""Our statistics against values computed by R (survival 3.5.3, stats; R 4.2.2).

The R calls are in tests/fixtures/r_reference/reference.R and beside every value in
reference_values.json (field "call"). R is not needed to run these tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact, nchypergeom_fisher

from blina_study.analysis.stats import fisher_exact_2x2, median_range, proportion, wilcoxon_signed_rank
from blina_study.analysis.survival import cox_ph, format_surv_se, kaplan_meier, logrank_test

HERE = Path(__file__).resolve().parent / "fixtures" / "r_reference"
REF = json.loads((HERE / "reference_values.json").read_text())
DATA = pd.read_csv(HERE / "survival_data.csv")
TOL = 1e-6


def _close(ours, theirs, rtol=TOL, atol=1e-9):
    np.testing.assert_allclose(np.asarray(ours, float), np.asarray(theirs, float), rtol, atol)


def _unit_scale(v: float) -> float:
    """R's uniroot search variable for an odds ratio: t itself below 1, 1/t above."""
    return v if v <= 1 else 1 / v


def _subset(name: str) -> pd.DataFrame:
    return DATA if name == "all" else DATA[DATA["group"] == name]


@pytest.mark.parametrize("name", ["CR-MRDneg", "CR-MRDpos", "R/R", "all"])
def test_kaplan_meier_matches_survfit(name):
    ref = REF["kaplan_meier"][name]
    d = _subset(name)
    km = kaplan_meier(d["time"], d["event"])
    _close(km.time, ref["time"])
    assert list(km.n_risk) == ref["n_risk"]
    assert list(km.n_event) == ref["n_event"]
    assert list(km.n_censor) == ref["n_censor"]
    _close(km.surv, ref["surv"])
    _close(km.std_err_cumhaz, ref["std_err_cumhaz"])
    _close(km.se, ref["se_surv"])


@pytest.mark.parametrize("name", ["CR-MRDneg", "CR-MRDpos", "R/R", "all"])
def test_kaplan_meier_landmarks_match_summary(name):
    summ = REF["kaplan_meier"][name]["summary"]
    d = _subset(name)
    km = kaplan_meier(d["time"], d["event"])
    for t, s, se, nr in zip(summ["times"], summ["surv"], summ["se_surv"], summ["n_risk"], strict=True):
        ours_s, ours_se = km.survival_at(t)
        assert ours_s == pytest.approx(s, rel=TOL)
        assert ours_se == pytest.approx(se, rel=TOL, abs=1e-12)
        assert km.at_risk([t])[0] == nr


def test_kaplan_meier_curve_reaching_zero():
    ref = REF["kaplan_meier"]["to_zero"]
    km = kaplan_meier(ref["input_time"], ref["input_event"])
    _close(km.surv, ref["surv"])
    # R reports Inf (JSON null) for the cumulative-hazard SE once S = 0; we report SE(S) = 0 there.
    _close(km.se[:-1], ref["se_surv"][:-1])
    assert ref["se_surv"][-1] is None and km.se[-1] == 0.0
    assert km.survival_at(100) == (0.0, 0.0)  # S stays 0 after the curve hit 0


def test_kaplan_meier_not_estimable_after_last_censoring():
    km = kaplan_meier([10, 20, 30], [1, 0, 0])
    s, se = km.survival_at(365)
    assert math.isnan(s) and math.isnan(se)
    assert km.survival_at(29) == pytest.approx((2 / 3, math.sqrt((2 / 3) ** 2 * (1 / 6))))
    assert km.at_risk([0, 10, 11, 30, 31]) == (3, 3, 2, 1, 0)


def test_kaplan_meier_drops_missing_and_rejects_bad_events():
    km = kaplan_meier([5, None, 7, 9], [1, 1, None, 0])
    assert km.n == 2 and km.n_dropped == 2
    with pytest.raises(ValueError, match="0/1"):
        kaplan_meier([1, 2], [1, 2])
    with pytest.raises(ValueError, match="negative"):
        kaplan_meier([-1, 2], [1, 0])
    empty = kaplan_meier([], [])
    assert empty.n == 0 and math.isnan(empty.survival_at(365)[0])


def test_paper_binomial_landmark_values():
    # 44 of 45 alive at one year, no censoring before: S = 0.978, Greenwood SE = binomial SE = 0.022.
    km = kaplan_meier([100] + [400] * 44, [1] + [0] * 44)
    assert format_surv_se(*km.survival_at(365)) == "97.8% ± 2.2%"
    km = kaplan_meier([50] * 8 + [500] * 22, [1] * 8 + [0] * 22)
    assert format_surv_se(*km.survival_at(365)) == "73.3% ± 8.1%"
    km = kaplan_meier([500] * 10, [0] * 10)
    assert format_surv_se(*km.survival_at(365)) == "100%"


@pytest.mark.parametrize("case", ["three_groups", "two_groups"])
def test_logrank_matches_survdiff(case):
    ref = REF["logrank"][case]
    d = DATA if case == "three_groups" else DATA[DATA["group"] != "R/R"]
    lr = logrank_test(d["time"], d["event"], d["group"])
    assert list(lr.groups) == ref["groups"]
    assert list(lr.n_per_group) == ref["n"]
    _close(lr.observed, ref["observed"])
    _close(lr.expected, ref["expected"])
    assert lr.chisq == pytest.approx(ref["chisq"], rel=TOL)
    assert lr.df == ref["df"]
    assert lr.p_value == pytest.approx(ref["p"], rel=TOL)


def test_logrank_degenerate_inputs():
    one = logrank_test([1, 2, 3], [1, 0, 1], ["a", "a", "a"])
    assert one.df == 0 and math.isnan(one.p_value) and "not computable" in one.method
    # A group censored before the first event has expected 0 and is left out of the df, as in R.
    lr = logrank_test([1, 5, 6, 7, 8, 9], [0, 1, 0, 1, 1, 0], ["c", "a", "a", "b", "b", "b"])
    assert lr.groups == ("a", "b", "c") and lr.df == 1
    none = logrank_test([1, 2], [0, 0], ["a", "b"])
    assert math.isnan(none.p_value)


@pytest.mark.parametrize(
    ("case", "covs", "strata"),
    [
        ("three_covariates", ["x1", "x2", "x3"], None),
        ("one_covariate", ["x1"], None),
        ("stratified", ["x1", "x2", "x3"], "group"),
    ],
)
def test_cox_matches_coxph_efron(case, covs, strata):
    ref = REF["cox"][case]
    res = cox_ph(DATA, "time", "event", covs, strata=strata)
    assert res.estimated and res.n == ref["n"] and res.n_events == ref["n_events"]
    assert [t.covariate for t in res.terms] == ref["covariates"]
    _close([t.coef for t in res.terms], ref["coef"])
    _close([t.se for t in res.terms], ref["se"])
    _close([t.p_value for t in res.terms], ref["p"])
    _close([t.hr for t in res.terms], ref["hr"])
    _close([t.ci_low for t in res.terms], ref["ci_low"])
    _close([t.ci_high for t in res.terms], ref["ci_high"])
    assert res.loglik == pytest.approx(ref["loglik"], rel=TOL)
    for t in res.terms:
        assert 0.0 <= t.ph_p_value <= 1.0  # reported; lifelines' approximation differs from R 3.x


def test_cox_drops_constant_keeps_monotone_covariate_with_r_warning():
    d = DATA.copy()
    d["const"] = 1
    d["never"] = 0
    d.loc[d["event"] == 0, "never"] = (d.index[d["event"] == 0] % 2).astype(int)  # no events at 1
    res = cox_ph(d, "time", "event", ["x1", "const", "never"])
    assert res.estimated
    # R: a constant covariate is aliased (NA); all events at never = 0 is monotone likelihood:
    # a finite coefficient with "Loglik converged before variable 2 ... may be infinite".
    assert [t.covariate for t in res.terms] == ["x1", "never"]
    reasons = dict(res.dropped)
    assert reasons["const"].startswith("constant") and "never" not in reasons
    assert any("const dropped" in m for m in res.messages)
    assert any("Loglik converged before variable 2 (never)" in m for m in res.messages)
    assert res.terms[1].coef < -5 and math.isfinite(res.terms[1].coef)


def test_cox_no_events_or_no_data_gives_message_not_crash():
    d = DATA.assign(event=0)
    res = cox_ph(d, "time", "event", ["x1"])
    assert not res.estimated and "no events" in res.messages[-1]
    res = cox_ph(DATA.iloc[:0], "time", "event", ["x1"])
    assert not res.estimated and "no complete cases" in res.messages[-1]
    d = DATA.assign(x1=np.nan)
    res = cox_ph(d, "time", "event", ["x1"])
    assert not res.estimated and res.n_excluded == len(DATA)


def test_cox_accepts_nullable_booleans_and_reports_missing():
    d = DATA.copy()
    d["x1"] = pd.array(d["x1"].astype(bool), dtype="boolean")
    d["event"] = pd.array(d["event"].astype(bool), dtype="boolean")
    d.loc[0, "x1"] = pd.NA
    res = cox_ph(d, "time", "event", ["x1"])
    assert res.estimated and res.n == len(DATA) - 1 and res.n_excluded == 1


@pytest.mark.parametrize("i", range(len(REF["fisher"])))
def test_fisher_matches_r(i):
    ref = REF["fisher"][i]
    a, b, c, d = ref["table"]
    res = fisher_exact_2x2(a, b, c, d)
    assert res.p_value == pytest.approx(ref["p"], rel=1e-7), ref["call"]
    # scipy's own two-sided convention agrees with R's on these tables.
    assert res.p_value == pytest.approx(fisher_exact([[a, b], [c, d]])[1], rel=1e-7)
    # R finds the conditional MLE and CI ends with uniroot(tol = .Machine$double.eps^0.25 ~ 1.2e-4)
    # on t in (0, 1], where the value is t or 1/t: R is only that accurate, so compare on R's scale
    # with R's tolerance, and check our CI ends against their definition to 1e-9 below.
    finite = [ref["estimate"], ref["ci_low"], ref["ci_high"]]
    if all(v is not None and 0 < v for v in finite):
        for ours, r in zip((res.odds_ratio, res.ci_low, res.ci_high), finite, strict=True):
            assert _unit_scale(ours) == pytest.approx(_unit_scale(r), abs=3e-4)
    if math.isfinite(res.ci_low) and res.ci_low > 0:
        # Exact CI: P(X >= a | OR = ci_low) = 0.025 under Fisher's noncentral hypergeometric.
        dist = nchypergeom_fisher(a + b + c + d, a + c, a + b, res.ci_low)
        assert dist.sf(a - 1) == pytest.approx(0.025, rel=1e-6)
    if math.isfinite(res.ci_high):
        dist = nchypergeom_fisher(a + b + c + d, a + c, a + b, res.ci_high)
        assert dist.cdf(a) == pytest.approx(0.025, rel=1e-6)


def test_fisher_paper_figure_and_tie_tolerance():
    assert fisher_exact_2x2(9, 2, 33, 7).p_value == pytest.approx(1.0, abs=1e-12)
    # Symmetric margins: the mirror table has the same probability up to rounding, R counts both.
    assert fisher_exact_2x2(3, 1, 1, 3).p_value == pytest.approx(0.4857142857142857, rel=1e-9)
    assert fisher_exact_2x2(0, 0, 3, 4).p_value == 1.0
    with pytest.raises(ValueError):
        fisher_exact_2x2(1, -1, 2, 3)


@pytest.mark.parametrize("i", range(len(REF["wilcoxon"])))
def test_wilcoxon_matches_r(i):
    ref = REF["wilcoxon"][i]
    res = wilcoxon_signed_rank(ref["before"], ref["after"])
    assert res.statistic == pytest.approx(ref["statistic_V"], rel=1e-12)
    assert res.p_normal == pytest.approx(ref["p_normal"], rel=TOL)
    assert res.p_value == res.p_normal
    assert "normal approximation without continuity correction" in res.method
    if ref["exact_applies"] and res.n_used <= 49:
        assert res.p_exact == pytest.approx(ref["p_exact"], rel=TOL)
        assert "exact P also given" in res.method
    else:
        assert res.p_exact is None and "exact P not computed" in res.method


def test_wilcoxon_edge_cases():
    res = wilcoxon_signed_rank([1, 2, None], [1, 2, 3])
    assert res.n == 2 and res.n_zero == 2 and math.isnan(res.p_value)
    assert "not computable" in res.method
    res = wilcoxon_signed_rank([1.0], [2.0])
    assert res.p_exact == 1.0 and res.n_used == 1
    with pytest.raises(ValueError, match="align"):
        wilcoxon_signed_rank([1, 2], [1])


def test_count_and_median_helpers():
    p = proportion(9, 11)
    assert p.format() == "81.8% (9/11)"
    assert proportion(73, 74).format() == "98.6% (73/74)"
    assert proportion(0, 0).format() == "- (0/0)"
    with pytest.raises(ValueError):
        proportion(3, 2)
    m = median_range([0.96, None, 0.03, 3.79, float("nan")])
    assert (m.n, m.median, m.minimum, m.maximum) == (3, 0.96, 0.03, 3.79)
    assert m.format() == "0.96 (0.03-3.79)"
    assert median_range([]).format() == "-"
