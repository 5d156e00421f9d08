"""Pooled-from-aggregates == centralized-on-concatenated-data, for every pooled analysis.

Four simulated sites (seeded); each site's statistics go through a JSON round trip (as in a
results package); the centralized references are lifelines, scipy and statsmodels fitted on
the concatenated patient-level tables.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from scipy import stats
from statsmodels.duration.survfunc import survdiff
from statsmodels.stats.contingency_tables import StratifiedTable

from blina_study.analysis.federated import (
    FederatedParams,
    cmh_exact_pvalue,
    pool_site_statistics,
    pool_table2x2,
    pool_wilcoxon,
    site_statistics,
)
from blina_study.analysis.federated.simulate import simulate_site
from blina_study.analysis.federated.sufficient import paired_difference_histogram
from blina_study.analysis.stats import fisher_exact_2x2

SITES = {"A": 60, "B": 45, "C": 30, "D": 20}
PARAMS = FederatedParams()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(20261123)
    frames = {s: simulate_site(rng, s, n) for s, n in SITES.items()}
    course = pd.concat([f[0] for f in frames.values()], ignore_index=True)
    patient = pd.concat([f[1] for f in frames.values()], ignore_index=True)
    site_stats = [site_statistics(c, p, site_id=s, params=PARAMS) for s, (c, p) in frames.items()]
    shipped = json.loads(json.dumps(site_stats, allow_nan=False))  # what a package carries
    return {
        "frames": frames,
        "course": course,
        "patient": patient,
        "result": pool_site_statistics(shipped),
    }


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier and log-rank
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["efs", "os"])
@pytest.mark.parametrize("group", ["CR-MRDneg", "CR-MRDpos", "R/R", "all"])
def test_km_equals_lifelines(data, endpoint, group):
    pat = data["patient"]
    if group != "all":
        pat = pat[pat["status_at_referral"] == group]
    kmf = KaplanMeierFitter().fit(pat[f"{endpoint}_days"], pat[f"{endpoint}_event"])
    km = data["result"]["pooled"]["survival"][endpoint]["groups" if group != "all" else "all"]
    if group != "all":
        km = km[group]
    times = km["time"]
    assert km["n"] == len(pat)
    assert km["n_events"] == int(pat[f"{endpoint}_event"].sum())
    np.testing.assert_allclose(
        km["survival"], kmf.survival_function_.loc[times].iloc[:, 0], rtol=0, atol=1e-12
    )
    np.testing.assert_array_equal(km["n_at_risk"], kmf.event_table.loc[times, "at_risk"])
    ci = kmf.confidence_interval_.loc[times]
    lower = [1.0 if x is None else x for x in km["ci_lower"]]
    upper = [1.0 if x is None else x for x in km["ci_upper"]]
    np.testing.assert_allclose(lower, ci.iloc[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(upper, ci.iloc[:, 1], rtol=0, atol=1e-12)
    # Landmark estimate at one year and its at-risk count.
    lm = km["landmarks"][0]
    assert lm["day"] == 365
    assert lm["survival"] == pytest.approx(
        float(kmf.survival_function_at_times(365).iloc[0]), abs=1e-12
    )
    assert lm["n_at_risk"] == int((pat[f"{endpoint}_days"] >= 365).sum())


def test_greenwood_se_matches_direct_formula(data):
    """SE of S(t) from the pooled table vs a per-patient computation of Greenwood's sum."""
    pat = data["patient"]
    km = data["result"]["pooled"]["survival"]["efs"]["all"]
    t, e = pat["efs_days"].to_numpy(), pat["efs_event"].to_numpy()
    s, gw = 1.0, 0.0
    for i, tj in enumerate(km["time"]):
        n = int((t >= tj).sum())
        d = int(((t == tj) & e).sum())
        if d and n > d:
            s *= 1 - d / n
            gw += d / (n * (n - d))
        assert km["se"][i] == pytest.approx(s * math.sqrt(gw), abs=1e-12)


