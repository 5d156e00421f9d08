"""Coordinator side: pool per-site sufficient statistics into the study's analyses.

Every function takes a list of site statistics produced by ``sufficient`` (one entry per
site, same parameters) and returns a JSON-serializable dict that equals the centralized
analysis of the concatenated patients:

* ``pool_km``: Kaplan-Meier with Greenwood SE and lifelines' log(-log) 95 % CI.
* ``pool_logrank``: log-rank over G groups on pooled risk sets (= centralized test).
* ``pool_stratified_logrank``: site-stratified log-rank from per-site (U, V).
* ``pool_table2x2``: summed-table Fisher exact test plus Cochran-Mantel-Haenszel
  (asymptotic without continuity correction, Robins-Breslow-Greenland SE, exact conditional P).
* ``pool_cox``: Cox PH, stratified by site or unstratified (``cox_strata``), Efron ties, fitted by
  the centralized fitter on the sites' (time, event, covariate pattern) counts.
* ``pool_wilcoxon``: signed-rank test on the pooled difference histogram (normal
  approximation without continuity correction, zeros dropped, tie-corrected variance; plus the
  exact conditional P for small n).
* ``pool_median_range`` / ``pool_counts``: medians, ranges and count tables.

``pool_site_statistics`` runs all of them on the pooled sites and on each site alone (the
per-center breakdown). Values that are undefined (no events, zero variance) are ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from blina_study.adapter.errors import BlinaError
from blina_study.analysis.stats import EXACT_WILCOXON_MAX_N, fisher_exact_2x2

from .sufficient import FORMAT_VERSION, MISSING

__all__ = [
    "PoolingError",
    "pool_km",
    "pool_logrank",
    "pool_stratified_logrank",
    "pool_follow_up",
    "pool_table2x2",
    "cmh_exact_pvalue",
    "COX_STRATA",
    "pool_cox",
    "pool_wilcoxon",
    "pool_median_range",
    "pool_counts",
    "pool_site_statistics",
]

Z975 = float(stats.norm.ppf(0.975))


class PoolingError(BlinaError, ValueError):
    """Site statistics cannot be pooled (mismatched parameters, versions or shapes)."""


def _exp(x: float) -> float | None:
    """exp() that yields None instead of overflowing (diverging Cox estimates)."""
    try:
        return _f(math.exp(x))
    except OverflowError:
        return None


def _f(x: float | None) -> float | None:
    """JSON-safe float: NaN/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier and log-rank
# ---------------------------------------------------------------------------------------------


