"""The study report: one self-contained HTML file (inline CSS, plots embedded as base64 PNG).

:func:`render_report` lays out every analysis of protocol section 5 from a
:class:`blina_study.analysis.tables.StudyResults`, in the paper's style, with the method and the n of every
statistic, the published figures of protocol section 6 beside this run's, a per-center breakdown,
and (when given) the data-quality summary of the extract. The file references nothing outside
itself (no scripts, fonts, stylesheets or links to other hosts), so it can be mailed or archived.

The report shows aggregates only: no person identifiers and no patient-level rows.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from blina_study.analysis.plots import DAYS_PER_MONTH, km_plot_png
from blina_study.analysis.published import PUBLISHED, PublishedFigure
from blina_study.analysis.stats import format_p
from blina_study.analysis.tables import POOLED, SiteResults, StudyResults, SurvivalResult

__all__ = ["RunFigure", "run_figures", "render_report", "input_digest"]

_STATUS_ORDER = ("R/R", "CR-MRDpos", "CR-MRDneg", "unknown")
_INDICATION_LABEL = {"R/R": "R/R", "CR-MRDpos": "CR-MRDpos", "chemo_delay": "chemotherapy delay"}
_PREDICTOR_LABEL = {
    "poor_cytogenetics": "Poor cytogenetics",
    "bcr_abl1": "BCR-ABL1",
    "cd19_loss": "CD19+ B-cell loss",
    "high_mrd": "High MRD",
    "age_group": "Age group",
    "sex": "Sex",
}
_CYTOKINE_LABEL = {"il6_peak": "IL-6", "il10_peak": "IL-10", "ifng_peak": "IFN-γ", "tnfa_peak": "TNF-α"}


# ------------------------------------------------------------------------------------------------
# This run's value for each published figure


@dataclass(frozen=True)
class RunFigure:
    """This run's value of one published figure: ``text`` formatted exactly as the paper prints
    it (so equal text means the run reproduces the figure), ``n`` the observations it rests on,
    ``method`` how it was computed."""

    text: str
    n: int | None
    method: str


def _p_only(p: float | None) -> str:
    """A P for a table cell: ``0.016``, ``< 0.0001``, ``-``."""
    return format_p(p).removeprefix("P = ").removeprefix("P ")


def _pathway_total(site: SiteResults, prefix: str) -> int:
    return sum(n for k, n in site.flow.pathway.items() if k.startswith(prefix))


def run_figures(site: SiteResults) -> dict[str, RunFigure]:
    """This scope's value for every key of :data:`blina_study.analysis.published.PUBLISHED` (same keys)."""
    out: dict[str, RunFigure] = {}
    f = site.flow
    count = "count of patients"
    for cat, n in f.indication.items():
        out[f"flow.indication.{cat}"] = RunFigure(str(n), f.n, count)
    for cat, n in f.status_at_referral.items():
        out[f"flow.referral.{cat}"] = RunFigure(str(n), f.n, count)
    for cat, n in f.status_before_course_1.items():
        out[f"flow.precourse.{cat}"] = RunFigure(str(n), f.n, count)
    rr = f.status_at_referral.get("R/R", 0)
    out["flow.rr.direct"] = RunFigure(str(_pathway_total(site, "R/R > direct >")), rr, count)
    out["flow.rr.burden_reduction"] = RunFigure(
        str(_pathway_total(site, "R/R > burden reduction >")), rr, count
    )
    c1 = site.response[0]
    for rate in c1.rates:
        key = {"R/R": "response.cr.R/R", "CR-MRDpos": "response.cr.CR-MRDpos"}.get(rate.group)
        if key:
            out[key] = RunFigure(rate.rate.format(), rate.rate.n, f"evaluable course-1 courses; {rate.rate.method}")
    out["response.fisher_p"] = RunFigure(format_p(c1.comparison.p_value), c1.comparison.n, c1.comparison.method)
    allc = site.response[1]
    neg = next(r for r in allc.rates if r.group == "CR-MRDneg")
    out["response.mrd_maintained"] = RunFigure(
        neg.rate.format(), neg.rate.n, "evaluable CR-MRDneg courses (all courses)"
    )
    for p in site.predictors[0].predictors:
        out[f"univariate.{p.variable}"] = RunFigure(
            format_p(p.test.p_value), p.n, f"course 1; {p.test.method}"
        )
    cx = site.cox_efs
    for term in cx.terms:
        if math.isnan(term.coef):
            out[f"cox.{term.covariate}"] = RunFigure(
                "not estimated", cx.n, "collinear with the other covariates (R: NA)")
            continue
        if term.covariate in cx.infinite:  # R prints the Wald P (about 1) of a coefficient that is really infinite
            out[f"cox.{term.covariate}"] = RunFigure(
                f"{format_p(term.p_value)} (HR infinite)", cx.n, f"{cx.method}; monotone likelihood: the estimate "
                "is finite only because the iteration stopped, so its Wald P says nothing")
            continue
        out[f"cox.{term.covariate}"] = RunFigure(
            format_p(term.p_value), cx.n, f"{cx.method}; HR {term.hr:.2f} ({term.ci_low:.2f}-{term.ci_high:.2f})"
        )
    for cov, why in cx.dropped:
        out[f"cox.{cov}"] = RunFigure("not estimated", cx.n, f"dropped: {why}")
    if not cx.estimated:
        why = "; ".join(cx.messages) or "no model"
        for cov in ("high_mrd", "bcr_abl1", "poor_cytogenetics"):
            out.setdefault(f"cox.{cov}", RunFigure("not estimated", cx.n, f"{cx.method}: {why}"))
    for m in site.tcells.markers:
        k = m.marker.lower()
        out[f"tcells.{k}.pre"] = RunFigure(m.pre.format(), m.n, "course 1 pairs; median (range)")
        out[f"tcells.{k}.post"] = RunFigure(m.post.format(), m.n, "course 1 pairs; median (range)")
        out[f"tcells.{k}.p"] = RunFigure(format_p(m.test.p_value), m.test.n_used, m.test.method)
    for sv, area in ((site.efs, "efs"), (site.os, "os")):
        for g in sv.groups:
            out[f"{area}.1y.{g.group}"] = RunFigure(
                g.text, g.km.n, f"Kaplan-Meier at day {sv.landmark_days:g}, Greenwood SE; 95% CI "
                f"{_ci_pct(g.ci_low, g.ci_high)} ({sv.conf_type})"
            )
        out[f"{area}.logrank_p"] = RunFigure(format_p(sv.logrank.p_value), sv.logrank.n, sv.logrank.method)
    _run_figures_extra(site, out)
    return out