@pytest.mark.parametrize("endpoint", ["efs", "os"])
def test_logrank_equals_lifelines_and_statsmodels(data, endpoint):
    pat = data["patient"]
    pat = pat[pat["status_at_referral"].isin(PARAMS.km_groups)]
    t, e, g = pat[f"{endpoint}_days"], pat[f"{endpoint}_event"], pat["status_at_referral"]
    lr = data["result"]["pooled"]["survival"][endpoint]["logrank"]
    ref = multivariate_logrank_test(t, g, e)
    assert lr["df"] == 2
    assert lr["chi2"] == pytest.approx(ref.test_statistic, rel=0, abs=1e-9)
    assert lr["p"] == pytest.approx(ref.p_value, rel=1e-9, abs=1e-15)
    chi2_sm, p_sm = survdiff(t.to_numpy(float), e.to_numpy(int), g.to_numpy())
    assert lr["chi2"] == pytest.approx(chi2_sm, abs=1e-9)


@pytest.mark.parametrize("endpoint", ["efs", "os"])
def test_stratified_logrank_equals_statsmodels(data, endpoint):
    pat = data["patient"]
    pat = pat[pat["status_at_referral"].isin(PARAMS.km_groups)]
    chi2, p = survdiff(
        pat[f"{endpoint}_days"].to_numpy(float),
        pat[f"{endpoint}_event"].to_numpy(int),
        pat["status_at_referral"].to_numpy(),
        strata=pat["site_id"].to_numpy(),
    )
    lr = data["result"]["pooled"]["survival"][endpoint]["logrank_stratified"]
    assert lr["chi2"] == pytest.approx(chi2, abs=1e-9)
    assert lr["p"] == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert sum(lr["observed"]) == int(pat[f"{endpoint}_event"].sum())


