"""The analyses of protocol section 5, computed from the ``course`` and ``patient`` tables.

Inputs are pandas DataFrames with the contract columns of protocol section 4 (``site_id`` included;
:func:`blina_study.analysis.io.coerce_table` types them). :func:`analyze` runs every analysis on the pooled
data (all sites together, as one cohort) and, with ``by_center=True``, on each site alone, and
returns a :class:`StudyResults` whose :meth:`StudyResults.to_tidy` gives one tidy DataFrame per
output (every row starts with ``scope`` = ``"pooled"`` or the site id).

Decisions where the protocol is silent (a biostatistician's defaults, stated once here):

* Response (5.2): denominators are the evaluable courses (``cr`` / ``mrd_maintained`` not NULL);
  courses that are not evaluable (``NE``, ``unknown``) are counted beside the rate. Fisher's exact
  test compares the CR rates of pre-status R/R and CR-MRDpos.
* Poor response (5.3) = ``cr`` is False among R/R and CR-MRDpos courses. The primary analysis uses
  course 1 only (one course per patient, so Fisher's independence assumption holds); all courses
  are reported as a secondary scope. Patient-level predictors (cytogenetics, BCR-ABL1, age, sex)
  are taken from the patient; ``cd19_loss`` and ``high_mrd`` from the course. Age group: age at
  index < ``age_group_cut_years`` (default 10) vs >= it. Sex: M vs F (other / unknown left out).
  Each predictor is a 2x2 table [[poor, not poor] exposed, [poor, not poor] reference]; its odds
  ratio is the conditional MLE of poor-response odds, exposed vs reference. Rows with the
  predictor missing are left out and counted.
* Cox (5.4): patient level, EFS (``efs_days``, ``efs_event``), covariates ``high_mrd`` of course 1,
  ``bcr_abl1``, ``poor_cytogenetics``; complete cases. Pooled fit not stratified by site (as the
  paper's single-cohort analysis) unless ``cox_strata_by_site=True``.
* T cells (5.5): course 1, pairs with both pre and post values; the medians (ranges) describe the
  same pairs the Wilcoxon test uses; values present on one side only are counted.
* Cytokine peaks (5.5): all courses with a response assessment, grouped as ``CR`` / ``no CR``
  (pre-status R/R or CR-MRDpos) and ``MRD-neg maintained`` / ``MRD-neg lost`` (pre CR-MRDneg).
* Survival (5.6): patients by ``status_at_referral`` (CR-MRDneg, CR-MRDpos, R/R); ``unknown`` is
  left out of the curves and the log-rank test and counted. One year = ``landmark_days`` (365).
  Numbers at risk at ``risk_times_days``.
* Next therapy (5.7): counts per status at referral, all four categories shown (zeros included).
* KM limits: 95% pointwise, R survfit's default ``conf.type = "log"`` unless ``km_conf_type =
  "log-log"``; the transform is in every tidy row that carries a limit. Pairwise log-rank tests
  are reported beside the k-group test, unadjusted for multiplicity (the paper's pairwise
  comparisons are not published).
* Further analyses of the paper (its tables, paper-notes section 4): baseline by indication (age,
  sex, BCR-ABL1, poor cytogenetics, burden reduction); indication by status at referral and before
  course 1; courses per patient (counted in the course table); CRS / ICANS by maximum grade per
  course (all and by pre-course status) and per patient (worst grade; NULL = none recorded, as the
  contract defines it); cytokine peaks over all courses with a value, beside the response groups.
* EFS events by type (relapse, non-response, death) per status at referral, beside the curves.
* Median follow-up: reverse Kaplan-Meier on the OS time (death censors follow-up), overall and by
  status at referral, median and 95% limits as R ``print.survfit``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from blina_study.analysis.io import ENUMS, StudyTableError, coerce_table
from blina_study.analysis.stats import (
    FisherResult,
    MedianRange,
    Proportion,
    WilcoxonResult,
    fisher_exact_2x2,
    median_range,
    proportion,
    wilcoxon_signed_rank,
)
from blina_study.analysis.survival import (
    CONF_TYPES,
    CoxResult,
    KaplanMeierResult,
    LogRankResult,
    MedianResult,
    cox_ph,
    format_surv_se,
    kaplan_meier,
    logrank_test,
    reverse_kaplan_meier,
)

__all__ = [
    "POOLED",
    "DEFAULT_SETTINGS",
    "PatientFlow",
    "ResponseRate",
    "ResponseResult",
    "Predictor",
    "PredictorsResult",
    "PairedChange",
    "TCellResult",
    "GroupSummary",
    "CytokineResult",
    "GroupSurvival",
    "SurvivalResult",
    "NextTherapyResult",
    "BaselineResult",
    "IndicationByStatus",
    "CoursesResult",
    "AdverseEventsResult",
    "FollowUpResult",
    "EventTypesResult",
    "SiteResults",
    "StudyResults",
    "patient_flow",
    "response",
    "poor_response_predictors",
    "cox_efs",
    "cox_tidy_rows",
    "tcell_change",
    "cytokine_peaks",
    "survival_by_referral",
    "next_therapy_by_referral",
    "baseline_by_indication",
    "indication_by_status",
    "courses_per_patient",
    "adverse_events",
    "follow_up",
    "efs_event_types",
    "analyze",
]

POOLED = "pooled"
STATUSES = ("R/R", "CR-MRDpos", "CR-MRDneg")
# Survival groups in the paper's order (best to worst).
SURVIVAL_GROUPS = ("CR-MRDneg", "CR-MRDpos", "R/R")
DEFAULT_SETTINGS: dict[str, Any] = {
    "landmark_days": 365,
    "age_group_cut_years": 10.0,
    "risk_times_days": (0, 90, 180, 270, 365, 545, 730),
    "cox_strata_by_site": False,
    "km_conf_type": "log",
}
_KEY = ["site_id", "person_id"]


def _flag(s: pd.Series, value: bool) -> np.ndarray:
    """Boolean mask where a nullable boolean column equals ``value`` (NA never matches)."""
    return s.astype("boolean").eq(value).fillna(False).to_numpy(dtype=bool)


def _counts(values: pd.Series, categories: Sequence[str]) -> dict[str, int]:
    """Counts per category in the given order (zeros kept), then other values, then missing."""
    vc = values.astype("object").where(values.notna(), None).value_counts(dropna=False)
    out = {c: int(vc.get(c, 0)) for c in categories}
    for k, v in vc.items():
        if k is None or (isinstance(k, float) and math.isnan(k)):
            out["missing"] = out.get("missing", 0) + int(v)
        elif k not in out:
            out[str(k)] = int(v)
    return out


def _course1(course: pd.DataFrame) -> pd.DataFrame:
    return course[course["course_number"].eq(1).fillna(False).to_numpy(dtype=bool)]


# --------------------------------------------------------------------------------------------
# 5.1 Patient flow


@dataclass(frozen=True)
class PatientFlow:
    """Patient counts by the three views of protocol section 1, plus the pathway between them.

    ``indication``, ``status_at_referral``, ``status_before_course_1``: patients per category
    (zeros kept); ``courses_by_pre_status``: courses per pre-status; ``pathway``: patients per
    "status at referral > burden reduction or direct > status before course 1".
    """

    n: int
    n_courses: int
    indication: dict[str, int]
    status_at_referral: dict[str, int]
    status_before_course_1: dict[str, int]
    courses_by_pre_status: dict[str, int]
    pathway: dict[str, int]
    method: str = "counts of patients (courses for courses_by_pre_status)"


def patient_flow(course: pd.DataFrame, patient: pd.DataFrame) -> PatientFlow:
    """Counts of section 5.1 (patients; one row per patient of ``patient``)."""
    c1 = _course1(course)[[*_KEY, "pre_status"]]
    p = patient.merge(c1, on=_KEY, how="left")
    statuses = (*STATUSES, "unknown")
    br = p["burden_reduction"].astype("boolean")
    route = np.where(
        br.eq(True).fillna(False), "burden reduction", np.where(br.isna(), "?", "direct")
    )
    path = (
        p["status_at_referral"].astype("object").fillna("missing").astype(str)
        + " > "
        + route
        + " > "
        + p["pre_status"].astype("object").fillna("missing").astype(str)
    )
    return PatientFlow(
        n=len(patient),
        n_courses=len(course),
        indication=_counts(patient["indication"], ENUMS["indication"]),
        status_at_referral=_counts(patient["status_at_referral"], statuses),
        status_before_course_1=_counts(p["pre_status"], statuses),
        courses_by_pre_status=_counts(course["pre_status"], statuses),
        pathway={k: int(v) for k, v in path.value_counts().sort_index().items()},
    )


# --------------------------------------------------------------------------------------------
# 5.2 Response


@dataclass(frozen=True)
class ResponseRate:
    """``rate`` of ``endpoint`` among evaluable courses of pre-status ``group``;
    ``n_not_evaluable`` courses of that group without an assessment (endpoint NULL)."""

    group: str
    endpoint: str
    rate: Proportion
    n_not_evaluable: int


@dataclass(frozen=True)
class ResponseResult:
    """Response of protocol 5.2 for one course scope (``courses`` = "course 1" or "all courses").

    ``rates``: CR in R/R, CR (MRD negativity) in CR-MRDpos, MRD negativity maintained in
    CR-MRDneg. ``comparison``: Fisher's exact test of CR, R/R vs CR-MRDpos. ``n``: evaluable
    courses in the three rates.
    """

    courses: str
    rates: tuple[ResponseRate, ...]
    comparison: FisherResult
    n: int
    method: str = "proportions of evaluable courses; Fisher's exact test R/R vs CR-MRDpos"


def _rate(c: pd.DataFrame, group: str, col: str, endpoint: str) -> ResponseRate:
    sub = c[c["pre_status"].eq(group).fillna(False).to_numpy(dtype=bool)]
    k = int(_flag(sub[col], True).sum())
    n = k + int(_flag(sub[col], False).sum())
    return ResponseRate(group, endpoint, proportion(k, n), len(sub) - n)


def response(course: pd.DataFrame, *, first_course_only: bool) -> ResponseResult:
    """CR rates by pre-status and MRD maintenance (protocol 5.2), course 1 or all courses."""
    c = _course1(course) if first_course_only else course
    rr = _rate(c, "R/R", "cr", "CR")
    pos = _rate(c, "CR-MRDpos", "cr", "CR (MRD negativity)")
    neg = _rate(c, "CR-MRDneg", "mrd_maintained", "MRD negativity maintained")
    fisher = fisher_exact_2x2(
        rr.rate.k, rr.rate.n - rr.rate.k, pos.rate.k, pos.rate.n - pos.rate.k
    )
    return ResponseResult(
        courses="course 1" if first_course_only else "all courses",
        rates=(rr, pos, neg),
        comparison=fisher,
        n=rr.rate.n + pos.rate.n + neg.rate.n,
    )


# --------------------------------------------------------------------------------------------
# 5.3 Univariate predictors of poor response


@dataclass(frozen=True)
class Predictor:
    """Poor response by one predictor: ``exposed`` / ``reference`` = poor responders of the
    evaluable courses in each level; Fisher's exact test on the 2x2 table; ``n`` courses used,
    ``n_missing`` courses without the predictor."""

    variable: str
    exposed_label: str
    reference_label: str
    exposed: Proportion
    reference: Proportion
    n_missing: int
    test: FisherResult
    n: int
    method: str = "Fisher's exact test, two-sided, poor response exposed vs reference"


@dataclass(frozen=True)
class PredictorsResult:
    """Univariate predictors of poor response (protocol 5.3) in one course scope; ``n`` evaluable
    R/R + CR-MRDpos courses, ``n_poor`` of them without CR."""

    courses: str
    predictors: tuple[Predictor, ...]
    n: int
    n_poor: int
    method: str = "poor response = no CR among evaluable R/R and CR-MRDpos courses; Fisher's exact"


def _exposure(
    frame: pd.DataFrame, variable: str, age_cut: float
) -> tuple[pd.Series, str, str]:
    """(exposed: nullable boolean, exposed label, reference label) for a predictor."""
    if variable == "age_group":
        age = frame["age_at_index_years"].astype(float)
        exp = pd.Series(pd.array(np.where(age.isna(), None, age >= age_cut), dtype="boolean"))
        return exp, f">= {age_cut:g} y", f"< {age_cut:g} y"
    if variable == "sex":
        sex = frame["sex"].astype("object")
        vals = np.where(sex.eq("M"), True, np.where(sex.eq("F"), False, None))
        return pd.Series(pd.array(vals, dtype="boolean")), "M", "F"
    return frame[variable].astype("boolean").reset_index(drop=True), "yes", "no"


PREDICTORS = ("poor_cytogenetics", "bcr_abl1", "cd19_loss", "high_mrd", "age_group", "sex")


def poor_response_predictors(
    course: pd.DataFrame,
    patient: pd.DataFrame,
    *,
    first_course_only: bool = True,
    age_group_cut_years: float = 10.0,
) -> PredictorsResult:
    """Poor response (no CR) by each predictor among evaluable R/R and CR-MRDpos courses."""
    c = _course1(course) if first_course_only else course
    c = c[c["pre_status"].isin(["R/R", "CR-MRDpos"]).fillna(False).to_numpy(dtype=bool)]
    c = c[c["cr"].notna().to_numpy(dtype=bool)]
    pat_cols = [*_KEY, "poor_cytogenetics", "bcr_abl1", "age_at_index_years", "sex"]
    frame = c[[*_KEY, "cr", "cd19_loss", "high_mrd"]].merge(
        patient[pat_cols], on=_KEY, how="left"
    )
    frame = frame.reset_index(drop=True)
    poor = _flag(frame["cr"], False)
    rows = []
    for var in PREDICTORS:
        exp, lab_e, lab_r = _exposure(frame, var, age_group_cut_years)
        is_e = _flag(exp, True)
        is_r = _flag(exp, False)
        a, b = int((is_e & poor).sum()), int((is_e & ~poor).sum())
        cc, d = int((is_r & poor).sum()), int((is_r & ~poor).sum())
        rows.append(
            Predictor(
                variable=var,
                exposed_label=lab_e,
                reference_label=lab_r,
                exposed=proportion(a, a + b),
                reference=proportion(cc, cc + d),
                n_missing=int(len(frame) - is_e.sum() - is_r.sum()),
                test=fisher_exact_2x2(a, b, cc, d),
                n=a + b + cc + d,
            )
        )
    return PredictorsResult(
        courses="course 1" if first_course_only else "all courses",
        predictors=tuple(rows),
        n=len(frame),
        n_poor=int(poor.sum()),
    )


# --------------------------------------------------------------------------------------------
# 5.4 Cox model for EFS

COX_COVARIATES = ("high_mrd", "bcr_abl1", "poor_cytogenetics")


def cox_efs(
    course: pd.DataFrame, patient: pd.DataFrame, *, strata_by_site: bool = False
) -> CoxResult:
    """Cox PH for EFS on ``high_mrd`` (course 1), ``bcr_abl1``, ``poor_cytogenetics``
    (patients; complete cases). ``strata_by_site`` gives each site its own baseline hazard."""
    c1 = _course1(course)[[*_KEY, "high_mrd"]]
    d = patient[[*_KEY, "efs_days", "efs_event", "bcr_abl1", "poor_cytogenetics"]].merge(
        c1, on=_KEY, how="left"
    )
    strata = None
    if strata_by_site and d["site_id"].nunique() > 1:
        strata = "site_id"
    return cox_ph(d, "efs_days", "efs_event", list(COX_COVARIATES), strata=strata)


# --------------------------------------------------------------------------------------------
# 5.5 T cells and cytokines


@dataclass(frozen=True)
class PairedChange:
    """One marker before vs after course 1 (10^9/L): median (range) of the ``n`` pairs and the
    Wilcoxon signed-rank test; ``n_pre_only`` / ``n_post_only`` courses with one value only."""

    marker: str
    unit: str
    pre: MedianRange
    post: MedianRange
    test: WilcoxonResult
    n_pre_only: int
    n_post_only: int
    n: int
    method: str = "paired course-1 values: median (range); Wilcoxon signed-rank"


@dataclass(frozen=True)
class TCellResult:
    """CD3, CD4, CD8 change over course 1 (protocol 5.5)."""

    markers: tuple[PairedChange, ...]
    n: int
    method: str = "course 1, complete pairs per marker"


def tcell_change(course: pd.DataFrame) -> TCellResult:
    """CD3/CD4/CD8 before vs after course 1: median (range) and paired Wilcoxon signed-rank."""
    c1 = _course1(course)
    out = []
    for m in ("cd3", "cd4", "cd8"):
        pre = c1[f"{m}_pre"].astype(float).to_numpy()
        post = c1[f"{m}_post"].astype(float).to_numpy()
        both = ~np.isnan(pre) & ~np.isnan(post)
        out.append(
            PairedChange(
                marker=m.upper(),
                unit="10^9/L",
                pre=median_range(pre[both]),
                post=median_range(post[both]),
                test=wilcoxon_signed_rank(pre[both], post[both]),
                n_pre_only=int((~np.isnan(pre) & np.isnan(post)).sum()),
                n_post_only=int((np.isnan(pre) & ~np.isnan(post)).sum()),
                n=int(both.sum()),
            )
        )
    return TCellResult(markers=tuple(out), n=len(c1))


@dataclass(frozen=True)
class GroupSummary:
    """Median (range) of ``variable`` in one ``group``."""

    variable: str
    group: str
    summary: MedianRange


@dataclass(frozen=True)
class CytokineResult:
    """Cytokine peaks (pg/mL) overall and by response group (protocol 5.5); ``n`` courses with a
    response group (the overall rows use every course with a value)."""

    rows: tuple[GroupSummary, ...]
    n: int
    method: str = (
        "median (range) of the peak per course: all courses with a value, and by response group "
        "(courses with a response assessment)"
    )


RESPONSE_GROUPS = ("CR", "no CR", "MRD-neg maintained", "MRD-neg lost")
OVERALL = "all courses"


def _response_group(course: pd.DataFrame) -> pd.Series:
    pre = course["pre_status"].astype("object")
    active = pre.isin(["R/R", "CR-MRDpos"]).to_numpy(dtype=bool)
    neg = pre.eq("CR-MRDneg").to_numpy(dtype=bool)
    g = np.full(len(course), None, dtype=object)
    g[active & _flag(course["cr"], True)] = "CR"
    g[active & _flag(course["cr"], False)] = "no CR"
    g[neg & _flag(course["mrd_maintained"], True)] = "MRD-neg maintained"
    g[neg & _flag(course["mrd_maintained"], False)] = "MRD-neg lost"
    return pd.Series(g, index=course.index)


def cytokine_peaks(course: pd.DataFrame) -> CytokineResult:
    """IL-6, IL-10, IFN-gamma, TNF-alpha peaks: median (range) over all courses with a value
    (group ``"all courses"``, whatever the response) and per response group."""
    grp = _response_group(course)
    rows = []
    for var in ("il6_peak", "il10_peak", "ifng_peak", "tnfa_peak"):
        rows.append(GroupSummary(var, OVERALL, median_range(course[var].astype(float).to_numpy())))
        for g in RESPONSE_GROUPS:
            vals = course.loc[grp.eq(g).to_numpy(dtype=bool), var].astype(float)
            rows.append(GroupSummary(var, g, median_range(vals.to_numpy())))
    return CytokineResult(rows=tuple(rows), n=int(grp.notna().sum()))


# --------------------------------------------------------------------------------------------
# 5.6 Kaplan-Meier by status at referral


@dataclass(frozen=True)
class GroupSurvival:
    """One group's KM curve, its estimate at ``landmark_days`` (S, Greenwood SE, ``text`` in the
    paper's style, 95% limits ``ci_low``-``ci_high`` with the result's ``conf_type``) and numbers at
    risk at the result's ``risk_times_days``."""

    group: str
    km: KaplanMeierResult
    surv: float
    se: float
    text: str
    at_risk: tuple[int, ...]
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SurvivalResult:
    """KM ``endpoint`` ("EFS" or "OS") by status at referral with the log-rank test; ``n``
    patients in the curves, ``n_excluded`` left out (status unknown/missing or no time)."""

    endpoint: str
    landmark_days: float
    risk_times_days: tuple[float, ...]
    groups: tuple[GroupSurvival, ...]
    logrank: LogRankResult
    n: int
    n_excluded: int
    conf_type: str
    pairwise: tuple[LogRankResult, ...]
    method: str = (
        "Kaplan-Meier with Greenwood SE by status at referral; log-rank test; "
        "origin = index date (first course start)"
    )


