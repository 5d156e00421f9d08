"""Multi-round federated Cox (blina_study.analysis.federated.cox_rounds) equals the centralized fit of the
concatenated sites (blina_study.analysis.cox.cox_fit, itself R coxph to 1e-6 in test_stats_reference), for the
site-stratified and the unstratified model, Efron and Breslow, in at most 25 rounds. The sites are
answered in-process here; vantage6/tests/test_v6_cox.py runs the same through vantage6's mock."""

from __future__ import annotations

import numpy as np
import pytest

from blina_study.analysis.cox import cox_fit
from blina_study.analysis.federated.cox_rounds import (
    cox_design,
    federated_cox_fit,
    pool_cox_setup,
    pooled_stratified_derivatives,
    pooled_unstratified_derivatives,
    site_cox_derivatives,
    site_cox_setup,
    site_risk_set_sums,
)
from blina_study.analysis.federated.simulate import simulate_site
from blina_study.analysis.federated.sufficient import FederatedInputError

COVS = ("high_mrd", "bcr_abl1", "poor_cytogenetics")
TOL = 1e-8


def _sites(seed: int, sizes: dict[str, int], no_events: tuple[str, ...] = ()):
    rng = np.random.default_rng(seed)
    return {s: simulate_site(rng, s, n, event_scale=0.0 if s in no_events else 1.0)
            for s, n in sizes.items()}  # fmt: skip


def _local(designs, ties):
    calls: list[str] = []

    def request(kind, kw):
        calls.append(kind)
        if kind == "derivatives":
            return [site_cox_derivatives(d, kw["beta"], ties=ties) for d in designs]
        if kind == "setup":
            return [site_cox_setup(d) for d in designs]
        return [site_risk_set_sums(d, kw["beta"], kw["grid"], ties=ties) for d in designs]

    return request, calls


def _central(designs, model, ties):
    t = np.concatenate([d.time for d in designs])
    e = np.concatenate([d.event for d in designs])
    x = np.concatenate([d.x for d in designs])
    strata = np.repeat(np.arange(len(designs)), [d.time.size for d in designs])
    return cox_fit(t, e, x, names=designs[0].covariates, ties=ties,
                   strata=strata if model == "stratified" else None)  # fmt: skip


def _check(fed, ref):
    np.testing.assert_allclose(fed["coef"], ref.coef, rtol=0, atol=TOL)
    np.testing.assert_allclose(fed["se"], ref.se, rtol=0, atol=TOL)
    assert fed["loglik"] == pytest.approx(ref.loglik, abs=TOL)
    assert fed["loglik_null"] == pytest.approx(ref.loglik_null, abs=TOL)
    assert fed["lr_test"][0] == pytest.approx(ref.lr_test[0], abs=TOL)
    assert fed["iterations"] == ref.iterations and fed["converged"] == ref.converged
    assert fed["n"] == ref.n and fed["n_events"] == ref.n_events


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("model", ["stratified", "unstratified"])
def test_equals_centralized_fit(model, ties):
    # A 5-patient site and a site without events are in the federation.
    frames = _sites(7, {"A": 80, "B": 45, "C": 5, "D": 30}, no_events=("D",))
    designs = [cox_design(c, p, COVS) for c, p in frames.values()]
    assert designs[3].event.sum() == 0 and designs[2].time.size <= 5
    request, calls = _local(designs, ties)
    fed = federated_cox_fit(request, COVS, model=model, ties=ties)
    ref = _central(designs, model, ties)
    _check(fed, ref)
    assert fed["rounds"] == len(calls) <= 25
    # One round per derivative evaluation: beta = 0, one per iteration (+ setup when unstratified).
    assert fed["rounds"] == ref.iterations + 1 + (model == "unstratified")


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_of_one_cohort(seed):
    """20 random splits of one 150-patient cohort into 3-5 sites (each >= 5 patients), one
    continuous covariate (age, which R centres and scales) beside the binary ones."""
    rng = np.random.default_rng(1000 + seed)
    course, patient = simulate_site(np.random.default_rng(42), "X", 150)
    k = int(rng.integers(3, 6))
    cuts = np.sort(rng.choice(np.arange(5, 146), k - 1, replace=False))
    while np.any(np.diff(np.concatenate([[0], cuts, [150]])) < 5):
        cuts = np.sort(rng.choice(np.arange(5, 146), k - 1, replace=False))
    perm = rng.permutation(patient["person_id"].to_numpy())
    covs = (*COVS, "age_at_index_years")
    designs = []
    for part in np.split(perm, cuts):
        p = patient[patient["person_id"].isin(part)]
        c = course[course["person_id"].isin(part)]
        designs.append(cox_design(c, p, covs))
    for model in ("stratified", "unstratified"):
        request, calls = _local(designs, "efron")
        fed = federated_cox_fit(request, covs, model=model)
        _check(fed, _central(designs, model, "efron"))
        assert len(calls) <= 25


