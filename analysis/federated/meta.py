"""Coordinator side of the ``aggregate`` sharing level: pool published site aggregates.

An aggregate package holds only what a site may publish (``results/count_tables.csv`` and
``results/estimates.csv``, suppressed; docs/federated.md), so the pooled results are not the
centralized analysis. Each pooled value says how it was obtained (``method``) and from how many
sites (``k`` of ``k_total``):

* **stratified tests from site totals** (exact given the sites that published them): the
  site-stratified log-rank from each site's score U and covariance V; a van Elteren-type stratified
  signed-rank test from each site's W+ and tie-corrected variance (weights 1/(n_k + 1), the
  signed-rank analogue of van Elteren's rank-sum weights); the Cochran-Mantel-Haenszel test
  (asymptotic and exact conditional) on the sites whose 2x2 table is published without suppression;
* **meta-analysis** (inverse-variance fixed effect and DerSimonian-Laird random effects, with Q,
  tau^2 and I^2): Cox log hazard ratios, log odds ratios (Woolf SE, 0.5 added to every cell of a
  table with a zero cell) and one-year survival on the complementary log-log scale;
* **count tables**: the sum of the published cells; a cell suppressed at any site is None with the
  sum of the published parts as ``lower_bound``.

Hand-written (a few formulas) rather than a meta-analysis library: statsmodels'
``combine_effects`` gives the same fixed and DerSimonian-Laird estimates (checked in
tests/test_federated_aggregate.py) but not the stratified tests from site totals.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from .pooling import _chi2_from_uv, _cmh

__all__ = ["inverse_variance", "pool_aggregate", "read_estimates", "read_count_tables"]

Z975 = float(stats.norm.ppf(0.975))


def read_estimates(text: str) -> dict[tuple[str, str, str], float | bool | None]:
    """``results/estimates.csv`` as {(analysis, term, statistic): value}; suppressed or empty is None."""
    out: dict[tuple[str, str, str], float | bool | None] = {}
    for row in csv.DictReader(io.StringIO(text)):
        v = row["value"]
        val: float | bool | None
        if row["suppressed"] or v == "":
            val = None
        elif v in ("true", "false"):
            val = v == "true"
        else:
            val = float(v)
        out[(row["analysis"], row["term"], row["statistic"])] = val
    return out


def read_count_tables(text: str) -> dict[str, dict[str, Any]]:
    """``results/count_tables.csv`` as {table: {"dims": [...], "cells": {cell: n or None}}} (cell
    order kept)."""
    out: dict[str, dict[str, Any]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        t = out.setdefault(row["table"], {"dims": row["dims"].split("|"), "cells": {}})
        t["cells"][row["cell"]] = None if row["suppressed"] or row["n"] == "" else int(row["n"])
    return out


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def inverse_variance(y: Sequence[float], se: Sequence[float]) -> dict[str, Any]:
    """Fixed-effect and DerSimonian-Laird random-effects pooling of estimates ``y`` with standard
    errors ``se`` (each > 0): estimate, SE, 95 % CI, z and P of each; Q, its P, tau^2 and I^2."""
    k = len(y)
    empty = {"k": k, "fixed": None, "random": None, "q": None, "q_p": None, "tau2": None, "i2": None}
    if k == 0:
        return empty
    yv, v = np.asarray(y, dtype=float), np.asarray(se, dtype=float) ** 2
    w = 1 / v

    def summary(est: float, s: float) -> dict[str, Any]:
        z = est / s
        return {"estimate": float(est), "se": float(s), "ci_lower": float(est - Z975 * s),
                "ci_upper": float(est + Z975 * s), "z": float(z), "p": float(2 * stats.norm.sf(abs(z)))}  # fmt: skip

    fe = float((w * yv).sum() / w.sum())
    out = {**empty, "fixed": summary(fe, math.sqrt(1 / w.sum()))}
    q = float((w * (yv - fe) ** 2).sum())
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w**2).sum() / w.sum())) if k > 1 else 0.0
    wr = 1 / (v + tau2)
    re = float((wr * yv).sum() / wr.sum())
    out.update(random=summary(re, math.sqrt(1 / wr.sum())), q=q, tau2=tau2,
               q_p=float(stats.chi2.sf(q, k - 1)) if k > 1 else None,
               i2=max(0.0, (q - (k - 1)) / q) if k > 1 and q > 0 else 0.0)  # fmt: skip
    return out


def _transformed(meta: dict[str, Any], back: Any) -> dict[str, Any]:
    """Back-transform the estimate and CI of each model (``back`` monotone increasing or not)."""
    out = dict(meta)
    for model in ("fixed", "random"):
        m = meta.get(model)
        if m:
            vals = sorted([back(m["ci_lower"]), back(m["ci_upper"])])
            out[model] = {**m, "value": back(m["estimate"]), "value_ci_lower": vals[0], "value_ci_upper": vals[1]}
    return out


def _two_by_two(table: dict[str, Any]) -> np.ndarray | None:
    """The 2x2 table in published cell order, or None when a cell is suppressed."""
    cells = list(table["cells"].values())
    if len(cells) != 4 or any(c is None for c in cells):
        return None
    return np.array(cells, dtype=np.int64).reshape(2, 2)


def _tables_meta(name: str, tables: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """CMH on the fully published site tables and meta-analysis of their log odds ratios."""
    per = {s: t for s, t in tables.items() if t is not None}
    full = {s: a for s, a in ((s, _two_by_two(t)) for s, t in per.items()) if a is not None}
    cmh = _cmh(np.array(list(full.values()), dtype=np.int64).reshape(-1, 2, 2)) if full else None
    y, se, used = [], [], []
    for s, a in full.items():
        if (a.sum(0) == 0).any() or (a.sum(1) == 0).any():
            continue  # a zero margin carries no odds-ratio information
        x = a.astype(float) + (0.5 if (a == 0).any() else 0.0)
        y.append(math.log(x[0, 0] * x[1, 1] / (x[0, 1] * x[1, 0])))
        se.append(math.sqrt((1 / x).sum()))
        used.append(s)
    meta = _transformed(inverse_variance(y, se), math.exp)
    return {
        "k_total": len(tables), "sites_complete": sorted(full), "sites_in_meta": used,
        "cmh": cmh,
        "cmh_method": "Cochran-Mantel-Haenszel (asymptotic, no continuity correction; exact conditional P) "
        f"over the {len(full)} of {len(tables)} sites whose table is published without suppression",
        "log_odds_ratio": meta,
        "method": "inverse-variance meta-analysis of log odds ratios (Woolf SE; 0.5 added to each cell of a "
        "table with a zero cell), fixed effect and DerSimonian-Laird random effects",
    }


def pool_aggregate(published: Mapping[str, tuple[str, str]], *, params: Mapping[str, Any]) -> dict[str, Any]:
    """Pool aggregate packages: ``published`` maps site id -> (count_tables.csv, estimates.csv) text.

    Returns ``{"sharing_level": "aggregate", "sites", "pooled": {...}, "per_site": {}}``; every block
    has ``method`` and the sites it used. See the module docstring for the methods.
    """
    sites = list(published)
    est = {s: read_estimates(published[s][1]) for s in sites}
    cnt = {s: read_count_tables(published[s][0]) for s in sites}
    k_total = len(sites)
    pooled: dict[str, Any] = {"counts": {}, "response": {}, "predictors": {}, "cox": {}, "survival": {},
                              "wilcoxon": {}}  # fmt: skip

    # Count tables: sums of the published cells.
    names = [n for n in cnt[sites[0]] if n.startswith("counts/")]
    for name in names:
        cells: dict[str, Any] = {}
        for s in sites:
            for cell, n in cnt[s].get(name, {"cells": {}})["cells"].items():
                c = cells.setdefault(cell, {"n": 0, "suppressed_sites": 0})
                if n is None:
                    c["suppressed_sites"] += 1
                else:
                    c["n"] += n
        pooled["counts"][name.removeprefix("counts/")] = {
            "dims": cnt[sites[0]][name]["dims"],
            "cells": [[*cell.split("|"), c["n"] if not c["suppressed_sites"] else None]
                      for cell, c in cells.items()],
            "lower_bounds": {cell: c["n"] for cell, c in cells.items() if c["suppressed_sites"]},
            "method": "sum of the sites' published cells; a cell suppressed at any site has no pooled "
            "count (null in pooled.json), the sum of its published parts is a lower bound",
        }  # fmt: skip
    # 2x2 tables: response and predictors.
    for name in [n for n in cnt[sites[0]] if n.startswith(("response/", "predictor/"))]:
        block = _tables_meta(name, {s: cnt[s].get(name) for s in sites})
        section, rest = name.split("/", 1)
        pooled["response" if section == "response" else "predictors"][rest] = block
    # Cox: meta-analysis of log hazard ratios.
    covs = [t for (a, t, st) in est[sites[0]] if a == "cox/efs" and st == "coef"]
    for cov in covs:
        y, se, used = [], [], []
        for s in sites:
            b, e = est[s].get(("cox/efs", cov, "coef")), est[s].get(("cox/efs", cov, "se"))
            if isinstance(b, float) and isinstance(e, float) and e > 0:
                y.append(b)
                se.append(e)
                used.append(s)
        pooled["cox"][cov] = {
            **_transformed(inverse_variance(y, se), lambda x: math.exp(x) if x < 700 else None),
            "k_total": k_total, "sites": used,
            "method": "inverse-variance meta-analysis of the sites' Cox log hazard ratios (each site's own "
            "model), fixed effect and DerSimonian-Laird random effects; sites whose model is withheld "
            "(fewer than min_cell patients or events) are left out",
        }  # fmt: skip
    # Survival: one-year survival (cloglog meta-analysis) and the site-stratified log-rank.
    landmark = int((params.get("landmark_days") or [365])[0])
    groups = list(params.get("km_groups") or ("CR-MRDneg", "CR-MRDpos", "R/R"))
    for ep in ("efs", "os"):
        block: dict[str, Any] = {"landmark": {}, "logrank_stratified": None}
        for g in (*groups, "all"):
            y, se, used = [], [], []
            for s in sites:
                sv = est[s].get((f"km/{ep}/{g}", f"day{landmark}", "survival"))
                ss = est[s].get((f"km/{ep}/{g}", f"day{landmark}", "se"))
                if isinstance(sv, float) and isinstance(ss, float) and 0 < sv < 1 and ss > 0:
                    y.append(math.log(-math.log(sv)))
                    se.append(ss / (sv * abs(math.log(sv))))
                    used.append(s)
            block["landmark"][g] = {
                **_transformed(inverse_variance(y, se), lambda x: math.exp(-math.exp(x))),
                "day": landmark, "k_total": k_total, "sites": used,
                "method": f"inverse-variance meta-analysis of S({landmark}) on the complementary log-log "
                "scale (delta-method SE from the Greenwood SE), fixed effect and DerSimonian-Laird random "
                "effects; sites with S = 1 or 0 or a withheld estimate are left out",
            }  # fmt: skip
        U_sum, V_sum, used = np.zeros(len(groups)), np.zeros((len(groups), len(groups))), []
        for s in sites:
            u = [est[s].get((f"logrank/{ep}", g, "U")) for g in groups]
            v = [[est[s].get((f"logrank/{ep}", f"{groups[min(i, j)]}|{groups[max(i, j)]}", "V"))
                  for j in range(len(groups))] for i in range(len(groups))]  # fmt: skip
            if all(isinstance(x, float) for x in u) and all(isinstance(x, float) for r in v for x in r):
                U_sum += np.asarray(u)
                V_sum += np.asarray(v)
                used.append(s)
        test = _chi2_from_uv(U_sum, V_sum, np.diag(V_sum) > 0) if used else {"chi2": None, "df": 0, "p": None}
        block["logrank_stratified"] = {
            **test, "levels": groups, "k_total": k_total, "sites": used,
            "method": "site-stratified log-rank from the sites' score U and covariance V (exact stratified test "
            "over the sites that published them; a site whose group counts are suppressed does not publish U, V)",
        }  # fmt: skip
        pooled["survival"][ep] = block
    # Wilcoxon: van Elteren-type stratified signed-rank from site totals.
    markers = sorted({a.split("/", 1)[1] for (a, _, st) in est[sites[0]] if a.startswith("wilcoxon/")})
    for m in markers:
        t_sum, v_sum, used = 0.0, 0.0, []
        for s in sites:
            n, w, var = (est[s].get((f"wilcoxon/{m}", "", k)) for k in ("n", "w_plus", "var"))
            if isinstance(n, float) and isinstance(w, float) and isinstance(var, float) and var > 0:
                wk = 1 / (n + 1)
                t_sum += wk * (w - n * (n + 1) / 4)
                v_sum += wk**2 * var
                used.append(s)
        z = t_sum / math.sqrt(v_sum) if v_sum > 0 else None
        pooled["wilcoxon"][m] = {
            "statistic": t_sum if used else None, "variance": v_sum if used else None, "z": _f(z),
            "p": None if z is None else float(2 * stats.norm.sf(abs(z))), "k_total": k_total, "sites": used,
            "method": "stratified signed-rank test from site totals (van Elteren-type weights 1/(n_k + 1) on "
            "each site's W+ - n_k(n_k + 1)/4, tie-corrected variances; normal approximation)",
        }  # fmt: skip
    n_pat = [est[s].get(("km/efs/all", "", "n")) for s in sites]
    pooled["n_patients"] = int(sum(n_pat)) if all(isinstance(x, float) for x in n_pat) else None
    return {"sharing_level": "aggregate", "sites": sites, "parameters": dict(params), "pooled": pooled,
            "per_site": {}}  # fmt: skip