def survival_by_referral(
    patient: pd.DataFrame,
    endpoint: str,
    *,
    landmark_days: float = 365,
    risk_times_days: Sequence[float] = DEFAULT_SETTINGS["risk_times_days"],
    conf_type: str = "log",
) -> SurvivalResult:
    """KM ``"EFS"`` (efs_days/efs_event) or ``"OS"`` (os_days/os_event) by status at referral, with
    pointwise 95% limits (``conf_type`` "log", R's default, or "log-log"), the k-group log-rank
    test and the pairwise log-rank tests (unadjusted for multiplicity)."""
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}, got {conf_type!r}")
    cols = {"EFS": ("efs_days", "efs_event"), "OS": ("os_days", "os_event")}
    if endpoint not in cols:
        raise ValueError(f"endpoint must be 'EFS' or 'OS', got {endpoint!r}")
    tcol, ecol = cols[endpoint]
    grp = patient["status_at_referral"].astype("object")
    t = patient[tcol].astype(float)
    e = patient[ecol].astype("boolean")
    use = (
        grp.isin(SURVIVAL_GROUPS).to_numpy(dtype=bool)
        & t.notna().to_numpy(dtype=bool)
        & e.notna().to_numpy(dtype=bool)
    )
    groups = []
    for g in SURVIVAL_GROUPS:
        m = use & grp.eq(g).to_numpy(dtype=bool)
        km = kaplan_meier(t[m].to_numpy(), e[m].astype(int).to_numpy(), label=g)
        if km.n == 0:
            continue
        s, se = km.survival_at(landmark_days)
        lo, hi = km.survival_ci_at(landmark_days, conf_type)
        groups.append(
            GroupSurvival(
                group=g,
                km=km,
                surv=s,
                se=se,
                text=format_surv_se(s, se),
                at_risk=km.at_risk(risk_times_days),
                ci_low=lo,
                ci_high=hi,
            )
        )
    lr = logrank_test(t[use].to_numpy(), e[use].astype(int).to_numpy(), grp[use].to_numpy())
    present = [x.group for x in groups]
    pairwise = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            m = use & grp.isin([a, b]).to_numpy(dtype=bool)
            pairwise.append(logrank_test(t[m].to_numpy(), e[m].astype(int).to_numpy(), grp[m].to_numpy()))
    return SurvivalResult(
        endpoint=endpoint,
        landmark_days=float(landmark_days),
        risk_times_days=tuple(float(x) for x in risk_times_days),
        groups=tuple(groups),
        logrank=lr,
        n=int(use.sum()),
        n_excluded=int(len(patient) - use.sum()),
        conf_type=conf_type,
        pairwise=tuple(pairwise),
    )