def _run_figures_extra(site: SiteResults, out: dict[str, RunFigure]) -> None:
    """This run's values of the analyses added for issue 12 (most without a published number)."""
    f = site.flow
    cd = site.indication_by_status.by_referral.get("chemo_delay", {})
    out["flow.chemo_delay_by_referral"] = RunFigure(
        ", ".join(f"{k} {v}" for k, v in cd.items() if v) or "0", sum(cd.values()),
        "patients with indication chemo_delay, by status at referral",
    )
    out["courses.pre_status.CR-MRDneg"] = RunFigure(
        str(f.courses_by_pre_status.get("CR-MRDneg", 0)), f.n_courses, "count of courses by pre-course status"
    )
    allc = next((r for r in site.courses.rows if r.group == "all"), None)
    if allc is not None:
        out["courses.per_patient"] = RunFigure(
            f"{allc.summary.format(0) if allc.n else '-'}; {allc.total} courses", allc.n, site.courses.method
        )
    age = next((r.summary for r in site.baseline.rows
                if r.group == "all" and r.variable == "age_at_index_years" and r.summary), None)
    if age is not None:
        out["baseline.age"] = RunFigure(age.format(1), age.n, "median (range) of age at index")
    sex = {r.level: r.count for r in site.baseline.rows if r.group == "all" and r.variable == "sex" and r.count}
    if sex:
        out["baseline.sex"] = RunFigure(
            "; ".join(f"{k} {c.k}" for k, c in sex.items()), site.baseline.n, "count of patients"
        )
    for sv, area in ((site.efs, "efs"), (site.os, "os")):
        if sv.pairwise:
            out[f"{area}.pairwise"] = RunFigure(
                "; ".join(f"{' vs '.join(lr.groups)} {_p_only(lr.p_value)}" for lr in sv.pairwise), sv.n,
                "log-rank test of each pair of groups, unadjusted",
            )
    ev = getattr(site, "efs_events", None)
    if ev is not None:
        tot: dict[str, int] = {}
        for c in ev.counts.values():
            for k, v in c.items():
                tot[k] = tot.get(k, 0) + v
        out["efs.event_types"] = RunFigure(
            ", ".join(f"{k} {v}" for k, v in tot.items() if k != "no event") or "0", ev.n, ev.method
        )
    fu = next((r for r in site.follow_up.rows if r.group == "all"), None)
    if fu is not None:
        m = fu.median
        text = "-" if fu.n == 0 else (
            f"{_months(m.median)} ({_months(m.ci_low)}-{_months(m.ci_high)})")
        out["followup.median"] = RunFigure(text, fu.n, f"{site.follow_up.method}; 95% CI {site.follow_up.conf_type}")
    for g in site.cytokines.rows:
        if g.group == "all courses":
            out[f"cytokines.{g.variable}"] = RunFigure(g.summary.format(1), g.summary.n, site.cytokines.method)
    for ae in site.adverse_events.rows:
        if ae.unit == "patients" and ae.group == "all":
            grades = ", ".join(f"G{k} {v}" for k, v in ae.counts.items() if k.isdigit() and v)
            out[f"ae.{ae.event.lower()}"] = RunFigure(
                f"any {ae.any_grade.k}/{ae.n}" + (f" ({grades})" if grades else ""), ae.n, site.adverse_events.method
            )


# ------------------------------------------------------------------------------------------------
# HTML helpers


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}f}"


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    caption: str,
    note: str | None = None,
    cls: str = "",
    raw: bool = False,
    text_cols: int = 1,
) -> str:
    """A captioned table; cells are escaped unless ``raw`` (then they are trusted HTML). In a
    ``num`` table the columns after the first ``text_cols`` are right-aligned (numbers)."""
    cell = (lambda v: str(v)) if raw else _e
    right = "num" in cls.split()

    def a(i: int) -> str:
        return ' class="r"' if right and i >= text_cols else ""

    head = "".join(f"<th{a(i)}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{a(i)}>{cell(v)}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows
    )
    foot = f'<p class="note">{_e(note)}</p>' if note else ""
    return (
        f'<div class="tw"><table class="{cls}"><caption>{_e(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{foot}"
    )


def _notes(site: SiteResults, *analyses: str) -> str:
    msgs = [m for a, m in site.messages if a in analyses]
    if not msgs:
        return ""
    items = "".join(f"<li>{_e(m)}</li>" for m in msgs)
    return f'<ul class="msgs">{items}</ul>'


def _pct(n: int, d: int) -> str:
    return f"{n} ({100 * n / d:.1f}%)" if d else str(n)


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


# ------------------------------------------------------------------------------------------------
# Sections (each takes one scope, so the per-center breakdown reuses them)


