"""The vantage6 algorithm over four simulated centers (in-process MockAlgorithmClient) gives
the centralized results on the concatenated data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from scipy import stats
from vantage6.algorithm.tools.exceptions import PrivacyThresholdViolation
from vantage6.algorithm.tools.mock_client import MockAlgorithmClient

from blina_study.analysis.federated import pool_site_statistics, site_statistics
from blina_study.analysis.federated.simulate import simulate_site

SITES = {"A": 60, "B": 45, "C": 30, "D": 20}


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(20261123)
    return {s: simulate_site(rng, s, n) for s, n in SITES.items()}


def _client(frames) -> MockAlgorithmClient:
    datasets = [[{"database": c}, {"database": p}] for c, p in frames.values()]
    return MockAlgorithmClient(datasets=datasets, module="v6_blina")


def _run(client, **kwargs):
    task = client.task.create(
        input_={"method": "central", "kwargs": kwargs}, organizations=[0]
    )
    (result,) = client.wait_for_results(task.get("id"))
    return result


@pytest.fixture(scope="module")
def result(frames):
    return _run(_client(frames))


@pytest.fixture(scope="module")
def concatenated(frames):
    return (pd.concat([f[0] for f in frames.values()], ignore_index=True),
            pd.concat([f[1] for f in frames.values()], ignore_index=True))  # fmt: skip


def test_equals_pooling_of_locally_computed_statistics(frames, result):
    direct = pool_site_statistics(
        [site_statistics(c, p, site_id=s) for s, (c, p) in frames.items()]
    )
    assert result == json.loads(json.dumps(direct))
    assert sorted(result["per_site"]) == sorted(SITES)


def test_km_and_logrank_equal_lifelines(result, concatenated):
    _, pat = concatenated
    kmf = KaplanMeierFitter().fit(pat["efs_days"], pat["efs_event"])
    km = result["pooled"]["survival"]["efs"]["all"]
    np.testing.assert_allclose(
        km["survival"], kmf.survival_function_.loc[km["time"]].iloc[:, 0], atol=1e-12
    )
    sub = pat[pat["status_at_referral"] != "unknown"]
    ref = multivariate_logrank_test(sub["efs_days"], sub["status_at_referral"], sub["efs_event"])
    lr = result["pooled"]["survival"]["efs"]["logrank"]
    assert lr["chi2"] == pytest.approx(ref.test_statistic, abs=1e-9)


def test_stratified_cox_equals_lifelines(result, concatenated):
    course, pat = concatenated
    c1 = course[course["course_number"] == 1][["site_id", "person_id", "high_mrd"]]
    df = pat.merge(c1, on=["site_id", "person_id"], how="left")
    covs = ["high_mrd", "bcr_abl1", "poor_cytogenetics"]
    df = df.dropna(subset=covs)[["site_id", "efs_days", "efs_event", *covs]]
    df[covs] = df[covs].astype(float)
    df["efs_event"] = df["efs_event"].astype(int)
    cph = CoxPHFitter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph.fit(df, "efs_days", "efs_event", strata=["site_id"],
                fit_options={"precision": 1e-12, "r_precision": 1e-14})  # fmt: skip
    cox = result["pooled"]["cox"]["efs"]
    np.testing.assert_allclose(cox["coef"], cph.params_[covs], atol=1e-6)
    np.testing.assert_allclose(cox["se"], cph.standard_errors_[covs], atol=1e-6)


def test_fisher_and_wilcoxon_equal_scipy(result, concatenated):
    course, _ = concatenated
    c = course[course["pre_status"].isin(["R/R", "CR-MRDpos"]) & course["cr"].notna()]
    rr, cr = c["pre_status"] == "R/R", c["cr"].astype(bool)
    table = [[int((rr & cr).sum()), int((rr & ~cr).sum())],
             [int((~rr & cr).sum()), int((~rr & ~cr).sum())]]  # fmt: skip
    res = result["pooled"]["response"]["all"]
    assert res["table"] == table
    assert res["fisher"]["p"] == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9)
    c1 = course[course["course_number"] == 1].dropna(subset=["cd4_pre", "cd4_post"])
    d = c1["cd4_post"].to_numpy(float) - c1["cd4_pre"].to_numpy(float)  # nothing rounded away
    ref = stats.wilcoxon(d, zero_method="wilcox", correction=False, method="approx")
    w = result["pooled"]["wilcoxon"]["cd4"]
    assert w["statistic"] == ref.statistic
    assert w["p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_privacy_guards(frames):
    three = dict(list(frames.items())[:2])
    with pytest.raises(PrivacyThresholdViolation, match="min_organizations=3"):
        _run(_client(three))
    tiny = {"A": frames["A"], "B": frames["B"],
            "T": simulate_site(np.random.default_rng(1), "T", 3)}  # fmt: skip
    with pytest.raises(PrivacyThresholdViolation, match="fewer than the node's minimum 5"):
        _run(_client(tiny))
    # Without the per-site breakdown only the pooled block leaves the central node.
    assert "per_site" not in _run(_client(frames), include_per_site=False)
