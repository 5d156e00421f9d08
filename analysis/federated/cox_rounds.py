"""Multi-round federated Cox PH: what a site computes per round, and the central Newton fit.

The central fit is R's ``coxph.fit`` iteration (:func:`blina_study.analysis.cox.cox_fit_derivatives`: start
at 0, step halving, ``|1 - L_old / L_new| <= 1e-9``, iter.max 20, Cholesky tolerance, R's
warnings) run on derivatives summed from the sites; one *round* is one request to every site at
one proposed beta. Two models, each equal to the centralized fit of the concatenated complete
cases (``cox_fit(time, event, X[, strata=site])``) up to floating-point rounding:

* **site-stratified** (R ``coxph(Surv ~ x + strata(site))``): the partial likelihood is a product
  over strata, so its log, score and information are *sums over sites* of each site's own
  one-stratum values. Per round a site returns ``loglik_k`` (1 number), ``U_k`` (p) and ``I_k``
  (p x p symmetric) at the proposed beta. Nothing else, no setup round.
* **unstratified** (R ``coxph(Surv ~ x)``, one baseline hazard for all sites): a risk set holds
  patients of every site, and ``loglik = sum_j [sum_{D_j} x'beta - sum_l log(S0_j - (l/d_j) T0_j)]``
  is a sum of logs of *cross-site* sums, so per-site log-likelihoods, scores and informations do
  **not** add up to it (a ratio of sums is not a sum of ratios). Exact pooling needs the sums
  themselves (WebDISCO, Lu et al., JAMIA 2015). Setup round (once): each site returns its distinct
  event times with event counts, ``sum_{events} x`` (p) and n; the centre forms the union grid of
  event times. Every Newton round: the centre sends beta and the grid; each site returns, at every
  grid time t, its risk-set sums ``S0 = sum_{T_i >= t} exp(x_i'beta)``, ``S1`` (p), ``S2`` (p x p)
  and the same sums over its events at t, ``T0, T1, T2`` (Efron; Breslow needs no T). The centre
  adds them per time and evaluates Efron's (or Breslow's) terms exactly.

Disclosure, per model (docs/federated.md has the full model):

* stratified: per round ``1 + p + p(p+1)/2`` numbers per site (10 for p = 3). At beta = 0 the
  score is ``sum_events (x_i - risk-set mean)``; over several rounds these are values of one smooth
  function of beta, so the centre cannot read individual rows from them without solving for the
  site's pattern counts from many rounds (at most iter.max + 2 = 22 are asked).
* unstratified: much more. The union grid (sent to every site) reveals every event day (days
  since index) of every site to all sites; the setup round gives the centre each site's
  per-event-day event counts (a KM event table); each round gives per-time risk-set sums, and
  ``S0`` at beta = 0 is the site's number at risk at every event day (its KM risk table). With
  binary covariates and one round at a generic beta, the centre can in principle solve the
  integer counts of every covariate pattern at risk at every event day, i.e. the same information
  as the per-event-time pattern table of a ``exact`` site package (``cox_pattern_counts``).
  Use it only where the site-stratified model is not the one wanted.

Why hand-written: vantage6's own Cox algorithms (``v6-cox-ph``) add tail censoring and risk-set
guards that make the fit inexact, and none ports R's iteration; the per-round sums are a few numpy
reductions over one site's rows. Measured (bench/cox_rounds.py, bench/RESULTS.md, four in-process
sites): the whole federated fit takes 1.0-1.6x the centralized ``cox_fit`` of the same data for the
stratified model and 1.2-3.6x for the unstratified one, from 10^3 to 10^5 patients (0.9 s at 10^5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from blina_study.analysis.cox import CoxDerivatives, CoxFit, Ties, cox_derivatives, cox_fit_derivatives

from .sufficient import FederatedInputError, _bool_column, _days_column, _float_column

__all__ = [
    "CoxDesign",
    "CoxModel",
    "cox_design",
    "site_cox_derivatives",
    "site_cox_setup",
    "site_risk_set_sums",
    "pool_cox_setup",
    "pooled_stratified_derivatives",
    "pooled_unstratified_derivatives",
    "federated_cox_fit",
    "fit_to_dict",
]

CoxModel = Literal["stratified", "unstratified"]
_BOOL_LIKE = ("high_mrd", "cd19_loss", "bcr_abl1", "poor_cytogenetics", "burden_reduction")


@dataclass(frozen=True)
class CoxDesign:
    """One site's complete cases for the Cox model: follow-up days, event flags (0/1) and the
    n x p covariate matrix; ``n_excluded`` patients lacked a covariate."""

    time: np.ndarray
    event: np.ndarray
    x: np.ndarray
    covariates: tuple[str, ...]
    n_excluded: int


def cox_design(
    course: pd.DataFrame,
    patient: pd.DataFrame,
    covariates: Sequence[str],
    *,
    endpoint: str = "efs",
) -> CoxDesign:
    """Complete-case design of one site: one row per patient, ``<endpoint>_days`` /
    ``<endpoint>_event`` from ``patient``; each covariate from ``patient`` or, if not there, from
    the patient's first course (``course_number == 1``). Booleans become 0/1, numbers stay."""
    if endpoint not in ("efs", "os"):
        raise FederatedInputError(f"Cox endpoint must be 'efs' or 'os', not {endpoint!r}")
    for col in ("person_id", f"{endpoint}_days", f"{endpoint}_event"):
        if col not in patient.columns:
            raise FederatedInputError(f"patient table lacks column {col!r} (protocol section 4)")
    patient = patient.reset_index(drop=True)
    c1 = course.loc[course["course_number"] == 1].reset_index(drop=True)
    pid = patient["person_id"].tolist()
    cols: list[list[float | None]] = []
    for name in covariates:
        if name in patient.columns and name not in ("efs_event", "os_event"):
            cols.append(_numeric(patient, name, "patient"))
        elif name in c1.columns:
            m = dict(zip(c1["person_id"].tolist(), _numeric(c1, name, "course"), strict=True))
            cols.append([m.get(p) for p in pid])
        else:
            raise FederatedInputError(
                f"Cox covariate {name!r} is neither a patient nor a course column"
            )
    times = _days_column(patient, f"{endpoint}_days", "patient")
    events = _bool_column(patient, f"{endpoint}_event", "patient")
    rows = list(zip(*cols, strict=True)) if cols else [()] * len(patient)
    keep = [e is not None and all(v is not None for v in r) for r, e in zip(rows, events, strict=True)]
    idx = [i for i, k in enumerate(keep) if k]
    p = len(covariates)
    return CoxDesign(
        time=np.asarray([times[i] for i in idx], dtype=float),
        event=np.asarray([1.0 if events[i] else 0.0 for i in idx], dtype=float),
        x=np.asarray([rows[i] for i in idx], dtype=float).reshape(len(idx), p),
        covariates=tuple(covariates),
        n_excluded=keep.count(False),
    )