def _merge_km(tables: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    acc: dict[int, list[int]] = {}
    for tab in tables:
        for t, d, c in zip(tab["time"], tab["events"], tab["censored"], strict=True):
            cell = acc.setdefault(int(t), [0, 0])
            cell[0] += int(d)
            cell[1] += int(c)
    ts = np.array(sorted(acc), dtype=np.int64)
    d = np.array([acc[t][0] for t in ts.tolist()], dtype=np.int64)
    c = np.array([acc[t][1] for t in ts.tolist()], dtype=np.int64)
    return ts, d, c


def _at_risk(ts: np.ndarray, d: np.ndarray, c: np.ndarray, day: float) -> int:
    return int((d + c)[ts >= day].sum())


def pool_km(
    tables: Sequence[dict[str, Any]],
    *,
    landmark_days: Sequence[int] = (365,),
    risk_table_days: Sequence[int] = (),
) -> dict[str, Any]:
    """Kaplan-Meier curve from per-site ``km_table`` dicts (one group).

    Grain of the curve: one entry per distinct pooled follow-up time (days), with
    ``n_at_risk`` (time >= t), ``events``, ``censored``, ``survival`` S(t), Greenwood ``se``
    of S(t) (= S * sqrt(sum d/(n(n-d)))), and the log(-log) 95 % CI as lifelines computes it.
    ``landmarks``: S, SE and at-risk at each landmark day; ``risk_table``: at-risk counts.
    """
    ts, d, c = _merge_km(tables)
    r = d + c
    n = np.cumsum(r[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(np.where(n > 0, 1.0 - d / np.maximum(n, 1), 1.0))
        # A time where everyone at risk fails (S drops to 0) adds no Greenwood term, as in
        # lifelines; its S and SE are 0 from then on.
        gw_terms = np.where((d > 0) & (n > d), d / (n * (n - d)).astype(float), 0.0)
    gw = np.cumsum(gw_terms)
    se = surv * np.sqrt(gw)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(surv)
        lower = np.exp(-np.exp(np.log(-v) - Z975 * np.sqrt(gw) / v))
        upper = np.exp(-np.exp(np.log(-v) + Z975 * np.sqrt(gw) / v))
    lower = np.where(surv == 1.0, 1.0, lower)
    upper = np.where(surv == 1.0, 1.0, upper)

    def s_at(day: float) -> tuple[float, float | None]:
        k = np.searchsorted(ts, day, side="right") - 1
        if k < 0:
            return 1.0, 0.0
        return float(surv[k]), _f(se[k])

    below = np.nonzero(surv <= 0.5)[0]
    central = _central_km(ts, d, c)
    log_lo, log_hi = central.confidence_interval("log")
    med = central.median("log")
    landmarks = []
    for day in landmark_days:
        s, s_se = s_at(day)
        lo_d, hi_d = central.survival_ci_at(day, "log")
        landmarks.append(
            {"day": int(day), "survival": s, "se": s_se, "n_at_risk": _at_risk(ts, d, c, day),
             "ci_log_lower": _f(lo_d), "ci_log_upper": _f(hi_d)}
        )  # fmt: skip
    return {
        "n": int(r.sum()),
        "n_events": int(d.sum()),
        "time": ts.tolist(),
        "n_at_risk": n.tolist(),
        "events": d.tolist(),
        "censored": c.tolist(),
        "survival": [float(x) for x in surv],
        "se": [_f(x) for x in se],
        "ci_lower": [_f(x) for x in lower],
        "ci_upper": [_f(x) for x in upper],
        "median_days": int(ts[below[0]]) if len(below) else None,
        # R survfit's default (conf.type "log") limits and median with its limits, computed by the
        # centralized blina_study.analysis.survival code on the pooled counts.
        "ci_log_lower": [_f(x) for x in log_lo],
        "ci_log_upper": [_f(x) for x in log_hi],
        "median_log": {"median": _f(med.median), "ci_lower": _f(med.ci_low), "ci_upper": _f(med.ci_high)},
        "landmarks": landmarks,
        "risk_table": [
            {"day": int(t), "n_at_risk": _at_risk(ts, d, c, t)} for t in risk_table_days
        ],
    }


def _central_km(ts: np.ndarray, d: np.ndarray, c: np.ndarray, *, reverse: bool = False) -> Any:
    """``blina_study.analysis.survival.kaplan_meier`` (or its reverse) of the pooled (time, events, censored)
    counts: the centralized estimator on the same multiset of (time, event) rows."""
    from blina_study.analysis.survival import kaplan_meier, reverse_kaplan_meier

    times = np.repeat(ts, d + c).astype(float)
    events = np.concatenate([np.r_[np.ones(int(di)), np.zeros(int(ci))] for di, ci in zip(d, c, strict=True)]) \
        if len(ts) else np.array([], dtype=float)
    return (reverse_kaplan_meier if reverse else kaplan_meier)(times, events)


def pool_follow_up(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median follow-up by reverse Kaplan-Meier (OS time, death censors) from per-site OS
    ``km_table`` dicts, as the centralized ``blina_study.analysis.tables.follow_up``."""
    ts, d, c = _merge_km(tables)
    km = _central_km(ts, d, c, reverse=True)
    med = km.median("log")
    return {"n": int(km.n), "n_censored": int(km.n_events), "median": _f(med.median),
            "ci_lower": _f(med.ci_low), "ci_upper": _f(med.ci_high), "conf_type": "log"}  # fmt: skip


def _chi2_from_uv(U: np.ndarray, V: np.ndarray, present: np.ndarray) -> dict[str, Any]:
    """chi2 = U' V^- U on the ``present`` groups (expected events > 0; drop the last one, df = G' - 1)."""
    idx = np.nonzero(present)[0]
    df = len(idx) - 1
    if df < 1:
        return {"chi2": None, "df": max(df, 0), "p": None}
    sub = idx[:-1]
    u, vv = U[sub], V[np.ix_(sub, sub)]
    try:
        chi2 = float(u @ np.linalg.solve(vv, u))
    except np.linalg.LinAlgError:
        return {"chi2": None, "df": df, "p": None}
    if not math.isfinite(chi2) or np.linalg.matrix_rank(vv) < df:
        return {"chi2": None, "df": df, "p": None}
    return {"chi2": chi2, "df": df, "p": float(stats.chi2.sf(chi2, df))}


def pool_logrank(groups: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Log-rank test across groups on the pooled risk sets (= the centralized test).

    ``groups`` maps a level to its per-site ``km_table`` dicts. Returns observed/expected per
    level, chi2 with G' - 1 df (G' = levels with expected events > 0, as R survdiff) and P.
    """
    levels = list(groups)
    merged = {g: _merge_km(groups[g]) for g in levels}
    all_t = sorted({int(t) for g in levels for t in merged[g][0].tolist()})
    T = np.array(all_t, dtype=np.int64)
    G = len(levels)
    D = np.zeros((G, len(T)))
    R = np.zeros((G, len(T)))
    for i, g in enumerate(levels):
        ts, d, c = merged[g]
        pos = np.searchsorted(T, ts)
        D[i, pos] = d
        R[i, pos] = d + c
    N = np.cumsum(R[:, ::-1], axis=1)[:, ::-1]
    U, V, obs, E = _uv(D, N)
    # df = groups with expected events > 0, minus 1 (R survdiff; the centralized logrank_test).
    out = _chi2_from_uv(U, V, E > 0)
    return {"levels": levels, "observed": obs.tolist(), "expected": E.tolist(), **out}


def _uv(D: np.ndarray, N: np.ndarray) -> tuple[np.ndarray, ...]:
    G = D.shape[0]
    d, n = D.sum(0), N.sum(0)
    ev = d > 0
    D, N, d, n = D[:, ev], N[:, ev], d[ev], n[ev]
    obs = D.sum(1)
    E = (d * N / n).sum(1)
    V = np.zeros((G, G))
    for j in np.nonzero(n > 1)[0]:
        p = N[:, j] / n[j]
        V += d[j] * (n[j] - d[j]) / (n[j] - 1) * (np.diag(p) - np.outer(p, p))
    return obs - E, V, obs, E


def _pairwise_logrank(groups: dict[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Log-rank of every pair of groups with patients (unadjusted), as the centralized analysis."""
    present = [g for g, tabs in groups.items() if sum(sum(t["events"]) + sum(t["censored"]) for t in tabs)]
    return [pool_logrank({a: groups[a], b: groups[b]})
            for i, a in enumerate(present) for b in present[i + 1:]]  # fmt: skip


def pool_stratified_logrank(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Site-stratified log-rank: chi2 = (sum_k U_k)' (sum_k V_k)^- (sum_k U_k)."""
    levels = scores[0]["levels"]
    for s in scores:
        if s["levels"] != levels:
            raise PoolingError(f"log-rank levels differ between sites: {s['levels']} vs {levels}")
    U = np.sum([s["U"] for s in scores], axis=0)
    V = np.sum([s["V"] for s in scores], axis=0)
    obs = np.sum([s["observed"] for s in scores], axis=0)
    E = np.sum([s["expected"] for s in scores], axis=0)
    return {
        "levels": list(levels),
        "observed": obs.tolist(),
        "expected": E.tolist(),
        **_chi2_from_uv(U, V, E > 0),
    }


# ---------------------------------------------------------------------------------------------
# 2x2 tables: Fisher and Cochran-Mantel-Haenszel
# ---------------------------------------------------------------------------------------------


def _hypergeom_support(a: int, b: int, c: int, d: int) -> tuple[int, np.ndarray]:
    n1, m1, N = a + b, a + c, a + b + c + d
    lo, hi = max(0, n1 + m1 - N), min(n1, m1)
    x = np.arange(lo, hi + 1)
    return lo, stats.hypergeom.pmf(x, N, m1, n1)


def cmh_exact_pvalue(tables: Sequence[Sequence[Sequence[int]]]) -> float | None:
    """Exact conditional two-sided P of the CMH test (= R ``mantelhaen.test(exact=TRUE)``).

    Under H0 (common OR = 1) the sum of the a-cells follows the convolution of the
    per-stratum hypergeometric laws; P sums the probabilities not above the observed one
    (relative tolerance 1e-7, as R and scipy use).
    """
    lo_total, dist, s_obs = 0, np.array([1.0]), 0
    used = 0
    for t in tables:
        (a, b), (c, d) = t
        if a + b + c + d == 0:
            continue
        lo, pmf = _hypergeom_support(a, b, c, d)
        lo_total += lo
        dist = np.convolve(dist, pmf)
        s_obs += a
        used += 1
    if used == 0:
        return None
    p_obs = dist[s_obs - lo_total]
    return float(min(1.0, dist[dist <= p_obs * (1 + 1e-7)].sum()))


def pool_table2x2(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool per-site 2x2 tables [[a, b], [c, d]] (rows exposure yes/no, cols outcome yes/no).

    ``fisher``: ``blina_study.analysis.stats.fisher_exact_2x2`` on the summed table (R's two-sided P,
    conditional-MLE odds ratio and its exact CI: the centralized test). ``cmh``: site-stratified
    Mantel-Haenszel chi2 (1 df, no continuity correction), OR_MH with the Robins-Breslow-Greenland
    SE and 95 % CI, and the exact conditional P. Strata with fewer than 2 courses carry no information and are skipped.
    """
    arr = np.array([t["table"] for t in tables], dtype=np.int64).reshape(-1, 2, 2)
    tot = arr.sum(0)
    a, b, c, d = (int(x) for x in tot.ravel())
    fisher: dict[str, Any] = {"odds_ratio": None, "ci_lower": None, "ci_upper": None, "p": None,
                              "infinite": []}
    if tot.sum() > 0:
        # The centralized test itself (R fisher.test: conditional-MLE odds ratio, exact CI).
        res = fisher_exact_2x2(a, b, c, d)
        fisher = {"odds_ratio": _f(res.odds_ratio), "ci_lower": _f(res.ci_low),
                  "ci_upper": _f(res.ci_high), "p": _f(res.p_value),
                  # JSON has no infinity: an infinite OR or CI bound (a zero cell) is None + named here.
                  "infinite": [k for k, v in (("odds_ratio", res.odds_ratio), ("ci_lower", res.ci_low),
                                              ("ci_upper", res.ci_high)) if math.isinf(v)]}  # fmt: skip
    return {
        "row_labels": tables[0]["row_labels"],
        "col_labels": tables[0]["col_labels"],
        "table": tot.tolist(),
        "n_missing": int(sum(t.get("n_missing", 0) for t in tables)),
        "proportion": [_f(a / (a + b)) if a + b else None, _f(c / (c + d)) if c + d else None],
        "fisher": fisher,
        "cmh": _cmh(arr),
    }


def _cmh(arr: np.ndarray) -> dict[str, Any]:
    n = arr.sum(axis=(1, 2)).astype(float)
    arr = arr[n >= 2].astype(float)
    n = n[n >= 2]
    out: dict[str, Any] = {
        "n_strata": len(n), "chi2": None, "p": None, "odds_ratio": None, "log_or_se": None,
        "ci_lower": None, "ci_upper": None, "p_exact": None,
    }  # fmt: skip
    if len(n) == 0:
        return out
    a, b, c, d = arr[:, 0, 0], arr[:, 0, 1], arr[:, 1, 0], arr[:, 1, 1]
    r1, r0, c1, c0 = a + b, c + d, a + c, b + d
    num = (a - r1 * c1 / n).sum()
    var = (r1 * r0 * c1 * c0 / (n**2 * (n - 1))).sum()
    if var > 0:
        chi2 = num**2 / var
        out.update(chi2=float(chi2), p=float(stats.chi2.sf(chi2, 1)))
    out["p_exact"] = cmh_exact_pvalue(arr.astype(np.int64).tolist())
    R, S = (a * d / n).sum(), (b * c / n).sum()
    if R > 0 and S > 0:
        P, Q = (a + d) / n, (b + c) / n
        var_log = (
            (P * a * d / n).sum() / (2 * R**2)
            + (P * b * c / n + Q * a * d / n).sum() / (2 * R * S)
            + (Q * b * c / n).sum() / (2 * S**2)
        )
        or_mh = R / S
        se = math.sqrt(var_log)
        out.update(
            odds_ratio=float(or_mh), log_or_se=se,
            ci_lower=float(math.exp(math.log(or_mh) - Z975 * se)),
            ci_upper=float(math.exp(math.log(or_mh) + Z975 * se)),
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Cox PH, unstratified or stratified by site, Efron ties
# ---------------------------------------------------------------------------------------------

COX_STRATA = ("site", "none")


def _cox_rows(s: dict[str, Any], p: int) -> tuple[list[int], list[int], list[list[float]]]:
    """The site's (time, event, pattern) rows rebuilt from its pattern counts."""
    if "censor_times" not in s or "censored" not in s:
        raise PoolingError(
            f"site {s.get('site_id', '?')!r}: Cox pattern counts without censorings (an older package "
            "format); re-run the site with this blina-study release"
        )
    patterns = [[float(v) for v in x] for x in s["patterns"]]
    if any(len(x) != p for x in patterns):
        raise PoolingError(f"Cox covariate patterns are not of length {p}")
    times: list[int] = []
    events: list[int] = []
    xs: list[list[float]] = []
    for key_times, key_counts, flag in (("event_times", "events", 1), ("censor_times", "censored", 0)):
        for t, counts in zip(s[key_times], s[key_counts], strict=True):
            if len(counts) != len(patterns):
                raise PoolingError(f"Cox {key_counts} rows do not have one count per pattern")
            for x, k in zip(patterns, counts, strict=True):
                times += [int(t)] * int(k)
                events += [flag] * int(k)
                xs += [x] * int(k)
    return times, events, xs


def pool_cox(
    sites: Sequence[dict[str, Any]], *, strata: str = "site", site_ids: Sequence[str] | None = None
) -> dict[str, Any]:
    """Cox PH for EFS from per-site ``cox_pattern_counts`` (events and censorings per pattern).

    ``strata="site"``: a baseline hazard per site (the centralized ``cox_efs(...,
    strata_by_site=True)``); ``"none"``: one baseline over the pooled risk sets (the centralized
    unstratified ``cox_efs``). The sites' (time, event, pattern) multisets are the model's
    sufficient statistic, so the fit is ``blina_study.analysis.survival.cox_ph`` on them: R coxph's
    Newton-Raphson, Efron ties, the same constant-covariate and monotone-likelihood handling as
    the centralized analysis. Returns per covariate (in the study's order; None for a dropped one)
    ``coef``, ``se``, ``hr``, 95 % Wald ``ci_lower``/``ci_upper``, ``z``, ``p``; plus ``n``,
    ``n_events``, ``loglik``, ``converged`` (= estimated), ``warning`` and ``model``.
    """
    from blina_study.analysis.survival import cox_ph  # the centralized fitter, so both places fit one model

    if strata not in COX_STRATA:
        raise PoolingError(f"Cox strata {strata!r}: use one of {list(COX_STRATA)}")
    covs = list(sites[0]["covariates"])
    for s in sites:
        if list(s["covariates"]) != covs:
            raise PoolingError(f"Cox covariates differ between sites: {s['covariates']} vs {covs}")
    p = len(covs)
    ids = list(site_ids) if site_ids is not None else [str(s.get("site_id", i)) for i, s in enumerate(sites)]
    frames = []
    for sid, s in zip(ids, sites, strict=True):
        t, e, x = _cox_rows(s, p)
        df = pd.DataFrame(np.asarray(x, dtype=float).reshape(-1, p), columns=covs)
        df.insert(0, "time", np.asarray(t, dtype=float))
        df.insert(1, "event", np.asarray(e, dtype=float))
        df["site_id"] = sid
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    stratified = strata == "site" and len(sites) > 1
    base = {
        "covariates": covs,
        "model": "stratified by center (a baseline hazard per site)" if stratified
        else "unstratified (one baseline hazard)",
        "strata": "site" if stratified else "none",
        "n_excluded_missing": int(sum(s.get("n_excluded_missing", 0) for s in sites)),
        "n_strata": len(sites) if stratified else 1,
    }
    try:
        fit = cox_ph(data, "time", "event", covs, strata="site_id" if stratified else None)
    except ArithmeticError as exc:
        # blina_study.analysis.cox divides by a log-likelihood that reaches 0 under perfect separation (a small
        # site where every event is in one pattern): not estimable, as the report's guard says.
        return {**base, "n": int(len(data)), "n_events": int(data["event"].sum()),
                **{k: [None] * p for k in ("coef", "se", "hr", "ci_lower", "ci_upper", "z", "p")},
                "infinite": [], "dropped": [], "loglik": None, "converged": False,
                "warning": f"no model: the fit failed ({type(exc).__name__}: {exc}); the likelihood is "
                "monotone (separation)", "method": "Cox proportional hazards (blina_study.analysis.cox)"}  # fmt: skip
    terms = {t.covariate: t for t in fit.terms}

    infinite: list[str] = []

    def col(attr: str) -> list[float | None]:
        for c in covs:
            if c in terms and math.isinf(getattr(terms[c], attr)):
                infinite.append(f"{c}.{attr}")
        return [_f(getattr(terms[c], attr)) if c in terms else None for c in covs]

    values = {key: col(attr) for key, attr in (("coef", "coef"), ("se", "se"), ("hr", "hr"), ("ci_lower", "ci_low"),
                                                 ("ci_upper", "ci_high"), ("z", "z"), ("p", "p_value"))}

    return {
        **base,
        "n": int(fit.n),
        "n_events": int(fit.n_events),
        "loglik_null": _f(getattr(fit, "loglik_null", None)),
        "lr_chi2": _f(getattr(fit, "lr_chisq", None)),
        "lr_df": int(getattr(fit, "lr_df", 0)),
        "lr_p": _f(getattr(fit, "lr_p_value", None)),
        **values,
        # JSON has no infinity: "<covariate>.<field>" of every infinite value (None above).
        "infinite": [x.replace(".ci_low", ".ci_lower").replace(".ci_high", ".ci_upper")
                     .replace(".p_value", ".p") for x in infinite],
        "dropped": [list(d) for d in fit.dropped],
        "loglik": _f(fit.loglik),
        "converged": bool(fit.estimated),
        "warning": "; ".join(fit.messages) or None,
        "method": fit.method,
    }


# ---------------------------------------------------------------------------------------------
# Wilcoxon signed-rank, medians, counts
# ---------------------------------------------------------------------------------------------


def _merge_bins(bins_lists: Sequence[Sequence[Sequence[float]]], exact: bool) -> list[tuple[Any, int]]:
    acc: dict[Any, int] = {}
    for bins in bins_lists:
        for v, n in bins:
            key = float(v) if exact else int(v)
            acc[key] = acc.get(key, 0) + int(n)
    return sorted((k, v) for k, v in acc.items() if v > 0)


def _decimals(items: Sequence[dict[str, Any]]) -> int | None:
    decs = {None if h.get("decimals") is None else int(h["decimals"]) for h in items}
    if len(decs) != 1:
        raise PoolingError(f"sites used different reporting precisions {sorted(decs, key=str)}")
    return decs.pop()


def _signed_rank_exact_p(abs_ranks2: list[tuple[int, int]], w2_obs: int) -> float:
    """Two-sided exact P of W+ given the (doubled) midranks: each of the n signs is +/- with
    probability 1/2 under H0. ``abs_ranks2``: (2 * midrank, multiplicity)."""
    total = sum(r * m for r, m in abs_ranks2)
    dist = np.zeros(total + 1)
    dist[0] = 1.0
    for r, m in abs_ranks2:
        for _ in range(m):
            dist = 0.5 * (dist + np.concatenate([np.zeros(r), dist[:-r]]))
    lower = dist[: w2_obs + 1].sum()
    upper = dist[w2_obs:].sum()
    return float(min(1.0, 2 * min(lower, upper)))


def pool_wilcoxon(
    histograms: Sequence[dict[str, Any]], *, exact_max_n: int = 200
) -> dict[str, Any]:
    """Wilcoxon signed-rank test on the pooled multiset of paired differences.

    Zero differences are dropped (``zero_method='wilcox'``); |d| gets midranks; W+ = sum of
    ranks of positive d; z = (W+ - n(n+1)/4) / sqrt(n(n+1)(2n+1)/24 - sum(t^3 - t)/48),
    two-sided normal P without continuity correction (= scipy ``wilcoxon(...,
    correction=False, method='approx')``); ``statistic`` = min(W+, W-) as scipy reports it
    (``w_plus`` is R's V, the centralized ``statistic``). ``p_exact``: the exact P as the
    centralized test gives it (R's rule: only without ties and zero differences, n <= 49);
    ``p_exact_conditional``: exact conditional P over the 2^n sign patterns with the same
    midranks, computed when n <= ``exact_max_n``. Also median (range) of pre, post and difference.
    """
    dec = _decimals(histograms)
    bins = _merge_bins([h["differences"] for h in histograms], dec is None)
    n_zero = sum(m for v, m in bins if v == 0)
    by_abs: dict[Any, list[int]] = {}
    for v, m in bins:
        if v != 0:
            pos_neg = by_abs.setdefault(abs(v), [0, 0])
            pos_neg[0 if v > 0 else 1] += m
    n = sum(a + b for a, b in by_abs.values())
    w_plus2, cum, tie_term = 0, 0, 0.0
    ranks2: list[tuple[int, int]] = []
    for av in sorted(by_abs):
        pos, neg = by_abs[av]
        t = pos + neg
        r2 = 2 * cum + t + 1  # doubled midrank of ranks cum+1 .. cum+t
        w_plus2 += pos * r2
        ranks2.append((r2, t))
        tie_term += (t**3 - t) / 48.0
        cum += t
    out: dict[str, Any] = {
        "n": n, "n_zero": n_zero,
        "n_incomplete": int(sum(h.get("n_incomplete", 0) for h in histograms)),
        "w_plus": None, "w_minus": None, "statistic": None, "z": None, "p": None, "p_exact": None,
        "p_exact_conditional": None, "var": None,
        "pre": pool_median_range([{"decimals": dec, "bins": h["pre"]} for h in histograms]),
        "post": pool_median_range([{"decimals": dec, "bins": h["post"]} for h in histograms]),
        "difference": pool_median_range(
            [{"decimals": dec, "bins": h["differences"]} for h in histograms]),
    }  # fmt: skip
    if n == 0:
        return out
    w_plus = w_plus2 / 2
    w_minus = n * (n + 1) / 2 - w_plus
    var = n * (n + 1) * (2 * n + 1) / 24.0 - tie_term
    out.update(w_plus=w_plus, w_minus=w_minus, statistic=min(w_plus, w_minus), var=var)
    if var > 0:
        z = (w_plus - n * (n + 1) / 4.0) / math.sqrt(var)
        out.update(z=z, p=float(2 * stats.norm.sf(abs(z))))
    if n <= exact_max_n:
        out["p_exact_conditional"] = _signed_rank_exact_p(ranks2, w_plus2)
    if n <= EXACT_WILCOXON_MAX_N and n_zero == 0 and all(t == 1 for _, t in ranks2):
        # The centralized rule (R wilcox.test): the exact P only without ties and zeros.
        out["p_exact"] = _signed_rank_exact_p(ranks2, w_plus2)
    return out


def pool_median_range(histograms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max (in the variable's unit) from per-site value histograms."""
    dec = _decimals(histograms)
    bins = _merge_bins([h["bins"] for h in histograms], dec is None)
    n = sum(m for _, m in bins)
    if n == 0:
        return {"n": 0, "median": None, "min": None, "max": None}

    def order_stat(k: int) -> Any:  # 0-based k-th smallest value
        seen = 0
        for v, m in bins:
            seen += m
            if k < seen:
                return v
        raise AssertionError("unreachable")

    if dec is None:  # values at the data's own precision: numpy's median of the same multiset
        med = float(np.median([order_stat((n - 1) // 2), order_stat(n // 2)]))
        return {"n": n, "median": med, "min": float(bins[0][0]), "max": float(bins[-1][0])}
    scale = 10.0**dec
    # As numpy's median of the values: the mean of the two middle values *as floats*, so an
    # even-n median prints as the centralized one does (1.09 and 1.10: 1.0950000000000002, not 1.095).
    med = (order_stat((n - 1) // 2) / scale + order_stat(n // 2) / scale) / 2
    return {"n": n, "median": med, "min": bins[0][0] / scale, "max": bins[-1][0] / scale}


def pool_counts(tables: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-site ``count_table`` cells; levels are the union in first-seen order."""
    dims = tables[0]["dims"]
    levels: list[list[str]] = [[] for _ in dims]
    acc: dict[tuple[str, ...], int] = {}
    for t in tables:
        if t["dims"] != dims:
            raise PoolingError(f"count table dims differ: {t['dims']} vs {dims}")
        for i, lv in enumerate(t["levels"]):
            levels[i].extend(v for v in lv if v not in levels[i])
        for *key, n in t["cells"]:
            acc[tuple(key)] = acc.get(tuple(key), 0) + int(n)
    keys: list[tuple[str, ...]] = [()]
    for lv in levels:
        keys = [(*k, v) for k in keys for v in lv]
    return {
        "dims": list(dims),
        "levels": levels,
        "cells": [[*k, acc.get(k, 0)] for k in keys],
        "unit": tables[0].get("unit"),
    }


# ---------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------


def _check_sites(sites: Sequence[dict[str, Any]]) -> None:
    if not sites:
        raise PoolingError("no site statistics to pool")
    ids = [s.get("site_id") for s in sites]
    if len(set(ids)) != len(ids):
        raise PoolingError(f"site ids are not unique: {ids}; each site may be pooled once")
    ref = sites[0]
    for s in sites:
        if s.get("format") != FORMAT_VERSION:
            raise PoolingError(
                f"site {s.get('site_id')!r} statistics have format {s.get('format')!r}, "
                f"expected {FORMAT_VERSION!r}; re-run the site with this software version"
            )
        if s["parameters"] != ref["parameters"]:
            diff = sorted(k for k in set(s["parameters"]) | set(ref["parameters"])
                          if s["parameters"].get(k) != ref["parameters"].get(k))  # fmt: skip
            raise PoolingError(
                f"site {s['site_id']!r} used different parameters than site "
                f"{ref['site_id']!r} ({diff}); all sites must run the same study definition"
            )
        if set(s["statistics"]) != set(ref["statistics"]):
            extra = sorted(set(s["statistics"]) ^ set(ref["statistics"]))
            raise PoolingError(
                f"site {s['site_id']!r} and site {ref['site_id']!r} have different "
                f"statistics ({extra[:5]}); all sites must run the same study definition"
            )


def _pool_group(sites: Sequence[dict[str, Any]], stratified: bool, cox_strata: str = "site") -> dict[str, Any]:
    params = sites[0]["parameters"]
    names = list(sites[0]["statistics"])

    def each(name: str) -> list[dict[str, Any]]:
        return [s["statistics"][name] for s in sites]

    out: dict[str, Any] = {"survival": {}, "response": {}, "predictors": {}, "cytokines": {},
                           "wilcoxon": {}, "counts": {}}  # fmt: skip
    for ep in ("efs", "os"):
        groups = {g: each(f"km/{ep}/{g}") for g in params["km_groups"]}
        km_kw = {"landmark_days": params["landmark_days"],
                 "risk_table_days": params["risk_table_days"]}  # fmt: skip
        out["survival"][ep] = {
            "groups": {g: pool_km(t, **km_kw) for g, t in groups.items()},
            "all": pool_km(each(f"km/{ep}/all"), **km_kw),
            "logrank": pool_logrank(groups),
            "logrank_pairwise": _pairwise_logrank(groups),
            "logrank_stratified": pool_stratified_logrank(each(f"logrank/{ep}"))
            if stratified else None,
        }  # fmt: skip
    out["follow_up"] = {g: pool_follow_up(each(f"km/os/{g}")) for g in ("all", *params["km_groups"])
                        if g == "all" or sum(sum(t["events"]) + sum(t["censored"]) for t in each(f"km/os/{g}"))}
    for name in names:
        kind, _, rest = name.partition("/")
        if kind == "response":
            out["response"][rest] = pool_table2x2(each(name))
        elif kind == "predictor":
            out["predictors"][rest] = pool_table2x2(each(name))
        elif kind == "cytokine":
            out["cytokines"][rest] = pool_median_range(each(name))
        elif kind == "wilcoxon":
            out["wilcoxon"][rest] = pool_wilcoxon(
                each(name), exact_max_n=params["exact_wilcoxon_max_n"]
            )
        elif kind == "counts":
            out["counts"][rest] = pool_counts(each(name))
    out["cox"] = {"efs": pool_cox(each("cox/efs"), strata=cox_strata,
                                  site_ids=[str(s["site_id"]) for s in sites])}
    out["n_patients"] = int(sum(s["n_patients"] for s in sites))
    out["n_courses"] = int(sum(s["n_courses"] for s in sites))
    return out


def pool_site_statistics(sites: Sequence[dict[str, Any]], *, cox_strata: str = "site") -> dict[str, Any]:
    """Pool the ``site_statistics`` of several sites.

    Returns ``{"sites": [ids], "parameters", "pooled": {...}, "per_site": {id: {...}}}``
    where each block has ``survival`` (KM per group and overall, log-rank, site-stratified
    log-rank), ``response`` and ``predictors`` (Fisher + CMH), ``cox``, ``wilcoxon``,
    ``cytokines`` (median/range) and ``counts``. ``per_site`` applies the same functions to
    each site alone (the per-center breakdown; the stratified tests there are one-stratum).
    ``cox_strata``: ``"site"`` (a baseline hazard per site) or ``"none"`` (unstratified); the
    Cox block says which in ``model``.
    """
    if cox_strata not in COX_STRATA:
        raise PoolingError(f"Cox strata {cox_strata!r}: use one of {list(COX_STRATA)}")
    _check_sites(sites)
    return {
        "sites": [s["site_id"] for s in sites],
        "parameters": sites[0]["parameters"],
        "pooled": _pool_group(sites, stratified=True, cox_strata=cox_strata),
        "per_site": {s["site_id"]: _pool_group([s], stratified=False) for s in sites},
        "missing_level": MISSING,
    }
