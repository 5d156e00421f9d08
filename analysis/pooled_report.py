"""The coordinator's pooled HTML report: the central report's contents, from pooled statistics.

Input: :class:`blina_study.analysis.federated.package.PooledResults` (``blina pool``, ``exact`` packages). Output:
one self-contained HTML file (inline CSS, plots as PNG data URIs).

How it reuses the central report (``blina_study.analysis.report``, ``blina_study.analysis.plots``,
``blina_study.analysis.published``)
instead of copying it: :func:`pooled_scope` turns the pooled block into the same result objects
the central analysis produces (``blina_study.analysis.tables``), computed by the same functions wherever the
pooled statistics determine the patient-level input up to what that function reads:

* KM curves, 95% limits, numbers at risk, log-rank, pairwise log-rank and the reverse-KM median
  follow-up: pooled per-day event and censoring counts per group (and, for patients of no group,
  'all' minus the groups) are expanded into (group, day, event) rows and passed to
  ``tables.survival_by_referral`` / ``tables.follow_up``; these depend on nothing else, so they
  equal the centralized ones. Next therapy likewise (``tables.next_therapy_by_referral``).
* Response: the pooled pre-status x outcome counts become course rows for ``tables.response``.
* Predictors: the pooled 2x2 tables go through ``stats.proportion`` / ``stats.fisher_exact_2x2``.
* Flow: the pooled count tables (the pathway's route is exact for R/R and for every status whose
  patients all took one route; otherwise it reads "route not pooled").
* Cox: the pooled model as fitted by ``pool``; its name from the block's ``strata`` / ``model``.
* Cytokine peaks: the pooled value histograms per group (as ``tables.cytokine_peaks``).
* Baseline, adverse events, courses per patient, indication by status: not in the pooled
  statistics; their tables are left out and their published figures say so.

The sections are then rendered by the central report's own section functions (flow, predictors,
Cox, KM curves with at-risk tables, next therapy) and its published-figure rule
(``run_figures``, ``_agreement``). Pooled-only additions: response with exact Clopper-Pearson 95%
intervals and the site-stratified CMH test, T cells from the pooled histograms, forest plots with
labelled intervals, and per-center columns taken only from each site's *published* files
(``results/*.csv``, small cells suppressed), never from the coordinator-only statistics.
Clopper-Pearson comes from scipy's ``binomtest`` (the beta-quantile definition; equal to R
``binom.test`` to 1e-12 on the tested tables), not hand-written. Rendering the demo's four packages
takes about a second, most of it the matplotlib figures (as in the central report).
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import binomtest

from blina_study.analysis import report as central
from blina_study.analysis.published import PUBLISHED
from blina_study.analysis.stats import MedianRange, WilcoxonResult, fisher_exact_2x2, format_p, proportion
from blina_study.analysis.survival import CoxResult, CoxTerm
from blina_study.analysis.tables import (
    DEFAULT_SETTINGS,
    OVERALL,
    PREDICTORS,
    STATUSES,
    AdverseEventsResult,
    BaselineResult,
    CoursesResult,
    CytokineResult,
    FollowUpResult,
    GroupSummary,
    IndicationByStatus,
    NextTherapyResult,
    PairedChange,
    PatientFlow,
    Predictor,
    PredictorsResult,
    ResponseResult,
    SurvivalResult,
    TCellResult,
    follow_up,
    next_therapy_by_referral,
    response,
    survival_by_referral,
)

__all__ = [
    "NOT_POOLED_PREFIXES",
    "PooledScope",
    "aggregate_forest_rows",
    "clopper_pearson",
    "forest_rows",
    "pooled_run_figures",
    "pooled_scope",
    "render_pooled_report",
]

_STATUS4 = (*STATUSES, "unknown")
_ROUTE = {"yes": "burden reduction", "no": "direct", "missing": "?"}
_COX_MODEL = {
    "stratified": "stratified by center (each center its own baseline hazard)",
    "unstratified": "not stratified (one baseline hazard for all centers)",
}


@dataclass(frozen=True)
class PooledScope:
    """The pooled results in the shape of ``blina_study.analysis.tables.SiteResults`` (the attributes the
    central report's sections read). ``cox_model``: the Cox model shown. In ``tcells`` the pooled
    statistics give courses with one value only as a total: it is in ``n_pre_only`` and
    ``n_post_only`` is 0 (the pooled report labels the column "one value only"); ``p_exact`` is
    pool's when it follows the central rule, else None. ``wilcoxon``/``cmh``: the pooled blocks as
    ``pool`` computed them."""

    scope: str
    n_patients: int
    n_courses: int
    flow: PatientFlow
    response: tuple[ResponseResult, ...]
    predictors: tuple[PredictorsResult, ...]
    cox_efs: CoxResult
    cox_model: str
    tcells: TCellResult
    cytokines: CytokineResult
    efs: SurvivalResult | None
    os: SurvivalResult | None
    next_therapy: NextTherapyResult
    wilcoxon: dict[str, dict[str, Any]]
    cmh: dict[str, dict[str, Any]]
    messages: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # Analyses of the central report that the pooled statistics do not carry (empty: the report
    # says "not in the pooled statistics" for their figures); follow-up is filled from the OS counts.
    indication_by_status: IndicationByStatus = field(default_factory=lambda: IndicationByStatus({}, {}, 0))
    courses: CoursesResult = field(default_factory=lambda: CoursesResult((), 0))
    baseline: BaselineResult = field(default_factory=lambda: BaselineResult((), (), 0))
    follow_up: FollowUpResult = field(default_factory=lambda: FollowUpResult((), 0, 0, "log"))
    adverse_events: AdverseEventsResult = field(default_factory=lambda: AdverseEventsResult((), 0, 0))


# Published-vs-this-run keys whose inputs the pooled statistics do not carry.
NOT_POOLED_PREFIXES = ("flow.chemo_delay_by_referral", "courses.per_patient", "baseline.", "ae.", "efs.event_types")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of k/n, as R ``binom.test(k, n)$conf.int``;
    (nan, nan) when n = 0."""
    if n == 0:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


# ---- pooled block -> the central result objects ---------------------------------------------


def _cells(table: Mapping[str, Any]) -> list[list[Any]]:
    return [list(c) for c in table["cells"]]


def _by(table: Mapping[str, Any], dim: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in _cells(table):
        out[c[dim]] = out.get(c[dim], 0) + int(c[-1])
    return out


def _ordered(counts: Mapping[str, int], categories: Sequence[str]) -> dict[str, int]:
    """As ``tables._counts``: the categories (zeros kept), then other values seen, then missing."""
    out = {c: int(counts.get(c, 0)) for c in categories}
    for k, v in counts.items():
        if k not in out and k != "missing" and v:
            out[k] = int(v)
    if counts.get("missing"):
        out["missing"] = int(counts["missing"])
    return out


def _flow(b: Mapping[str, Any]) -> tuple[PatientFlow, list[str]]:
    counts = b["counts"]
    ref_pre = counts["referral_by_course1"]
    notes: list[str] = []
    pathway: dict[str, int] = {}
    for route, pre, n in _cells(counts["rr_burden_by_course1"]):
        if n:
            pathway[f"R/R > {_ROUTE.get(route, route)} > {pre}"] = int(n)
    routes: dict[str, dict[str, int]] = {}
    for ref, route, n in _cells(counts["burden_reduction"]):
        if n:
            routes.setdefault(ref, {})[_ROUTE.get(route, route)] = int(n)
    for ref, pre, n in _cells(ref_pre):
        if ref == "R/R" or not n:
            continue
        r = routes.get(ref, {})
        route = next(iter(r)) if len(r) == 1 else "route not pooled"
        if route == "route not pooled":
            notes.append(f"pathway of {ref} at referral: more than one route, pooled route x "
                         "status counts exist for R/R only")
        key = f"{ref} > {route} > {pre}"
        pathway[key] = pathway.get(key, 0) + int(n)
    flow = PatientFlow(
        n=int(b["n_patients"]),
        n_courses=int(b["n_courses"]),
        indication=_ordered(_by(counts["indication"], 0), ("R/R", "CR-MRDpos", "chemo_delay")),
        status_at_referral=_ordered(_by(ref_pre, 0), _STATUS4),
        status_before_course_1=_ordered(_by(ref_pre, 1), _STATUS4),
        courses_by_pre_status=_ordered(_by(counts["response/all"], 0), _STATUS4),
        pathway=dict(sorted(pathway.items())),
        method="counts of patients from the centers' pooled count tables (courses for courses by pre-status)",
    )
    return flow, sorted(set(notes))


def _response(b: Mapping[str, Any], scope: str) -> ResponseResult:
    """``tables.response`` on course rows rebuilt from the pooled pre-status x outcome counts."""
    value = {"response": True, "no_response": False, "not_evaluable": None}
    rows = []
    for pre, outcome, n in _cells(b["counts"][f"response/{scope}"]):
        v = value[outcome]
        rows += [{"course_number": 1 if scope == "course1" else 0, "pre_status": pre,
                  "cr": None if pre == "CR-MRDneg" else v,
                  "mrd_maintained": v if pre == "CR-MRDneg" else None}] * int(n)  # fmt: skip
    frame = pd.DataFrame(rows, columns=["course_number", "pre_status", "cr", "mrd_maintained"])
    frame = frame.astype({"cr": "boolean", "mrd_maintained": "boolean", "pre_status": "object"})
    return response(frame, first_course_only=scope == "course1")


def _predictors(b: Mapping[str, Any], scope: str, resp: ResponseResult, age_cut: float) -> PredictorsResult:
    out = []
    for name in PREDICTORS:
        t = b["predictors"].get(f"{scope}/{name}")
        if t is None:
            continue
        (a, bb), (c, d) = t["table"]
        labels = {"age_group": (f">= {age_cut:g} y", f"< {age_cut:g} y"), "sex": ("M", "F")}
        lab_e, lab_r = labels.get(name, ("yes", "no"))
        out.append(Predictor(
            variable=name, exposed_label=lab_e, reference_label=lab_r,
            exposed=proportion(a, a + bb), reference=proportion(c, c + d),
            n_missing=int(t.get("n_missing", 0)), test=fisher_exact_2x2(a, bb, c, d), n=a + bb + c + d,
        ))  # fmt: skip
    rr, pos = resp.rates[0].rate, resp.rates[1].rate
    return PredictorsResult(
        courses=resp.courses, predictors=tuple(out), n=rr.n + pos.n,
        n_poor=(rr.n - rr.k) + (pos.n - pos.k),
        method="poor response = no CR among evaluable R/R and CR-MRDpos courses; Fisher's exact test on "
        "the summed 2x2 tables of the centers",
    )  # fmt: skip


def _cox(b: Mapping[str, Any]) -> tuple[CoxResult, str, list[str]]:
    cx = (b.get("cox") or {}).get("efs")
    if not cx:
        return (CoxResult((), (), 0, 0, 0, math.nan, False, "Cox PH: not in the pooled results"),
                "none", ["no pooled Cox model"])  # fmt: skip
    model = _cox_model(cx)
    dropped = tuple((str(c), str(why)) for c, why in (cx.get("dropped") or []))
    gone = {c for c, _ in dropped}
    ok = bool(cx.get("converged")) and all(
        v is not None for c, v in zip(cx["covariates"], cx.get("coef") or [None], strict=False) if c not in gone
    )
    terms = []
    if ok:
        for i, name in enumerate(cx["covariates"]):
            if name in gone or cx["coef"][i] is None:
                continue
            terms.append(CoxTerm(name, cx["coef"][i], _nan(cx["se"][i]), _nan(cx["hr"][i]),
                                 _nan(cx["ci_lower"][i]), _nan(cx["ci_upper"][i]), _nan(cx["z"][i]),
                                 _nan(cx["p"][i]), math.nan, math.nan))  # fmt: skip
    msgs = [cx["warning"]] if cx.get("warning") else []
    msgs.append("PH check not available from pooled statistics (it needs Schoenfeld residuals)")
    method = (f"Cox proportional hazards {_COX_MODEL[model]}, Efron ties, fitted at the coordinator from "
              f"the centers' exact pooling statistics (n strata = {cx.get('n_strata', 1)}); Wald 95% CI and P")
    return (CoxResult(tuple(terms), dropped, int(cx["n"]), int(cx["n_events"]),
                      int(cx.get("n_excluded_missing", 0)), _nan(cx.get("loglik")), ok, method, tuple(msgs)),
            model, msgs)  # fmt: skip


def _cox_model(cx: Mapping[str, Any]) -> str:
    """"stratified" or "unstratified": from ``strata`` ("site"/"none") when pool states it, else
    from the ``model`` text, else from the number of strata."""
    strata = cx.get("strata")
    if strata in ("site", "none"):
        return "stratified" if strata == "site" else "unstratified"
    text = str(cx.get("model") or "")
    if "unstratified" in text or "not stratified" in text:
        return "unstratified"
    if "stratified" in text:
        return "stratified"
    return "stratified" if int(cx.get("n_strata", 1)) > 1 else "unstratified"


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def _survival_frame(block: Mapping[str, Any], groups: Sequence[str], tcol: str, ecol: str) -> pd.DataFrame:
    """(status_at_referral, day, event) rows with the pooled per-day counts of each group, and the
    patients of no group (status unknown or missing) as "unknown" rows with the per-day counts of
    ``all`` minus the groups' (so the rows are the pooled patients' multiset of (day, event))."""
    rows: dict[tuple[str, float, bool], int] = {}

    def add(label: str, km: Mapping[str, Any], sign: int) -> None:
        for t, d, c in zip(km["time"], km["events"], km["censored"], strict=True):
            for flag, k in ((True, d), (False, c)):
                rows[(label, float(t), flag)] = rows.get((label, float(t), flag), 0) + sign * int(k)
                if label != "unknown":
                    rows[("unknown", float(t), flag)] = rows.get(("unknown", float(t), flag), 0) - sign * int(k)

    for g in groups:
        if block["groups"].get(g):
            add(g, block["groups"][g], 1)
    for t, d, c in zip(block["all"]["time"], block["all"]["events"], block["all"]["censored"], strict=True):
        for flag, k in ((True, d), (False, c)):
            rows[("unknown", float(t), flag)] = rows.get(("unknown", float(t), flag), 0) + int(k)
    if any(k < 0 for k in rows.values()):
        raise ValueError("pooled survival counts: a group has more patients on a day than 'all'")
    keys = [k for k, n in rows.items() for _ in range(n)]
    frame = pd.DataFrame(keys, columns=["status_at_referral", tcol, ecol])
    return frame.astype({ecol: "boolean", "status_at_referral": "object", tcol: float})


def _survival(b: Mapping[str, Any], ep: str, groups: Sequence[str], landmark: float) -> SurvivalResult | None:
    frame = _survival_rows(b, ep, groups)
    if frame is None:
        return None
    return survival_by_referral(frame, ep.upper(), landmark_days=landmark,
                                risk_times_days=DEFAULT_SETTINGS["risk_times_days"], conf_type="log")  # fmt: skip


def _survival_rows(b: Mapping[str, Any], ep: str, groups: Sequence[str]) -> pd.DataFrame | None:
    block = (b.get("survival") or {}).get(ep)
    if not block or not block.get("all") or "time" not in block["all"]:
        return None
    return _survival_frame(block, groups, f"{ep}_days", f"{ep}_event")


def _next_therapy(b: Mapping[str, Any]) -> NextTherapyResult:
    rows = []
    for ref, nt, n in _cells(b["counts"]["next_therapy"]):
        rows += [{"status_at_referral": ref, "next_therapy": None if nt == "missing" else nt}] * int(n)
    return next_therapy_by_referral(pd.DataFrame(rows, columns=["status_at_referral", "next_therapy"]))


_CYTOKINE_GROUPS = (("all_courses", OVERALL), ("responder", "CR"), ("poor_responder", "no CR"),
                    ("mrdneg_maintained", "MRD-neg maintained"), ("mrdneg_lost", "MRD-neg lost"))


def _cytokines(b: Mapping[str, Any]) -> CytokineResult:
    """The central ``tables.cytokine_peaks`` groups that the pooled value histograms carry (all
    courses with a value, CR / no CR, MRD-negativity maintained / lost; older packages: CR / no CR)."""
    pooled = b.get("cytokines") or {}
    rows = []
    for cyt in ("il6", "il10", "ifng", "tnfa"):
        for key, label in _CYTOKINE_GROUPS:
            m = pooled.get(f"all/{cyt}/{key}")
            if m is not None:
                rows.append(GroupSummary(f"{cyt}_peak", label, _median_range(m)))
    resp = _response(b, "all")
    return CytokineResult(tuple(rows), resp.n, method="median (range) of the peak per course from the pooled "
                          "value histograms: all courses with a value, and by response group")  # fmt: skip


def _tcells(b: Mapping[str, Any]) -> TCellResult:
    out = []
    for m, w in (b.get("wilcoxon") or {}).items():
        n_used, n_zero = int(w.get("n") or 0), int(w.get("n_zero") or 0)
        p = _nan(w.get("p"))
        # p_exact follows the central rule (no ties or zeros, n <= 49) only where pool says so by
        # also giving "p_exact_conditional"; an older block's p_exact is the conditional one.
        p_exact = w.get("p_exact") if "p_exact_conditional" in w else None
        test = WilcoxonResult(
            n=n_used + n_zero, n_zero=n_zero, n_used=n_used, statistic=_nan(w.get("w_plus")),
            z=_nan(w.get("z")), p_normal=p, p_exact=p_exact, p_value=p, has_ties=False,
            method="Wilcoxon signed-rank test on the pooled paired differences (after - before, reporting "
            "precision), normal approximation without continuity correction, tie-corrected variance, zeros dropped",
        )  # fmt: skip
        out.append(PairedChange(
            marker=m.upper(), unit="10^9/L", pre=_median_range(w.get("pre") or {}),
            post=_median_range(w.get("post") or {}), test=test,
            n_pre_only=int(w.get("n_incomplete") or 0), n_post_only=0, n=n_used + n_zero,
        ))  # fmt: skip
    return TCellResult(tuple(out), _course1_n(b))


def _course1_n(b: Mapping[str, Any]) -> int:
    return sum(int(c[-1]) for c in _cells(b["counts"]["response/course1"]))


def _median_range(m: Mapping[str, Any]) -> MedianRange:
    if not m.get("n"):
        return MedianRange(0, math.nan, math.nan, math.nan)
    return MedianRange(int(m["n"]), float(m["median"]), float(m["min"]), float(m["max"]))


def pooled_scope(results: Mapping[str, Any], *, scope: str = "pooled") -> PooledScope:
    """The pooled block of ``results`` (``pool_site_statistics`` output) as central result objects."""
    b = results["pooled"]
    params = results.get("parameters") or {}
    age_cut = float(params.get("age_group_cut_years", 10.0))
    landmark = float((params.get("landmark_days") or [365])[0])
    groups = tuple(params.get("km_groups") or ("CR-MRDneg", "CR-MRDpos", "R/R"))
    msgs: list[tuple[str, str]] = []
    flow, flow_notes = _flow(b)
    msgs += [("flow", m) for m in flow_notes]
    resp = tuple(_response(b, s) for s in ("course1", "all"))
    preds = tuple(_predictors(b, s, r, age_cut) for s, r in zip(("course1", "all"), resp, strict=True))
    cox, model, cox_msgs = _cox(b)
    msgs += [("cox_efs", m) for m in cox_msgs]
    efs, os_ = (_survival(b, ep, groups, landmark) for ep in ("efs", "os"))
    os_rows = _survival_rows(b, "os", groups)
    fu = follow_up(os_rows, conf_type="log") if os_rows is not None else FollowUpResult((), 0, 0, "log")
    for ep, sv in (("EFS", efs), ("OS", os_)):
        if sv is None:
            msgs.append((ep, "no per-day counts in the pooled statistics (sharing level without event "
                             "times): Kaplan-Meier curves and at-risk tables not available"))
    for r in resp:
        for rate in r.rates:
            if rate.n_not_evaluable:
                msgs.append(("response", f"{r.courses}: {rate.n_not_evaluable} {rate.group} course(s) "
                             "without an assessment left out of the denominator"))  # fmt: skip
    return PooledScope(
        scope=scope, n_patients=int(b["n_patients"]), n_courses=int(b["n_courses"]), flow=flow,
        response=resp, predictors=preds, cox_efs=cox, cox_model=model,
        tcells=_tcells(b), cytokines=_cytokines(b), efs=efs, os=os_,
        next_therapy=_next_therapy(b), wilcoxon=dict(b.get("wilcoxon") or {}),
        cmh={s: (b["response"].get(s) or {}).get("cmh") or {} for s in ("course1", "all")},
        messages=tuple(msgs), follow_up=fu,
    )  # fmt: skip


# ---- published per-center values -----------------------------------------------------------


def _published_values(pooled: Any) -> dict[str, dict[tuple[str, str, str], str]]:
    """Per site: (analysis, term, statistic) -> value text or "suppressed", from estimates.csv."""
    out: dict[str, dict[tuple[str, str, str], str]] = {}
    for site, files in (getattr(pooled, "published", None) or {}).items():
        vals: dict[tuple[str, str, str], str] = {}
        for row in csv.DictReader(io.StringIO(files.get("estimates") or "")):
            key = (row.get("analysis", ""), row.get("term", ""), row.get("statistic", ""))
            vals[key] = "suppressed" if row.get("suppressed") == "yes" else row.get("value", "")
        out[site] = vals
    return out


def _published_counts(pooled: Any) -> dict[str, dict[tuple[str, str], str]]:
    """Per site: (table, cell) -> count text or "suppressed", from count_tables.csv."""
    out: dict[str, dict[tuple[str, str], str]] = {}
    for site, files in (getattr(pooled, "published", None) or {}).items():
        vals: dict[tuple[str, str], str] = {}
        for row in csv.DictReader(io.StringIO(files.get("count_tables") or "")):
            vals[(row.get("table", ""), row.get("cell", ""))] = (
                "suppressed" if row.get("suppressed") == "yes" else row.get("n", ""))
        out[site] = vals
    return out


def _fnum(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "suppressed") else None
    except ValueError:
        return None


def _pub_cell(v: str | None, fmt: str = "{:.3f}") -> str:
    if v is None or v == "":
        return "-"
    if v == "suppressed":
        return "suppressed"
    x = _fnum(v)
    return v if x is None else (str(int(x)) if fmt == "int" else fmt.format(x))


# ---- sections -------------------------------------------------------------------------------


def _ci_text(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return "-" if n == 0 else f"{100 * lo:.1f}-{100 * hi:.1f}%"


def _response_section(sc: PooledScope, counts: Mapping[str, Mapping[tuple[str, str], str]]) -> str:
    sites = list(counts)
    out = ""
    for r, key in zip(sc.response, ("course1", "all"), strict=True):
        rows = []
        for rate in r.rates:
            per_site = []
            for s in sites:
                c = counts[s]
                k = c.get((f"counts/response/{key}", f"{rate.group}|response"))
                no = c.get((f"counts/response/{key}", f"{rate.group}|no_response"))
                if k is None or no is None:
                    per_site.append("-")
                elif "suppressed" in (k, no):
                    per_site.append("suppressed")
                else:
                    per_site.append(f"{k}/{int(k) + int(no)}")
            rows.append([rate.group, rate.endpoint, rate.rate.format(), _ci_text(rate.rate.k, rate.rate.n),
                         rate.n_not_evaluable, *per_site])  # fmt: skip
        cmh = sc.cmh.get(key) or {}
        tests = f"Fisher's exact {format_p(r.comparison.p_value)} (n = {r.comparison.n})"
        if cmh:
            tests += (f"; Cochran-Mantel-Haenszel stratified by center {format_p(cmh.get('p'))}, "
                      f"exact {format_p(cmh.get('p_exact'))}")  # fmt: skip
        out += central._table(
            ["Pre-course status", "Endpoint", "Pooled % (k/n)", "95% CI (Clopper-Pearson)",
             "Not evaluable", *sites],
            rows,
            caption=f"Table 2{'ab'[key == 'all']}. Response by status before the course, {r.courses} "
            f"(pooled n = {r.n} evaluable courses); CR R/R vs CR-MRDpos: {tests}",
            note="Method: proportions of evaluable courses (as the central report); 95% confidence intervals "
            "are exact Clopper-Pearson intervals (R binom.test). Fisher's exact test on the pooled 2x2 table; "
            "Cochran-Mantel-Haenszel test stratified by center (asymptotic without continuity correction, and "
            "exact conditional). Center columns: k/n from the center's published count table; 'suppressed' = a "
            "cell below the center's minimum cell count, or hidden so that such a cell cannot be derived.",
            cls="num", text_cols=2,
        )  # fmt: skip
    return out + central._notes(sc, "response")  # type: ignore[arg-type]


def _tcell_section(sc: PooledScope, est: Mapping[str, Mapping[tuple[str, str, str], str]]) -> str:
    sites = list(est)
    rows = []
    for mk in sc.tcells.markers:
        m, t = mk.marker.lower(), mk.test
        per_site = [_pub_cell(est[s].get((f"wilcoxon/{m}", "", "p"))) for s in sites]
        rows.append([f"{mk.marker}+", mk.n, mk.pre.format(), mk.post.format(), central._num(t.statistic, 1),
                     central._p_only(t.p_normal), "-" if t.p_exact is None else central._p_only(t.p_exact),
                     t.n_zero, mk.n_pre_only, *per_site])  # fmt: skip
    out = central._table(
        ["Subset", "n pairs", "Before: median (range) ×10⁹/L", "After: median (range) ×10⁹/L", "V (W+)",
         "P (normal approx.)", "P (exact)", "zero diff.", "one value only", *[f"{s}: P (published)" for s in sites]],
        rows,
        caption="Table 5. T-cell subsets before and after course 1, pooled",
        note="Method: Wilcoxon signed-rank test, after vs before, normal approximation without continuity "
        "correction, tie-corrected variance, zero differences dropped, on the pooled multiset of paired "
        "differences at the reporting precision; medians (ranges) of the same pairs from the pooled value "
        "histograms. Exact P as in the central report (no ties or zero differences, n ≤ 49), where the pooled "
        "statistics give it.",
        cls="num",
    )  # fmt: skip
    cyt = sc.cytokines
    groups = list(dict.fromkeys(g.group for g in cyt.rows))
    by: dict[str, dict[str, str]] = {}
    for g in cyt.rows:
        text = "-" if g.summary.n == 0 else f"{g.summary.format(1)}; n = {g.summary.n}"
        by.setdefault(g.variable, {})[g.group] = text
    out += central._table(
        ["Cytokine peak (pg/mL)", *groups],
        [[central._CYTOKINE_LABEL.get(v, v), *[d.get(g, "-") for g in groups]] for v, d in by.items()],
        caption=f"Table 6. Cytokine peaks, all courses and by response (n = {cyt.n} courses with a response "
        "group)",
        note=f"Method: {cyt.method}. CR / no CR: pre-status R/R or CR-MRDpos; MRD-neg maintained / lost: "
        "pre-status CR-MRDneg. Descriptive only (no test).", cls="num",
    )  # fmt: skip
    return out


def _forest_png(rows: Sequence[tuple[str, float | None, float | None, float | None, str]], title: str) -> bytes:
    """Rows (label, S, lower, upper, text) top to bottom; the axis runs from -2 % to 112 % so an
    interval ending at 0 or 100 % and a point at 100 % are drawn whole, each labelled."""
    height = 0.42 * len(rows) + 1.0
    fig = Figure(figsize=(9.0, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.21, 0.6 / height, 0.45, 1 - 1.0 / height))
    for i, (label, s, lo, hi, text) in enumerate(rows):
        y = len(rows) - 1 - i
        bold = label.endswith("Pooled")
        color = "#1f4e8c" if bold else "#555555"
        if s is not None and not math.isnan(s):
            if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
                ax.plot([100 * lo, 100 * hi], [y, y], color=color, lw=2.4 if bold else 1.5, solid_capstyle="butt")
                ax.plot([100 * lo, 100 * lo], [y - 0.15, y + 0.15], color=color, lw=1.2)
                ax.plot([100 * hi, 100 * hi], [y - 0.15, y + 0.15], color=color, lw=1.2)
            ax.plot([100 * s], [y], marker="D" if bold else "s", color=color, ms=7 if bold else 5.5, clip_on=False)
        ax.text(1.02, y, text, transform=ax.get_yaxis_transform(), fontsize=8, va="center",
                weight="bold" if bold else "normal")  # fmt: skip
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in reversed(rows)], fontsize=8.5)
    ax.set_xlim(-2, 112)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xticklabels([f"{t}%" for t in range(0, 101, 20)])
    ax.axvline(100, color="#bbbbbb", lw=0.8, ls=":")
    ax.grid(axis="x", color="#eeeeee")
    ax.set_title(title, fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    buf = io.BytesIO()
    # tight: the right-hand texts ("not estimable (no center published an estimate)") were cut at the edge
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def _log_ci(s: float, se: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """R survfit's default (conf.type "log") 95% limits from S and its Greenwood SE: exp(log S -+ z
    SE/S), upper capped at 1; (1, 1) at S = 1 with SE 0; NaN at S = 0."""
    if s <= 0:
        return math.nan, math.nan
    if se == 0:
        return s, s
    return math.exp(math.log(s) - z * se / s), min(1.0, math.exp(math.log(s) + z * se / s))


def _center_rows(
    est: Mapping[str, Mapping[tuple[str, str, str], str]], ep: str, group: str, day: int
) -> list[tuple[str, float | None, float | None, float | None, str]]:
    """Each center's published landmark estimate with R's log interval (or why not shown)."""
    rows: list[tuple[str, float | None, float | None, float | None, str]] = []
    for site, vals in est.items():
        s = vals.get((f"km/{ep}/{group}", f"day{day}", "survival"))
        se = vals.get((f"km/{ep}/{group}", f"day{day}", "se"))
        n = vals.get((f"km/{ep}/{group}", "", "n"))
        fs, fse = _fnum(s), _fnum(se)
        if fs is None or fse is None:
            why = "suppressed" if "suppressed" in (s, se) else "not estimable"
            rows.append((site, None, None, None, f"{why} (n {_pub_cell(n, 'int')})"))
            continue
        lo, hi = _log_ci(fs, fse)
        rows.append((site, fs, lo, hi, _interval_text(fs, lo, hi, n)))
    return rows


def forest_rows(
    sc: PooledScope, est: Mapping[str, Mapping[tuple[str, str, str], str]], ep: str, group: str
) -> list[tuple[str, float | None, float | None, float | None, str]]:
    """One forest plot's rows: each center's published landmark estimate (or why not shown), then
    the pooled Kaplan-Meier estimate with its 95% limits."""
    sv = sc.efs if ep == "efs" else sc.os
    day = int(sv.landmark_days) if sv else 365
    rows = _center_rows(est, ep, group, day)
    g = next((x for x in sv.groups if x.group == group), None) if sv else None
    if g is None:
        rows.append(("Pooled", None, None, None, "no patients"))
    else:
        rows.append(("Pooled", g.surv, g.ci_low, g.ci_high, _interval_text(g.surv, g.ci_low, g.ci_high, str(g.km.n))))
    return rows


def _interval_text(s: float, lo: float | None, hi: float | None, n: str | None) -> str:
    if s is None or math.isnan(s):
        return "not estimable"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        ci = "no interval"
    elif lo == hi == s:
        ci = "no event: no interval"
    else:
        ci = f"{100 * lo:.1f}-{100 * hi:.1f}%"
    return f"{100 * s:.1f}% ({ci}); n {_pub_cell(n, 'int')}"


def _forest_section(sc: PooledScope, est: Mapping[str, Mapping[tuple[str, str, str], str]]) -> str:
    out = ""
    for ep, sv in (("efs", sc.efs), ("os", sc.os)):
        if sv is None:
            continue
        rows = [(f"{g.group}: {label}", *rest) for g in sv.groups
                for label, *rest in forest_rows(sc, est, ep, g.group)]  # fmt: skip
        png = _forest_png(rows, f"{ep.upper()} at day {sv.landmark_days:g} by status at referral")
        out += (f"<figure>{central._img(png, f'forest plot {ep}')}<figcaption>Figure. {_e(ep.upper())} at day "
                f"{sv.landmark_days:g} by status at referral: each center's published Kaplan-Meier estimate and "
                "the pooled one (bold), with 95% confidence limits (log transform, R survfit's default; the upper "
                "limit is capped at 100% by that definition, not by the plot). Centers whose estimate is "
                "suppressed or not estimable are listed without a point.</figcaption></figure>")  # fmt: skip
    return out or "<p>No per-day survival counts in the pooled statistics: no forest plots.</p>"


def _per_center_section(
    covariates: Sequence[str], markers: Sequence[str], est: Mapping[str, Mapping[tuple[str, str, str], str]],
    *, exact: bool = True,
) -> str:
    sites = list(est)
    if not sites:
        return "<p>No published center files in the pooled results.</p>"
    items: list[tuple[str, str, str, str, str]] = []  # label, analysis, term, statistic, format
    for ep in ("efs", "os"):
        for g in ("CR-MRDneg", "CR-MRDpos", "R/R"):
            items.append((f"{ep.upper()} {g}: n", f"km/{ep}/{g}", "", "n", "int"))
            items.append((f"{ep.upper()} {g}: events", f"km/{ep}/{g}", "", "n_events", "int"))
            items.append((f"{ep.upper()} {g}: survival at day 365", f"km/{ep}/{g}", "day365", "survival", "{:.3f}"))
        items.append((f"{ep.upper()} log-rank P", f"logrank/{ep}", "", "p", "{:.4f}"))
    items += [("CR R/R vs CR-MRDpos, Fisher P (course 1)", "response/course1", "", "fisher_p", "{:.4f}")]
    for name in PREDICTORS:
        items.append((f"Predictor {name}: Fisher P (course 1)", f"predictors/course1/{name}", "", "fisher_p", "{:.4f}"))
    for cov in covariates:
        items.append((f"Cox {cov}: HR (center alone)", "cox/efs", cov, "hr", "{:.2f}"))
    for m in markers:
        items.append((f"{m.upper()} Wilcoxon P", f"wilcoxon/{m}", "", "p", "{:.4f}"))
    rows = [[label, *[_pub_cell(est[s].get((a, t, st)), f) for s in sites]] for label, a, t, st, f in items]
    return central._table(
        ["Figure", *sites], rows,
        caption=f"Table 10. Per-center values as each center published them ({len(sites)} centers)",
        note="Only the centers' publishable files (results/estimates.csv) are shown here, with their small-cell "
        "suppression: a count below the minimum cell, a value that would give such a count back, and tests on "
        "suppressed counts read 'suppressed'. "
        + ("The coordinator-only statistics are used for the pooled values only. " if exact else
           "The pooled values are meta-analyses and stratified tests of these published values. ")
        + "Center Cox models are each center's own fit (one stratum).",
        cls="num wide",
    )  # fmt: skip


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


_TABLE_CHUNK = re.compile(r'<div class="tw">.*?</div>(?:<p class="note">.*?</p>)?', re.S)


def _without_tables(fragment: str, numbers: Sequence[str], why: str) -> str:
    """A central section's HTML without its tables ``numbers`` (e.g. "1d"), which the pooled
    statistics cannot fill; one sentence says which and why."""
    dropped = []

    def drop(m: re.Match[str]) -> str:
        cap = re.search(r"<caption>Table (\w+)\.", m.group(0))
        if cap and cap.group(1) in numbers:
            dropped.append(cap.group(1))
            return ""
        return m.group(0)

    out = _TABLE_CHUNK.sub(drop, fragment)
    if dropped:
        label = "Table" if len(dropped) == 1 else "Tables"
        out += f'<p class="note">{label} {", ".join(dropped)} of the central report not shown: {_e(why)}.</p>'
    return out


def pooled_run_figures(sc: PooledScope) -> dict[str, Any]:
    """``report.run_figures`` of the pooled scope, with the figures the pooled statistics cannot give
    (``NOT_POOLED_PREFIXES``) left out."""
    run = central.run_figures(sc)  # type: ignore[arg-type]
    return {k: v for k, v in run.items() if not k.startswith(NOT_POOLED_PREFIXES)}


def _published_section(sc: PooledScope, *, synthetic: bool = False) -> str:
    run = pooled_run_figures(sc)
    rows, n_agree = [], 0
    n_pub = sum(p.published for p in PUBLISHED)
    for pub in PUBLISHED:
        r = run.get(pub.key)
        if r is None:  # run_figures gives every key the centers' statistics carry
            rows.append([_e(pub.label), _e(pub.text), "not in the pooled statistics", "-", "-", ""])
            continue
        agree, mark = central._agreement(pub, r)
        n_agree += agree
        rows.append([_e(pub.label), _e(pub.text), _e(r.text if r else "not computed"),
                     _e("-" if r is None or r.n is None else r.n), mark, _e(r.method if r else "")])  # fmt: skip
    return central._table(
        ["Figure", "Published", "This run (pooled)", "n (this run)", "Agreement", "Method (this run)"], rows,
        caption=f"Table 9. Published figures (protocol sections 1 and 6) vs this run, pooled (n = {sc.n_patients} "
        f"patients, {sc.n_courses} courses): {n_agree} of {n_pub} published figures reproduced as printed"
        f"{central._SYNTHETIC_AGREEMENT if synthetic else ''}",
        note="As in the central report (same figures, same formatting, same agreement rule). \"Not in the pooled "
        "statistics\": an analysis the centers' packages do not carry (baseline, adverse events, "
        "courses per patient, indication by status, EFS events by type). The Cox P values are those of the "
        "model named in section 4.",
        cls="cmp", raw=True,
    )  # fmt: skip


def _synthetic_sites(pooled: Any) -> list[str]:
    """The sites whose package manifest says its data are synthetic."""
    return sorted(s for s, m in (getattr(pooled, "manifests", None) or {}).items() if m.get("synthetic_data") is True)


def _document(pooled: Any, generated: str, level: str, sub: str,
              sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    synthetic = _synthetic_sites(pooled)
    params = ", ".join(f"{k} = {v}" for k, v in sorted((pooled.parameters or {}).items()))
    stamp = [
        ("Centers", ", ".join(pooled.sites)),
        ("Sharing level", level),
        ("Package version", pooled.package_version),
        ("Study definition", pooled.study_definition_hash),
        ("Generated", generated),
        ("Study parameters", params or "not recorded"),
    ]
    toc = "".join(f'<div><a href="#{sid}">{_e(title)}</a></div>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>' for sid, title, content in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>blina-study pooled report</title>"
        f"<style>{central._CSS}</style></head><body><main>"
        f"<h1>{'SYNTHETIC DATA: ' if synthetic else ''}Blinatumomab in pediatric B-ALL: pooled results of the "
        "centers</h1>"
        + (f'<p class="synthetic">SYNTHETIC DATA: the packages of {_e(", ".join(synthetic))} were built from '
           "generated patients, not real ones (their manifests say so). Agreement with the published figures "
           "shows that the pipeline runs, not that the study is replicated.</p>" if synthetic else "")
        + f'<p class="sub">{sub}</p>'
        '<div class="stamp">' + "".join(f"<b>{_e(k)}</b><span>{_e(v)}</span>" for k, v in stamp) + "</div>"
        f'<nav class="toc">{toc}</nav>{body}<p class="note">{footer}</p></main></body></html>\n'
    )


def render_pooled_report(pooled: Any, out_path: str | Path, *, generated: str | None = None) -> Path:
    """Write the pooled report for ``pooled`` (a ``PooledResults``, either sharing level) and
    return its path."""
    out_path = Path(out_path)
    generated = generated or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if pooled.results.get("sharing_level") == "aggregate":
        doc = _aggregate_document(pooled, generated)
    else:
        doc = _exact_document(pooled, generated)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(doc, encoding="utf-8")
    return out_path


def _exact_document(pooled: Any, generated: str) -> str:
    sc = pooled_scope(pooled.results)
    est = _published_values(pooled)
    counts = _published_counts(pooled)
    if sc.efs is not None and sc.os is not None:
        surv = central._survival(sc)  # type: ignore[arg-type]
    else:
        surv = "<p>Kaplan-Meier curves need per-day counts, which this pooling did not receive.</p>"
    sections = [
        ("flow", "1. Patient flow", _without_tables(
            central._flow(sc), ("1d", "1e", "1f"),  # type: ignore[arg-type]
            "indication by status, courses per patient and baseline characteristics are not in the centers' "
            "pooling statistics")),
        ("response", "2. Response", _response_section(sc, counts)),
        ("predictors", "3. Univariate predictors of poor response",
         central._predictors(sc)),  # type: ignore[arg-type]
        ("cox", f"4. Cox model for event-free survival ({_COX_MODEL.get(sc.cox_model, sc.cox_model)})",
         central._cox(sc)),  # type: ignore[arg-type]
        ("tcells", "5. T-cell subsets and cytokines", _tcell_section(sc, est)),
        ("survival", "6. Kaplan-Meier survival by status at referral", surv),
        ("forest", "7. One-year survival per center and pooled", _forest_section(sc, est)),
        ("next", "8. Next therapy", central._next_therapy(sc)),  # type: ignore[arg-type]
        ("published", "9. Published vs this run (pooled)",
         _published_section(sc, synthetic=bool(_synthetic_sites(pooled))) if sc.efs is not None and sc.os is not None
         else "<p>Not available without the pooled survival counts.</p>"),
        ("centers", "10. Per-center published values",
         _per_center_section([t.covariate for t in sc.cox_efs.terms], list(sc.wilcoxon), est)),
    ]
    n_agree = 0
    if sc.efs is not None and sc.os is not None:
        run = pooled_run_figures(sc)
        n_agree = sum(central._agreement(p, run.get(p.key))[0] for p in PUBLISHED)
    sub = (f"{sc.n_patients} patients, {sc.n_courses} courses, {len(pooled.sites)} centers; {n_agree} of "
           f"{sum(p.published for p in PUBLISHED)} published figures reproduced as printed (section 9)"
           f"{', from SYNTHETIC data' if _synthetic_sites(pooled) else ''}. Pooled from the centers' packages; no "
           "patient record left a center.")  # fmt: skip
    footer = ("Pooled values are computed from the centers' coordinator-only pooling statistics and equal the "
              "analysis of the concatenated patients where the method says so; per-center values are only those "
              "the centers published.")  # fmt: skip
    return _document(pooled, generated, "exact", sub, sections, footer)


# ---- aggregate sharing level -----------------------------------------------------------------


def _meta_cells(m: Mapping[str, Any] | None, digits: int = 2, pct: bool = False) -> tuple[str, str, str]:
    """(estimate, 95% CI, P) of a fixed- or random-effect summary (``meta.inverse_variance``)."""
    if not m or m.get("value") is None:
        return "not estimable", "-", "-"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.{digits}f}")
    lo, hi = m.get("value_ci_lower"), m.get("value_ci_upper")
    ci = "-" if lo is None or hi is None else f"{f(lo)}-{f(hi)}"
    return f(m["value"]), ci, central._p_only(m.get("p"))


def _used(block: Mapping[str, Any], key: str = "sites") -> str:
    used = block.get(key) or []
    return f"{len(used)} of {block.get('k_total', '?')}" + (f" ({', '.join(used)})" if used else "")


# What a reader sees for the package's count tables and their codes (analysis/federated/sufficient.py
# names them for machines).
_COUNT_TABLE_TITLES = {
    "indication": "Indication for blinatumomab",
    "referral_by_course1": "Status at referral by status before the first course",
    "burden_reduction": "Burden-reduction chemotherapy by status at referral",
    "pathway": "Pathway from referral to the first course",
    "rr_burden_by_course1": "R/R at referral: burden reduction by status before the first course",
    "next_therapy": "Next therapy by status at referral",
    "response/course1": "Response of the first course by status before it",
    "response/all": "Response of every course by status before it",
}
_COUNT_LABELS = {
    "chemo_delay": "chemotherapy delay", "not_evaluable": "not evaluable", "no_response": "no response",
    "status_at_referral": "status at referral", "pre_status_course1": "status before course 1",
    "pre_status": "status before the course", "burden_reduction": "burden reduction",
    "next_therapy": "next therapy",
}


def _label(code: object) -> str:
    return _COUNT_LABELS.get(str(code), str(code))


def _aggregate_flow(b: Mapping[str, Any]) -> str:
    out = ""
    for name, t in (b.get("counts") or {}).items():
        lb = t.get("lower_bounds") or {}
        rows = []
        for *labels, n in t["cells"]:
            key = "|".join(str(x) for x in labels)
            if n is None:
                low = lb.get(key, lb.get(labels[0]) if len(labels) == 1 else None)
                text = "suppressed at a center" + ("" if low is None else f"; at least {low}")
            else:
                text = str(n)
            rows.append([" / ".join(_label(x) for x in labels), text])
        dims = " × ".join(_label(d) for d in t.get("dims", []))
        out += central._table([dims, "Sum of the centers' published counts"], rows,
                              caption=_COUNT_TABLE_TITLES.get(name, f"Count table {name}"), note=t.get("method"),
                              cls="num")  # fmt: skip
    return out or "<p>No count tables.</p>"


def aggregate_forest_rows(
    block: Mapping[str, Any], est: Mapping[str, Mapping[tuple[str, str, str], str]], ep: str
) -> list[tuple[str, float | None, float | None, float | None, str]]:
    """Aggregate level, one endpoint: per group, each center's published landmark estimate, then the
    fixed-effect meta-analysis (``"<group>: Pooled"``) with its back-transformed 95% limits."""
    rows: list[tuple[str, float | None, float | None, float | None, str]] = []
    for g, m in (block.get("landmark") or {}).items():
        day = int(m.get("day") or 365)
        rows += [(f"{g}: {label}", *rest) for label, *rest in _center_rows(est, ep, g, day)]
        fe = m.get("fixed") or {}
        s, lo, hi = fe.get("value"), fe.get("value_ci_lower"), fe.get("value_ci_upper")
        ci = "no interval" if lo is None or hi is None else f"{100 * lo:.1f}-{100 * hi:.1f}%"
        rows.append((f"{g}: Pooled", s, lo, hi, "not estimable (no center published an estimate)" if s is None
                     else f"{100 * s:.1f}% ({ci}); FE, {m.get('k', 0)}/{m.get('k_total')} centers"))  # fmt: skip
    return rows


def _aggregate_document(pooled: Any, generated: str) -> str:
    b = pooled.results["pooled"]
    est = _published_values(pooled)
    resp_rows = []
    for section in ("response", "predictors"):
        for name, t in (b.get(section) or {}).items():
            cmh = t.get("cmh") or {}
            ci = "-" if cmh.get("ci_lower") is None else f"{cmh['ci_lower']:.2f}-{cmh['ci_upper']:.2f}"
            fe = _meta_cells((t.get("log_odds_ratio") or {}).get("fixed"))
            resp_rows.append([f"{section} {name}", "-" if cmh.get("odds_ratio") is None else f"{cmh['odds_ratio']:.2f}",
                              ci, central._p_only(cmh.get("p_exact")), _used(t, "sites_complete"),
                              fe[0] if fe[1] == "-" else f"{fe[0]} ({fe[1]})", _used(t, "sites_in_meta")])  # fmt: skip
    cox_rows = []
    for cov, m in (b.get("cox") or {}).items():
        for model in ("fixed", "random"):
            e, ci, p = _meta_cells(m.get(model))
            i2 = "" if m.get("i2") is None else f"I² {100 * m['i2']:.0f}%"
            cox_rows.append([cov, f"{model} effect", e, ci, p, _used(m), i2])
    surv_rows, forest = [], ""
    for ep, block in (b.get("survival") or {}).items():
        for g, m in (block.get("landmark") or {}).items():
            e, ci, _ = _meta_cells(m.get("fixed"), pct=True)
            surv_rows.append([ep.upper(), g, f"day {m.get('day')}", e, ci, _used(m)])
        lr = block.get("logrank_stratified") or {}
        chi = "-" if lr.get("chi2") is None else f"χ² {lr['chi2']:.2f}, {lr.get('df')} df"
        surv_rows.append([ep.upper(), "site-stratified log-rank", "", chi, central._p_only(lr.get("p")), _used(lr)])
        rows = aggregate_forest_rows(block, est, ep)
        if rows:
            png = _forest_png(rows, f"{ep.upper()} at day 365 by status at referral (aggregate level)")
            forest += (f"<figure>{central._img(png, f'forest plot {ep}')}<figcaption>Figure. {_e(ep.upper())} at "
                       "day 365: each center's published Kaplan-Meier estimate with R's log 95% interval, and the "
                       "fixed-effect (FE) meta-analysis on the complementary log-log scale over the centers that "
                       "published an estimate (bold, k/K centers; not the Kaplan-Meier "
                       "estimate of the concatenated patients). Centers whose estimate is suppressed are listed "
                       "without a point.</figcaption></figure>")  # fmt: skip
    t_rows = [[m.upper(), "-" if w.get("z") is None else f"{w['z']:.2f}", central._p_only(w.get("p")), _used(w),
               w.get("method", "")] for m, w in (b.get("wilcoxon") or {}).items()]  # fmt: skip
    method_of = {k: next(iter(v.values())).get("method", "") for k, v in
                 (("cox", b.get("cox") or {}),) if v}  # fmt: skip
    sections = [
        ("flow", "1. Patient flow (sums of published counts)", _aggregate_flow(b)),
        ("response", "2. Response and predictors", central._table(
            ["Table", "CMH odds ratio", "95% CI", "P (exact CMH)", "centers (complete tables)",
             "Fixed-effect OR (95% CI)", "centers in the meta-analysis"], resp_rows,
            caption="Response and univariate predictors: Cochran-Mantel-Haenszel over the centers whose 2x2 table "
            "is published without suppression, and inverse-variance meta-analysis of log odds ratios",
            note=next(iter((b.get("response") or {}).values()), {}).get("method"), cls="num")),
        ("cox", "3. Cox model for EFS (meta-analysis of the centers' own models)", central._table(
            ["Covariate", "Model", "HR", "95% CI", "P", "centers used", "heterogeneity"], cox_rows,
            caption="Cox proportional hazards for EFS: meta-analysis of each center's published hazard ratio",
            note=method_of.get("cox"), cls="num", text_cols=2)),
        ("survival", "4. Survival (meta-analysis and stratified log-rank)", central._table(
            ["Endpoint", "Group / test", "Time", "Estimate", "95% CI / P", "centers used"], surv_rows,
            caption="One-year survival by status at referral (fixed-effect meta-analysis) and the site-stratified "
            "log-rank test from the centers' published scores", cls="num", text_cols=3)
            + (forest or "<p>No center published a one-year estimate.</p>")),
        ("tcells", "5. T-cell subsets", central._table(
            ["Subset", "z", "P", "centers used", "Method"], t_rows,
            caption="T-cell change over course 1: stratified signed-rank test from the centers' totals", cls="num")),
        ("centers", "6. Per-center published values", _per_center_section(
            list((b.get("cox") or {}).keys()), list((b.get("wilcoxon") or {}).keys()), est, exact=False)),
    ]
    sub = (f"{b.get('n_patients', '?')} patients, {len(pooled.sites)} centers. Aggregate sharing level: every "
           "pooled value is a meta-analysis or a stratified test from the centers' published aggregates, not the "
           "centralized analysis; each row names its method and the centers it used. Kaplan-Meier curves, "
           "at-risk tables and the published-vs-this-run comparison need the exact level (per-day counts), which "
           "these packages do not carry.")  # fmt: skip
    footer = "Only the centers' publishable files were used; nothing coordinator-only was received."
    return _document(pooled, generated, "aggregate", sub, sections, footer)
