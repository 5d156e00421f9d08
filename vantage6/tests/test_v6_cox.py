"""The multi-round Cox of the vantage6 algorithm (``central_cox`` / ``partial_cox``) through
vantage6's in-process MockAlgorithmClient equals the centralized fit of the concatenated sites
(blina_study.analysis.cox.cox_fit, R coxph's iteration; checked against R in the main test suite) to 1e-8, for
the site-stratified and the unstratified model, in at most 25 rounds; the rounds are counted as
the ``partial_cox`` subtasks the central function creates."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from vantage6.algorithm.tools.exceptions import AlgorithmError, PrivacyThresholdViolation
from vantage6.algorithm.tools.mock_client import MockAlgorithmClient

from blina_study.analysis.cox import cox_fit
from blina_study.analysis.federated.cox_rounds import cox_design
from blina_study.analysis.federated.simulate import simulate_site

COVS = ["high_mrd", "bcr_abl1", "poor_cytogenetics"]
TOL = 1e-8


@pytest.fixture(scope="module")
def frames():
    # A 5-patient site (the node minimum) and a site without any event are in the federation.
    rng = np.random.default_rng(20261204)
    sizes = {"A": 60, "B": 45, "C": 5, "D": 25}
    return {s: simulate_site(rng, s, n, event_scale=0.0 if s == "D" else 1.0)
            for s, n in sizes.items()}  # fmt: skip


def _node_env(value: str) -> str:
    """A node's algorithm_env value as vantage6 passes it to the container (base32, '=' -> '!')."""
    return base64.b32encode(value.encode()).decode().replace("=", "!")


@pytest.fixture(autouse=True)
def allow_unstratified(monkeypatch):
    monkeypatch.setenv("BLINA_COX_UNSTRATIFIED", _node_env("true"))


@pytest.fixture()
def rounds(monkeypatch):
    """Counts the partial_cox subtasks (class-level, so the central's client copy counts too)."""
    seen: list[str] = []
    create = MockAlgorithmClient.Task.create

    def counting(self, input_, organizations, *args, **kwargs):
        if input_.get("method") == "partial_cox":
            seen.append(input_["kwargs"]["kind"])
        return create(self, input_, organizations, *args, **kwargs)

    monkeypatch.setattr(MockAlgorithmClient.Task, "create", counting)
    return seen


def _client(frames, **kw) -> MockAlgorithmClient:
    datasets = kw.pop("datasets", None) or [[{"database": c}, {"database": p}] for c, p in frames.values()]
    return MockAlgorithmClient(datasets=datasets, module="v6_blina")


def _run(client, **kwargs):
    task = client.task.create(input_={"method": "central_cox", "kwargs": kwargs}, organizations=[0])
    (result,) = client.wait_for_results(task.get("id"))
    return result


def _central(frames, model, ties, covs=COVS):
    designs = [cox_design(c, p, covs) for c, p in frames.values()]
    t = np.concatenate([d.time for d in designs])
    e = np.concatenate([d.event for d in designs])
    x = np.concatenate([d.x for d in designs])
    strata = np.repeat(list(frames), [d.time.size for d in designs])
    return cox_fit(t, e, x, names=covs, ties=ties, strata=strata if model == "stratified" else None)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@pytest.mark.parametrize("model", ["stratified", "unstratified"])
def test_multi_round_cox_equals_centralized(frames, rounds, model, ties):
    res = _run(_client(frames), model=model, ties=ties)
    ref = _central(frames, model, ties)
    assert res["model"] == model and res["ties"] == ties and res["converged"]
    np.testing.assert_allclose(res["coef"], ref.coef, rtol=0, atol=TOL)
    np.testing.assert_allclose(res["se"], ref.se, rtol=0, atol=TOL)
    np.testing.assert_allclose(res["p"], ref.p, rtol=0, atol=TOL)
    assert res["loglik"] == pytest.approx(ref.loglik, abs=TOL)
    assert res["loglik_null"] == pytest.approx(ref.loglik_null, abs=TOL)
    assert res["n"] == ref.n and res["n_events"] == ref.n_events and res["n_sites"] == 4
    # Rounds: what the nodes were asked, counted at the mock, not what the central says.
    assert len(rounds) == res["rounds"] <= 25
    assert rounds.count("setup") == (model == "unstratified")
    assert len(rounds) == ref.iterations + 1 + (model == "unstratified")
    kinds = {"stratified": {"derivatives"}, "unstratified": {"setup", "risk_sums"}}[model]
    assert set(rounds) == kinds