def _flow(site: SiteResults) -> str:
    f = site.flow
    cats = ["R/R", "CR-MRDpos", "CR-MRDneg", "chemo_delay", "unknown"]
    views = (
        ("Indication (why blinatumomab was given)", f.indication),
        ("Status at referral (before burden-reduction chemotherapy)", f.status_at_referral),
        ("Status before the first course", f.status_before_course_1),
    )
    extra = sorted({k for _, d in views for k in d if k not in cats})
    cols = cats + extra
    rows = []
    for label, d in views:
        rows.append([label, *[(_pct(d[c], f.n) if c in d else "") for c in cols], f.n])
    header = ["View of a patient", *[_INDICATION_LABEL.get(c, c) for c in cols], "Total"]
    out = _table(
        header, rows, caption=f"Table 1. Patient flow: the three views of protocol section 1 (n = {f.n} patients)",
        note=f"Method: {f.method}. Percentages of all {f.n} patients. Blank: category not used by that view.",
        cls="num",
    )
    path_rows = [[k.replace(" > ", " → "), v] for k, v in f.pathway.items()]
    out += _table(
        ["Status at referral → route → status before course 1", "Patients"], path_rows,
        caption=f"Table 1b. Pathway from referral to the first course (n = {f.n} patients)",
        note="Method: counts of patients. Route: burden-reduction chemotherapy before blinatumomab, or "
        "blinatumomab directly.",
        cls="num",
    )
    crow = [[s, _pct(n, f.n_courses)] for s, n in f.courses_by_pre_status.items()]
    out += _table(
        ["Pre-course status", "Courses"], crow,
        caption=f"Table 1c. Courses by status before each course (n = {f.n_courses} courses)",
        note="Method: counts of courses; response is counted by the status before each course.",
        cls="num",
    )
    return out + _indication_by_status(site) + _courses(site) + _baseline(site)


def _indication_by_status(site: SiteResults) -> str:
    ib = site.indication_by_status
    statuses = ["R/R", "CR-MRDpos", "CR-MRDneg", "unknown"]
    rows = []
    for view, tab in (("at referral", ib.by_referral), ("before course 1", ib.by_precourse)):
        for ind, counts in tab.items():
            tot = sum(counts.values())
            rows.append([_INDICATION_LABEL.get(ind, ind), view, *[_pct(counts.get(c, 0), tot) for c in statuses],
                         tot])
    return _table(
        ["Indication", "Status", *statuses, "Total"], rows,
        caption=f"Table 1d. Indication by status at referral and before the first course (n = {ib.n} patients)",
        note=f"Method: {ib.method}. Percentages within each row. The paper's 54 chemotherapy delays (indication "
        "rule 6: CR-MRDpos at referral without chemotherapy in the delay window, or MRD-negative).",
        cls="num", text_cols=2,
    )


def _courses(site: SiteResults) -> str:
    cp = site.courses
    maxk = max((k for r in cp.rows for k in r.distribution), default=1)
    ks = list(range(1, maxk + 1))
    rows = [
        [r.group, r.n, r.total, r.summary.format(0) if r.n else "-",
         *[_pct(r.distribution.get(k, 0), r.n) for k in ks]]
        for r in cp.rows
    ]
    return _table(
        ["Status at referral", "Patients", "Courses", "Courses per patient: median (range)",
         *[f"{k} course{'s' if k > 1 else ''}" for k in ks]], rows,
        caption=f"Table 1e. Courses per patient (n = {cp.n} patients)",
        note=f"Method: {cp.method}. Columns \"k courses\": patients with exactly k courses (% of the row).",
        cls="num",
    )


_BASELINE_LABEL = {
    "age_at_index_years": "Age at index (years), median (range)",
    "sex": "Sex",
    "bcr_abl1": "BCR-ABL1 detected",
    "poor_cytogenetics": "Poor cytogenetics",
    "burden_reduction": "Burden-reduction chemotherapy before course 1",
}


def _baseline(site: SiteResults) -> str:
    b = site.baseline
    cols = ["all", *b.groups]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in b.rows:
        text = r.summary.format(1) if r.summary is not None else (
            "-" if r.count is None or r.count.n == 0 else f"{r.count.k} ({r.count.pct:.1f}%)")
        cells.setdefault((r.variable, r.level), {})[r.group] = text
    ns = {r.group: r.count.n for r in b.rows if r.variable == "sex" and r.level == "M" and r.count}
    rows = []
    for (var, lev), d in cells.items():
        label = _BASELINE_LABEL.get(var, var) + (f": {lev}" if var == "sex" else "")
        rows.append([label, *[d.get(c, "-") for c in cols]])
    header = ["Characteristic", *[f"{'All' if c == 'all' else _INDICATION_LABEL.get(c, c)} (n = {ns.get(c, 0)})"
                                  for c in cols]]
    return _table(
        header, rows,
        caption=f"Table 1f. Baseline characteristics by indication (n = {b.n} patients)",
        note=f"Method: {b.method}. The paper's baseline table (by R/R, CR-MRDpos, chemotherapy delay) is not "
        "published in the abstract; this is its layout with the contract's variables.",
        cls="num",
    )


def _response(site: SiteResults) -> str:
    c1, allc = site.response
    rows = []
    for r1, ra in zip(c1.rates, allc.rates, strict=True):
        rows.append([
            r1.group, r1.endpoint, r1.rate.format(), r1.n_not_evaluable, ra.rate.format(), ra.n_not_evaluable,
        ])
    rows.append([
        "R/R vs CR-MRDpos", "Fisher's exact P (CR)",
        f"{format_p(c1.comparison.p_value)} (n = {c1.comparison.n})", "",
        f"{format_p(allc.comparison.p_value)} (n = {allc.comparison.n})", "",
    ])
    return _table(
        ["Pre-course status", "Endpoint", "Course 1: % (k/n)", "Course 1: not evaluable",
         "All courses: % (k/n)", "All courses: not evaluable"],
        rows,
        caption=f"Table 2. Response by status before the course (course 1: n = {c1.n}; all courses: n = {allc.n} "
        "evaluable courses)",
        note=f"Method: {c1.method} ({c1.comparison.method}). n = evaluable courses (response assessed); "
        "not-evaluable courses (NE or unknown) are counted beside the rate and left out of the denominator. "
        "CR for pre-status R/R: marrow blasts < 5 %; for CR-MRDpos: MRD-negative; CR-MRDneg: MRD still negative.",
        cls="num", text_cols=2,
    ) + _notes(site, "response")