def _numeric(df: pd.DataFrame, column: str, table: str) -> list[float | None]:
    col = df[column]
    if column in _BOOL_LIKE or col.dtype == bool or str(col.dtype) == "boolean":
        return [None if v is None else float(v) for v in _bool_column(df, column, table)]
    return _float_column(df, column, table)


# ---- site side -------------------------------------------------------------------------------


def site_cox_derivatives(design: CoxDesign, beta: Sequence[float], *, ties: Ties = "efron") -> dict[str, Any]:
    """Site-stratified round: this site's (one stratum) log partial likelihood, score and
    information at ``beta``, with n and the number of events (JSON)."""
    b = _beta(beta, design)
    d = cox_derivatives(design.time, design.event, design.x, b, ties=ties)
    return {
        "loglik": float(d.loglik),
        "score": [float(v) for v in d.score],
        "information": [[float(v) for v in row] for row in d.information],
        "n": int(design.time.shape[0]),
        "n_events": int(design.event.sum()),
        "n_excluded": design.n_excluded,
    }


def site_cox_setup(design: CoxDesign) -> dict[str, Any]:
    """Unstratified setup round: distinct event days with event counts, the sum of the
    covariates over the events, n (JSON)."""
    ev = design.event == 1
    times, counts = np.unique(design.time[ev], return_counts=True)
    return {
        "event_times": [int(t) for t in times],
        "events": [int(c) for c in counts],
        "x_event_sum": [float(v) for v in design.x[ev].sum(axis=0)],
        "n": int(design.time.shape[0]),
        "n_events": int(ev.sum()),
        "n_excluded": design.n_excluded,
    }