# --------------------------------------------------------------------------------------------
# 5.7 Next therapy


@dataclass(frozen=True)
class NextTherapyResult:
    """Patients per next therapy (HSCT / CAR-T / protocol / none) for each status at referral."""

    counts: dict[str, dict[str, int]]
    n: int
    method: str = "counts of patients"


def next_therapy_by_referral(patient: pd.DataFrame) -> NextTherapyResult:
    """Cross-tabulation of ``next_therapy`` by ``status_at_referral`` (zeros kept)."""
    out: dict[str, dict[str, int]] = {}
    ref = patient["status_at_referral"].astype("object")
    groups = [*SURVIVAL_GROUPS, "unknown"]
    for g in groups:
        sub = patient[ref.eq(g).to_numpy(dtype=bool)]
        if g == "unknown" and sub.empty:
            continue
        out[g] = _counts(sub["next_therapy"], ENUMS["next_therapy"])
    return NextTherapyResult(counts=out, n=len(patient))


# --------------------------------------------------------------------------------------------
# Further analyses of the paper (issue 12): baseline by indication, indication by status,
# courses per patient, CRS / ICANS by maximum grade, median follow-up (reverse Kaplan-Meier)


@dataclass(frozen=True)
class BaselineRow:
    """One baseline characteristic in one indication ``group`` (or ``"all"``): a proportion
    (``level`` of ``variable``) or, for age, a median (range)."""

    group: str
    variable: str
    level: str
    count: Proportion | None
    summary: MedianRange | None