def _predictors(site: SiteResults) -> str:
    out = ""
    for i, pr in enumerate(site.predictors):
        rows = []
        for p in pr.predictors:
            orci = (
                "-" if math.isnan(p.test.odds_ratio)
                else f"{_num(p.test.odds_ratio)} ({_num(p.test.ci_low)}-{_num(p.test.ci_high)})"
            )
            rows.append([
                _PREDICTOR_LABEL.get(p.variable, p.variable),
                f"{p.exposed_label}: {p.exposed.format()}",
                f"{p.reference_label}: {p.reference.format()}",
                orci, _p_only(p.test.p_value), p.n, p.n_missing,
            ])
        table = _table(
            ["Predictor", "Poor response, exposed % (k/n)", "Poor response, reference % (k/n)",
             "Odds ratio (95% CI)", "P", "n", "missing"],
            rows,
            caption=f"Table 3{'ab'[i]}. Univariate predictors of poor response, {pr.courses} "
            f"(n = {pr.n} evaluable R/R and CR-MRDpos courses, {pr.n_poor} without CR)",
            note=f"Method: {pr.method} ({pr.predictors[0].test.method if pr.predictors else ''}); conditional "
            "maximum-likelihood odds ratio with exact 95% CI (∞ or 0: a zero cell). Exposed vs reference levels "
            "are named in the cells. n = courses with the predictor known; missing = left out.",
            cls="num",
        )
        if i == 0:
            out += table
        else:
            out += f"<details><summary>Secondary analysis: {_e(pr.courses)}</summary>{table}</details>"
    return out + _notes(site, "predictors")


def _cox_status(cx: Any, covariate: str, coef: float) -> str:
    if math.isnan(coef):
        return "not estimable: collinear (R: NA)"
    if covariate in cx.infinite:
        return "estimated; may be infinite (monotone likelihood)"
    return "estimated"


def _cox(site: SiteResults) -> str:
    cx = site.cox_efs
    rows = [
        [t.covariate, _cox_status(cx, t.covariate, t.coef),
         "-" if math.isnan(t.coef) else f"{_num(t.hr)} ({_num(t.ci_low)}-{_num(t.ci_high)})",
         _p_only(t.p_value), f"{_num(t.ph_statistic)} / {_p_only(t.ph_p_value)}"]
        for t in cx.terms
    ]
    rows += [[cov, f"dropped: {why}", "-", "-", "-"] for cov, why in cx.dropped]
    if not cx.estimated and not rows:
        rows = [["(all)", "not estimated: see the note below", "-", "-", "-"]]
    return _table(
        ["Covariate", "Status", "HR (95% CI)", "P (Wald)", "PH check: χ² / P"],
        rows,
        caption=f"Table 4. Cox proportional hazards for event-free survival (n = {cx.n} patients, "
        f"{cx.n_events} events, {cx.n_excluded} excluded for a missing value)",
        note=f"Method: {cx.method}. Covariates: high MRD before course 1, BCR-ABL1, poor cytogenetics "
        "(complete cases). PH check P < 0.05 means the proportional-hazards assumption is questionable.",
        cls="num", text_cols=2,
    ) + _notes(site, "cox_efs")


def _tcells(site: SiteResults) -> str:
    rows = []
    for m in site.tcells.markers:
        t = m.test
        rows.append([
            f"{m.marker}+", m.n, m.pre.format(), m.post.format(), _p_only(t.p_normal),
            "-" if t.p_exact is None else _p_only(t.p_exact), t.n_zero, f"{m.n_pre_only} / {m.n_post_only}",
        ])
    method = site.tcells.markers[0].test.method if site.tcells.markers else ""
    out = _table(
        ["Subset", "n pairs", "Before: median (range) ×10⁹/L", "After: median (range) ×10⁹/L",
         "P (normal approx.)", "P (exact)", "zero diff.", "pre only / post only"],
        rows,
        caption=f"Table 5. T-cell subsets before and after course 1 (course-1 courses: n = {site.tcells.n})",
        note=f"Method: {site.tcells.method}; Wilcoxon signed-rank test, after vs before, normal approximation "
        "without continuity correction with tie-corrected variance, zero differences dropped (primary P); exact P "
        "where no ties or zeros and n ≤ 49. First marker: " + method,
        cls="num",
    ) + _notes(site, "tcells")
    cyt = site.cytokines
    groups = list(dict.fromkeys(g.group for g in cyt.rows))
    by: dict[str, dict[str, str]] = {}
    for g in cyt.rows:
        cell = "-" if g.summary.n == 0 else f"{g.summary.format(1)}; n = {g.summary.n}"
        by.setdefault(g.variable, {})[g.group] = cell
    rows = [[_CYTOKINE_LABEL.get(v, v), *[d.get(g, "-") for g in groups]] for v, d in by.items()]
    out += _table(
        ["Cytokine peak (pg/mL)", *groups], rows,
        caption=f"Table 6. Cytokine peaks overall and by response (n = {cyt.n} courses with a response group; "
        "all courses: every course with a value)",
        note=f"Method: {cyt.method}. Peak = maximum in [course start, course end + 3 days]. All courses: whatever "
        "the response (courses without an assessment included). CR / no CR: pre-status "
        "R/R or CR-MRDpos; MRD-neg maintained / lost: pre-status CR-MRDneg. Descriptive only (no test).",
        cls="num",
    )
    return out


def _km_annotation(sv: SurvivalResult) -> str:
    lr = sv.logrank
    return f"Log-rank {format_p(lr.p_value)} (χ² = {_num(lr.chisq)}, {lr.df} df, n = {lr.n})"