def test_per_site_derivatives_do_not_sum_to_the_unstratified_ones():
    """Why the unstratified model needs risk-set sums: the per-site sums give the stratified
    likelihood, which differs from the unstratified one at the same beta."""
    frames = _sites(3, {"A": 60, "B": 40, "C": 30})
    designs = [cox_design(c, p, COVS) for c, p in frames.values()]
    beta = [0.4, -0.2, 0.7]
    strat = pooled_stratified_derivatives([site_cox_derivatives(d, beta) for d in designs])
    setup = pool_cox_setup([site_cox_setup(d) for d in designs])
    unstrat = pooled_unstratified_derivatives(
        setup, [site_risk_set_sums(d, beta, setup["grid"]) for d in designs], beta
    )
    assert abs(strat.loglik - unstrat.loglik) > 1e-3
    t = np.concatenate([d.time for d in designs])
    e = np.concatenate([d.event for d in designs])
    x = np.concatenate([d.x for d in designs])
    from blina_study.analysis.cox import cox_derivatives

    ref = cox_derivatives(t, e, x, beta)
    assert unstrat.loglik == pytest.approx(ref.loglik, abs=1e-10)
    np.testing.assert_allclose(unstrat.score, ref.score, atol=1e-10)
    np.testing.assert_allclose(unstrat.information, ref.information, atol=1e-10)


def test_no_events_is_a_finding_and_a_wrong_grid_is_refused():
    frames = _sites(5, {"A": 20, "B": 20, "C": 20}, no_events=("A", "B", "C"))
    designs = [cox_design(c, p, COVS) for c, p in frames.values()]
    request, _ = _local(designs, "efron")
    for model in ("stratified", "unstratified"):
        with pytest.raises(FederatedInputError, match="no events"):
            federated_cox_fit(request, COVS, model=model)
    d = cox_design(*_sites(6, {"A": 40})["A"], COVS)
    with pytest.raises(FederatedInputError, match="grid lacks"):
        site_risk_set_sums(d, [0, 0, 0], [1, 2, 3])
    with pytest.raises(FederatedInputError, match="finite"):
        site_cox_derivatives(d, [0, float("nan"), 0])


def test_design_takes_complete_cases_and_course_one_covariates():
    course, patient = _sites(8, {"A": 40})["A"]
    d = cox_design(course, patient, COVS)
    c1 = course[course["course_number"] == 1].set_index("person_id")["high_mrd"]
    merged = patient.assign(high_mrd=patient["person_id"].map(c1))
    complete = merged.dropna(subset=list(COVS))
    assert d.time.size == len(complete) and d.n_excluded == len(patient) - len(complete)
    assert d.x.shape == (len(complete), 3)
    assert set(np.unique(d.x)) <= {0.0, 1.0}


@pytest.mark.parametrize("model", ["stratified", "unstratified"])
def test_monotone_likelihood_as_centralized(model):
    """A covariate equal to the event flag: R's "Loglik converged before variable 3 ...;
    coefficient may be infinite" in both fits, the same iterations, the finite coefficients equal
    to 1e-8; the diverging one agrees to 1e-6 relative (the likelihood is flat along it)."""
    from blina_study.analysis.federated.cox_rounds import CoxDesign

    frames = _sites(11, {"A": 60, "B": 45, "C": 30})
    designs = []
    for c, p in frames.values():
        d = cox_design(c, p, COVS)
        designs.append(CoxDesign(d.time, d.event, np.column_stack([d.x[:, :2], d.event]), d.covariates, 0))
    request, calls = _local(designs, "efron")
    fed = federated_cox_fit(request, COVS, model=model)
    ref = _central(designs, model, "efron")
    assert fed["warnings"] == list(ref.warnings) and fed["infinite"] == ["poor_cytogenetics"]
    assert fed["iterations"] == ref.iterations and len(calls) <= 25
    np.testing.assert_allclose(fed["coef"][:2], ref.coef[:2], rtol=0, atol=TOL)
    assert fed["coef"][2] == pytest.approx(ref.coef[2], rel=1e-6) and fed["coef"][2] > 5


def test_four_synth_centers_both_models(tmp_path):
    """The four centers of ``blina synth`` (the 105-patient cohort built to the paper): both models
    equal the centralized fit to 1e-8 in at most 25 rounds."""
    import pandas as pd

    from blina_study.adapter.cli import main

    assert main(["synth", "--out", str(tmp_path / "syn")]) == 0
    tables = {}
    for name in ("course", "patient"):
        df = pd.read_csv(tmp_path / "syn" / "truth" / f"{name}.csv")
        # FHIR centers' truth leaves person_id to the adapter; number those patients here.
        ids = {v: 10_000 + i for i, v in enumerate(sorted(df["person_source_value"].unique()))}
        df["person_id"] = df["person_id"].fillna(df["person_source_value"].map(ids)).astype("int64")
        tables[name] = df
    sites = sorted(tables["patient"]["site_id"].unique())
    assert len(sites) == 4
    designs = [cox_design(tables["course"][tables["course"]["site_id"] == s],
                          tables["patient"][tables["patient"]["site_id"] == s], COVS) for s in sites]  # fmt: skip
    assert sum(d.time.size for d in designs) + sum(d.n_excluded for d in designs) == 105
    for model in ("stratified", "unstratified"):
        request, calls = _local(designs, "efron")
        fed = federated_cox_fit(request, COVS, model=model)
        _check(fed, _central(designs, model, "efron"))
        assert len(calls) == fed["rounds"] <= 25
