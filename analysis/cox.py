"""Cox proportional hazards, fitted exactly as R's ``survival::coxph`` does it.

Public API:

* :func:`cox_fit`: Newton-Raphson with step halving, a port of ``coxph.fit`` / ``coxfit6.c``
  (survival 3.x): same initial values (0), same convergence criterion (``|1 - L_old / L_new| <=
  eps``, eps 1e-9, iter.max 20, never converged at the first step), same centring and scaling of
  covariates that are not all in {-1, 0, 1} (``nocenter``), same step halving (``halving``-weighted
  average of the last good and the proposed beta), same Cholesky tolerance (``toler.chol =
  .Machine$double.eps^0.75``: aliased covariates get coefficient NaN = R's ``NA``), and the same
  monotone-likelihood rule: a finite coefficient with the warning ``Loglik converged before
  variable ...; coefficient may be infinite`` (our message names the variable as well as its
  index; when the iterations run out, where R names none, we name the covariates whose
  coefficient still grew over the last three accepted steps). Efron or Breslow ties, strata,
  Wald / likelihood-ratio / score tests.
* :func:`cox_derivatives`: log partial likelihood, score vector and information matrix of one
  data set at a given beta (Efron or Breslow, strata). They add over data sets (sites) with
  disjoint strata, which is what a federated Newton-Raphson (nodes return derivatives at a proposed
  beta, the centre updates) needs; :func:`newton_step` is that central update, and
  :func:`cox_fit_derivatives` runs R's whole iteration (halving, convergence rule, warnings) on
  derivatives from any source (``cox_fit`` itself, or one federated round per call).

Why our own Newton iteration on numpy and not lifelines: lifelines' ``CoxPHFitter`` uses another
step rule (a fixed step size with its own decrement criterion) and failed with ``ConvergenceError:
delta contains nan value(s)`` on the demo cohort, on one 58-patient centre and on a
well-conditioned 2,000-patient cohort that R fits without trouble (issue 12); its answers in
monotone-likelihood cases are not R's either. Matching R to 1e-6 needs R's exact iteration path,
so the algorithm is ported rather than wrapped. The risk-set sums are vectorised (reverse
cumulative sums per stratum over tied-time groups), so the fit is faster than lifelines on the
same data (bench/cox_fit.py; recorded in bench/RESULTS.md). statsmodels ``PHReg`` has Efron and
strata but neither R's halving nor R's infinite-coefficient diagnostics.

Verified against R 4.2.2 / survival 3.5-3 on 41 cohorts x {Efron, Breslow} (tests/fixtures/r_cox,
tests/test_cox_reference.py): coefficients, SE, Wald P, log-likelihoods, LR/Wald/score tests and
the iteration count agree to 1e-6, including monotone likelihood and a fit that runs out of
iterations. Two details matter there: exp(eta) is taken unshifted in the fit, as in coxfit6.c
(a shifted exp underflows late risk sets to 0 where R's does not, and must overflow where R's
does, so that R's step halving follows), and coxfit6.c updates beta on the last iteration too.

Times are compared exactly (R additionally merges times equal up to rounding error,
``timefix = TRUE``; our times are whole days, where both agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats as sps

__all__ = [
    "Ties",
    "CoxDerivatives",
    "CoxFit",
    "cox_derivatives",
    "cox_fit",
    "cox_fit_derivatives",
    "newton_step",
]

Ties = Literal["efron", "breslow"]

EPS = 1e-9  # coxph.control(eps)
ITER_MAX = 20  # coxph.control(iter.max)
TOLER_CHOL = float(np.finfo(float).eps) ** 0.75  # coxph.control(toler.chol)
TOLER_INF = math.sqrt(EPS)  # coxph.control(toler.inf)
_EXP_SAFE = 700.0  # exp(700) ~ 1e304: sums of a few thousand such terms stay finite


@dataclass(frozen=True)
class CoxDerivatives:
    """Log partial likelihood, score vector (length p) and information matrix (p x p) at beta."""

    loglik: float
    score: np.ndarray
    information: np.ndarray


@dataclass(frozen=True)
class CoxFit:
    """A fitted Cox model, in R's terms.

    ``coef``/``se``/``z``/``p`` per covariate (NaN for an aliased covariate, R's ``NA``);
    ``var`` the inverse information; ``loglik_null`` / ``loglik`` R's ``fit$loglik``;
    ``lr_test``, ``wald_test``, ``score_test`` (statistic, df, P) as ``summary.coxph`` prints;
    ``iterations`` R's ``fit$iter``; ``converged`` False when iter.max was reached;
    ``infinite`` names of covariates R flags "coefficient may be infinite";
    ``warnings`` R's warnings, worded as R words them plus the variable names.
    """

    names: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p: np.ndarray
    var: np.ndarray
    loglik_null: float
    loglik: float
    lr_test: tuple[float, int, float]
    wald_test: tuple[float, int, float]
    score_test: tuple[float, int, float]
    iterations: int
    converged: bool
    n: int
    n_events: int
    ties: str
    infinite: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _as_arrays(time, event, x, strata, weights):
    t = np.asarray(time, dtype=float)
    d = np.asarray(event, dtype=float)
    X = np.asarray(x, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    n = t.shape[0]
    if d.shape != (n,) or X.shape[0] != n:
        raise ValueError("cox: time, event and covariates must have the same number of rows")
    if not (np.isfinite(t).all() and np.isfinite(X).all()):
        raise ValueError("cox: time and covariates must be finite (drop missing values first)")
    if not np.isin(d, (0.0, 1.0)).all():
        raise ValueError("cox: event must be 0 or 1")
    s = np.zeros(n, dtype=np.int64) if strata is None else _strata_codes(strata, n)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or (w <= 0).any():
        raise ValueError("cox: weights must be > 0, one per row")
    order = np.lexsort((t, s))  # by stratum, then time (R: order(strata, time))
    return t[order], d[order], X[order], s[order], w[order]


def _strata_codes(strata, n: int) -> np.ndarray:
    arr = np.asarray(strata, dtype=object)
    if arr.shape != (n,):
        raise ValueError("cox: one stratum label per row")
    _, codes = np.unique(arr.astype(str), return_inverse=True)
    return codes.astype(np.int64)


def _derivs_sorted(t, d, X, s, w, beta, ties: Ties, shift_overflow: bool = False) -> CoxDerivatives:
    """Derivatives on data sorted by (stratum, time); see :func:`cox_derivatives`. Overflow gives
    Inf/NaN silently, as in R's C code; the caller tests for finiteness."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _derivs_core(t, d, X, s, w, beta, ties, shift_overflow)


def _derivs_core(t, d, X, s, w, beta, ties: Ties, shift_overflow: bool) -> CoxDerivatives:
    n, p = X.shape
    eta = X @ beta
    # R computes exp(eta) unshifted, so does cox_fit, to take R's path: a late risk set must not
    # underflow to 0 where R's does not, and an overflow must give R's Inf (then R halves the
    # step); both happen under separation. With ``shift`` (cox_derivatives, which may see
    # uncentred covariates) a per-stratum constant, which leaves every term unchanged, is
    # subtracted where exp would overflow.
    shift = np.zeros(n)
    if shift_overflow:
        for k in np.unique(s):
            m = s == k
            shift[m] = max(0.0, float(eta[m].max()) - _EXP_SAFE)
    with np.errstate(over="ignore", invalid="ignore"):
        r = w * np.exp(eta - shift)
    rx = r[:, None] * X
    rxx = rx[:, :, None] * X[:, None, :]
    # Groups of equal (stratum, time); risk set at a group = this and all later groups of the stratum.
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
    starts = np.flatnonzero(new_group)
    g_s = s[starts]
    dr = d * r
    G0, G1, G2 = (np.add.reduceat(a, starts, axis=0) for a in (r, rx, rxx))
    D0, D1, D2 = (np.add.reduceat(a, starts, axis=0) for a in (dr, d[:, None] * rx, d[:, None, None] * rxx))
    n_dead = np.add.reduceat(d, starts)
    dead_w = np.add.reduceat(d * w, starts)
    R0, R1, R2 = np.empty_like(G0), np.empty_like(G1), np.empty_like(G2)
    for k in np.unique(g_s):
        idx = np.flatnonzero(g_s == k)
        R0[idx] = np.cumsum(G0[idx][::-1], axis=0)[::-1]
        R1[idx] = np.cumsum(G1[idx][::-1], axis=0)[::-1]
        R2[idx] = np.cumsum(G2[idx][::-1], axis=0)[::-1]
    ev = np.flatnonzero(n_dead > 0)
    nd = n_dead[ev].astype(np.int64)
    if ties == "efron":
        reps = nd
        # fractions 0, 1/d, ..., (d-1)/d of the tied deaths' risk removed from the risk set
        frac = np.concatenate([np.arange(m) / m for m in nd]) if ev.size else np.zeros(0)
        wt = np.repeat(dead_w[ev] / nd, reps)
    elif ties == "breslow":
        reps = np.ones_like(nd)
        frac = np.zeros(ev.size)
        wt = dead_w[ev]
    else:
        raise ValueError(f"cox: ties must be 'efron' or 'breslow', not {ties!r}")
    gi = np.repeat(ev, reps)
    den = R0[gi] - frac * D0[gi]
    a = R1[gi] - frac[:, None] * D1[gi]
    c = R2[gi] - frac[:, None, None] * D2[gi]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        loglik = float(np.sum(d * w * eta) - np.sum(wt * (np.log(den) + shift[starts][gi])))
        mean = a / den[:, None]
        score = (d * w) @ X - wt @ mean
        info = np.einsum("k,kij->ij", wt / den, c) - np.einsum("k,ki,kj->ij", wt, mean, mean)
    return CoxDerivatives(loglik=loglik, score=np.asarray(score, dtype=float), information=info)


def cox_derivatives(
    time: Sequence[float] | np.ndarray,
    event: Sequence[float] | np.ndarray,
    x: np.ndarray,
    beta: Sequence[float] | np.ndarray,
    *,
    strata: Sequence[object] | np.ndarray | None = None,
    ties: Ties = "efron",
    weights: Sequence[float] | np.ndarray | None = None,
) -> CoxDerivatives:
    """Log partial likelihood, score and information of one data set at ``beta`` (R's
    ``coxph(..., init = beta, control = coxph.control(iter.max = 0))``: ``fit$loglik[1]``; the
    score is the gradient, the information minus the Hessian). ``x`` is n x p on the original
    scale; rows in any order. Sums over data sets with disjoint strata are the derivatives of the
    combined (stratified) likelihood."""
    t, d, X, s, w = _as_arrays(time, event, x, strata, weights)
    b = np.asarray(beta, dtype=float).reshape(-1)
    if b.shape[0] != X.shape[1]:
        raise ValueError(f"cox: beta has {b.shape[0]} values for {X.shape[1]} covariates")
    return _derivs_sorted(t, d, X, s, w, b, ties, shift_overflow=True)


# ---- R's Cholesky helpers (cholesky2 / chsolve2 / chinv2): singular pivots become zeros ----

def _cholesky2(m: np.ndarray, toler: float) -> tuple[np.ndarray, int]:
    a = np.array(m, dtype=float)
    n = a.shape[0]
    a = np.triu(a) + np.triu(a, 1).T  # R fills the upper triangle and mirrors it
    diag_max = max((a[i, i] for i in range(n)), default=0.0)
    eps = toler if diag_max <= 0 else diag_max * toler
    rank, nonneg = 0, 1
    for i in range(n):
        pivot = a[i, i]
        if not math.isfinite(pivot) or pivot < eps:
            a[i, i] = 0.0
            if pivot < -8 * eps:
                nonneg = -1
        else:
            rank += 1
            for j in range(i + 1, n):
                temp = a[j, i] / pivot
                a[j, i] = temp
                a[j, j] -= temp * temp * pivot
                for k in range(j + 1, n):
                    a[k, j] -= temp * a[k, i]
    return a, rank * nonneg


def _chsolve2(chol: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = chol.shape[0]
    b = np.array(y, dtype=float)
    for i in range(n):
        temp = b[i]
        for j in range(i):
            temp -= b[j] * chol[i, j]
        b[i] = temp
    for i in range(n - 1, -1, -1):
        if chol[i, i] == 0:
            b[i] = 0.0
        else:
            temp = b[i] / chol[i, i]
            for j in range(i + 1, n):
                temp -= b[j] * chol[j, i]
            b[i] = temp
    return b


def _chinv2(chol: np.ndarray) -> np.ndarray:
    a = np.array(chol, dtype=float)
    n = a.shape[0]
    for i in range(n):  # invert the Cholesky factor in place
        if a[i, i] > 0:
            a[i, i] = 1 / a[i, i]
            for j in range(i + 1, n):
                a[j, i] = -a[j, i]
                for k in range(i):
                    a[j, k] += a[j, i] * a[i, k]
    for i in range(n):  # lower triangle now holds inverse of L; form F'DF
        if a[i, i] == 0:
            for j in range(i):
                a[j, i] = 0
            for j in range(i, n):
                a[i, j] = 0
        else:
            for j in range(i + 1, n):
                temp = a[j, i] * a[j, j]
                if j != i:
                    a[i, j] = temp
                for k in range(i, j):
                    a[i, k] += temp * a[j, k]
    out = np.triu(a)
    return out + np.triu(out, 1).T


def newton_step(
    beta: Sequence[float] | np.ndarray, derivs: CoxDerivatives, *, toler_chol: float = TOLER_CHOL
) -> np.ndarray:
    """One Newton-Raphson update ``beta + I^-1 U`` as R solves it (Cholesky with R's tolerance;
    an aliased direction gets step 0). Used by the federated fit on the summed derivatives."""
    chol, _ = _cholesky2(derivs.information, toler_chol)
    return np.asarray(beta, dtype=float) + _chsolve2(chol, derivs.score)


def _test(stat: float, df: int) -> tuple[float, int, float]:
    p = float(sps.chi2.sf(stat, df)) if df > 0 and math.isfinite(stat) else math.nan
    return (float(stat), int(df), p)


def _ieee_div(a: float, b: float) -> float:
    """a / b as C computes it (inf or NaN on a zero divisor, no exception)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def cox_fit(
    time: Sequence[float] | np.ndarray,
    event: Sequence[float] | np.ndarray,
    x: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    strata: Sequence[object] | np.ndarray | None = None,
    ties: Ties = "efron",
    weights: Sequence[float] | np.ndarray | None = None,
    eps: float = EPS,
    iter_max: int = ITER_MAX,
    toler_chol: float = TOLER_CHOL,
    toler_inf: float = TOLER_INF,
) -> CoxFit:
    """Fit ``coxph(Surv(time, event) ~ x + strata(strata), ties = ties)`` as R does (see the
    module docstring). ``x``: n x p numbers without missing values. Raises ValueError on malformed
    input; degenerate data (no events) give NaN coefficients and a warning, as R does."""
    t, d, X, s, w = _as_arrays(time, event, x, strata, weights)
    n, p = X.shape
    names = tuple(names) if names is not None else tuple(f"x{i + 1}" for i in range(p))
    if len(names) != p:
        raise ValueError("cox: one name per covariate column")
    # coxph(nocenter = c(-1, 0, 1)): columns with other values are centred and scaled.
    doscale = ~np.all(np.isin(X, (-1.0, 0.0, 1.0)), axis=0)
    wsum = w.sum()
    means = np.where(doscale, (w @ X) / wsum, 0.0)
    Xs = X - means
    scale = np.ones(p)
    for i in np.flatnonzero(doscale):
        mad = float(w @ np.abs(Xs[:, i]))
        scale[i] = wsum / mad if mad > 0 else 1.0
    Xs = Xs * scale

    def derivs(b: np.ndarray) -> CoxDerivatives:
        return _derivs_sorted(t, d, Xs, s, w, b, ties)

    def max_lp(coef: np.ndarray) -> float:
        return float((X @ coef - coef @ means).max()) if n else 0.0

    return cox_fit_derivatives(
        derivs, names=names, n=n, n_events=int(d.sum()), ties=ties, scale=scale, max_lp=max_lp,
        eps=eps, iter_max=iter_max, toler_chol=toler_chol, toler_inf=toler_inf,
    )


def cox_fit_derivatives(
    derivs: Callable[[np.ndarray], CoxDerivatives],
    *,
    names: Sequence[str],
    n: int,
    n_events: int,
    ties: Ties = "efron",
    scale: np.ndarray | None = None,
    max_lp: Callable[[np.ndarray], float] | None = None,
    eps: float = EPS,
    iter_max: int = ITER_MAX,
    toler_chol: float = TOLER_CHOL,
    toler_inf: float = TOLER_INF,
) -> CoxFit:
    """R's ``coxph.fit`` iteration on derivatives supplied by ``derivs(beta)`` (log partial
    likelihood, score, information at beta, on the scale of ``beta``): the same start (0), step
    halving, convergence rule, Cholesky tolerance and warnings as :func:`cox_fit`, which calls it
    on its own data. A federated fit passes a ``derivs`` that asks the sites (one round per call):
    the calls are at beta = 0, once per iteration, and once more at the last good beta when
    iter_max is reached.

    ``scale``: the covariates were multiplied by it (coefficients are divided back; default 1);
    ``max_lp``: the largest linear predictor at the final coefficients, used only for R's "may be
    infinite" warning after non-convergence (None: that check is skipped, the other one stays)."""
    names = tuple(names)
    p = len(names)
    scale = np.ones(p) if scale is None else np.asarray(scale, dtype=float)
    beta = np.zeros(p)
    first = derivs(beta)
    loglik0 = first.loglik
    chol, flag = _cholesky2(first.information, toler_chol)
    step = _chsolve2(chol, first.score)
    score_stat = float(first.score @ step)
    best = loglik0
    newbeta = beta + step
    halving = 0
    accepted = [beta]  # accepted iterates (scaled): which coefficient still grows at the end
    converged = False
    iterations = 0
    cur = first
    if iter_max == 0 or not math.isfinite(loglik0):
        final_chol, final_beta, final_u, final_lk = chol, beta, first.score, loglik0
        converged = True
    else:
        final_chol = final_beta = final_u = None
        final_lk = math.nan
        for it in range(1, iter_max + 1):
            iterations = it
            cur = derivs(newbeta)
            newlk = cur.loglik
            chol, flag = _cholesky2(cur.information, toler_chol)
            notfinite = (
                not np.isfinite(cur.score).all()
                or not np.isfinite(cur.information).all()
                or not math.isfinite(newlk)
            )
            # C's IEEE division: a log partial likelihood of exactly 0 (every event alone in its
            # risk set) gives inf or NaN here, never converged, as in coxfit6.c.
            if not notfinite and abs(1 - _ieee_div(best, newlk)) <= eps:
                final_chol, final_beta, final_u, final_lk = chol, newbeta, cur.score, newlk
                converged = True
                if halving:
                    flag = -2  # R: converged while halving
                break
            # coxfit6.c (survival 3.x) updates beta on the last iteration too and reports
            # iter = iter.max + 1 when it runs out; the older "break at iter.max" rule differs.
            if notfinite or newlk < best:
                halving += 1  # not converging: shrink back towards the last good beta
                newbeta = (newbeta + halving * beta) / (halving + 1.0)
            else:
                halving = 0
                best = newlk
                beta = newbeta
                accepted.append(beta)
                newbeta = newbeta + _chsolve2(chol, cur.score)
        if not converged:
            iterations = iter_max + 1
            last = derivs(beta) if iter_max > 1 else cur
            # coxfit6.c inverts the freshly computed (unfactored) matrix here; do as R does.
            final_chol = np.triu(last.information) if iter_max > 1 else chol
            final_beta, final_u, final_lk = beta, last.score, last.loglik
            flag = 1000
    var_s = _chinv2(final_chol)
    coef = final_beta * scale
    u = final_u / scale
    var = var_s * np.outer(scale, scale)
    sing = np.diag(var) == 0 if flag < p else np.zeros(p, dtype=bool)
    msgs: list[str] = []
    infinite: tuple[str, ...] = ()
    if iter_max > 1:
        infs = np.abs(u @ var)
        if flag == 1000:
            msgs.append("Ran out of iterations and did not converge")
            lp = max_lp(coef) if max_lp is not None else -math.inf
            if lp > 500 or not np.isfinite(infs).all():
                msgs.append("one or more coefficients may be infinite")
            # R names no variable here; we name those whose coefficient (per mean absolute
            # deviation of the covariate, unit-free) still grew by > 0.5 over the last 3
            # accepted steps: the direction in which the likelihood keeps rising.
            hist = np.asarray(accepted[-4:])
            bad = np.abs(hist[-1]) - np.abs(hist[0]) > 0.5
            if bad.any():
                infinite = tuple(names[i] for i in np.flatnonzero(bad))
                msgs.append(
                    f"still growing when the iterations ran out ({', '.join(infinite)}): "
                    "coefficient may be infinite (monotone likelihood)"
                )
        else:
            bad = ~np.isfinite(u) | ((infs > eps) & (infs > toler_inf * np.abs(coef)))
            if bad.any():
                idx = np.flatnonzero(bad)
                infinite = tuple(names[i] for i in idx)
                msgs.append(
                    "Loglik converged before variable "
                    + ",".join(str(i + 1) for i in idx)
                    + f" ({', '.join(infinite)}); coefficient may be infinite."
                )
    coef = np.where(sing, np.nan, coef)
    se = np.sqrt(np.where(sing, np.nan, np.diag(var)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = coef / se
    pval = 2 * sps.norm.sf(np.abs(z))
    ok = ~sing
    df = int(ok.sum())
    if df:
        b = coef[ok]
        chol_v, _ = _cholesky2(var[np.ix_(ok, ok)], 1e-12)
        wald = float(b @ _chsolve2(chol_v, b))
    else:
        wald = math.nan
    if n_events == 0:
        msgs.append("no events: the partial likelihood is flat, no coefficient is estimable")
    return CoxFit(
        names=names,
        coef=coef,
        se=se,
        z=z,
        p=pval,
        var=var,
        loglik_null=float(loglik0),
        loglik=float(final_lk),
        lr_test=_test(2 * (final_lk - loglik0), df),
        wald_test=_test(wald, df),
        score_test=_test(score_stat, df),
        iterations=iterations,
        converged=flag != 1000,
        n=n,
        n_events=n_events,
        ties=ties,
        infinite=infinite,
        warnings=tuple(msgs),
    )