def test_stratified_and_unstratified_differ(frames):
    s = _run(_client(frames), model="stratified")
    u = _run(_client(frames), model="unstratified")
    assert np.max(np.abs(np.subtract(s["coef"], u["coef"]))) > 1e-3


def test_continuous_covariate_from_csv_databases(frames, rounds, tmp_path):
    """Node databases of type csv (as a node configures them); age is a continuous covariate
    (R centres and scales it; the Newton iterates are the same on the original scale)."""
    datasets = []
    for s, (c, p) in frames.items():
        cp, pp = tmp_path / f"{s}_course.csv", tmp_path / f"{s}_patient.csv"
        c.to_csv(cp, index=False)
        p.to_csv(pp, index=False)
        datasets.append([{"database": str(cp), "db_type": "csv"}, {"database": str(pp), "db_type": "csv"}])
    covs = [*COVS, "age_at_index_years"]
    for model in ("stratified", "unstratified"):
        rounds.clear()
        res = _run(_client(frames, datasets=datasets), covariates=covs, model=model)
        ref = _central(frames, model, "efron", covs)
        np.testing.assert_allclose(res["coef"], ref.coef, rtol=0, atol=TOL)
        np.testing.assert_allclose(res["se"], ref.se, rtol=0, atol=TOL)
        assert len(rounds) == res["rounds"] <= 25


def test_guards(frames):
    two = dict(list(frames.items())[:2])
    with pytest.raises(PrivacyThresholdViolation, match="min_organizations=3"):
        _run(_client(two))
    tiny = {**dict(list(frames.items())[:2]), "T": simulate_site(np.random.default_rng(1), "T", 3)}
    with pytest.raises(PrivacyThresholdViolation, match="fewer than the node's minimum 5"):
        _run(_client(tiny))
    none = {s: simulate_site(np.random.default_rng(i), s, 20, event_scale=0.0)
            for i, s in enumerate("XYZ")}  # fmt: skip
    with pytest.raises(AlgorithmError, match="no events"):
        _run(_client(none))
    with pytest.raises(AlgorithmError, match="neither a patient nor a course column"):
        _run(_client(frames), covariates=["no_such_column"])


def test_unstratified_rounds_need_the_node_opt_in(frames, monkeypatch):
    monkeypatch.delenv("BLINA_COX_UNSTRATIFIED")
    with pytest.raises(PrivacyThresholdViolation, match="BLINA_COX_UNSTRATIFIED=true"):
        _run(_client(frames), model="unstratified")
    monkeypatch.setenv("BLINA_COX_UNSTRATIFIED", _node_env("false"))
    with pytest.raises(PrivacyThresholdViolation, match="does not take part"):
        _run(_client(frames), model="unstratified")
    assert _run(_client(frames), model="stratified")["converged"]


@pytest.mark.parametrize("seed", range(10))
def test_random_splits_through_the_mock(seed, rounds):
    """10 random splits of one 150-patient cohort into 3-5 sites, one of exactly 5 patients, plus a
    site without events: both models equal the centralized fit to 1e-8 in at most 25 rounds."""
    rng = np.random.default_rng(500 + seed)
    course, patient = simulate_site(np.random.default_rng(99), "X", 150)
    k = int(rng.integers(3, 6))
    perm = rng.permutation(patient["person_id"].to_numpy())
    while True:  # cut points leaving every site >= 5 patients, the first exactly 5
        cuts = [5, *np.sort(rng.choice(np.arange(10, 146), k - 2, replace=False))]
        if min(np.diff([*cuts, 150])) >= 5:
            break
    parts = np.split(perm, cuts)
    frames = {}
    for i, part in enumerate(parts):
        site = f"S{i}"
        c = course[course["person_id"].isin(part)].assign(site_id=site)
        p = patient[patient["person_id"].isin(part)].assign(site_id=site)
        frames[site] = (c, p)
    frames["Z"] = simulate_site(np.random.default_rng(seed), "Z", 10, event_scale=0.0)
    assert len(frames["S0"][1]) == 5 and not frames["Z"][1]["efs_event"].any()
    for model in ("stratified", "unstratified"):
        rounds.clear()
        res = _run(_client(frames), model=model)
        ref = _central(frames, model, "efron")
        np.testing.assert_allclose(res["coef"], ref.coef, rtol=0, atol=TOL)
        np.testing.assert_allclose(res["se"], ref.se, rtol=0, atol=TOL)
        assert res["loglik"] == pytest.approx(ref.loglik, abs=TOL)
        assert len(rounds) == res["rounds"] <= 25
