"""The published figures of the study (protocol sections 1 and 6, from the abstract) as data.

Each :class:`PublishedFigure` is one number the paper prints, with a stable ``key`` the report uses to
put "this run" beside it. Values are exactly as printed (proportions as k/n, percentages with one
decimal, P with the paper's digits, survival as percent ± Greenwood SE in percent). Nothing here is
used in a computation: the report only displays them next to the run's own results. Analyses of the
protocol and of the paper's tables whose numbers the abstract does not give (CRS / ICANS grades, cytokines,
courses per patient, median follow-up, ...) are listed with ``published=False``, so the comparison
table has a row for every analysis, and they are never counted as reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PublishedFigure", "PUBLISHED", "published_by_key"]


@dataclass(frozen=True)
class PublishedFigure:
    """One published number.

    ``key``: stable identifier (``area.item``); ``area``: the protocol analysis it belongs to
    (``flow``, ``response``, ``univariate``, ``cox``, ``tcells``, ``efs``, ``os``); ``label``: what
    it is, for a reader; ``text``: the value as printed; ``k``/``n``: counts for a proportion or a
    count (``n`` None for a plain count); ``value``: the number itself (percent for percentages and
    survival, the P for a P value, the median for T cells); ``se``: the ± of a survival estimate (percent);
    ``low``/``high``: the range of a median. ``published`` False: an analysis of the protocol or of
    the paper's tables whose number the abstract does not give (``text`` says so); the report shows
    this run's value beside it and never counts it as reproduced.
    """

    key: str
    area: str
    label: str
    text: str
    k: int | None = None
    n: int | None = None
    value: float | None = None
    se: float | None = None
    low: float | None = None
    high: float | None = None
    published: bool = True


def _count(key: str, label: str, k: int) -> PublishedFigure:
    return PublishedFigure(key, "flow", label, str(k), k=k)


def _p(key: str, area: str, label: str, p: float, text: str) -> PublishedFigure:
    return PublishedFigure(key, area, label, text, value=p)


def _med(key: str, label: str, med: float, lo: float, hi: float) -> PublishedFigure:
    return PublishedFigure(key, "tcells", label, f"{med:.2f} ({lo:.2f}-{hi:.2f})", value=med, low=lo, high=hi)


def _unpublished(key: str, area: str, label: str) -> PublishedFigure:
    return PublishedFigure(key, area, label, "not published", published=False)


def _surv(key: str, area: str, label: str, pct: float, se: float | None) -> PublishedFigure:
    text = f"{pct:g}%" if se is None else f"{pct:.1f}% ± {se:.1f}%"
    return PublishedFigure(key, area, label, text, value=pct, se=se)


PUBLISHED: tuple[PublishedFigure, ...] = (
    # Section 1: patient flow (abstract counts; the flow is the protocol's reconstruction).
    _count("flow.indication.R/R", "Indication R/R (patients)", 30),
    _count("flow.indication.CR-MRDpos", "Indication CR-MRDpos (patients)", 21),
    _count("flow.indication.chemo_delay", "Indication chemotherapy delay (patients)", 54),
    _count("flow.referral.R/R", "Status at referral R/R (patients)", 30),
    _count("flow.referral.CR-MRDpos", "Status at referral CR-MRDpos (patients)", 30),
    _count("flow.referral.CR-MRDneg", "Status at referral CR-MRDneg (patients)", 45),
    _count("flow.precourse.R/R", "Status before the first course R/R (patients)", 11),
    _count("flow.precourse.CR-MRDpos", "Status before the first course CR-MRDpos (patients)", 40),
    _count("flow.precourse.CR-MRDneg", "Status before the first course CR-MRDneg (patients)", 54),
    _count("flow.rr.direct", "R/R at referral, blinatumomab directly (patients)", 8),
    _count("flow.rr.burden_reduction", "R/R at referral, burden-reduction chemotherapy first (patients)", 22),
    _unpublished("flow.chemo_delay_by_referral", "flow",
                 "Indication chemotherapy delay by status at referral (patients)"),
    PublishedFigure("courses.pre_status.CR-MRDneg", "courses", "Courses with pre-status CR-MRDneg", "74", k=74),
    _unpublished("courses.per_patient", "courses", "Courses per patient, median (range); total courses"),
    _unpublished("baseline.age", "baseline", "Age at index (years), median (range)"),
    _unpublished("baseline.sex", "baseline", "Sex (patients)"),
    # Section 6: response.
    PublishedFigure("response.cr.R/R", "response", "CR rate, pre-status R/R (course 1)", "81.8% (9/11)",
                    k=9, n=11, value=81.8),
    PublishedFigure("response.cr.CR-MRDpos", "response", "CR rate (MRD-negative), pre-status CR-MRDpos (course 1)",
                    "82.5% (33/40)", k=33, n=40, value=82.5),
    _p("response.fisher_p", "response", "CR rate R/R vs CR-MRDpos, Fisher P", 1.0, "P = 1.000"),
    PublishedFigure("response.mrd_maintained", "response", "CR-MRDneg courses that stayed MRD-negative",
                    "98.6% (73/74)", k=73, n=74, value=100 * 73 / 74),
    # Univariate predictors of poor response.
    _p("univariate.poor_cytogenetics", "univariate", "Poor cytogenetics, univariate P", 0.0001, "P = 0.0001"),
    _p("univariate.cd19_loss", "univariate", "CD19+ B-cell loss, univariate P", 0.046, "P = 0.046"),
    _p("univariate.bcr_abl1", "univariate", "BCR-ABL1, univariate P", 0.002, "P = 0.002"),
    # Cox regression (HR and CI not published).
    _p("cox.high_mrd", "cox", "High MRD, Cox P", 0.014, "P = 0.014"),
    _p("cox.bcr_abl1", "cox", "BCR-ABL1, Cox P", 0.065, "P = 0.065"),
    _p("cox.poor_cytogenetics", "cox", "Poor cytogenetics, Cox P", 0.025, "P = 0.025"),
    # T-cell subsets before -> after (x10^9/L).
    _med("tcells.cd3.pre", "CD3+ before, median (range) x10^9/L", 0.96, 0.03, 3.79),
    _med("tcells.cd3.post", "CD3+ after, median (range) x10^9/L", 1.13, 0.26, 7.74),
    _p("tcells.cd3.p", "tcells", "CD3+ before vs after, Wilcoxon P", 0.016, "P = 0.016"),
    _med("tcells.cd4.pre", "CD4+ before, median (range) x10^9/L", 0.35, 0.01, 1.39),
    _med("tcells.cd4.post", "CD4+ after, median (range) x10^9/L", 0.47, 0.07, 2.94),
    _p("tcells.cd4.p", "tcells", "CD4+ before vs after, Wilcoxon P", 0.005, "P = 0.005"),
    _med("tcells.cd8.pre", "CD8+ before, median (range) x10^9/L", 0.41, 0.01, 2.39),
    _med("tcells.cd8.post", "CD8+ after, median (range) x10^9/L", 0.56, 0.07, 6.07),
    _p("tcells.cd8.p", "tcells", "CD8+ before vs after, Wilcoxon P", 0.006, "P = 0.006"),
    # Kaplan-Meier by status at referral, 1 year.
    _surv("efs.1y.CR-MRDneg", "efs", "1-year EFS, CR-MRDneg at referral", 97.8, 2.2),
    _surv("efs.1y.CR-MRDpos", "efs", "1-year EFS, CR-MRDpos at referral", 86.7, 6.2),
    _surv("efs.1y.R/R", "efs", "1-year EFS, R/R at referral", 73.3, 8.1),
    _p("efs.logrank_p", "efs", "EFS by status at referral, log-rank P", 0.001, "P = 0.001"),
    _surv("os.1y.CR-MRDneg", "os", "1-year OS, CR-MRDneg at referral", 97.8, 2.2),
    _surv("os.1y.CR-MRDpos", "os", "1-year OS, CR-MRDpos at referral", 100.0, None),
    _surv("os.1y.R/R", "os", "1-year OS, R/R at referral", 93.3, 4.6),
    _p("os.logrank_p", "os", "OS by status at referral, log-rank P", 0.029, "P = 0.029"),
    # Analyses of the paper's tables whose numbers are not in the abstract (paper-notes section 4).
    _unpublished("efs.pairwise", "efs", "EFS pairwise log-rank P (unadjusted)"),
    _unpublished("efs.event_types", "efs", "EFS events by type (patients, any time)"),
    _unpublished("os.pairwise", "os", "OS pairwise log-rank P (unadjusted)"),
    _unpublished("followup.median", "followup", "Median follow-up, reverse Kaplan-Meier (months, 95% CI)"),
    _unpublished("cytokines.il6_peak", "cytokines", "IL-6 peak, all courses, median (range) pg/mL"),
    _unpublished("cytokines.il10_peak", "cytokines", "IL-10 peak, all courses, median (range) pg/mL"),
    _unpublished("cytokines.ifng_peak", "cytokines", "IFN-γ peak, all courses, median (range) pg/mL"),
    _unpublished("cytokines.tnfa_peak", "cytokines", "TNF-α peak, all courses, median (range) pg/mL"),
    _unpublished("ae.crs", "ae", "CRS by maximum grade (patients, worst grade)"),
    _unpublished("ae.icans", "ae", "ICANS by maximum grade (patients, worst grade)"),
)


def published_by_key() -> dict[str, PublishedFigure]:
    """``PUBLISHED`` indexed by ``key``."""
    return {f.key: f for f in PUBLISHED}