def test_per_site_logrank_equals_lifelines_on_that_site(data):
    for site, (_, pat) in data["frames"].items():
        pat = pat[pat["status_at_referral"].isin(PARAMS.km_groups)]
        lr = data["result"]["per_site"][site]["survival"]["efs"]["logrank"]
        present = pat["status_at_referral"].nunique()
        if present < 2:
            assert lr["chi2"] is None
            continue
        ref = multivariate_logrank_test(pat["efs_days"], pat["status_at_referral"], pat["efs_event"])
        assert lr["df"] == present - 1
        assert lr["chi2"] == pytest.approx(ref.test_statistic, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# Fisher and CMH
# ---------------------------------------------------------------------------------------------


def _response_frame(data, scope):
    c = data["course"]
    c = c[c["pre_status"].isin(["R/R", "CR-MRDpos"]) & c["cr"].notna()]
    if scope == "course1":
        c = c[c["course_number"] == 1]
    return c.merge(data["patient"], on=["site_id", "person_id"], how="left")


def _tables(df, exposure, outcome):
    out = []
    for site in SITES:
        sub = df[df["site_id"] == site]
        x, y = sub[exposure].astype(bool), sub[outcome].astype(bool)
        out.append([[int((x & y).sum()), int((x & ~y).sum())],
                    [int((~x & y).sum()), int((~x & ~y).sum())]])  # fmt: skip
    return np.array(out)


@pytest.mark.parametrize("scope", ["course1", "all"])
def test_response_fisher_and_cmh(data, scope):
    df = _response_frame(data, scope)
    df = df.assign(rr=df["pre_status"] == "R/R", crb=df["cr"].astype(bool))
    tabs = _tables(df, "rr", "crb")
    res = data["result"]["pooled"]["response"][scope]
    assert res["table"] == tabs.sum(0).tolist()
    # The centralized test (R fisher.test: conditional-MLE OR); its P agrees with scipy's.
    fisher = fisher_exact_2x2(*(int(x) for x in tabs.sum(0).ravel()))
    assert res["fisher"]["p"] == fisher.p_value
    assert res["fisher"]["p"] == pytest.approx(stats.fisher_exact(tabs.sum(0)).pvalue, rel=1e-9)
    assert res["fisher"]["odds_ratio"] == fisher.odds_ratio
    _check_cmh(res["cmh"], tabs)


def _check_cmh(cmh, tabs):
    keep = tabs.sum(axis=(1, 2)) >= 2
    st = StratifiedTable(np.moveaxis(tabs[keep], 0, -1).astype(float))
    test = st.test_null_odds(correction=False)
    assert cmh["chi2"] == pytest.approx(test.statistic, rel=1e-12)
    assert cmh["p"] == pytest.approx(test.pvalue, rel=1e-9, abs=1e-12)
    assert cmh["p_exact"] == pytest.approx(_brute_force_exact_cmh(tabs), rel=1e-9)
    if cmh["odds_ratio"] is None:  # a zero sum(ad/n) or sum(bc/n): OR_MH is 0 or infinite
        assert st.oddsratio_pooled in (0.0, np.inf)
        return
    assert cmh["odds_ratio"] == pytest.approx(st.oddsratio_pooled, rel=1e-12)
    assert cmh["log_or_se"] == pytest.approx(st.logodds_pooled_se, rel=1e-12)
    lo, hi = st.oddsratio_pooled_confint()
    assert (cmh["ci_lower"], cmh["ci_upper"]) == pytest.approx((lo, hi), rel=1e-9)


def _brute_force_exact_cmh(tabs):
    """Enumerate every table set with the observed margins (independent of the convolution)."""
    supports = []
    for (a, b), (c, d) in tabs.tolist():
        n1, m1, n = a + b, a + c, a + b + c + d
        xs = range(max(0, n1 + m1 - n), min(n1, m1) + 1)
        supports.append([(x, stats.hypergeom.pmf(x, n, m1, n1)) for x in xs])
    probs: dict[int, float] = {}
    for combo in itertools.product(*supports):
        s = sum(x for x, _ in combo)
        probs[s] = probs.get(s, 0.0) + math.prod(p for _, p in combo)
    p_obs = probs[int(tabs[:, 0, 0].sum())]
    return sum(p for p in probs.values() if p <= p_obs * (1 + 1e-7))


PREDICTOR_COLUMNS = {
    "poor_cytogenetics": lambda df: df["poor_cytogenetics"],
    "bcr_abl1": lambda df: df["bcr_abl1"],
    "cd19_loss": lambda df: df["cd19_loss"],
    "high_mrd": lambda df: df["high_mrd"],
    "age_group": lambda df: df["age_at_index_years"] >= PARAMS.age_group_cut_years,
    "sex": lambda df: df["sex"].map({"M": True, "F": False}),
}


@pytest.mark.parametrize("scope", ["course1", "all"])
@pytest.mark.parametrize("name", list(PREDICTOR_COLUMNS))
def test_predictor_tables(data, scope, name):
    df = _response_frame(data, scope)
    df = df.assign(x=PREDICTOR_COLUMNS[name](df), poor=~df["cr"].astype(bool))
    df = df[df["x"].notna()]
    tabs = _tables(df, "x", "poor")
    res = data["result"]["pooled"]["predictors"][f"{scope}/{name}"]
    assert res["table"] == tabs.sum(0).tolist()
    assert res["fisher"]["p"] == pytest.approx(stats.fisher_exact(tabs.sum(0)).pvalue, rel=1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        _check_cmh(res["cmh"], tabs)


def test_exact_cmh_single_stratum_is_fisher():
    for tab in ([[3, 1], [1, 3]], [[9, 2], [33, 7]], [[0, 5], [6, 1]], [[12, 0], [0, 9]]):
        assert cmh_exact_pvalue([tab]) == pytest.approx(stats.fisher_exact(tab).pvalue, rel=1e-12)


def test_cmh_skips_uninformative_strata():
    tabs = [{"table": [[3, 1], [2, 4]], "row_labels": ["x", "y"], "col_labels": ["u", "v"]},
            {"table": [[0, 0], [0, 1]], "row_labels": ["x", "y"], "col_labels": ["u", "v"]},
            {"table": [[5, 2], [1, 6]], "row_labels": ["x", "y"], "col_labels": ["u", "v"]}]  # fmt: skip
    res = pool_table2x2(tabs)
    assert res["cmh"]["n_strata"] == 2
    _check_cmh(res["cmh"], np.array([t["table"] for t in tabs]))


# ---------------------------------------------------------------------------------------------
# Cox PH stratified by site
# ---------------------------------------------------------------------------------------------


def _cox_frame(data):
    c1 = data["course"][data["course"]["course_number"] == 1][["site_id", "person_id", "high_mrd"]]
    df = data["patient"].merge(c1, on=["site_id", "person_id"], how="left")
    cols = list(PARAMS.cox_covariates)
    df = df.dropna(subset=cols)
    out = df[["site_id", "efs_days", "efs_event", *cols]].copy()
    out[cols] = out[cols].astype(float)
    out["efs_event"] = out["efs_event"].astype(int)
    return out


def _lifelines_cox(df, strata):
    cph = CoxPHFitter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph.fit(df, "efs_days", "efs_event", strata=strata,
                fit_options={"precision": 1e-12, "r_precision": 1e-14})  # fmt: skip
    return cph


def test_stratified_cox_equals_lifelines(data):
    df = _cox_frame(data)
    cph = _lifelines_cox(df, ["site_id"])
    cox = data["result"]["pooled"]["cox"]["efs"]
    cols = list(PARAMS.cox_covariates)
    assert cox["converged"] and cox["strata"] == "site" and cox["n_strata"] == len(SITES)
    assert cox["n"] == len(df)
    assert cox["n_events"] == int(df["efs_event"].sum())
    np.testing.assert_allclose(cox["coef"], cph.params_[cols], rtol=0, atol=1e-6)
    np.testing.assert_allclose(cox["se"], cph.standard_errors_[cols], rtol=0, atol=1e-6)
    np.testing.assert_allclose(cox["p"], cph.summary.loc[cols, "p"], rtol=1e-5, atol=1e-12)
    assert cox["loglik"] == pytest.approx(cph.log_likelihood_, abs=1e-8)


def test_per_site_cox_equals_lifelines_unstratified(data):
    df = _cox_frame(data)
    checked = 0
    for site in SITES:
        cox = data["result"]["per_site"][site]["cox"]["efs"]
        if not cox["converged"]:
            continue  # monotone likelihood at a small site: lifelines diverges too
        cph = _lifelines_cox(df[df["site_id"] == site].drop(columns="site_id"), None)
        cols = list(PARAMS.cox_covariates)
        np.testing.assert_allclose(cox["coef"], cph.params_[cols], rtol=0, atol=1e-6)
        np.testing.assert_allclose(cox["se"], cph.standard_errors_[cols], rtol=0, atol=1e-6)
        checked += 1
    assert checked >= 2


# ---------------------------------------------------------------------------------------------
# Wilcoxon signed-rank and medians
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["cd3", "cd4", "cd8"])
def test_wilcoxon_equals_scipy(data, marker):
    c1 = data["course"][data["course"]["course_number"] == 1]
    c1 = c1.dropna(subset=[f"{marker}_pre", f"{marker}_post"])
    pre, post = c1[f"{marker}_pre"].to_numpy(float), c1[f"{marker}_post"].to_numpy(float)
    diff = post - pre  # the data's own precision: nothing is rounded away
    ref = stats.wilcoxon(diff, zero_method="wilcox", correction=False, method="approx")
    res = data["result"]["pooled"]["wilcoxon"][marker]
    assert res["n"] == int((diff != 0).sum())
    assert res["n_zero"] == int((diff == 0).sum())
    assert res["statistic"] == ref.statistic
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-300)
    for key, values in (("pre", pre), ("post", post)):
        assert res[key]["n"] == len(values)
        assert res[key]["median"] == pytest.approx(float(np.median(values)), abs=1e-12)
        assert (res[key]["min"], res[key]["max"]) == pytest.approx((values.min(), values.max()))


