"""Survival statistics of the study: Kaplan-Meier, k-group log-rank, Cox proportional hazards.

* :func:`kaplan_meier`: exact product-limit estimator with Greenwood standard errors of S(t)
  (R ``survfit(Surv(time, event) ~ 1)``; R's ``std.err`` is on the cumulative-hazard scale, our
  ``se`` is ``surv * std.err``, the "Std. Error" that SPSS prints and the paper quotes as ``±``).
  Pointwise 95% confidence limits as R ``survfit``: ``conf.type = "log"`` (R's default) or
  ``"log-log"`` (:meth:`KaplanMeierResult.confidence_interval`, R's NA kept as NaN), the median
  with its limits as R's ``print.survfit`` (:meth:`KaplanMeierResult.median`), and
  :func:`reverse_kaplan_meier` for the median follow-up; equal to R to 1e-6 on
  tests/fixtures/r_reference/km_ci.R. A few lines of numpy, so no library is needed for them.
* :func:`logrank_test`: k-group log-rank test (R ``survdiff(Surv(time, event) ~ group)``, rho = 0).
* :func:`cox_ph`: Cox proportional hazards fitted by :func:`blina_study.analysis.cox.cox_fit` (a port of R's
  ``coxph.fit``: Efron or Breslow ties, step halving, R's convergence rule; equal to R to 1e-6
  on the reference suite tests/fixtures/r_cox: 41 cohorts, both tie methods, tested on the report's
  and the tidy output's path), Wald P per covariate, and the Schoenfeld-residual test of
  proportional hazards (lifelines ``proportional_hazard_test`` evaluated at our estimate, with the
  Kaplan-Meier time transform, R's default transform; lifelines implements the pre-2019
  ``cox.zph`` approximation, so it can differ slightly from survival >= 3.0). Constant covariates
  are dropped with a message. Monotone likelihood (all events in one level of a covariate) gives,
  as in R, a finite coefficient and a message naming the variable whose estimate may be infinite.

Time is in days (any unit works; callers use 365 = one year, protocol 3b.11). Results are frozen
dataclasses of plain numbers, tuples and strings (``dataclasses.asdict`` gives JSON-ready dicts; no
patient-level data is kept on them beyond the per-time counts of the KM table).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from blina_study.analysis.cox import Ties, cox_fit

__all__ = [
    "KaplanMeierResult",
    "LogRankResult",
    "CoxTerm",
    "CoxResult",
    "kaplan_meier",
    "reverse_kaplan_meier",
    "MedianResult",
    "CONF_TYPES",
    "logrank_test",
    "cox_ph",
    "format_surv_se",
]

_Z975 = float(sps.norm.ppf(0.975))


def _parse_time_event(time: Sequence[float], event: Sequence[object]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, event, usable) over all rows: float times, 0/1 events, and the mask of rows where both
    are present. Raises ValueError on lengths that differ, events not 0/1, or negative times."""
    t = pd.to_numeric(pd.Series(list(time), dtype="object"), errors="coerce").to_numpy(dtype=float)
    e_raw = pd.Series(list(event), dtype="object")
    if t.size != e_raw.size:
        raise ValueError(f"time has {t.size} values but event has {e_raw.size}; they must align")
    e = np.full(t.size, np.nan)
    present = e_raw.notna().to_numpy()
    e[present] = pd.to_numeric(e_raw[present].astype(float), errors="coerce").to_numpy(dtype=float)
    keep = ~(np.isnan(t) | np.isnan(e))
    bad = e[keep][~np.isin(e[keep], (0.0, 1.0))]
    if bad.size:
        raise ValueError(f"event must be 0/1 or boolean, got {sorted(set(bad.tolist()))[:5]}")
    if (t[keep] < 0).any():
        raise ValueError(f"negative survival times: {sorted(t[keep][t[keep] < 0].tolist())[:5]}")
    return t, e, keep