@dataclass(frozen=True)
class BaselineResult:
    """Baseline characteristics by indication (the paper's baseline table): age at index, sex,
    BCR-ABL1, poor cytogenetics, burden-reduction chemotherapy; ``n`` patients."""

    rows: tuple[BaselineRow, ...]
    groups: tuple[str, ...]
    n: int
    method: str = (
        "patients by indication; counts with % of the group's patients (missing values in the "
        "denominator of sex only as 'other / unknown'); age: median (range) in years"
    )


def baseline_by_indication(patient: pd.DataFrame) -> BaselineResult:
    """Baseline characteristics per indication (R/R, CR-MRDpos, chemo_delay) and for all patients."""
    ind = patient["indication"].astype("object")
    groups = [*ENUMS["indication"], *sorted(set(ind.dropna()) - set(ENUMS["indication"]))]
    if ind.isna().any():
        groups.append("missing")
    rows: list[BaselineRow] = []
    for g in ("all", *groups):
        if g == "all":
            sub = patient
        elif g == "missing":
            sub = patient[ind.isna().to_numpy(dtype=bool)]
        else:
            sub = patient[ind.eq(g).fillna(False).to_numpy(dtype=bool)]
        n = len(sub)
        age = sub["age_at_index_years"].astype(float).to_numpy()
        rows.append(BaselineRow(g, "age_at_index_years", "years", None, median_range(age)))
        sex = sub["sex"].astype("object")
        for lev in ("M", "F"):
            rows.append(BaselineRow(g, "sex", lev, proportion(int(sex.eq(lev).sum()), n), None))
        rows.append(BaselineRow(g, "sex", "other / unknown",
                                proportion(n - int(sex.isin(["M", "F"]).sum()), n), None))
        for var in ("bcr_abl1", "poor_cytogenetics", "burden_reduction"):
            col = sub[var]
            known = int(col.notna().sum())
            rows.append(BaselineRow(g, var, "yes", proportion(int(_flag(col, True).sum()), known), None))
    return BaselineResult(rows=tuple(rows), groups=tuple(groups), n=len(patient))


@dataclass(frozen=True)
class IndicationByStatus:
    """Patients per indication (rows) and status (columns) at referral and before course 1; the
    paper's 54 chemotherapy delays against its 45 CR-MRDneg at referral / 54 before course 1."""

    by_referral: dict[str, dict[str, int]]
    by_precourse: dict[str, dict[str, int]]
    n: int
    method: str = "counts of patients (cross-tabulation, zeros kept)"


def indication_by_status(course: pd.DataFrame, patient: pd.DataFrame) -> IndicationByStatus:
    """Cross-tabulation of ``indication`` by status at referral and by status before course 1."""
    c1 = _course1(course)[[*_KEY, "pre_status"]]
    p = patient.merge(c1, on=_KEY, how="left")
    ind = p["indication"].astype("object")
    cats = [*ENUMS["indication"], *sorted(set(ind.dropna()) - set(ENUMS["indication"]))]
    statuses = (*STATUSES, "unknown")
    out: list[dict[str, dict[str, int]]] = []
    for col in ("status_at_referral", "pre_status"):
        tab: dict[str, dict[str, int]] = {}
        for c in cats:
            tab[c] = _counts(p.loc[ind.eq(c).fillna(False).to_numpy(dtype=bool), col], statuses)
        if ind.isna().any():
            tab["missing"] = _counts(p.loc[ind.isna().to_numpy(dtype=bool), col], statuses)
        out.append(tab)
    return IndicationByStatus(by_referral=out[0], by_precourse=out[1], n=len(patient))


@dataclass(frozen=True)
class CoursesPerPatient:
    """Courses per patient in one ``group`` (status at referral, or ``"all"``): ``distribution``
    number of courses -> patients, ``summary`` median (range), ``total`` courses, ``n`` patients."""

    group: str
    n: int
    total: int
    summary: MedianRange
    distribution: dict[int, int]