def test_wilcoxon_exact_p_equals_scipy_without_ties():
    rng = np.random.default_rng(7)
    # Distinct |differences| and no zeros: scipy's exact null distribution applies.
    diffs = rng.permutation(np.arange(1, 26)) * rng.choice([-1, 1], 25, p=[0.35, 0.65])
    hist = [{"decimals": 2, "differences": [[int(d), 1] for d in diffs], "pre": [], "post": []}]
    res = pool_wilcoxon(hist)
    ref = stats.wilcoxon(diffs / 100, zero_method="wilcox", correction=False, method="exact")
    assert res["p_exact"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert res["statistic"] == ref.statistic


def test_wilcoxon_exact_p_with_ties_by_enumeration():
    diffs = [3, -3, 3, 5, 5, -1, 2, 2, 2, -7, 4, 0]
    hist = [{"decimals": 0, "differences": [[d, 1] for d in diffs], "pre": [], "post": []}]
    res = pool_wilcoxon(hist)
    nz = np.array([d for d in diffs if d != 0])
    ranks = stats.rankdata(np.abs(nz))
    w_obs = ranks[nz > 0].sum()
    mean = ranks.sum() / 2
    ws = np.array([ranks[list(s)].sum() for s in itertools.product([False, True], repeat=len(nz))
                   for s in [np.array(s)]])  # fmt: skip
    p_ref = min(1.0, 2 * min((ws <= w_obs + 1e-9).mean(), (ws >= w_obs - 1e-9).mean()))
    assert res["w_plus"] == w_obs
    assert res["p_exact_conditional"] == pytest.approx(p_ref, rel=1e-12)
    assert res["p_exact"] is None  # as the centralized test (R): no exact P with ties or zeros
    assert mean == pytest.approx(len(nz) * (len(nz) + 1) / 4)


def test_difference_histogram_quantizes_before_subtracting():
    h = paired_difference_histogram([0.96, 1.005, None], [1.13, 1.015, 2.0], 2)
    # 1.005 is 1.00499999... in binary; reporting precision rounds half away from zero.
    assert h["differences"] == [[1, 1], [17, 1]]
    assert h["n_incomplete"] == 1


def test_cytokine_medians(data):
    df = _response_frame(data, "all")
    for cyt in PARAMS.cytokines:
        for label, want in (("responder", True), ("poor_responder", False)):
            vals = df.loc[df["cr"] == want, f"{cyt}_peak"].dropna().to_numpy(float)
            res = data["result"]["pooled"]["cytokines"][f"all/{cyt}/{label}"]
            assert res["n"] == len(vals)
            assert res["median"] == pytest.approx(float(np.median(vals)), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------------


def test_flow_and_next_therapy_counts(data):
    pat = data["patient"]
    counts = data["result"]["pooled"]["counts"]
    ind = {row[0]: row[-1] for row in counts["indication"]["cells"]}
    assert ind == {k: int(v) for k, v in pat["indication"].value_counts().items()} | {
        k: 0 for k in set(ind) - set(pat["indication"])
    }
    nt = {(r[0], r[1]): r[2] for r in counts["next_therapy"]["cells"]}
    ref = pat.groupby(["status_at_referral", "next_therapy"]).size()
    for key, n in nt.items():
        assert n == int(ref.get(key, 0))
    assert sum(nt.values()) == len(pat)
    c1 = data["course"][data["course"]["course_number"] == 1]
    flow = pat.merge(c1[["site_id", "person_id", "pre_status"]], on=["site_id", "person_id"])
    ref = flow.groupby(["status_at_referral", "pre_status"]).size()
    for s, pre, n in counts["referral_by_course1"]["cells"]:
        assert n == int(ref.get((s, pre), 0))
    rr = flow[flow["status_at_referral"] == "R/R"]
    ref = rr.groupby(["burden_reduction", "pre_status"]).size()
    for b, pre, n in counts["rr_burden_by_course1"]["cells"]:
        assert n == int(ref.get((b == "yes", pre), 0))
    per_site = sum(
        sum(r[-1] for r in data["result"]["per_site"][s]["counts"]["burden_reduction"]["cells"])
        for s in SITES
    )
    assert per_site == len(pat) == data["result"]["pooled"]["n_patients"]


def test_response_counts(data):
    c = data["course"]
    outcome = np.where(c["pre_status"] == "CR-MRDneg", c["mrd_maintained"], c["cr"])
    c = c.assign(outcome=pd.Series(outcome).map({True: "response", False: "no_response"})
                 .fillna("not_evaluable"))  # fmt: skip
    ref = c.groupby(["pre_status", "outcome"]).size()
    cells = data["result"]["pooled"]["counts"]["response/all"]["cells"]
    assert {(p, o): n for p, o, n in cells if n} == {k: int(v) for k, v in ref.items()}