def site_risk_set_sums(
    design: CoxDesign, beta: Sequence[float], grid: Sequence[int], *, ties: Ties = "efron"
) -> dict[str, Any]:
    """Unstratified round: at every grid time t, ``S0, S1, S2`` over this site's patients with
    time >= t and (Efron) ``T0, T1, T2`` over its events at t, with r = exp(x'beta). Refuses a
    grid that misses one of the site's event days (the centre must send the union grid)."""
    b = _beta(beta, design)
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or (g.size > 1 and np.any(np.diff(g) <= 0)):
        raise FederatedInputError("the grid of event times must be strictly increasing")
    ev = design.event == 1
    missing = np.setdiff1d(np.unique(design.time[ev]), g)
    if missing.size:
        raise FederatedInputError(
            f"the grid lacks {missing.size} of this site's event times; the centre must send "
            "the union of the sites' event times from the setup round"
        )
    X = design.x
    p = X.shape[1]
    with np.errstate(over="ignore"):
        r = np.exp(X @ b)
    order = np.argsort(design.time, kind="mergesort")
    t_sorted = design.time[order]
    r_s, X_s = r[order], X[order]
    rx = r_s[:, None] * X_s
    rxx = rx[:, :, None] * X_s[:, None, :]
    # Reverse cumulative sums: row i = sum over sorted rows i..n-1 (everyone with time >= t_i).
    def rev(a: np.ndarray) -> np.ndarray:
        out = np.zeros((a.shape[0] + 1, *a.shape[1:]))
        out[:-1] = np.cumsum(a[::-1], axis=0)[::-1]
        return out

    R0, R1, R2 = rev(r_s), rev(rx), rev(rxx)
    first = np.searchsorted(t_sorted, g, side="left")
    out: dict[str, Any] = {
        "S0": R0[first].tolist(),
        "S1": R1[first].tolist(),
        "S2": R2[first].tolist(),
    }
    if ties == "efron":
        m = g.size
        T0, T1, T2 = np.zeros(m), np.zeros((m, p)), np.zeros((m, p, p))
        e_s = ev[order]
        pos = np.searchsorted(g, t_sorted[e_s])
        np.add.at(T0, pos, r_s[e_s])
        np.add.at(T1, pos, rx[e_s])
        np.add.at(T2, pos, rxx[e_s])
        out.update(T0=T0.tolist(), T1=T1.tolist(), T2=T2.tolist())
    elif ties != "breslow":
        raise FederatedInputError(f"ties must be 'efron' or 'breslow', not {ties!r}")
    return out


def _beta(beta: Sequence[float], design: CoxDesign) -> np.ndarray:
    b = np.asarray(beta, dtype=float).reshape(-1)
    if b.shape[0] != len(design.covariates) or not np.isfinite(b).all():
        raise FederatedInputError(
            f"beta must be {len(design.covariates)} finite numbers, got {list(beta)!r}"
        )
    return b


# ---- centre side -----------------------------------------------------------------------------


