"""Issue 13 acceptance: at the ``exact`` sharing level, every pooled analysis of protocol section 5
equals the centralized analysis (``blina_study.analysis.tables.analyze``) of the concatenated sites to 1e-9.

Data: the ``blina synth`` cohort (105 patients, its four centers, lab values with 3 decimals, so a
package that rounded to 2 decimals would fail the Wilcoxon checks), and 20 random site splits of the
same cohort, among them splits with a site of 5 patients and a site without any event. Each site's
statistics go through a JSON round trip, as in a package. Both Cox models (unstratified and
stratified by site) are compared.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from _helpers import synth_tables

from blina_study.analysis.federated import pool_site_statistics, site_statistics
from blina_study.analysis.tables import analyze

TOL = 1e-9
CYTOKINE_GROUPS = {"CR": "responder", "no CR": "poor_responder",
                   "MRD-neg maintained": "mrdneg_maintained", "MRD-neg lost": "mrdneg_lost",
                   "all courses": "all_courses"}  # fmt: skip


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synth_tables()


def _resplit(course, patient, assignment: dict[int, str]):
    course, patient = course.copy(), patient.copy()
    patient["site_id"] = patient["person_id"].map(assignment).astype("string")
    course["site_id"] = course["person_id"].map(assignment).astype("string")
    return course, patient


def _random_splits(patient: pd.DataFrame, n: int = 20, seed: int = 20261204) -> list[dict[int, str]]:
    """Random partitions of the patients into 2-6 sites of at least 5; split 0 has a site of
    exactly 5 patients, split 1 a site of 6 patients none of whom has an EFS or OS event, and every
    third split both."""
    rng = np.random.default_rng(seed)
    pids = patient["person_id"].astype(int).to_numpy()
    quiet = patient.loc[~patient["efs_event"].astype(bool) & ~patient["os_event"].astype(bool),
                        "person_id"].astype(int).to_numpy()  # fmt: skip
    assert len(quiet) >= 6, "the synthetic cohort needs 6 patients without events"
    out = []
    for i in range(n):
        fixed: dict[int, str] = {}
        if i == 1 or i % 3 == 0:
            for p in rng.choice(quiet, 6, replace=False):
                fixed[int(p)] = "no_events"
        rest = rng.permutation([p for p in pids if p not in fixed])
        k = int(rng.integers(2, 7))  # sites besides "no_events"
        head = [5] if (i == 0 or i % 3 == 0) else []
        m = k - len(head)
        # m more sites of at least 5: a random composition of the rest.
        sizes = head + (5 + rng.multinomial(len(rest) - 5 * len(head) - 5 * m, rng.dirichlet(np.ones(m)))).tolist()
        start = 0
        for j, size in enumerate(sizes):
            for p in rest[start:start + size]:
                fixed[int(p)] = f"s{j}"
            start += size
        assert start == len(rest)
        out.append(fixed)
    return out


def _pooled(course, patient, cox_strata: str) -> dict:
    sites = []
    for sid in sorted(patient["site_id"].unique().tolist()):
        c = course[course["site_id"].eq(sid).to_numpy(dtype=bool)]
        p = patient[patient["site_id"].eq(sid).to_numpy(dtype=bool)]
        sites.append(site_statistics(c, p, site_id=str(sid)))
    shipped = json.loads(json.dumps(sites, allow_nan=False))  # what a package carries
    return pool_site_statistics(shipped, cox_strata=cox_strata)["pooled"]


def _eq(a, b, what: str, infinite: bool = False) -> None:
    """a (centralized) equals b (pooled) to TOL; both undefined, or a infinite and b None with
    ``infinite`` (the pooled JSON names its infinite values)."""
    if isinstance(a, float) and math.isinf(a):
        assert b is None and infinite, f"{what}: {a!r} vs {b!r}"
        return
    na = a is None or (isinstance(a, float) and math.isnan(a))
    nb = b is None or (isinstance(b, float) and math.isnan(b))
    assert na == nb, f"{what}: {a!r} vs {b!r}"
    if not na:
        assert abs(float(a) - float(b)) <= TOL, f"{what}: {a!r} vs {b!r}"


def _logrank_eq(central, pooled: dict, what: str, eq) -> None:
    """No test (fewer than two groups with expected events) is chisq 0, df 0, P NaN centrally and
    chi2 None, df 0, P None in the pooled JSON; otherwise the values agree to TOL."""
    if central.df == 0:
        assert pooled["df"] == 0 and pooled["chi2"] is None and pooled["p"] is None, (what, pooled)
        assert math.isnan(central.p_value)
        return
    eq(central.chisq, pooled["chi2"], f"{what} chi2")
    eq(central.df, pooled["df"], f"{what} df")
    eq(central.p_value, pooled["p"], f"{what} P")


def _compare(central, pooled: dict, cox_strata: str) -> int:
    """Every section-5 analysis of ``central`` (a SiteResults) against the pooled block; returns
    the number of values compared."""
    n = 0

    def eq(a, b, what, infinite=False):
        nonlocal n
        _eq(a, b, what, infinite)
        n += 1

    eq(central.n_patients, pooled["n_patients"], "patients")
    eq(central.n_courses, pooled["n_courses"], "courses")
    # 5.1 flow and 5.7 next therapy: count tables.
    cells = {tuple(c[:-1]): c[-1] for c in pooled["counts"]["indication"]["cells"]}
    for k, v in central.flow.indication.items():
        eq(v, cells.get((k,), 0), f"indication {k}")
    ref = {}
    for *key, v in pooled["counts"]["referral_by_course1"]["cells"]:
        ref[key[0]] = ref.get(key[0], 0) + v
    for k, v in central.flow.status_at_referral.items():
        eq(v, ref.get(k, 0), f"status at referral {k}")
    pre1 = {}
    for *key, v in pooled["counts"]["referral_by_course1"]["cells"]:
        pre1[key[1]] = pre1.get(key[1], 0) + v
    for k, v in central.flow.status_before_course_1.items():
        eq(v, pre1.get(k, 0), f"status before course 1 {k}")
    by_pre = {}
    for *key, v in pooled["counts"]["response/all"]["cells"]:
        by_pre[key[0]] = by_pre.get(key[0], 0) + v
    for k, v in central.flow.courses_by_pre_status.items():
        eq(v, by_pre.get(k, 0), f"courses with pre-status {k}")
    route = {"yes": "burden reduction", "no": "direct", "missing": "?"}
    path = {f"{a} > {route[b]} > {c}": v for a, b, c, v in pooled["counts"]["pathway"]["cells"] if v}
    assert path == central.flow.pathway
    nt = {tuple(c[:-1]): c[-1] for c in pooled["counts"]["next_therapy"]["cells"]}
    for g, row in central.next_therapy.counts.items():
        for k, v in row.items():
            eq(v, nt.get((g, k), 0), f"next therapy {g} {k}")
    # 5.2 response and 5.3 predictors: tables and Fisher (P, conditional OR, exact CI).
    for res, pred, scope in ((central.response[0], central.predictors[0], "course1"),
                             (central.response[1], central.predictors[1], "all")):  # fmt: skip
        t = pooled["response"][scope]
        f = res.comparison
        assert t["table"] == [[f.a, f.b], [f.c, f.d]], (scope, t["table"], f)
        for key, val in (("p", f.p_value), ("odds_ratio", f.odds_ratio), ("ci_lower", f.ci_low),
                         ("ci_upper", f.ci_high)):  # fmt: skip
            eq(val, t["fisher"][key], f"response {scope} {key}", key in t["fisher"]["infinite"])
        neg = {tuple(c[:-1]): c[-1] for c in pooled["counts"][f"response/{scope}"]["cells"]}
        eq(res.rates[2].rate.k, neg[("CR-MRDneg", "response")], f"{scope} MRD-neg maintained")
        eq(res.rates[2].rate.n - res.rates[2].rate.k, neg[("CR-MRDneg", "no_response")], f"{scope} MRD-neg lost")
        for pr in pred.predictors:
            t = pooled["predictors"][f"{scope}/{pr.variable}"]
            assert t["table"] == [[pr.test.a, pr.test.b], [pr.test.c, pr.test.d]], (scope, pr.variable)
            eq(pr.n_missing, t["n_missing"], f"{scope} {pr.variable} missing")
            for key, val in (("p", pr.test.p_value), ("odds_ratio", pr.test.odds_ratio),
                             ("ci_lower", pr.test.ci_low), ("ci_upper", pr.test.ci_high)):  # fmt: skip
                eq(val, t["fisher"][key], f"predictor {scope} {pr.variable} {key}",
                   key in t["fisher"]["infinite"])
    # 5.4 Cox for EFS, the same model.
    cox = pooled["cox"]["efs"]
    assert cox["strata"] == cox_strata or (cox_strata == "site" and cox["n_strata"] == 1)
    eq(central.cox_efs.n, cox["n"], "cox n")
    eq(central.cox_efs.n_events, cox["n_events"], "cox events")
    assert central.cox_efs.estimated == cox["converged"]
    terms = {t.covariate: t for t in central.cox_efs.terms}
    for i, cov in enumerate(cox["covariates"]):
        t = terms.get(cov)
        for key, attr in (("coef", "coef"), ("se", "se"), ("hr", "hr"), ("ci_lower", "ci_low"),
                          ("ci_upper", "ci_high"), ("z", "z"), ("p", "p_value")):  # fmt: skip
            eq(None if t is None else getattr(t, attr), cox[key][i], f"cox {cov} {key}",
               f"{cov}.{key}" in cox["infinite"])
    if central.cox_efs.estimated:
        eq(central.cox_efs.loglik, cox["loglik"], "cox loglik")
        eq(central.cox_efs.lr_chisq, cox["lr_chi2"], "cox LR chi2")
        eq(central.cox_efs.lr_p_value, cox["lr_p"], "cox LR P")
    # 5.5 T cells (Wilcoxon statistic, normal and exact P, medians and ranges) and cytokines.
    for m in central.tcells.markers:
        w = pooled["wilcoxon"][m.marker.lower()]
        eq(m.test.n_used, w["n"], f"{m.marker} n")
        eq(m.test.n_zero, w["n_zero"], f"{m.marker} zeros")
        eq(m.test.statistic, w["w_plus"], f"{m.marker} V")
        eq(m.test.p_normal, w["p"], f"{m.marker} P")
        eq(m.test.z, w["z"], f"{m.marker} z")
        eq(m.test.p_exact, w["p_exact"], f"{m.marker} exact P")
        for part, mr in (("pre", m.pre), ("post", m.post)):
            for key, attr in (("n", "n"), ("median", "median"), ("min", "minimum"), ("max", "maximum")):
                eq(getattr(mr, attr), w[part][key], f"{m.marker} {part} {key}")
    for row in central.cytokines.rows:
        mr = pooled["cytokines"][f"all/{row.variable.removesuffix('_peak')}/{CYTOKINE_GROUPS[row.group]}"]
        for key, attr in (("n", "n"), ("median", "median"), ("min", "minimum"), ("max", "maximum")):
            eq(getattr(row.summary, attr), mr[key], f"{row.variable} {row.group} {key}")
    # 5.6 KM (S, Greenwood SE, risk table, landmark) and log-rank.
    for sv in (central.efs, central.os):
        ep = sv.endpoint.lower()
        block = pooled["survival"][ep]
        for g in sv.groups:
            km = block["groups"][g.group]
            assert km["time"] == [int(x) for x in g.km.time], (ep, g.group)
            assert km["n_at_risk"] == list(g.km.n_risk) and km["events"] == list(g.km.n_event)
            assert km["censored"] == list(g.km.n_censor)
            for a, b in zip(g.km.surv, km["survival"], strict=True):
                eq(a, b, f"{ep} {g.group} S")
            for a, b in zip(g.km.se, km["se"], strict=True):
                eq(a, 0.0 if b is None else b, f"{ep} {g.group} SE")
            assert sv.conf_type == "log"
            lo, hi = g.km.confidence_interval("log")
            for a, b in zip(lo, km["ci_log_lower"], strict=True):
                eq(a, b, f"{ep} {g.group} CI lower")
            for a, b in zip(hi, km["ci_log_upper"], strict=True):
                eq(a, b, f"{ep} {g.group} CI upper")
            med = g.km.median("log")
            for key, attr in (("median", "median"), ("ci_lower", "ci_low"), ("ci_upper", "ci_high")):
                eq(getattr(med, attr), km["median_log"][key], f"{ep} {g.group} median {key}")
            lm = km["landmarks"][0]
            assert lm["day"] == sv.landmark_days
            eq(g.surv, lm["survival"], f"{ep} {g.group} landmark S")
            eq(g.se, lm["se"], f"{ep} {g.group} landmark SE")
            eq(g.ci_low, lm["ci_log_lower"], f"{ep} {g.group} landmark CI lower")
            eq(g.ci_high, lm["ci_log_upper"], f"{ep} {g.group} landmark CI upper")
            assert [r["day"] for r in km["risk_table"]] == [int(x) for x in sv.risk_times_days]
            assert [r["n_at_risk"] for r in km["risk_table"]] == list(g.at_risk)
        assert len(block["logrank_pairwise"]) == len(sv.pairwise)
        for pw, lr in zip(sv.pairwise, block["logrank_pairwise"], strict=True):
            assert list(pw.groups) == lr["levels"], (pw.groups, lr["levels"])
            _logrank_eq(pw, lr, f"{ep} pairwise {pw.groups}", eq)
        lr = block["logrank"]
        _logrank_eq(sv.logrank, lr, f"{ep} log-rank", eq)
        for g, o, e in zip(sv.logrank.groups, sv.logrank.observed, sv.logrank.expected, strict=True):
            i = lr["levels"].index(g)
            eq(o, lr["observed"][i], f"{ep} {g} observed")
            eq(e, lr["expected"][i], f"{ep} {g} expected")
    # Median follow-up (reverse KM) overall and by status at referral.
    for row in central.follow_up.rows:
        fu = pooled["follow_up"][row.group]
        eq(row.n, fu["n"], f"follow-up {row.group} n")
        eq(row.n_censored, fu["n_censored"], f"follow-up {row.group} censored")
        for key, attr in (("median", "median"), ("ci_lower", "ci_low"), ("ci_upper", "ci_high")):
            eq(getattr(row.median, attr), fu[key], f"follow-up {row.group} {key}")
    return n


@pytest.mark.parametrize("cox_strata", ["none", "site"])
def test_synth_centers_pooled_equals_centralized(cohort, cox_strata):
    course, patient = cohort
    central = analyze(course, patient, by_center=False, cox_strata_by_site=cox_strata == "site").pooled
    assert central.cox_efs.estimated
    n = _compare(central, _pooled(course, patient, cox_strata), cox_strata)
    assert n > 300


def test_per_center_blocks_equal_the_central_per_center_results(cohort):
    """Protocol 5.8: the pooled output's per-center blocks are each center's own analysis."""
    course, patient = cohort
    central = analyze(course, patient, by_center=True)
    sites = []
    for sid in sorted(patient["site_id"].unique().tolist()):
        c = course[course["site_id"].eq(sid).to_numpy(dtype=bool)]
        p = patient[patient["site_id"].eq(sid).to_numpy(dtype=bool)]
        sites.append(site_statistics(c, p, site_id=str(sid)))
    per_site = pool_site_statistics(json.loads(json.dumps(sites)))["per_site"]
    assert sorted(per_site) == sorted(central.by_site)
    for sid, block in per_site.items():
        _compare(central.by_site[sid], block, "none")


def test_three_decimal_lab_values_are_not_rounded(cohort):
    """The issue's finding: with values rounded to 2 decimals the pooled CD3 statistic was not the
    centralized one. The synthetic values have 3 decimals; pooled V equals the centralized V."""
    course, patient = cohort
    c1 = course[course["course_number"].eq(1).to_numpy(dtype=bool)]
    pre = c1["cd3_pre"].astype(float).to_numpy()
    assert (np.round(pre[~np.isnan(pre)], 2) != pre[~np.isnan(pre)]).any()
    central = analyze(course, patient, by_center=False).pooled
    pooled = _pooled(course, patient, "site")
    for m in central.tcells.markers:
        assert pooled["wilcoxon"][m.marker.lower()]["w_plus"] == m.test.statistic


@pytest.mark.parametrize("split", range(20))
def test_random_site_splits_pooled_equals_centralized(cohort, split):
    course, patient = _resplit(*cohort, _random_splits(cohort[1])[split])
    sizes = patient["site_id"].value_counts()
    assert sizes.min() >= 5 and len(sizes) >= 2
    if split == 0 or split % 3 == 0:
        assert (sizes == 5).any()
    if split == 1 or split % 3 == 0:
        quiet = patient[patient["site_id"].eq("no_events").to_numpy(dtype=bool)]
        assert len(quiet) == 6 and not quiet["efs_event"].any() and not quiet["os_event"].any()
    for cox_strata in ("none", "site"):
        central = analyze(course, patient, by_center=False, cox_strata_by_site=cox_strata == "site").pooled
        _compare(central, _pooled(course, patient, cox_strata), cox_strata)