def _survival(site: SiteResults, *, dpi: int = 110) -> str:
    out = ""
    for sv, name in ((site.efs, "Event-free survival"), (site.os, "Overall survival")):
        curves = {g.group: g.km for g in sv.groups}
        if curves:
            png = km_plot_png(curves, title=f"{name} by status at referral", annotation=_km_annotation(sv),
                              ylabel=f"{sv.endpoint} probability", dpi=dpi, conf_type=sv.conf_type)
            out += f'<figure>{_img(png, f"{name} Kaplan-Meier plot, {site.scope}")}' \
                   f"<figcaption>Figure. {_e(name)} by status at referral, Kaplan-Meier, with numbers at " \
                   f"risk (n = {sv.n} patients; shaded: pointwise 95% confidence band, {_e(sv.conf_type)} " \
                   "transform; ticks + = censored; dotted line = 1 year).</figcaption></figure>"
        times = list(sv.risk_times_days)
        rows = [
            [g.group, g.km.n, g.km.n_events, g.text, _ci_pct(g.ci_low, g.ci_high), *g.at_risk] for g in sv.groups
        ]
        lr = sv.logrank
        out += _table(
            ["Status at referral", "n", "Events", f"{sv.landmark_days / 365:g}-year estimate ± SE",
             f"95% CI ({sv.conf_type})", *[f"{t / DAYS_PER_MONTH:.0f} mo" for t in times]],
            rows,
            caption=f"Table 7{'a' if sv.endpoint == 'EFS' else 'b'}. {name}: estimate at day "
            f"{sv.landmark_days:g} and numbers at risk at 0-{times[-1] / DAYS_PER_MONTH:.0f} months (n = {sv.n} "
            f"patients, {sv.n_excluded} excluded); "
            f"log-rank {format_p(lr.p_value)} (χ² = {_num(lr.chisq)}, {lr.df} df, n = {lr.n})",
            note=f"Method: {sv.method}; {lr.method}. ± = Greenwood standard error of S(t). 95% CI: pointwise, "
            f"{_CONF_TEXT.get(sv.conf_type, sv.conf_type)}, as R survfit. Columns \"mo\": "
            f"patients still at risk at that month (days {', '.join(f'{t:g}' for t in times)}).",
            cls="num",
        ) + _notes(site, sv.endpoint)
    out += _pairwise(site) + _follow_up(site) + _efs_events(site)
    return out


_CONF_TEXT = {
    "log": "log transform exp(log S ± 1.96 SE of the cumulative hazard), R's default conf.type",
    "log-log": "log-log transform (conf.type = \"log-log\")",
}


def _ci_pct(lo: float, hi: float) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "-"
    return f"{100 * lo:.1f}-{100 * hi:.1f}%"


def _pairwise(site: SiteResults) -> str:
    rows = []
    for sv in (site.efs, site.os):
        for lr in sv.pairwise:
            # No test (no events expected in one of the pair): no statistic either, not "0.00".
            chisq = _num(lr.chisq) if lr.df >= 1 else "-"
            rows.append([sv.endpoint, " vs ".join(lr.groups), chisq, _p_only(lr.p_value), lr.n])
    if not rows:
        return ""
    return _table(
        ["Endpoint", "Groups (status at referral)", "χ² (1 df)", "P", "n"], rows,
        caption=f"Table 7c. Pairwise log-rank tests by status at referral (n = {site.efs.n} patients)",
        note="Method: log-rank test (Mantel-Haenszel) of each pair of groups, unadjusted for multiple "
        "comparisons (three pairs per endpoint; Bonferroni: multiply P by 3). The paper's pairwise results are "
        "not published.",
        cls="num", text_cols=2,
    )


_EVENT_LABEL = {"relapse": "Relapse", "non_response": "Non-response (day 0)", "death": "Death",
                "no event": "No event (censored)"}


def _efs_events(site: SiteResults) -> str:
    ev = getattr(site, "efs_events", None)  # a pooled scope (analysis/pooled_report.py) may not carry it
    if ev is None or not ev.counts:
        return ""
    cols = list(dict.fromkeys(k for c in ev.counts.values() for k in c))
    rows = [[g, *[_pct(c.get(k, 0), sum(c.values())) for k in cols], sum(c.values())] for g, c in ev.counts.items()]
    return _table(
        ["Status at referral", *[_EVENT_LABEL.get(k, k) for k in cols], "Total"], rows,
        caption=f"Table 7e. First EFS event by type and status at referral (n = {ev.n} patients)",
        note=f"Method: {ev.method}. Percentages within each row; at any time (not only the first year). A death "
        "after a relapse counts as relapse here and as an OS event.",
        cls="num",
    )


def _months(days: float) -> str:
    return "not reached" if days is None or math.isnan(days) else f"{days / DAYS_PER_MONTH:.1f}"


def _follow_up(site: SiteResults) -> str:
    fu = site.follow_up
    rows = [
        [f.group, f.n, f.n_censored, _months(f.median.median),
         f"{_months(f.median.ci_low)}-{_months(f.median.ci_high)}",
         "-" if math.isnan(f.median.median) else f"{f.median.median:g}"]
        for f in fu.rows
    ]
    return _table(
        ["Status at referral", "n", "Alive at last follow-up", "Median follow-up (months)",
         f"95% CI (months, {fu.conf_type})", "Median (days)"], rows,
        caption=f"Table 7d. Median follow-up by reverse Kaplan-Meier (n = {fu.n} patients, {fu.n_excluded} "
        "without an OS time)",
        note=f"Method: {fu.method}. Months of 365/12 days; \"not reached\": the reverse curve (or its CI limit) "
        "never falls to 0.5.",
        cls="num",
    ) + _notes(site, "follow_up")


def _next_therapy(site: SiteResults) -> str:
    nt = site.next_therapy
    cats = ["HSCT", "CAR-T", "protocol", "none"]
    rows = []
    for grp, counts in nt.counts.items():
        tot = sum(counts.values())
        extra = {k: v for k, v in counts.items() if k not in cats}
        rows.append([grp, *[_pct(counts.get(c, 0), tot) for c in cats],
                     ", ".join(f"{k}: {v}" for k, v in extra.items()) or "", tot])
    return _table(
        ["Status at referral", *cats, "other / missing", "Total"], rows,
        caption=f"Table 8. Next therapy after the last course, by status at referral (n = {nt.n} patients)",
        note=f"Method: {nt.method}; HSCT or CAR-T (whichever first) within the bridge window after the last "
        "course, else protocol chemotherapy resumed, else none. Percentages within each row.",
        cls="num",
    )