@dataclass(frozen=True)
class CoursesResult:
    """Courses per patient, all patients and by status at referral."""

    rows: tuple[CoursesPerPatient, ...]
    n: int
    method: str = "blinatumomab courses per patient counted in the course table; median (range)"


def courses_per_patient(course: pd.DataFrame, patient: pd.DataFrame) -> CoursesResult:
    """Distribution and median (range) of the number of courses per patient."""
    per = course.groupby(_KEY, dropna=False).size().rename("k").reset_index()
    p = patient[[*_KEY, "status_at_referral"]].merge(per, on=_KEY, how="left")
    k = p["k"].fillna(0).astype(int)
    ref = p["status_at_referral"].astype("object")
    rows = []
    for g in ("all", *SURVIVAL_GROUPS, "unknown"):
        m = np.ones(len(p), dtype=bool) if g == "all" else ref.eq(g).fillna(False).to_numpy(dtype=bool)
        if g == "unknown" and not m.any():
            continue
        kk = k[m]
        dist = {int(a): int(b) for a, b in kk.value_counts().sort_index().items()}
        rows.append(CoursesPerPatient(g, int(m.sum()), int(kk.sum()),
                                      median_range(kk.to_numpy(dtype=float)), dist))
    return CoursesResult(rows=tuple(rows), n=len(patient))


@dataclass(frozen=True)
class GradeCounts:
    """``event`` ("CRS" or "ICANS") by maximum grade among ``unit`` ("courses" or "patients") of
    ``group``: ``counts`` per grade (``"none recorded"``, ``"1"`` .. ``"5"``, zeros kept),
    ``any_grade`` and ``grade_3_plus`` as proportions of ``n``."""

    event: str
    unit: str
    group: str
    counts: dict[str, int]
    any_grade: Proportion
    grade_3_plus: Proportion
    n: int


@dataclass(frozen=True)
class AdverseEventsResult:
    """CRS and ICANS by maximum grade: per course (all, and by pre-course status) and per patient
    (the worst grade over the patient's courses)."""

    rows: tuple[GradeCounts, ...]
    n_courses: int
    n_patients: int
    method: str = (
        "maximum grade during the course (protocol 3b.8; grade from the ICD-10-CM code); a patient's "
        "grade = the worst over the patient's courses; NULL = none recorded"
    )


GRADES = ("none recorded", "1", "2", "3", "4", "5")


def _grade_counts(event: str, unit: str, group: str, grades: pd.Series) -> GradeCounts:
    g = grades.astype(float)
    counts = {"none recorded": int(g.isna().sum())}
    for lev in range(1, 6):
        counts[str(lev)] = int(g.eq(lev).sum())
    other = g.notna() & ~g.isin(range(1, 6))
    if other.any():  # an ungraded / out-of-range value is shown, not hidden
        counts["other"] = int(other.sum())
    n = len(g)
    return GradeCounts(event, unit, group, counts, proportion(int(g.notna().sum()), n),
                       proportion(int(g.ge(3).sum()), n), n)


def adverse_events(course: pd.DataFrame) -> AdverseEventsResult:
    """CRS and ICANS counts by maximum grade (courses: all and per pre-status; patients: worst)."""
    rows = []
    pre = course["pre_status"].astype("object")
    for col, event in (("crs_max_grade", "CRS"), ("icans_max_grade", "ICANS")):
        rows.append(_grade_counts(event, "courses", "all", course[col]))
        for s in (*STATUSES, "unknown"):
            m = pre.eq(s).fillna(False).to_numpy(dtype=bool)
            if s == "unknown" and not m.any():
                continue
            rows.append(_grade_counts(event, "courses", s, course.loc[m, col]))
        worst = course.assign(_g=course[col].astype(float)).groupby(_KEY, dropna=False)["_g"].max()
        rows.append(_grade_counts(event, "patients", "all", worst))
    n_pat = int(course[_KEY].drop_duplicates().shape[0])
    return AdverseEventsResult(rows=tuple(rows), n_courses=len(course), n_patients=n_pat)


@dataclass(frozen=True)
class FollowUpRow:
    """Median follow-up of one ``group`` (status at referral or ``"all"``) by reverse Kaplan-Meier:
    ``n`` patients, ``n_censored`` alive at last follow-up (the reverse KM's events), ``median``
    with its ``ci_low``-``ci_high`` limits in days (NaN: not reached), ``km`` the reverse curve."""

    group: str
    n: int
    n_censored: int
    median: MedianResult
    km: KaplanMeierResult


@dataclass(frozen=True)
class FollowUpResult:
    """Median follow-up (OS time; death censors the follow-up) overall and by status at referral."""

    rows: tuple[FollowUpRow, ...]
    n: int
    n_excluded: int
    conf_type: str
    method: str = (
        "reverse Kaplan-Meier (Schemper & Smith 1996): os_days with death as censoring and alive at "
        "last follow-up as the event, median as R print.survfit"
    )


@dataclass(frozen=True)
class EventTypesResult:
    """Patients per status at referral (rows) by their EFS outcome (columns): the first event's type
    (relapse, non_response, death), ``no event``, ``event, type missing``, and ``missing`` (no EFS
    status). Lets a reader see which events drive EFS and OS apart (paper-notes 2a)."""

    counts: dict[str, dict[str, int]]
    n: int
    method: str = "counts of patients by the type of the first EFS event (protocol rule 14)"


def efs_event_types(patient: pd.DataFrame) -> EventTypesResult:
    """EFS event types per status at referral (zeros kept; ``unknown`` only when present)."""
    ev = patient["efs_event"].astype("boolean")
    typ = patient["efs_event_type"].astype("object")
    outcome = np.where(
        ev.isna().to_numpy(dtype=bool), "missing",
        np.where(~ev.fillna(False).to_numpy(dtype=bool), "no event",
                 np.where(typ.isna().to_numpy(dtype=bool), "event, type missing", typ.astype(str).to_numpy())),
    )
    out_s = pd.Series(outcome, index=patient.index, dtype="object")
    cats = (*ENUMS["efs_event_type"], "no event")
    ref = patient["status_at_referral"].astype("object")
    counts: dict[str, dict[str, int]] = {}
    for g in (*SURVIVAL_GROUPS, "unknown"):
        m = ref.eq(g).fillna(False).to_numpy(dtype=bool)
        if g == "unknown" and not m.any():
            continue
        counts[g] = _counts(out_s[m], cats)
    if ref.isna().any():
        counts["missing"] = _counts(out_s[ref.isna().to_numpy(dtype=bool)], cats)
    return EventTypesResult(counts=counts, n=len(patient))


def follow_up(patient: pd.DataFrame, *, conf_type: str = "log") -> FollowUpResult:
    """Median follow-up by reverse Kaplan-Meier, all patients with an OS time and by referral."""
    t = patient["os_days"].astype(float)
    e = patient["os_event"].astype("boolean")
    use = t.notna().to_numpy(dtype=bool) & e.notna().to_numpy(dtype=bool)
    ref = patient["status_at_referral"].astype("object")
    rows = []
    for g in ("all", *SURVIVAL_GROUPS):
        m = use if g == "all" else use & ref.eq(g).fillna(False).to_numpy(dtype=bool)
        if g != "all" and not m.any():
            continue
        km = reverse_kaplan_meier(t[m].to_numpy(), e[m].astype(int).to_numpy(), label=g)
        rows.append(FollowUpRow(g, km.n, km.n_events, km.median(conf_type), km))
    return FollowUpResult(rows=tuple(rows), n=int(use.sum()), n_excluded=int(len(patient) - use.sum()),
                          conf_type=conf_type)