def pooled_stratified_derivatives(sites: Sequence[dict[str, Any]]) -> CoxDerivatives:
    """Sum of the sites' one-stratum derivatives = derivatives of the site-stratified model."""
    return CoxDerivatives(
        loglik=float(sum(s["loglik"] for s in sites)),
        score=np.sum([np.asarray(s["score"], dtype=float) for s in sites], axis=0),
        information=np.sum([np.asarray(s["information"], dtype=float) for s in sites], axis=0),
    )


def pool_cox_setup(sites: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Union grid of event days with pooled event counts, pooled ``sum_{events} x``, n."""
    counts: dict[int, int] = {}
    for s in sites:
        for t, c in zip(s["event_times"], s["events"], strict=True):
            counts[int(t)] = counts.get(int(t), 0) + int(c)
    grid = sorted(counts)
    return {
        "grid": grid,
        "events": [counts[t] for t in grid],
        "x_event_sum": np.sum([np.asarray(s["x_event_sum"], dtype=float) for s in sites], axis=0).tolist(),
        "n": int(sum(s["n"] for s in sites)),
        "n_events": int(sum(s["n_events"] for s in sites)),
        "n_excluded": int(sum(s.get("n_excluded", 0) for s in sites)),
    }


def pooled_unstratified_derivatives(
    setup: dict[str, Any], sums: Sequence[dict[str, Any]], beta: Sequence[float], *, ties: Ties = "efron"
) -> CoxDerivatives:
    """Log partial likelihood, score and information of the unstratified model at ``beta`` from
    the sites' risk-set sums at the union grid (Efron: for l = 0..d_j - 1, A = S - (l/d_j) T)."""
    b = np.asarray(beta, dtype=float)
    S0 = np.sum([np.asarray(s["S0"], dtype=float) for s in sums], axis=0)
    S1 = np.sum([np.asarray(s["S1"], dtype=float) for s in sums], axis=0)
    S2 = np.sum([np.asarray(s["S2"], dtype=float) for s in sums], axis=0)
    d = np.asarray(setup["events"], dtype=np.int64)
    xsum = np.asarray(setup["x_event_sum"], dtype=float)
    p = b.shape[0]
    if ties == "efron":
        T0 = np.sum([np.asarray(s["T0"], dtype=float) for s in sums], axis=0)
        T1 = np.sum([np.asarray(s["T1"], dtype=float) for s in sums], axis=0)
        T2 = np.sum([np.asarray(s["T2"], dtype=float) for s in sums], axis=0)
        j = np.repeat(np.arange(d.size), d)
        frac = np.concatenate([np.arange(k) / k for k in d]) if d.size else np.zeros(0)
        wt = np.ones(j.size)
    else:
        T0, T1, T2 = np.zeros_like(S0), np.zeros_like(S1), np.zeros_like(S2)
        j = np.arange(d.size)
        frac = np.zeros(d.size)
        wt = d.astype(float)
    den = S0[j] - frac * T0[j]
    a = S1[j].reshape(-1, p) - frac[:, None] * T1[j].reshape(-1, p)
    c = S2[j].reshape(-1, p, p) - frac[:, None, None] * T2[j].reshape(-1, p, p)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        loglik = float(xsum @ b - np.sum(wt * np.log(den)))
        mean = a / den[:, None]
        score = xsum - wt @ mean
        info = np.einsum("k,kij->ij", wt / den, c) - np.einsum("k,ki,kj->ij", wt, mean, mean)
    return CoxDerivatives(loglik=loglik, score=np.asarray(score, dtype=float), information=info)


RequestFn = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


def federated_cox_fit(
    request: RequestFn,
    covariates: Sequence[str],
    *,
    model: CoxModel = "stratified",
    ties: Ties = "efron",
) -> dict[str, Any]:
    """Fit the Cox model over the sites by R's Newton iteration, one round per derivative call.

    ``request(kind, kwargs)`` asks every site and returns their answers; ``kind`` is
    ``"derivatives"`` (kwargs ``beta``), ``"setup"`` (no kwargs) or ``"risk_sums"`` (kwargs
    ``beta``, ``grid``); each site answers with :func:`site_cox_derivatives`,
    :func:`site_cox_setup` or :func:`site_risk_set_sums` on its :func:`cox_design`. Returns
    :func:`fit_to_dict` of the fit plus ``model``, ``rounds`` and ``n_sites``; raises
    :class:`FederatedInputError` when the sites have no event (one sentence, nothing fitted)."""
    if model not in ("stratified", "unstratified"):
        raise FederatedInputError(f"Cox model must be 'stratified' or 'unstratified', not {model!r}")
    p = len(covariates)
    rounds = 0

    def ask(kind: str, **kwargs: Any) -> list[dict[str, Any]]:
        nonlocal rounds
        rounds += 1
        return request(kind, kwargs)

    if model == "stratified":
        first = ask("derivatives", beta=[0.0] * p)
        n = sum(s["n"] for s in first)
        n_events = sum(s["n_events"] for s in first)
        n_excluded = sum(s.get("n_excluded", 0) for s in first)
        n_sites = len(first)
        cache: list[Any] = [first]

        def derivs(beta: np.ndarray) -> CoxDerivatives:
            if cache:  # the beta = 0 round already asked
                return pooled_stratified_derivatives(cache.pop())
            return pooled_stratified_derivatives(ask("derivatives", beta=[float(v) for v in beta]))
    else:
        setups = ask("setup")
        setup = pool_cox_setup(setups)
        n, n_events, n_excluded, n_sites = setup["n"], setup["n_events"], setup["n_excluded"], len(setups)

        def derivs(beta: np.ndarray) -> CoxDerivatives:
            sums = ask("risk_sums", beta=[float(v) for v in beta], grid=setup["grid"])
            return pooled_unstratified_derivatives(setup, sums, beta, ties=ties)

    if n_events == 0:
        raise FederatedInputError(
            f"no events among the {n} complete cases of {n_sites} sites: the Cox model has "
            "nothing to estimate; check the endpoint's event flags at the sites"
        )
    fit = cox_fit_derivatives(derivs, names=tuple(covariates), n=n, n_events=n_events, ties=ties)
    return {
        **fit_to_dict(fit),
        "model": model,
        "rounds": rounds,
        "n_sites": n_sites,
        "n_excluded_missing": n_excluded,
    }


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _exp(x: float) -> float | None:
    return math.exp(x) if math.isfinite(x) and x < 709.0 else None


def fit_to_dict(fit: CoxFit) -> dict[str, Any]:
    """JSON form of a :class:`blina_study.analysis.cox.CoxFit` (NaN and infinity become None)."""
    z975 = 1.959963984540054
    coef = [float(c) for c in fit.coef]
    se = [float(s) for s in fit.se]
    return {
        "covariates": list(fit.names),
        "coef": [_num(c) for c in coef],
        "se": [_num(s) for s in se],
        "hr": [_exp(c) for c in coef],
        "ci_lower": [_exp(c - z975 * s) for c, s in zip(coef, se, strict=True)],
        "ci_upper": [_exp(c + z975 * s) for c, s in zip(coef, se, strict=True)],
        "z": [_num(float(v)) for v in fit.z],
        "p": [_num(float(v)) for v in fit.p],
        "loglik_null": _num(fit.loglik_null),
        "loglik": _num(fit.loglik),
        "lr_test": [_num(fit.lr_test[0]), fit.lr_test[1], _num(fit.lr_test[2])],
        "wald_test": [_num(fit.wald_test[0]), fit.wald_test[1], _num(fit.wald_test[2])],
        "score_test": [_num(fit.score_test[0]), fit.score_test[1], _num(fit.score_test[2])],
        "iterations": fit.iterations,
        "converged": fit.converged,
        "n": fit.n,
        "n_events": fit.n_events,
        "ties": fit.ties,
        "infinite": list(fit.infinite),
        "warnings": list(fit.warnings),
    }