def _adverse_events(site: SiteResults) -> str:
    ae = site.adverse_events
    out = ""
    for i, event in enumerate(("CRS", "ICANS")):
        rows_ev = [g for g in ae.rows if g.event == event]
        grades = list(dict.fromkeys(k for g in rows_ev for k in g.counts))
        header = ["Maximum grade", *[("Patients, worst" if g.unit == "patients" else
                                      ("All courses" if g.group == "all" else g.group))
                                     + f" (n = {g.n})" for g in rows_ev]]
        rows = [[f"Grade {k}" if k.isdigit() else k, *[_pct(g.counts.get(k, 0), g.n) for g in rows_ev]]
                for k in grades]
        rows.append(["Any grade", *[g.any_grade.format() for g in rows_ev]])
        rows.append(["Grade ≥ 3", *[g.grade_3_plus.format() for g in rows_ev]])
        name = "cytokine release syndrome" if event == "CRS" else "immune effector cell-associated neurotoxicity"
        out += _table(
            header, rows,
            caption=f"Table 8{'bc'[i]}. {event} ({name}) by maximum grade (n = {ae.n_courses} courses, "
            f"{ae.n_patients} patients)",
            note=f"Method: {ae.method}. Percentages of the column's courses or patients. Columns R/R ... unknown: "
            "courses by status before the course; \"Patients, worst\": each patient's worst grade over all courses. "
            "The paper's grades are not published in the abstract.",
            cls="num",
        )
    return out + _notes(site, "adverse_events")


def _estimable(r: RunFigure) -> bool:
    """False when this run has no value to compare: n = 0, or a value that is not estimable."""
    if r.n == 0:
        return False
    return not (r.text in ("-", "P = -", "not estimated") or r.text.startswith("- ("))


def _agreement(pub: PublishedFigure, r: RunFigure | None) -> tuple[bool, str]:
    """(reproduced, HTML mark): reproduced only when the paper gives the number, this run has an
    estimable value on n > 0, and both print the same."""
    if not pub.published:
        return False, '<span class="na">no published value</span>'
    if r is None:
        return False, '<span class="diff">not computed</span>'
    if not _estimable(r):
        return False, '<span class="diff">not estimable (n = 0 or no estimate)</span>'
    if r.text == pub.text:
        return True, '<span class="ok">✓ same</span>'
    return False, '<span class="diff">differs</span>'


_SYNTHETIC_AGREEMENT = ", from SYNTHETIC data: this shows the pipeline runs, not that the study is replicated"


def _published(site: SiteResults, *, synthetic: bool = False) -> str:
    run = run_figures(site)
    rows = []
    n_agree = 0
    n_pub = sum(p.published for p in PUBLISHED)
    for pub in PUBLISHED:
        r = run.get(pub.key)
        agree, mark = _agreement(pub, r)
        n_agree += agree
        rows.append([
            _e(pub.label), _e(pub.text), _e(r.text if r else "not computed"),
            _e("-" if r is None or r.n is None else r.n), mark, _e(r.method if r else ""),
        ])
    return _table(
        ["Figure", "Published", "This run", "n (this run)", "Agreement", "Method (this run)"], rows,
        caption=f"Table 9. Published figures (protocol sections 1 and 6) vs this run, pooled (n = "
        f"{site.n_patients} patients, {site.n_courses} courses): {n_agree} of {n_pub} published figures reproduced "
        f"as printed{_SYNTHETIC_AGREEMENT if synthetic else ''}; {len(PUBLISHED) - n_pub} further analyses without a "
        "published number",
        note="Agreement = this run's value, formatted as the paper prints it, is the same text; never claimed at "
        "n = 0 or for a value that is not estimable. \"No published value\": an analysis of the protocol or of the "
        "paper's tables whose number the abstract does not give. n: patients for "
        "counts and survival; evaluable courses for response and predictors; pairs used for the Wilcoxon test "
        "(zero differences dropped). Published HRs and CIs are not available (only P).",
        cls="cmp", raw=True,
    )


def _by_center_matrix(results: StudyResults) -> str:
    scopes = results.scopes()
    figs = [run_figures(s) for s in scopes]
    rows = [["Patients", *[s.n_patients for s in scopes]], ["Courses", *[s.n_courses for s in scopes]]]
    for pub in PUBLISHED:
        if not pub.published:  # long texts; each center's own tables (below) show these analyses
            continue
        cells = []
        for f in figs:
            r = f.get(pub.key)
            cells.append("-" if r is None else (r.text if r.n is None else f"{r.text} [n={r.n}]"))
        rows.append([pub.label, *cells])
    return _table(
        ["Figure", *[("Pooled" if s.scope == POOLED else s.scope) for s in scopes]], rows,
        caption=f"Table 10. Key figures per center and pooled ({len(results.by_site)} centers; [n=] the "
        "observations each figure rests on)",
        note="Pooled = all centers' patients analysed together as one cohort. The methods are those of Tables 1-9. "
        "Small centers give wide uncertainty and tests that may not be computable; see each center's notes.",
        cls="num wide",
    )


def _scope_sections(site: SiteResults, *, dpi: int) -> str:
    parts = [
        ("Patient flow", _flow(site)),
        ("Response", _response(site)),
        ("Univariate predictors of poor response", _predictors(site)),
        ("Cox model for EFS", _cox(site)),
        ("T cells and cytokines", _tcells(site)),
        ("Survival by status at referral", _survival(site, dpi=dpi)),
        ("Next therapy", _next_therapy(site)),
        ("Adverse events: CRS and ICANS", _adverse_events(site)),
    ]
    return "".join(f"<h3>{_e(t)}</h3>{body}" for t, body in parts)


def _kv_rows(d: Mapping[str, Any]) -> list[list[str]]:
    return [[str(k), _fmt_value(v)] for k, v in d.items()]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v)
    return "" if v is None else str(v)