# --------------------------------------------------------------------------------------------
# Everything, pooled and per center


@dataclass(frozen=True)
class SiteResults:
    """All analyses of section 5 for one scope (``"pooled"`` or a site id); ``messages`` lists
    what a reader must know (exclusions, dropped covariates, tests not computable)."""

    scope: str
    n_patients: int
    n_courses: int
    flow: PatientFlow
    response: tuple[ResponseResult, ...]
    predictors: tuple[PredictorsResult, ...]
    cox_efs: CoxResult
    tcells: TCellResult
    cytokines: CytokineResult
    efs: SurvivalResult
    os: SurvivalResult
    next_therapy: NextTherapyResult
    baseline: BaselineResult
    indication_by_status: IndicationByStatus
    courses: CoursesResult
    adverse_events: AdverseEventsResult
    follow_up: FollowUpResult
    efs_events: EventTypesResult
    messages: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class StudyResults:
    """Pooled and per-center results with the settings and study parameters that produced them."""

    pooled: SiteResults
    by_site: dict[str, SiteResults]
    settings: dict[str, Any]
    parameters: dict[str, Any]

    def scopes(self) -> list[SiteResults]:
        return [self.pooled, *self.by_site.values()]

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts/lists (``dataclasses.asdict``), ready for JSON."""
        return asdict(self)

    def to_tidy(self) -> dict[str, pd.DataFrame]:
        """One tidy DataFrame per output; every row starts with ``scope``. Tables: flow, response,
        response_tests, predictors, cox, tcells, cytokines, survival, survival_tests, risk_table,
        km_curves, next_therapy, baseline, indication_by_status, courses_per_patient,
        adverse_events, follow_up, efs_events, messages, settings. Kaplan-Meier limits are 95% pointwise,
        their transform in ``conf_type`` (NaN where R's survfit gives NA)."""
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in _TIDY_TABLES}
        for r in self.scopes():
            _tidy_scope(r, rows)
        for k, v in {**self.settings, **{f"param.{k}": v for k, v in self.parameters.items()}}.items():
            rows["settings"].append({"key": k, "value": str(v)})
        return {k: pd.DataFrame(v, columns=_TIDY_TABLES[k]) for k, v in rows.items()}


_TIDY_TABLES: dict[str, list[str]] = {
    "flow": ["scope", "view", "category", "n", "denominator", "pct"],
    "response": [
        "scope", "courses", "group", "endpoint", "k", "n", "pct", "n_not_evaluable", "text",
    ],
    "response_tests": [
        "scope", "courses", "comparison", "p_value", "odds_ratio", "ci_low", "ci_high", "n",
        "method",
    ],
    "predictors": [
        "scope", "courses", "variable", "exposed_label", "reference_label", "n_exposed",
        "poor_exposed", "pct_poor_exposed", "n_reference", "poor_reference",
        "pct_poor_reference", "n_missing", "odds_ratio", "ci_low", "ci_high", "p_value", "n",
        "method",
    ],
    "cox": [
        "scope", "endpoint", "covariate", "status", "reason", "coef", "se", "hr", "ci_low",
        "ci_high", "p_value", "ph_statistic", "ph_p_value", "n", "n_events", "n_excluded",
        "loglik_null", "loglik", "lr_chisq", "lr_df", "lr_p_value", "ties", "method",
    ],
    "tcells": [
        "scope", "marker", "unit", "n_pairs", "pre_median", "pre_min", "pre_max", "post_median",
        "post_min", "post_max", "pre_text", "post_text", "v_statistic", "z", "p_normal",
        "p_exact", "n_zero", "n_pre_only", "n_post_only", "method",
    ],
    "cytokines": ["scope", "cytokine", "unit", "response", "n", "median", "min", "max", "text"],
    "survival": [
        "scope", "endpoint", "group", "n", "n_events", "landmark_days", "surv", "se", "ci_low",
        "ci_high", "conf_type", "text", "method",
    ],
    "survival_tests": [
        "scope", "endpoint", "comparison", "groups", "chisq", "df", "p_value", "n", "n_excluded",
        "method",
    ],
    "risk_table": ["scope", "endpoint", "group", "time_days", "n_risk"],
    "km_curves": [
        "scope", "endpoint", "group", "time", "n_risk", "n_event", "n_censor", "surv", "se",
        "ci_low", "ci_high", "conf_type",
    ],
    "next_therapy": ["scope", "status_at_referral", "next_therapy", "n"],
    "baseline": [
        "scope", "indication", "variable", "level", "k", "n", "pct", "median", "min", "max", "text",
    ],
    "indication_by_status": ["scope", "view", "indication", "status", "n"],
    "courses_per_patient": [
        "scope", "status_at_referral", "n_patients", "total_courses", "median", "min", "max",
        "distribution",
    ],
    "adverse_events": [
        "scope", "event", "unit", "group", "max_grade", "n", "denominator", "pct",
    ],
    "efs_events": ["scope", "status_at_referral", "outcome", "n"],
    "follow_up": [
        "scope", "status_at_referral", "n", "n_censored", "median_days", "ci_low_days",
        "ci_high_days", "conf_type", "method",
    ],
    "messages": ["scope", "analysis", "message"],
    "settings": ["key", "value"],
}


def cox_tidy_rows(cx: CoxResult, scope: str, endpoint: str) -> list[dict[str, Any]]:
    """The rows of the tidy ``cox`` table for one fit: one per covariate (``estimated``,
    ``not estimable`` for R's NA, ``dropped``), or one ``no model`` row with the reason; the
    model's log-likelihoods and likelihood-ratio test repeated on each row."""
    base = {"scope": scope, "endpoint": endpoint, "n": cx.n, "n_events": cx.n_events,
            "n_excluded": cx.n_excluded, "loglik_null": cx.loglik_null, "loglik": cx.loglik,
            "lr_chisq": cx.lr_chisq, "lr_df": cx.lr_df, "lr_p_value": cx.lr_p_value,
            "ties": cx.ties, "method": cx.method}
    out: list[dict[str, Any]] = []
    for term in cx.terms:
        na = math.isnan(term.coef)
        out.append(
            {**base, "covariate": term.covariate,
             "status": "not estimable" if na else "estimated",
             "reason": "collinear with the other covariates (R: NA)" if na else
             ("coefficient may be infinite (monotone likelihood)" if term.covariate in cx.infinite else ""),
             "coef": term.coef, "se": term.se, "hr": term.hr, "ci_low": term.ci_low,
             "ci_high": term.ci_high, "p_value": term.p_value,
             "ph_statistic": term.ph_statistic, "ph_p_value": term.ph_p_value}
        )
    for cov, why in cx.dropped:
        out.append({**base, "covariate": cov, "status": "dropped", "reason": why})
    if not cx.estimated:
        out.append({**base, "covariate": "", "status": "no model", "reason": "; ".join(cx.messages)})
    return out