@dataclass(frozen=True)
class KaplanMeierResult:
    """Kaplan-Meier estimate, one entry per distinct observed time (events and censorings), as R's
    ``survfit``: ``time``, ``n_risk`` (time >= t), ``n_event``, ``n_censor``, ``surv`` S(t), ``se``
    Greenwood standard error of S(t) (0 where S(t) = 0), ``std_err_cumhaz`` R's ``std.err``.

    ``n`` subjects used, ``n_events`` events, ``n_dropped`` rows left out for a missing time/event.
    """

    label: str
    n: int
    n_events: int
    n_dropped: int
    time: tuple[float, ...]
    n_risk: tuple[int, ...]
    n_event: tuple[int, ...]
    n_censor: tuple[int, ...]
    surv: tuple[float, ...]
    se: tuple[float, ...]
    std_err_cumhaz: tuple[float, ...]
    method: str = "Kaplan-Meier product-limit estimate, Greenwood standard error"

    def _index_at(self, t: float) -> int:
        """Index of the last time <= t, -1 before the first time."""
        return int(np.searchsorted(np.asarray(self.time, dtype=float), t, side="right")) - 1

    def survival_at(self, t: float) -> tuple[float, float]:
        """(S(t), Greenwood SE of S(t)) with the step function right-continuous at t.

        S = 1, SE = 0 before the first time. Beyond the last observed time the estimate is NaN
        (not estimable: nobody under observation) unless S already reached 0, as R ``summary``
        refuses times past the end of follow-up.
        """
        if self.n == 0:
            return math.nan, math.nan
        i = self._index_at(t)
        if i < 0:
            return 1.0, 0.0
        if t > self.time[-1] and self.surv[-1] > 0:
            return math.nan, math.nan
        return self.surv[i], self.se[i]

    def at_risk(self, times: Sequence[float]) -> tuple[int, ...]:
        """Numbers at risk (observed time >= t) at each of ``times``: the risk table of a KM plot."""
        out = []
        for t in times:
            j = int(np.searchsorted(np.asarray(self.time, dtype=float), t, side="left"))
            out.append(int(self.n_risk[j]) if j < len(self.time) else 0)
        return tuple(out)

    def confidence_interval(
        self, conf_type: str = "log", level: float = 0.95
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Pointwise ``level`` confidence limits of S(t) at each ``time`` (lower, upper), as R
        ``survfit(..., conf.type=conf_type)``: ``"log"`` (R's default) exp(log S -+ z std.err),
        upper capped at 1; ``"log-log"`` exp(-exp(log(-log S) -+ z std.err / log S)). NaN where R gives NA: S = 0
        (both) and S = 1 (log-log)."""
        return _ci(np.asarray(self.surv, dtype=float), np.asarray(self.std_err_cumhaz, dtype=float),
                   conf_type, level)

    def survival_ci_at(self, t: float, conf_type: str = "log", level: float = 0.95) -> tuple[float, float]:
        """Confidence limits of S(t) as R ``summary(fit, times = t)``: (1, 1) before the first time,
        NaN past the end of follow-up (see :meth:`survival_at`), else the limits of the step at t."""
        if self.n == 0:
            return math.nan, math.nan
        i = self._index_at(t)
        if i < 0:
            return 1.0, 1.0
        if t > self.time[-1] and self.surv[-1] > 0:
            return math.nan, math.nan
        lo, hi = self.confidence_interval(conf_type, level)
        return lo[i], hi[i]

    def median(self, conf_type: str = "log", level: float = 0.95) -> MedianResult:
        """Median time and its confidence limits as R ``print(survfit(...))`` (``survmean``): the
        first time the curve (the lower / upper limit for the CI) is <= 0.5; when it equals 0.5
        (within sqrt(machine eps)) on a plateau, the midpoint of that time and the next lower step.
        NaN = not reached (R: NA)."""
        time = np.asarray(self.time, dtype=float)
        lo, hi = self.confidence_interval(conf_type, level)
        return MedianResult(
            median=_minmin(np.asarray(self.surv, dtype=float), time),
            ci_low=_minmin(np.asarray(lo, dtype=float), time),
            ci_high=_minmin(np.asarray(hi, dtype=float), time),
            conf_type=conf_type,
            level=level,
        )

    def to_frame(self, conf_type: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """The KM table, one row per distinct time (columns as the fields of the same name); with
        ``conf_type`` also ``ci_low`` / ``ci_high`` (:meth:`confidence_interval`)."""
        out = pd.DataFrame(
            {
                "time": self.time,
                "n_risk": self.n_risk,
                "n_event": self.n_event,
                "n_censor": self.n_censor,
                "surv": self.surv,
                "se": self.se,
            }
        )
        if conf_type is not None:
            lo, hi = self.confidence_interval(conf_type, level)
            out["ci_low"] = np.asarray(lo, dtype=float)
            out["ci_high"] = np.asarray(hi, dtype=float)
        return out


CONF_TYPES = ("log", "log-log")


@dataclass(frozen=True)
class MedianResult:
    """Median survival time with its ``level`` confidence limits (NaN: not reached / not defined)."""

    median: float
    ci_low: float
    ci_high: float
    conf_type: str
    level: float


def _ci(surv: np.ndarray, std_err: np.ndarray, conf_type: str, level: float) -> tuple[tuple[float, ...], ...]:
    """R's ``survfit_confint`` for ``logse = TRUE`` (std_err on the log S / cumulative-hazard scale)."""
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}, got {conf_type!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    z = float(sps.norm.ppf(1 - (1 - level) / 2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "log":
            ok = surv > 0
            ls = np.log(np.where(ok, surv, 1.0))
            lo = np.where(ok, np.exp(ls - z * std_err), np.nan)
            hi = np.where(ok, np.minimum(np.exp(ls + z * std_err), 1.0), np.nan)
        else:
            ok = (surv > 0) & (surv < 1)
            ls = np.log(np.where(ok, surv, 0.5))
            t3 = np.log(-ls)
            # log S < 0, so subtracting z * se / log S raises log(-log S): the lower limit.
            lo = np.where(ok, np.exp(-np.exp(t3 - z * std_err / ls)), np.nan)
            hi = np.where(ok, np.exp(-np.exp(t3 + z * std_err / ls)), np.nan)
    return tuple(float(x) for x in lo), tuple(float(x) for x in hi)


_MEDIAN_TOL = float(np.finfo(float).eps) ** 0.5


def _minmin(y: np.ndarray, x: np.ndarray) -> float:
    """R ``survmean``'s ``minmin``: first x where y < 0.5 + tol (NA values skipped); a value equal
    to 0.5 followed by a lower one gives the midpoint of their times."""
    keep = ~np.isnan(y) & (y < 0.5 + _MEDIAN_TOL)
    if not keep.any():
        return math.nan
    xk, yk = x[keep], y[keep]
    if abs(yk[0] - 0.5) < _MEDIAN_TOL and (yk < yk[0]).any():
        return float((xk[0] + xk[int(np.flatnonzero(yk < yk[0])[0])]) / 2)
    return float(xk[0])


def kaplan_meier(time: Sequence[float], event: Sequence[object], *, label: str = "") -> KaplanMeierResult:
    """Kaplan-Meier estimate of S(t) from ``time`` (>= 0) and ``event`` (1/True = event, 0 = no).

    Greenwood variance: Var S(t) = S(t)^2 * sum_{t_i <= t} d_i / (n_i (n_i - d_i)). When every
    subject at risk has the event (n_i = d_i) S drops to 0 and its SE is 0 (R's std.err is Inf).
    Events and censorings at the same time: the censored subjects count as at risk at that time.
    """
    t_all, e_all, keep = _parse_time_event(time, event)
    t, e, dropped = t_all[keep], e_all[keep].astype(int), int((~keep).sum())
    if t.size == 0:
        return KaplanMeierResult(label, 0, 0, dropped, (), (), (), (), (), (), ())
    ut, inv = np.unique(t, return_inverse=True)
    d = np.bincount(inv, weights=e, minlength=ut.size).astype(int)
    tot = np.bincount(inv, minlength=ut.size).astype(int)
    c = tot - d
    n_risk = tot[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.cumprod(1.0 - d / n_risk)
        terms = np.where(d > 0, d / (n_risk * (n_risk - d).astype(float)), 0.0)
    cum = np.cumsum(terms)  # +inf after a step where n = d
    std_err = np.sqrt(cum)
    with np.errstate(invalid="ignore"):
        se = np.where(s > 0, s * std_err, 0.0)
    return KaplanMeierResult(
        label=label,
        n=int(t.size),
        n_events=int(e.sum()),
        n_dropped=dropped,
        time=tuple(float(x) for x in ut),
        n_risk=tuple(int(x) for x in n_risk),
        n_event=tuple(int(x) for x in d),
        n_censor=tuple(int(x) for x in c),
        surv=tuple(float(x) for x in s),
        se=tuple(float(x) for x in se),
        std_err_cumhaz=tuple(float(x) for x in std_err),
    )


def reverse_kaplan_meier(
    time: Sequence[float], event: Sequence[object], *, label: str = ""
) -> KaplanMeierResult:
    """Kaplan-Meier estimate of the censoring distribution (R ``survfit(Surv(time, 1 - event) ~ 1)``):
    a censored time is the "event", an event time is censored. Its :meth:`KaplanMeierResult.median`
    is the median follow-up (reverse Kaplan-Meier, Schemper & Smith 1996), which unlike the median of
    the observed times is not shortened by early events."""
    t_all, e_all, keep = _parse_time_event(time, event)
    rev = np.where(keep, 1.0 - np.nan_to_num(e_all), np.nan)
    return kaplan_meier(t_all, rev, label=label)


def format_surv_se(surv: float, se: float, digits: int = 1) -> str:
    """The paper's style ``"97.8% ± 2.2%"``; ``"100%"`` when S = 1, SE 0; ``"-"`` if not estimable."""
    if surv is None or math.isnan(surv):
        return "-"
    if surv == 1.0 and se == 0.0:
        return "100%"
    return f"{100 * surv:.{digits}f}% ± {100 * se:.{digits}f}%"


@dataclass(frozen=True)
class LogRankResult:
    """k-group log-rank test: ``chisq`` on ``df`` degrees of freedom, ``p_value``.

    Per group (in ``groups`` order): ``n_per_group`` subjects, ``observed`` and ``expected`` events.
    ``df`` = (number of groups with expected > 0) - 1, as R ``survdiff``; with fewer than two such
    groups there is no test (chisq 0, df 0, P NaN) and ``method`` says so.
    """

    groups: tuple[str, ...]
    n_per_group: tuple[int, ...]
    observed: tuple[float, ...]
    expected: tuple[float, ...]
    chisq: float
    df: int
    p_value: float
    n: int
    n_dropped: int
    method: str


def logrank_test(time: Sequence[float], event: Sequence[object], group: Sequence[object]) -> LogRankResult:
    """Log-rank test of equal survival across the groups in ``group`` (rows with a missing group,
    time or event are dropped). Groups are ordered by sorted label.

    At each distinct event time t with n at risk and d events, group j contributes O_j = d_j,
    E_j = d n_j / n and the hypergeometric covariance
    V_jk = d (n - d) / (n - 1) * n_j/n (1[j=k] - n_k/n); chisq = (O - E)' V^-1 (O - E) over all
    groups with E > 0 but the first.
    """
    t_all, e_all, keep = _parse_time_event(time, event)
    g_raw = pd.Series(list(group), dtype="object")
    if len(g_raw) != t_all.size:
        raise ValueError(f"group has {len(g_raw)} values, time has {t_all.size}; they must align")
    keep &= g_raw.notna().to_numpy()
    t, e = t_all[keep], e_all[keep].astype(int)
    g = g_raw[keep].astype(str).to_numpy()
    dropped = int((~keep).sum())
    labels = tuple(sorted(set(g.tolist())))
    k = len(labels)
    n_per = tuple(int((g == lab).sum()) for lab in labels)
    method = "log-rank test (Mantel-Haenszel), chi-square"
    if k == 0:
        return LogRankResult((), (), (), (), 0.0, 0, math.nan, 0, dropped, method + ": no data")
    ev_times = np.unique(t[e == 1])
    obs = np.zeros(k)
    exp_ = np.zeros(k)
    var = np.zeros((k, k))
    if ev_times.size:
        nj = np.empty((ev_times.size, k))
        dj = np.empty((ev_times.size, k))
        for j, lab in enumerate(labels):
            tj, ej = t[g == lab], e[g == lab]
            st = np.sort(tj)
            nj[:, j] = st.size - np.searchsorted(st, ev_times, side="left")
            se_ = np.sort(tj[ej == 1])
            dj[:, j] = np.searchsorted(se_, ev_times, side="right") - np.searchsorted(se_, ev_times, side="left")
        n_t = nj.sum(axis=1)
        d_t = dj.sum(axis=1)
        obs = dj.sum(axis=0)
        frac = nj / n_t[:, None]
        exp_ = (d_t[:, None] * frac).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(n_t > 1, d_t * (n_t - d_t) / (n_t - 1), 0.0)
        var = np.einsum("t,tj->j", w, frac) * np.eye(k) - np.einsum("t,tj,tk->jk", w, frac, frac)
    use = exp_ > 0
    df = int(use.sum()) - 1
    if df < 1:
        why = ": not computable, fewer than two groups with events expected"
        return LogRankResult(
            labels,
            n_per,
            tuple(obs.tolist()),
            tuple(exp_.tolist()),
            0.0,
            0,
            math.nan,
            int(t.size),
            dropped,
            method + why,
        )
    idx = np.flatnonzero(use)[1:]
    diff = (obs - exp_)[idx]
    v = var[np.ix_(idx, idx)]
    try:
        chisq = float(diff @ np.linalg.solve(v, diff))
    except np.linalg.LinAlgError:
        chisq = float(diff @ np.linalg.pinv(v) @ diff)
        df = int(np.linalg.matrix_rank(v))
    p = float(sps.chi2.sf(chisq, df)) if df > 0 else math.nan
    return LogRankResult(
        groups=labels,
        n_per_group=n_per,
        observed=tuple(float(x) for x in obs),
        expected=tuple(float(x) for x in exp_),
        chisq=chisq,
        df=df,
        p_value=p,
        n=int(t.size),
        n_dropped=dropped,
        method=f"{method} with {df} df",
    )


@dataclass(frozen=True)
class CoxTerm:
    """One covariate of a Cox model: log-HR ``coef`` and its ``se``, ``hr`` = exp(coef), Wald 95 %
    CI (``ci_low``, ``ci_high``), Wald ``z`` and ``p_value``; ``ph_statistic`` / ``ph_p_value`` the
    Schoenfeld-residual test of proportional hazards for this covariate."""

    covariate: str
    coef: float
    se: float
    hr: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    ph_statistic: float
    ph_p_value: float


@dataclass(frozen=True)
class CoxResult:
    """Cox proportional-hazards fit.

    ``terms`` the estimated covariates; ``dropped`` (covariate, reason) pairs left out of the model;
    ``n`` subjects used (complete cases), ``n_events``, ``n_excluded`` rows left out for a missing
    value;
    ``loglik`` at the estimate; ``messages`` what the reader must know (drops, warnings, no model);
    ``estimated`` False when no model could be fitted (then ``terms`` is empty).
    ``loglik_null`` at beta = 0 and the likelihood-ratio test ``lr_chisq`` on ``lr_df`` df with
    ``lr_p_value`` (R ``summary(fit)$logtest``, unrounded); ``ties`` the tie method;
    ``infinite`` the covariates whose estimate may be infinite (monotone likelihood).
    """

    terms: tuple[CoxTerm, ...]
    dropped: tuple[tuple[str, str], ...]
    n: int
    n_events: int
    n_excluded: int
    loglik: float
    estimated: bool
    method: str
    messages: tuple[str, ...] = field(default_factory=tuple)
    loglik_null: float = math.nan
    lr_chisq: float = math.nan
    lr_df: int = 0
    lr_p_value: float = math.nan
    ties: str = "efron"
    infinite: tuple[str, ...] = ()


_COX_METHOD = (
    "Cox proportional hazards (blina_study.analysis.cox: R coxph's Newton-Raphson, Efron ties), Wald 95% CI and P; "
    "PH check: scaled Schoenfeld residuals vs KM-transformed time"
)


def _to_float_frame(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or s.dtype == object:
            s = s.astype("object").map(lambda v: np.nan if v is None or v is pd.NA else float(v))
        out[c] = pd.to_numeric(s, errors="raise").astype(float)
    return out


def _exp(x: float) -> float:
    """exp() that gives inf instead of raising when a quasi-separated fit has a huge coefficient."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _ph_test(
    num: pd.DataFrame,
    duration_col: str,
    event_col: str,
    kept: list[str],
    strata: str | None,
    coef: np.ndarray,
    msgs: list[str],
) -> tuple[dict[str, float], dict[str, float]]:
    """Schoenfeld-residual PH test (lifelines ``proportional_hazard_test``, KM time transform) at
    our estimate: lifelines is started at it (``initial_point``) so it only evaluates residuals."""
    ph_stat = {c: math.nan for c in kept}
    ph_p = {c: math.nan for c in kept}
    if not np.isfinite(coef).all():
        msgs.append("proportional-hazards test not computed (a coefficient is not estimable)")
        return ph_stat, ph_p
    from lifelines import CoxPHFitter
    from lifelines.statistics import proportional_hazard_test

    fit_df = num[[duration_col, event_col, *kept] + ([strata] if strata else [])]
    cph = CoxPHFitter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph.fit(
                fit_df,
                duration_col=duration_col,
                event_col=event_col,
                strata=[strata] if strata else None,
                initial_point=np.asarray(coef, dtype=float) * fit_df[kept].std().to_numpy(),  # its scale
                fit_options={"max_steps": 1},
            )
            summ = proportional_hazard_test(cph, fit_df, time_transform="km").summary
        for c in kept:
            if c in summ.index:
                ph_stat[c] = float(summ.loc[c, "test_statistic"])
                ph_p[c] = float(summ.loc[c, "p"])
    except Exception as exc:  # noqa: BLE001 - the PH check must never sink the model
        msgs.append(f"proportional-hazards test not computed ({type(exc).__name__}: {exc})")
    return ph_stat, ph_p


def cox_ph(
    data: pd.DataFrame,
    duration_col: str,
    event_col: str,
    covariates: Sequence[str],
    *,
    strata: str | None = None,
    ties: Ties = "efron",
) -> CoxResult:
    """Fit a Cox model of ``duration_col`` / ``event_col`` on ``covariates`` (numeric or boolean).

    Rows with any missing value in the used columns are excluded (complete-case analysis; the count
    is reported). Before fitting, a covariate is dropped (with the reason in ``dropped`` and
    ``messages``) when it is constant among the complete cases. Monotone likelihood is not dropped:
    R's finite coefficient is returned and ``messages`` names the variable (R's warning).
    ``strata``: optional column to stratify the baseline hazard by (e.g. ``site_id`` for a pooled
    fit with a per-center baseline). ``ties``: ``"efron"`` (R's default, the study's) or
    ``"breslow"``. Never raises on degenerate data: ``estimated`` is then False
    and ``messages`` says why.
    """
    missing = [c for c in (duration_col, event_col, *covariates) if c not in data.columns]
    if strata and strata not in data.columns:
        missing.append(strata)
    if missing:
        raise ValueError(f"cox_ph: columns not in the data: {missing}")
    cols = [duration_col, event_col, *covariates]
    num = _to_float_frame(data, cols)
    if strata:
        num[strata] = data[strata].astype("object")
    complete = num.notna().all(axis=1)
    n_excl = int((~complete).sum())
    num = num[complete].copy()
    n = len(num)
    n_ev = int(num[event_col].sum()) if n else 0
    msgs: list[str] = []
    if n_excl:
        msgs.append(f"{n_excl} row(s) excluded for a missing value (complete-case analysis)")
    dropped: list[tuple[str, str]] = []

    def _fail(why: str) -> CoxResult:
        msgs.append(why)
        return CoxResult((), tuple(dropped), n, n_ev, n_excl, math.nan, False, _COX_METHOD, tuple(msgs),
                         ties=ties)

    if n == 0:
        return _fail("no model: no complete cases")
    if n_ev == 0:
        return _fail("no model: no events")
    kept: list[str] = []
    for cov in covariates:
        vals = np.unique(num[cov].to_numpy())
        if vals.size < 2:
            reason = f"constant (all = {vals[0]:g})"
            dropped.append((cov, reason))
            msgs.append(f"{cov} dropped: {reason}")
        else:
            kept.append(cov)
    if not kept:
        return _fail("no model: no estimable covariate left")

    fit = cox_fit(
        num[duration_col].to_numpy(),
        num[event_col].to_numpy(),
        num[kept].to_numpy(),
        names=kept,
        strata=num[strata].to_numpy() if strata else None,
        ties=ties,
    )
    msgs.extend(f"R-style warning: {w}" for w in fit.warnings)
    if not fit.converged:
        why = f"no model: the fit did not converge in {fit.iterations - 1} iterations (R coxph warns the same)"
        if fit.infinite:
            why += (f"; the estimate of {', '.join(fit.infinite)} was still growing (monotone likelihood: "
                    "drop or combine that covariate, or use Firth's penalised Cox regression)")
        return _fail(why)
    aliased = [c for c, b in zip(kept, fit.coef, strict=True) if math.isnan(b)]
    if aliased:
        msgs.append(f"not estimable (collinear with the other covariates; R gives NA): {', '.join(aliased)}")
    ph_stat, ph_p = _ph_test(num, duration_col, event_col, kept, strata, fit.coef, msgs)
    terms = []
    for i, c in enumerate(kept):
        coef, se = float(fit.coef[i]), float(fit.se[i])
        terms.append(
            CoxTerm(
                covariate=c,
                coef=coef,
                se=se,
                hr=_exp(coef),
                ci_low=_exp(coef - _Z975 * se),
                ci_high=_exp(coef + _Z975 * se),
                z=float(fit.z[i]),
                p_value=float(fit.p[i]),
                ph_statistic=ph_stat[c],
                ph_p_value=ph_p[c],
            )
        )
    if fit.infinite:
        msgs.append(
            "monotone likelihood (separation): the estimate of "
            + ", ".join(fit.infinite)
            + " is finite only because the iteration stopped; its true MLE is infinite (R warns the same)"
        )
    bad_ph = [t.covariate for t in terms if not math.isnan(t.ph_p_value) and t.ph_p_value < 0.05]
    if bad_ph:
        msgs.append(f"proportional-hazards assumption questionable (Schoenfeld P < 0.05): {', '.join(bad_ph)}")
    # Always say which model (issue 13: analyze and pool fit either one).
    method = _COX_METHOD + (f"; baseline stratified by {strata}" if strata else "; one baseline hazard (no strata)")
    if ties != "efron":
        method = method.replace("Efron ties", f"{ties.capitalize()} ties")
    return CoxResult(
        terms=tuple(terms),
        dropped=tuple(dropped),
        n=n,
        n_events=n_ev,
        n_excluded=n_excl,
        loglik=fit.loglik,
        estimated=True,
        method=method,
        messages=tuple(msgs),
        loglik_null=fit.loglik_null,
        lr_chisq=fit.lr_test[0],
        lr_df=fit.lr_test[1],
        lr_p_value=fit.lr_test[2],
        ties=ties,
        infinite=fit.infinite,
    )