def _data_quality(dq: Mapping[str, Any]) -> str:
    """Any JSON object: scalars in one table, each mapping of scalars or of records, and each list of
    records, in a table of its own (so the extract step can add fields without a report change)."""
    out = ""
    scalars = {k: v for k, v in dq.items() if not isinstance(v, (Mapping, list, tuple))}
    if scalars:
        out += _table(["Item", "Value"], _kv_rows(scalars), caption="Data quality: summary counts", cls="num")
    for k, v in dq.items():
        title = str(k).replace("_", " ")
        if isinstance(v, Mapping) and v and all(isinstance(x, Mapping) for x in v.values()):
            cols = list(dict.fromkeys(c for x in v.values() for c in x))
            rows = [[name, *[_fmt_value(x.get(c)) for c in cols]] for name, x in v.items()]
            out += _table([title.capitalize(), *cols], rows, caption=f"Data quality: {title}", cls="num")
        elif isinstance(v, Mapping):
            out += _table(["Item", "Value"], _kv_rows(v), caption=f"Data quality: {title}", cls="num")
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            cols = list(dict.fromkeys(c for x in v for c in x))
            rows = [[_fmt_value(x.get(c)) for c in cols] for x in v]
            out += _table(cols, rows, caption=f"Data quality: {title}", cls="num")
        elif isinstance(v, (list, tuple)):
            out += _table(["Value"], [[_fmt_value(x)] for x in v], caption=f"Data quality: {title}")
    return out or "<p>The data-quality file is empty.</p>"


def _messages_all(results: StudyResults) -> str:
    rows = [[s.scope, a, m] for s in results.scopes() for a, m in s.messages]
    if not rows:
        return "<p>No exclusions or warnings.</p>"
    return _table(["Scope", "Analysis", "Message"], rows,
                  caption=f"Notes, exclusions and warnings ({len(rows)})")


def input_digest(course: pd.DataFrame, patient: pd.DataFrame) -> str:
    """SHA-256 of the two tables as analysed (columns sorted, rows sorted by key, CSV text), so a
    reader can tell whether two reports rest on the same data regardless of file format."""
    h = hashlib.sha256()
    for name, df, key in (("course", course, ["site_id", "person_id", "course_number"]),
                          ("patient", patient, ["site_id", "person_id"])):
        d = df[sorted(df.columns)]
        k = [c for c in key if c in d.columns]
        if k:
            d = d.sort_values(k, kind="mergesort")
        h.update(name.encode())
        h.update(d.to_csv(index=False, date_format="%Y-%m-%d", na_rep="").encode())
    return h.hexdigest()


_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d1d1f;
 margin:0;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px;background:#fff}