def _tidy_scope(r: SiteResults, rows: dict[str, list[dict[str, Any]]]) -> None:
    s = r.scope
    f = r.flow
    for view, counts, denom in (
        ("indication", f.indication, f.n),
        ("status_at_referral", f.status_at_referral, f.n),
        ("status_before_course_1", f.status_before_course_1, f.n),
        ("courses_by_pre_status", f.courses_by_pre_status, f.n_courses),
        ("pathway", f.pathway, f.n),
    ):
        for cat, n in counts.items():
            pct = 100.0 * n / denom if denom else math.nan
            rows["flow"].append(
                {"scope": s, "view": view, "category": cat, "n": n, "denominator": denom,
                 "pct": pct}
            )
    for resp in r.response:
        for rate in resp.rates:
            rows["response"].append(
                {"scope": s, "courses": resp.courses, "group": rate.group,
                 "endpoint": rate.endpoint, "k": rate.rate.k, "n": rate.rate.n,
                 "pct": rate.rate.pct, "n_not_evaluable": rate.n_not_evaluable,
                 "text": rate.rate.format()}
            )
        t = resp.comparison
        rows["response_tests"].append(
            {"scope": s, "courses": resp.courses, "comparison": "CR: R/R vs CR-MRDpos",
             "p_value": t.p_value, "odds_ratio": t.odds_ratio, "ci_low": t.ci_low,
             "ci_high": t.ci_high, "n": t.n, "method": t.method}
        )
    for pr in r.predictors:
        for p in pr.predictors:
            rows["predictors"].append(
                {"scope": s, "courses": pr.courses, "variable": p.variable,
                 "exposed_label": p.exposed_label, "reference_label": p.reference_label,
                 "n_exposed": p.exposed.n, "poor_exposed": p.exposed.k,
                 "pct_poor_exposed": p.exposed.pct, "n_reference": p.reference.n,
                 "poor_reference": p.reference.k, "pct_poor_reference": p.reference.pct,
                 "n_missing": p.n_missing, "odds_ratio": p.test.odds_ratio,
                 "ci_low": p.test.ci_low, "ci_high": p.test.ci_high, "p_value": p.test.p_value,
                 "n": p.n, "method": p.test.method}
            )
    rows["cox"].extend(cox_tidy_rows(r.cox_efs, s, "EFS"))
    for m in r.tcells.markers:
        rows["tcells"].append(
            {"scope": s, "marker": m.marker, "unit": m.unit, "n_pairs": m.n,
             "pre_median": m.pre.median, "pre_min": m.pre.minimum, "pre_max": m.pre.maximum,
             "post_median": m.post.median, "post_min": m.post.minimum,
             "post_max": m.post.maximum, "pre_text": m.pre.format(),
             "post_text": m.post.format(), "v_statistic": m.test.statistic, "z": m.test.z,
             "p_normal": m.test.p_normal, "p_exact": m.test.p_exact, "n_zero": m.test.n_zero,
             "n_pre_only": m.n_pre_only, "n_post_only": m.n_post_only,
             "method": m.test.method}
        )
    for g in r.cytokines.rows:
        rows["cytokines"].append(
            {"scope": s, "cytokine": g.variable, "unit": "pg/mL", "response": g.group,
             "n": g.summary.n, "median": g.summary.median, "min": g.summary.minimum,
             "max": g.summary.maximum, "text": g.summary.format(1)}
        )
    for sv in (r.efs, r.os):
        for g in sv.groups:
            rows["survival"].append(
                {"scope": s, "endpoint": sv.endpoint, "group": g.group, "n": g.km.n,
                 "n_events": g.km.n_events, "landmark_days": sv.landmark_days,
                 "surv": g.surv, "se": g.se, "ci_low": g.ci_low, "ci_high": g.ci_high,
                 "conf_type": sv.conf_type, "text": g.text, "method": sv.method}
            )
            for t, n in zip(sv.risk_times_days, g.at_risk, strict=True):
                rows["risk_table"].append(
                    {"scope": s, "endpoint": sv.endpoint, "group": g.group, "time_days": t,
                     "n_risk": n}
                )
            km = g.km.to_frame(sv.conf_type)
            for rec in km.to_dict(orient="records"):
                rows["km_curves"].append(
                    {"scope": s, "endpoint": sv.endpoint, "group": g.group, **rec,
                     "conf_type": sv.conf_type}
                )
        for kind, lr in (("overall", sv.logrank), *(("pairwise", x) for x in sv.pairwise)):
            rows["survival_tests"].append(
                {"scope": s, "endpoint": sv.endpoint, "comparison": kind,
                 "groups": " vs ".join(lr.groups), "chisq": lr.chisq, "df": lr.df,
                 "p_value": lr.p_value, "n": lr.n,
                 "n_excluded": sv.n_excluded if kind == "overall" else 0,
                 "method": lr.method if kind == "overall" else lr.method + "; pairwise, unadjusted"}
            )
    for grp, counts in r.next_therapy.counts.items():
        for therapy, n in counts.items():
            rows["next_therapy"].append(
                {"scope": s, "status_at_referral": grp, "next_therapy": therapy, "n": n}
            )
    _tidy_extra(r, rows)
    for analysis, msg in r.messages:
        rows["messages"].append({"scope": s, "analysis": analysis, "message": msg})


