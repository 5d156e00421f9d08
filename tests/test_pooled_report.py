"""The pooled report (blina_study.analysis.pooled_report) shows the central report's contents computed from
pooled statistics: every published-vs-this-run figure, the KM curves, 95% limits and numbers at
risk, equal to the central analysis of the concatenated centers (with the site-stratified Cox model
that pool fits); response with exact Clopper-Pearson intervals; per-center values only as the
centers published them. Contents are tested, not pixels."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from blina_study.analysis.federated import build_site_package, pool_packages
from blina_study.analysis.federated.simulate import simulate_site
from blina_study.analysis.pooled_report import (
    NOT_POOLED_PREFIXES,
    clopper_pearson,
    forest_rows,
    pooled_run_figures,
    pooled_scope,
    render_pooled_report,
)
from blina_study.analysis.report import run_figures
from blina_study.analysis.tables import analyze

INFO = {
    "package_version": "0.1.0",
    "study_definition_hash": "3f1c" * 16,
    "study_id": "blina-ped-ball",
    "study_version": "1.0",
    "parameters": {"course_gap_days": 7, "landmark_days": 365, "age_group_cut_years": 10.0},
    "vocabulary_version": "v5.0 30-AUG-24",
    "created_utc": "2026-11-24T06:00:00Z",
}
SITES = {"A": 70, "B": 45, "C": 30, "D": 8}


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    rng = np.random.default_rng(20261204)
    frames = {s: simulate_site(rng, s, n) for s, n in SITES.items()}
    out = tmp_path_factory.mktemp("pk")
    paths = [build_site_package(c, p, site_id=s, manifest_info=INFO, out_path=out / f"{s}.zip")
             for s, (c, p) in frames.items()]  # fmt: skip
    pooled = pool_packages(paths)
    course = pd.concat([f[0] for f in frames.values()], ignore_index=True)
    patient = pd.concat([f[1] for f in frames.values()], ignore_index=True)
    central = analyze(course, patient, by_center=False, cox_strata_by_site=True,
                      parameters={"landmark_days": 365, "age_group_cut_years": 10.0})  # fmt: skip
    return pooled, central.pooled


def test_every_published_figure_equals_the_central_analysis(federation):
    pooled, central = federation
    sc = pooled_scope(pooled.results)
    got, want = pooled_run_figures(sc), run_figures(central)  # type: ignore[arg-type]
    want = {k: v for k, v in want.items() if not k.startswith(NOT_POOLED_PREFIXES)}
    assert set(got) == set(want) and len(want) >= 38
    for key in want:
        assert got[key].text == want[key].text, key
        assert got[key].n == want[key].n, key


def test_km_curves_limits_at_risk_and_logrank_equal_central(federation):
    pooled, central = federation
    sc = pooled_scope(pooled.results)
    for mine, ref in ((sc.efs, central.efs), (sc.os, central.os)):
        assert [g.group for g in mine.groups] == [g.group for g in ref.groups]
        for g, r in zip(mine.groups, ref.groups, strict=True):
            assert g.km.time == r.km.time and g.km.n_risk == r.km.n_risk
            assert g.km.n_event == r.km.n_event and g.km.n_censor == r.km.n_censor
            np.testing.assert_allclose(g.km.surv, r.km.surv, rtol=0, atol=1e-12)
            np.testing.assert_allclose(g.km.se, r.km.se, rtol=0, atol=1e-12)
            assert g.at_risk == r.at_risk
            assert g.ci_low == pytest.approx(r.ci_low, abs=1e-12)
            assert g.ci_high == pytest.approx(r.ci_high, abs=1e-12)
        assert mine.logrank.chisq == pytest.approx(ref.logrank.chisq, abs=1e-9)
        assert mine.n == ref.n and mine.n_excluded == ref.n_excluded
        assert [p.chisq for p in mine.pairwise] == pytest.approx([p.chisq for p in ref.pairwise], abs=1e-9)


def test_follow_up_and_km_of_all_patients_equal_central(federation):
    """Reverse-KM follow-up from the pooled OS counts (the patients of no group rebuilt as 'all'
    minus the groups), overall and by group, equals the central one."""
    pooled, central = federation
    sc = pooled_scope(pooled.results)
    mine, ref = sc.follow_up, central.follow_up
    assert (mine.n, mine.n_excluded) == (ref.n, ref.n_excluded)
    assert [r.group for r in mine.rows] == [r.group for r in ref.rows]
    for a, b in zip(mine.rows, ref.rows, strict=True):
        assert (a.n, a.n_censored, a.km.time, a.km.n_event) == (b.n, b.n_censored, b.km.time, b.km.n_event)
        for x, y in ((a.median.median, b.median.median), (a.median.ci_low, b.median.ci_low),
                     (a.median.ci_high, b.median.ci_high)):
            assert (math.isnan(x) and math.isnan(y)) or x == y


def test_flow_predictors_cox_and_next_therapy_equal_central(federation):
    pooled, central = federation
    sc = pooled_scope(pooled.results)
    f, r = sc.flow, central.flow
    assert (f.indication, f.status_at_referral, f.status_before_course_1, f.courses_by_pre_status) == (
        r.indication, r.status_at_referral, r.status_before_course_1, r.courses_by_pre_status)
    assert {k: v for k, v in f.pathway.items() if k.startswith("R/R")} == {
        k: v for k, v in r.pathway.items() if k.startswith("R/R")}
    for mine, ref in zip(sc.predictors, central.predictors, strict=True):
        assert (mine.n, mine.n_poor) == (ref.n, ref.n_poor)
        for a, b in zip(mine.predictors, ref.predictors, strict=True):
            assert (a.variable, a.exposed, a.reference, a.n, a.n_missing) == (
                b.variable, b.exposed, b.reference, b.n, b.n_missing)
            assert a.test.p_value == b.test.p_value
    assert sc.next_therapy.counts == central.next_therapy.counts
    assert sc.cytokines.rows == central.cytokines.rows and sc.cytokines.n == central.cytokines.n
    assert sc.cox_model == "stratified" and "stratified by center" in sc.cox_efs.method
    for a, b in zip(sc.cox_efs.terms, central.cox_efs.terms, strict=True):
        assert a.coef == pytest.approx(b.coef, abs=1e-6) and a.se == pytest.approx(b.se, abs=1e-6)


# R 4.2.2: binom.test(k, n)$conf.int for each (k, n)
R_CLOPPER_PEARSON = [
    (9, 11, 0.482244147639827, 0.97716880170004),
    (33, 40, 0.672209866638414, 0.926617270647915),
    (0, 7, 0, 0.409616397225003),
    (7, 7, 0.590383602774997, 1),
    (1, 1, 0.025, 1),
]


@pytest.mark.parametrize(("k", "n", "lo", "hi"), R_CLOPPER_PEARSON)
def test_clopper_pearson_equals_r_binom_test(k, n, lo, hi):
    assert clopper_pearson(k, n) == pytest.approx((lo, hi), abs=1e-12)
    assert all(math.isnan(x) for x in clopper_pearson(0, 0))


def test_report_contents(federation, tmp_path):
    pooled, central = federation
    sc = pooled_scope(pooled.results)
    text = render_pooled_report(pooled, tmp_path / "pooled.html", generated="2026-12-04 12:00 UTC").read_text()
    # KM curves (the central report's figure, with its numbers-at-risk table) for EFS and OS.
    assert 'alt="Event-free survival Kaplan-Meier plot, pooled"' in text
    assert 'alt="Overall survival Kaplan-Meier plot, pooled"' in text
    assert "numbers at risk at 0-24 months" in text
    # Published vs this run, with the agreement count of the central analysis.
    n_agree = len(re.findall(r"✓ same", text))
    assert "Published figures (protocol sections 1 and 6) vs this run" in text
    assert f"{n_agree} of" in text and n_agree > 0
    # Response: Clopper-Pearson intervals, said so, with the values of the pooled counts.
    assert "Clopper-Pearson" in text
    rate = sc.response[0].rates[0].rate
    lo, hi = clopper_pearson(rate.k, rate.n)
    assert f"{100 * lo:.1f}-{100 * hi:.1f}%" in text
    # The Cox model shown is named.
    assert "Cox model for event-free survival (stratified by center" in text
    # Predictors, flow and T cells are there.
    for caption in ("Table 1. Patient flow", "Table 3a. Univariate predictors", "Table 5. T-cell subsets"):
        assert caption in text
    # Central tables the pooled statistics cannot fill are left out, and the report says so.
    for table in ("Table 1d.", "Table 1e.", "Table 1f."):
        assert table not in text
    assert "Tables 1d, 1e, 1f of the central report not shown" in text
    assert "Table 7d. Median follow-up by reverse Kaplan-Meier" in text
    # Forest plots: one per endpoint, every group's centers and pooled row in it.
    assert text.count('alt="forest plot') == 2


def test_per_center_values_are_the_published_ones(federation):
    """Center D (8 patients) has suppressed published survival: its forest rows carry no point and
    say so; a published estimate's interval is R's log interval from the published S and SE, the
    pooled one the KM interval, unclipped."""
    pooled, _ = federation
    sc = pooled_scope(pooled.results)
    from blina_study.analysis.pooled_report import _log_ci, _published_values

    est = _published_values(pooled)
    seen_suppressed = seen_point = False
    for ep, sv in (("efs", sc.efs), ("os", sc.os)):
        for g in sv.groups:
            rows = forest_rows(sc, est, ep, g.group)
            assert [r[0] for r in rows] == [*SITES, "Pooled"]
            for site, s, lo, hi, text in rows[:-1]:
                pub = est[site].get((f"km/{ep}/{g.group}", "day365", "survival"))
                if pub == "suppressed":
                    assert s is None and text.startswith("suppressed")
                    seen_suppressed = True
                elif s is not None:
                    se = float(est[site][(f"km/{ep}/{g.group}", "day365", "se")])
                    assert s == float(pub) and (lo, hi) == _log_ci(s, se)
                    seen_point = True
            _, s, lo, hi, text = rows[-1]
            assert (s, lo, hi) == (g.surv, g.ci_low, g.ci_high)
            if s == 1.0:
                assert "no event: no interval" in text
    assert seen_suppressed and seen_point


def test_log_ci_is_r_survfit_log():
    # R: summary(survfit(Surv(c(1,2,3,4,5,6,7,8,9,10), c(1,0,1,0,0,1,0,0,0,0)) ~ 1), times = 5)
    # survival 0.778, std.err 0.139, lower 0.5485, upper 1 (capped)
    from blina_study.analysis.pooled_report import _log_ci
    from blina_study.analysis.survival import kaplan_meier

    km = kaplan_meier(list(range(1, 11)), [1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    s, se = km.survival_at(5)
    assert _log_ci(s, se) == pytest.approx(km.survival_ci_at(5, "log"), abs=1e-12)
    assert _log_ci(1.0, 0.0) == (1.0, 1.0)


def test_cox_block_names_its_model(federation):
    """The model shown follows pool's Cox block: ``strata`` ("site"/"none"), else its ``model`` text,
    else the number of strata; a dropped covariate is listed as dropped, not estimated."""
    import copy

    from blina_study.analysis.pooled_report import _cox

    pooled, _ = federation
    cx = pooled.results["pooled"]["cox"]["efs"]
    for extra, want in (({"strata": "none", "n_strata": 1}, "unstratified"), ({"strata": "site"}, "stratified"),
                        ({"model": "unstratified (one baseline hazard)", "n_strata": 1}, "unstratified"),
                        ({"n_strata": 4}, "stratified")):
        block = {k: v for k, v in cx.items() if k not in ("strata", "model")}
        res, model, _ = _cox({"cox": {"efs": {**block, **extra}}})
        assert model == want and ("not stratified" in res.method) == (want == "unstratified")
    block = copy.deepcopy(cx)
    block["dropped"] = [["bcr_abl1", "constant in the complete cases"]]
    block["coef"][1] = None
    res, _, _ = _cox({"cox": {"efs": block}})
    assert res.estimated and [t.covariate for t in res.terms] == ["high_mrd", "poor_cytogenetics"]
    assert res.dropped == (("bcr_abl1", "constant in the complete cases"),)


def test_aggregate_level_report(federation, tmp_path):
    """Aggregate packages (the default level): the same report layout says on top that every value
    is a meta-analysis or a stratified test, not the centralized analysis; no KM curve and no
    published comparison (no per-day counts); the forest plots show the centers' published estimates
    and the fixed-effect meta-analysis as the pooled row; per-center published values."""
    from blina_study.analysis.federated import build_site_package as build

    rng = np.random.default_rng(20261204)
    frames = {s: simulate_site(rng, s, n) for s, n in SITES.items()}
    paths = [build(c, p, site_id=s, manifest_info=INFO, out_path=tmp_path / f"{s}.zip", share="aggregate")
             for s, (c, p) in frames.items()]  # fmt: skip
    pooled = pool_packages(paths)
    assert pooled.results["sharing_level"] == "aggregate"
    text = render_pooled_report(pooled, tmp_path / "agg.html").read_text()
    assert "Aggregate sharing level" in text and "not the centralized analysis" in text and "van Elteren" in text
    assert "Kaplan-Meier plot, pooled" not in text and "Table 9." not in text
    assert text.count('alt="forest plot') == 2 and "Table 10. Per-center values as each center published them" in text
    assert "coordinator-only statistics are used" not in text  # none were received at this level
    from blina_study.analysis.pooled_report import _published_values, aggregate_forest_rows

    block = pooled.results["pooled"]["survival"]["efs"]
    rows = aggregate_forest_rows(block, _published_values(pooled), "efs")
    n_estimated = 0
    for g, m in block["landmark"].items():
        mine = [r for r in rows if r[0].startswith(f"{g}: ")]
        assert [r[0] for r in mine] == [f"{g}: {s}" for s in SITES] + [f"{g}: Pooled"]
        fe = m["fixed"] or {}
        assert mine[-1][1:4] == (fe.get("value"), fe.get("value_ci_lower"), fe.get("value_ci_upper"))
        n_estimated += fe.get("value") is not None
    assert n_estimated >= 1  # the large centers publish their estimates