h1{font-size:23px;margin:6px 0 2px} h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #dde3ea;
 padding-bottom:4px} h3{font-size:16px;margin:22px 0 6px;color:#28415a}
.sub{color:#555;margin:0 0 14px}
.synthetic{background:#fff3cd;border:2px solid #d39e00;color:#5c4300;padding:8px 12px;font-weight:700;margin:6px 0 12px}
.stamp{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;background:#f3f6f9;border:1px solid #dde3ea;
 padding:10px 14px;border-radius:6px;font-size:13px}
.glance{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;border:1px solid #b9d3ea;
 background:#f0f7fd;padding:10px 14px;border-radius:6px;margin:0 0 10px;font-size:14px}
.glance .gt{grid-column:1/3;font-weight:700;color:#1f5f99;margin-bottom:2px}
.glance b,.stamp b{color:#28415a;font-weight:600} code{font:12px/1.3 ui-monospace,Menlo,Consolas,monospace;
 word-break:break-all}
nav.toc{columns:3;font-size:13px;margin:12px 0;padding:8px 14px;border:1px solid #e6e6e6;border-radius:6px}
nav.toc a{color:#1f5f99;text-decoration:none} nav.toc div{break-inside:avoid}
.tw{overflow-x:auto;margin:10px 0 2px}
table{border-collapse:collapse;font-size:13px;min-width:62%;max-width:100%}
caption{caption-side:top;text-align:left;font-weight:600;padding:0 0 5px;color:#222}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 9px;vertical-align:top;text-align:left}
th{background:#eef2f6;font-weight:600;border-bottom:2px solid #c9d3dd}
.r{text-align:right;white-space:nowrap} td:first-child{max-width:380px}
table.cmp td:nth-child(2){white-space:nowrap} table.cmp td:nth-child(3){max-width:330px}
table.cmp td:nth-child(6){font-size:12px;color:#555;max-width:420px}
table.wide td{font-size:12.5px}
tbody tr:nth-child(even){background:#fbfcfd}
.note{font-size:12px;color:#555;margin:2px 0 12px;max-width:1000px}
.msgs{font-size:12px;color:#7a4a00;margin:2px 0 12px}
.na{color:#666;white-space:nowrap}
.ok{color:#176b2c;font-weight:600;white-space:nowrap} .diff{color:#a33;font-weight:600;white-space:nowrap}
figure{margin:12px 0 4px} figcaption{font-size:12px;color:#555;max-width:790px}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
details{margin:8px 0;border:1px solid #e3e3e3;border-radius:6px;padding:6px 12px}
details>summary{cursor:pointer;font-weight:600;color:#28415a}
.warn{background:#fff6e5;border:1px solid #f0d9a8;padding:8px 12px;border-radius:6px;font-size:13px}
"""


def _glance(results: StudyResults, n_sites: int, data_source: str) -> str:
    """The headline numbers (pooled) for the first screen, each with its n and method in brief."""
    r = results.pooled
    c1, allc = r.response
    rates = {x.group: x for x in c1.rates}
    neg = next(x for x in allc.rates if x.group == "CR-MRDneg")
    run = run_figures(r)
    agree = sum(_agreement(p, run.get(p.key))[0] for p in PUBLISHED)
    n_pub = sum(p.published for p in PUBLISHED)
    items = [
        ("Cohort", f"{r.n_patients} patients, {r.n_courses} courses, {n_sites} center(s)"),
        ("CR, course 1", "; ".join(
            f"{g} {rates[g].rate.format()}" for g in ("R/R", "CR-MRDpos") if g in rates
        ) + f"; Fisher's exact {format_p(c1.comparison.p_value)}"),
        ("MRD-negative kept", f"{neg.rate.format()} of evaluable CR-MRDneg courses (all courses)"),
    ]
    for sv in (r.efs, r.os):
        groups = "; ".join(f"{g.group} {g.text} (n={g.km.n})" for g in sv.groups) or "no data"
        items.append((f"1-year {sv.endpoint}", f"{groups}; log-rank {format_p(sv.logrank.p_value)} "
                      "(Kaplan-Meier, Greenwood SE)"))
    published = f"{agree} of {n_pub} reproduced as printed (section 9)"
    if data_source.startswith("SYNTHETIC"):  # never a bare "reproduced" claim on generated patients
        published += _SYNTHETIC_AGREEMENT
    items.insert(0, ("Data", "SYNTHETIC: generated patients, see the note under the title"
                     if data_source.startswith("SYNTHETIC") else data_source))
    items.append(("Published figures", published))
    return '<div class="glance"><div class="gt">At a glance (pooled)</div>' + "".join(
        f"<b>{_e(k)}</b><span>{_e(v)}</span>" for k, v in items) + "</div>"


def _stamp(params: Mapping[str, Any], fingerprint: Mapping[str, Any], results: StudyResults,
           digest: str, generated: str) -> str:
    try:
        from importlib.metadata import version

        pkg = version("blina-study")
    except Exception:  # noqa: BLE001 - a source checkout without metadata still gets a report
        from blina_study.adapter import __version__ as pkg
    items: list[tuple[str, str]] = [
        ("Package", f"blina-study {_e(pkg)}"),
        ("Generated", _e(generated)),
    ]
    for k, v in fingerprint.items():
        items.append((_e(str(k).replace("_", " ").capitalize()), f"<code>{_e(_fmt_value(v))}</code>"))
    items.append(("Tables digest", f"<code>{digest}</code> (SHA-256 of course + patient as analysed)"))
    centers = ", ".join(results.by_site) or "(per-center breakdown not computed)"
    items.append(("Centers", _e(f"{len(results.by_site)}: {centers}")))
    p_text = ", ".join(f"{k} = {_fmt_value(v)}" for k, v in params.items()) or "not recorded"
    items.append(("Study parameters", _e(p_text)))
    s_text = ", ".join(f"{k} = {_fmt_value(v)}" for k, v in results.settings.items())
    items.append(("Analysis settings", _e(s_text)))
    return '<div class="stamp">' + "".join(f"<b>{k}</b><span>{v}</span>" for k, v in items) + "</div>"


def render_report(
    results: StudyResults,
    *,
    course: pd.DataFrame,
    patient: pd.DataFrame,
    params: dict,
    fingerprint: dict,
    data_quality: dict | None,
    out_path: str | Path,
    generated: str | None = None,
    data_source: str | None = None,
) -> Path:
    """Write the study report for ``results`` (computed from ``course`` / ``patient``) to
    ``out_path`` as one self-contained HTML file and return its path.

    ``params``: the study parameters the tables were derived with (shown in the run stamp);
    ``fingerprint``: named fingerprints of the run (e.g. ``study_definition``, ``input``), shown
    verbatim; ``data_quality``: the extract's data-quality summary (any JSON object; its scalars,
    mappings and lists of records become tables), or None to leave the section out.
    ``generated``: the timestamp to print (default: now, UTC).
    ``data_source``: one sentence on what the data are (:func:`adapter.provenance.describe_sources`);
    when it starts with "SYNTHETIC" the title block and "At a glance" say so. None: "not recorded".
    """
    out_path = Path(out_path)
    data_source = data_source or "not recorded (no extract.json with the tables and no --run-info)"
    synthetic = data_source.startswith("SYNTHETIC")
    generated = generated or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pooled = results.pooled
    digest = input_digest(course, patient)
    n_sites = int(patient["site_id"].nunique()) if "site_id" in patient.columns else 1
    sections: list[tuple[str, str, str]] = [
        ("flow", "1. Patient flow", _flow(pooled)),
        ("response", "2. Response", _response(pooled)),
        ("predictors", "3. Univariate predictors of poor response", _predictors(pooled)),
        ("cox", "4. Cox model for event-free survival", _cox(pooled)),
        ("tcells", "5. T-cell subsets and cytokines", _tcells(pooled)),
        ("survival", "6. Kaplan-Meier survival by status at referral", _survival(pooled)),
        ("next", "7. Next therapy", _next_therapy(pooled)),
        ("adverse", "8. Adverse events: CRS and ICANS", _adverse_events(pooled)),
        ("published", "9. Published vs this run", _published(pooled, synthetic=synthetic)),
    ]
    if results.by_site:
        centers = _by_center_matrix(results)
    else:
        centers = "<p>Per-center breakdown not computed (pooled results only were requested).</p>"
    for sid, site in results.by_site.items():
        centers += (
            f"<details><summary>Center {_e(sid)}: all tables ({site.n_patients} patients, "
            f"{site.n_courses} courses)</summary>{_scope_sections(site, dpi=96)}</details>"
        )
    sections.append(("centers", "10. Per-center breakdown and pooled", centers))
    if data_quality is not None:
        sections.append(("quality", "11. Data quality", _data_quality(data_quality)))
    sections.append(("notes", f"{len(sections) + 1}. Notes, exclusions and warnings", _messages_all(results)))

    toc = "".join(f'<div><a href="#{sid}">{_e(title)}</a></div>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>' for sid, title, content in sections)
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>blina-study report: blinatumomab in pediatric B-ALL</title>"
        f"<style>{_CSS}</style></head><body><main>"
        f"<h1>{'SYNTHETIC DATA: ' if synthetic else ''}Blinatumomab in pediatric B-ALL: multicenter study re-run</h1>"
        + (f'<p class="synthetic">{_e(data_source)}</p>' if synthetic else "") +
        f'<p class="sub">{pooled.n_patients} patients, {pooled.n_courses} courses, '
        f"{n_sites} center(s). Protocol: study-protocol.md sections 4-6; reference: "
        "Front. Immunol. 2025;16:1607138. Aggregate results only.</p>"
        f"{_glance(results, n_sites, data_source)}{_stamp(params, fingerprint, results, digest, generated)}"
        f'<nav class="toc">{toc}</nav>{body}</main></body></html>\n'
    )
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(doc, encoding="utf-8")
    except OSError as exc:
        from blina_study.adapter.errors import BlinaError

        raise BlinaError(f"{out_path}: cannot write the report ({exc})", hint="choose a writable path") from exc
    return out_path