def _tidy_extra(r: SiteResults, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Tidy rows of the analyses added for issue 12 (baseline ... follow-up)."""
    s = r.scope
    for b in r.baseline.rows:
        rec: dict[str, Any] = {"scope": s, "indication": b.group, "variable": b.variable,
                               "level": b.level}
        if b.count is not None:
            rec.update(k=b.count.k, n=b.count.n, pct=b.count.pct, text=b.count.format())
        if b.summary is not None:
            rec.update(n=b.summary.n, median=b.summary.median, min=b.summary.minimum,
                       max=b.summary.maximum, text=b.summary.format(1))
        rows["baseline"].append(rec)
    ib = r.indication_by_status
    for view, tab in (("status_at_referral", ib.by_referral),
                      ("status_before_course_1", ib.by_precourse)):
        for ind, counts in tab.items():
            for status, n in counts.items():
                rows["indication_by_status"].append(
                    {"scope": s, "view": view, "indication": ind, "status": status, "n": n}
                )
    for c in r.courses.rows:
        rows["courses_per_patient"].append(
            {"scope": s, "status_at_referral": c.group, "n_patients": c.n,
             "total_courses": c.total, "median": c.summary.median, "min": c.summary.minimum,
             "max": c.summary.maximum,
             "distribution": "; ".join(f"{k} course(s): {v}" for k, v in c.distribution.items())}
        )
    for g in r.adverse_events.rows:
        for grade, n in g.counts.items():
            rows["adverse_events"].append(
                {"scope": s, "event": g.event, "unit": g.unit, "group": g.group,
                 "max_grade": grade, "n": n, "denominator": g.n,
                 "pct": 100.0 * n / g.n if g.n else math.nan}
            )
    for grp, counts in r.efs_events.counts.items():
        for outcome, n in counts.items():
            rows["efs_events"].append({"scope": s, "status_at_referral": grp, "outcome": outcome, "n": n})
    fu = r.follow_up
    for f in fu.rows:
        rows["follow_up"].append(
            {"scope": s, "status_at_referral": f.group, "n": f.n, "n_censored": f.n_censored,
             "median_days": f.median.median, "ci_low_days": f.median.ci_low,
             "ci_high_days": f.median.ci_high, "conf_type": fu.conf_type, "method": fu.method}
        )


def _messages(r: SiteResults) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for resp in r.response:
        for rate in resp.rates:
            if rate.n_not_evaluable:
                out.append(
                    ("response", f"{resp.courses}: {rate.n_not_evaluable} {rate.group} course(s)"
                     " without an assessment (NE or unknown) left out of the denominator")
                )
    for pr in r.predictors:
        for p in pr.predictors:
            if p.n_missing:
                out.append(
                    ("predictors", f"{pr.courses}: {p.variable} missing for {p.n_missing} "
                     "course(s), left out of its test")
                )
    for m in r.cox_efs.messages:
        out.append(("cox_efs", m))
    for mk in r.tcells.markers:
        if mk.n == 0:
            out.append(("tcells", f"{mk.marker}: no course-1 pair with both values"))
        elif math.isnan(mk.test.p_value):
            out.append(("tcells", f"{mk.marker}: {mk.test.method}"))
    for sv in (r.efs, r.os):
        if sv.n_excluded:
            out.append(
                (sv.endpoint, f"{sv.n_excluded} patient(s) with status at referral unknown or "
                 "no follow-up time left out")
            )
        if math.isnan(sv.logrank.p_value):
            out.append((sv.endpoint, sv.logrank.method))
        for g in sv.groups:
            if math.isnan(g.surv):
                out.append(
                    (sv.endpoint, f"{g.group}: {sv.landmark_days:g}-day estimate not estimable "
                     f"(follow-up ends at day {g.km.time[-1]:g})")
                )
    for g in r.adverse_events.rows:
        if g.counts.get("other") and g.group == "all":
            out.append(("adverse_events", f"{g.event}: {g.counts['other']} {g.unit} with a grade "
                        "outside 1-5, shown as 'other'"))
    fu = r.follow_up
    if fu.n_excluded:
        out.append(("follow_up", f"{fu.n_excluded} patient(s) without an OS time left out of the "
                    "median follow-up"))
    if fu.rows and fu.rows[0].n and math.isnan(fu.rows[0].median.median):
        out.append(("follow_up", "median follow-up not reached: fewer than half of the patients are "
                    "censored alive (the reverse Kaplan-Meier never falls to 0.5)"))
    return tuple(out)


def _check_linked(course: pd.DataFrame, patient: pd.DataFrame) -> None:
    ck = set(map(tuple, course[_KEY].astype(object).to_numpy().tolist()))
    pk = set(map(tuple, patient[_KEY].astype(object).to_numpy().tolist()))
    c1 = set(map(tuple, _course1(course)[_KEY].astype(object).to_numpy().tolist()))
    problems = []
    if ck - pk:
        problems.append(f"courses of patients not in the patient table: {sorted(ck - pk)[:5]}")
    if pk - c1:
        problems.append(f"patients without a course 1: {sorted(pk - c1)[:5]}")
    if problems:
        raise StudyTableError(
            "course and patient tables do not match: " + "; ".join(problems),
            hint="export both tables from the same run (every patient has courses 1..n)",
        )


def _scope_results(
    scope: str, course: pd.DataFrame, patient: pd.DataFrame, settings: Mapping[str, Any]
) -> SiteResults:
    r = SiteResults(
        scope=scope,
        n_patients=len(patient),
        n_courses=len(course),
        flow=patient_flow(course, patient),
        response=(
            response(course, first_course_only=True),
            response(course, first_course_only=False),
        ),
        predictors=tuple(
            poor_response_predictors(
                course, patient, first_course_only=first,
                age_group_cut_years=float(settings["age_group_cut_years"]),
            )
            for first in (True, False)
        ),
        cox_efs=cox_efs(
            course, patient,
            strata_by_site=bool(settings["cox_strata_by_site"]) and scope == POOLED,
        ),
        tcells=tcell_change(course),
        cytokines=cytokine_peaks(course),
        efs=survival_by_referral(
            patient, "EFS", landmark_days=settings["landmark_days"],
            risk_times_days=settings["risk_times_days"], conf_type=settings["km_conf_type"],
        ),
        os=survival_by_referral(
            patient, "OS", landmark_days=settings["landmark_days"],
            risk_times_days=settings["risk_times_days"], conf_type=settings["km_conf_type"],
        ),
        next_therapy=next_therapy_by_referral(patient),
        baseline=baseline_by_indication(patient),
        indication_by_status=indication_by_status(course, patient),
        courses=courses_per_patient(course, patient),
        adverse_events=adverse_events(course),
        follow_up=follow_up(patient, conf_type=settings["km_conf_type"]),
        efs_events=efs_event_types(patient),
    )
    return replace(r, messages=_messages(r))


def analyze(
    course: pd.DataFrame,
    patient: pd.DataFrame,
    by_center: bool = True,
    *,
    parameters: Mapping[str, Any] | None = None,
    risk_times_days: Sequence[float] | None = None,
    cox_strata_by_site: bool = False,
    km_conf_type: str = "log",
) -> StudyResults:
    """Every analysis of protocol section 5, pooled and (``by_center``) per ``site_id``.

    ``parameters``: the study parameters the tables were derived with (e.g.
    ``StudyDefinition.params`` as a dict); recorded in the results, and ``landmark_days`` /
    ``age_group_cut_years`` are taken from it when present (defaults 365 and 10).
    ``km_conf_type``: transform of the Kaplan-Meier 95% limits, ``"log"`` (R survfit's default)
    or ``"log-log"``; recorded in the settings and in every row that carries a limit.
    Inputs are typed with :func:`blina_study.analysis.io.coerce_table`; a table that breaks the contract, or
    courses and patients that do not match, raise :class:`blina_study.analysis.io.StudyTableError`.
    """
    course = coerce_table(course, "course")
    patient = coerce_table(patient, "patient")
    _check_linked(course, patient)
    if (patient["site_id"] == POOLED).any():
        raise StudyTableError(
            f"site_id {POOLED!r} is reserved for the pooled results",
            hint="give the site another id when running the adapter",
        )
    params = dict(parameters or {})
    settings = dict(DEFAULT_SETTINGS)
    for k in ("landmark_days", "age_group_cut_years"):
        if params.get(k) is not None:
            settings[k] = params[k]
    if risk_times_days is not None:
        settings["risk_times_days"] = tuple(risk_times_days)
    settings["cox_strata_by_site"] = bool(cox_strata_by_site)
    if km_conf_type not in CONF_TYPES:
        raise ValueError(f"km_conf_type must be one of {CONF_TYPES}, got {km_conf_type!r}")
    settings["km_conf_type"] = km_conf_type
    settings["by_center"] = bool(by_center)
    pooled = _scope_results(POOLED, course, patient, settings)
    by_site: dict[str, SiteResults] = {}
    if by_center:
        for site in sorted(patient["site_id"].dropna().unique().tolist()):
            cm = course["site_id"].eq(site).fillna(False).to_numpy(dtype=bool)
            pm = patient["site_id"].eq(site).fillna(False).to_numpy(dtype=bool)
            by_site[str(site)] = _scope_results(str(site), course[cm], patient[pm], settings)
    settings["risk_times_days"] = list(settings["risk_times_days"])
    return StudyResults(pooled=pooled, by_site=by_site, settings=settings, parameters=params)
