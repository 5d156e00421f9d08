"""The coordinator's pooled HTML report: per-center estimates beside the pooled ones (forest style).

Input: :class:`analysis.federated.package.PooledResults` (from ``blina pool``). Output: one
self-contained HTML file (inline CSS, plots embedded as PNG). Per-center values come from the
centers' own sufficient statistics, which only the coordinator holds; the pooled values are exact
(equal to an analysis of the concatenated patients).
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["render_pooled_report"]

_GROUPS = ("CR-MRDneg", "CR-MRDpos", "R/R")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#1d2430}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:2px solid #d0d7e2;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 4px}th,td{border:1px solid #d0d7e2;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#eef2f7}tr.pooled td{font-weight:600;
background:#f7f9fc}.note{color:#5a6475;font-size:.9em}.stamp{font-size:.85em;color:#5a6475}img{max-width:100%}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _pct(s: float | None, se: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "not estimable"
    if se is None or se == 0:
        return f"{100 * s:.1f}%"
    return f"{100 * s:.1f}% &plusmn; {100 * se:.1f}%"


def _p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "&ndash;"
    return "&lt; 0.001" if p < 0.001 else f"{p:.3f}"


def _landmark(block: dict[str, Any], day: int) -> tuple[float | None, float | None, int]:
    for lm in block.get("landmarks") or []:
        if lm.get("day") == day:
            return lm.get("survival"), lm.get("se"), int(block.get("n", 0))
    return None, None, int(block.get("n", 0))


def _scopes(pooled: Any) -> list[tuple[str, dict[str, Any]]]:
    return [*((str(sid), block) for sid, block in pooled.per_site.items()), ("Pooled", pooled.pooled)]


def _forest_png(pooled: Any, endpoint: str, day: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = _scopes(pooled)
    fig, axes = plt.subplots(1, len(_GROUPS), figsize=(11, 0.45 * len(scopes) + 1.4), sharey=True)
    for ax, group in zip(axes, _GROUPS, strict=True):
        for y, (label, block) in enumerate(reversed(scopes)):
            g = block["survival"][endpoint]["groups"].get(group)
            if not g:
                continue
            s, se, n = _landmark(g, day)
            if s is None or math.isnan(s):
                continue
            lo, hi = max(0.0, s - 1.96 * (se or 0)), min(1.0, s + 1.96 * (se or 0))
            bold = label == "Pooled"
            ax.plot([lo, hi], [y, y], color="#1f4e8c" if bold else "#6b7a90", lw=2.5 if bold else 1.5)
            ax.plot([s], [y], marker="D" if bold else "s", color="#1f4e8c" if bold else "#6b7a90",
                    ms=8 if bold else 6)
            ax.annotate(f"n={n}", (1.02, y), xycoords=("axes fraction", "data"), fontsize=8, va="center")
        ax.set_title(group)
        ax.set_xlim(0, 1.0)
        ax.set_xlabel(f"{endpoint.upper()} at day {day}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(scopes)))
    axes[0].set_yticklabels([label for label, _ in reversed(scopes)])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _survival_section(pooled: Any, endpoint: str, day: int) -> str:
    rows = []
    for label, block in _scopes(pooled):
        surv = block["survival"][endpoint]
        cells = []
        for group in _GROUPS:
            g = surv["groups"].get(group)
            if g:
                s, se, n = _landmark(g, day)
                cells.append(f"{_pct(s, se)} <span class='note'>(n={n})</span>")
            else:
                cells.append("&ndash;")
        lr = surv.get("logrank") or {}
        cls = " class='pooled'" if label == "Pooled" else ""
        rows.append(f"<tr{cls}><td>{_e(label)}</td>{''.join(f'<td>{c}</td>' for c in cells)}"
                    f"<td>{_p(lr.get('p'))}</td></tr>")
    strat = pooled.pooled["survival"][endpoint].get("logrank_stratified") or {}
    head = "".join(f"<th>{_e(g)}</th>" for g in _GROUPS)
    img = _forest_png(pooled, endpoint, day)
    return (
        f"<table><caption>1-year {endpoint.upper()} by status at referral: Kaplan-Meier estimate &plusmn; "
        f"Greenwood SE at day {day}</caption><thead><tr><th>scope</th>{head}<th>log-rank P</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p class='note'>Pooled KM and log-rank are exact (from per-time event and censoring counts). "
        f"Site-stratified log-rank: chi-square {strat.get('chi2', float('nan')):.3f}, df {strat.get('df', '')}, "
        f"P = {_p(strat.get('p'))}.</p>"
        f"<img alt='{endpoint} forest plot' src='data:image/png;base64,{img}'>"
    )


def _response_section(pooled: Any) -> str:
    out = []
    for scope_key, title in (("course1", "course 1"), ("all", "all courses")):
        rows = []
        for label, block in _scopes(pooled):
            r = (block.get("response") or {}).get(scope_key)
            if not r:
                continue
            t = r["table"]
            cells = []
            for i in range(2):
                n = t[i][0] + t[i][1]
                cells.append(f"{100 * t[i][0] / n:.1f}% ({t[i][0]}/{n})" if n else "&ndash;")
            cmh = r.get("cmh") or {}
            cls = " class='pooled'" if label == "Pooled" else ""
            extra = f"{_p(cmh.get('p'))}" if label == "Pooled" else "&ndash;"
            rows.append(f"<tr{cls}><td>{_e(label)}</td><td>{cells[0]}</td><td>{cells[1]}</td>"
                        f"<td>{_p((r.get('fisher') or {}).get('p'))}</td><td>{extra}</td></tr>")
        out.append(
            f"<table><caption>CR rate, {title}: pre-status R/R vs CR-MRDpos</caption><thead><tr><th>scope</th>"
            "<th>R/R</th><th>CR-MRDpos</th><th>Fisher P</th><th>CMH P (site-stratified)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(out) + "<p class='note'>Fisher's exact test (two-sided) on the pooled 2x2 table; " \
        "Cochran-Mantel-Haenszel test stratified by center.</p>"


def _cox_section(pooled: Any) -> str:
    cox = (pooled.pooled.get("cox") or {}).get("efs")
    if not cox:
        return "<p>No Cox model could be fitted.</p>"
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{hr:.2f} ({lo:.2f}&ndash;{hi:.2f})</td><td>{_p(p)}</td></tr>"
        for name, hr, lo, hi, p in zip(cox["covariates"], cox["hr"], cox["ci_lower"], cox["ci_upper"], cox["p"],
                                       strict=True)
    )
    warn = f"<p class='note'>{_e(cox['warning'])}</p>" if cox.get("warning") else ""
    return (
        f"<table><caption>Cox proportional hazards for EFS, stratified by center (Efron ties); n = {cox['n']}, "
        f"events = {cox['n_events']}, strata = {cox.get('n_strata')}</caption><thead><tr><th>covariate</th>"
        f"<th>HR (95% CI)</th><th>P (Wald)</th></tr></thead><tbody>{rows}</tbody></table>{warn}"
    )


def _wilcoxon_section(pooled: Any) -> str:
    rows = []
    for marker, w in (pooled.pooled.get("wilcoxon") or {}).items():
        pre, post = w.get("pre") or {}, w.get("post") or {}

        def mr(d: dict) -> str:
            return f"{d.get('median', float('nan')):.2f} ({d.get('min', float('nan')):.2f}&ndash;" \
                   f"{d.get('max', float('nan')):.2f})" if d.get("n") else "&ndash;"

        rows.append(f"<tr><td>{_e(marker.upper())}</td><td>{mr(pre)}</td><td>{mr(post)}</td><td>{w.get('n')}</td>"
                    f"<td>{_p(w.get('p'))}</td></tr>")
    return (
        "<table><caption>T-cell subsets before and after course 1 (x10<sup>9</sup>/L), median (range)"
        "</caption><thead><tr><th>subset</th><th>before</th><th>after</th><th>n pairs (non-zero)</th>"
        f"<th>Wilcoxon P</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class='note'>Wilcoxon signed-rank test, normal approximation without continuity correction, zero "
        "differences dropped, tie-corrected variance, from the pooled paired-difference histograms at reporting "
        "precision. Median (range) pooled from the value histograms.</p>"
    )


def render_pooled_report(pooled: Any, out_path: str | Path) -> Path:
    """Write the pooled report for ``pooled`` (a ``PooledResults``) and return its path."""
    out_path = Path(out_path)
    params = ", ".join(f"{k} = {v}" for k, v in sorted((pooled.parameters or {}).items()))
    day = 365
    body = [
        "<h1>blina-study: pooled results</h1>",
        f"<p class='stamp'>Centers: {_e(', '.join(pooled.sites))} &middot; package version "
        f"{_e(pooled.package_version)} &middot; study definition {_e(pooled.study_definition_hash[:16])}&hellip; "
        f"&middot; generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        f"<p class='stamp'>Parameters: {_e(params)}</p>",
        "<h2>1. Event-free survival</h2>", _survival_section(pooled, "efs", day),
        "<h2>2. Overall survival</h2>", _survival_section(pooled, "os", day),
        "<h2>3. Response</h2>", _response_section(pooled),
        "<h2>4. Cox model for EFS</h2>", _cox_section(pooled),
        "<h2>5. T-cell subsets</h2>", _wilcoxon_section(pooled),
        "<p class='note'>Only aggregates left the centers. Per-center rows are from each center's sufficient "
        "statistics, held by the coordinator only.</p>",
    ]
    out_path.write_text(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>blina-study pooled results</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>",
        encoding="utf-8",
    )
    return out_path
