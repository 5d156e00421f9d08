"""Small-sample statistics of the study: Fisher's exact test, Wilcoxon signed-rank, counts, medians.

Every function follows R's ``stats`` package conventions so a site can check our numbers with R:

* :func:`fisher_exact_2x2` is R ``fisher.test(rbind(c(a, b), c(c, d)))``: two-sided P summed over
  the tables no more likely than the observed one, with R's relative tolerance 1e-7 on ties;
  conditional maximum-likelihood odds ratio and exact 95 % CI as R reports them.
* :func:`wilcoxon_signed_rank` is R ``wilcox.test(after, before, paired = TRUE, exact = FALSE,
  correct = FALSE)`` for the normal approximation, and ``exact = TRUE`` for the exact P (given only
  when R would compute it: fewer than 50 non-zero differences, no ties and no zero differences).

Result objects are frozen dataclasses of plain Python numbers and strings, so ``dataclasses.asdict``
turns them into JSON-ready dicts. Each carries ``method`` (a human-readable description of what was
computed) and ``n`` (the number of observations used).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.stats.contingency import odds_ratio as _scipy_odds_ratio

__all__ = [
    "FisherResult",
    "Proportion",
    "MedianRange",
    "WilcoxonResult",
    "fisher_exact_2x2",
    "proportion",
    "median_range",
    "wilcoxon_signed_rank",
    "format_p",
    "EXACT_WILCOXON_MAX_N",
]

# R's fisher.test treats tables whose probability is within this relative tolerance of the observed
# table's probability as "equally likely" (relErr <- 1 + 10^(-7)).
_FISHER_REL_ERR = 1.0 + 1e-7

# R's wilcox.test uses the exact distribution (by default) when n < 50; we follow it.
EXACT_WILCOXON_MAX_N = 49


@dataclass(frozen=True)
class FisherResult:
    """Fisher's exact test on the 2x2 table ``[[a, b], [c, d]]`` (rows = groups, columns = yes/no).

    ``odds_ratio`` is the conditional maximum-likelihood estimate (R's ``estimate``), ``ci_low`` /
    ``ci_high`` its exact 95 % confidence interval (R's ``conf.int``); NaN when undefined (a zero
    margin).
    ``p_value`` is two-sided. ``n`` = a + b + c + d.
    """

    a: int
    b: int
    c: int
    d: int
    p_value: float
    odds_ratio: float
    ci_low: float
    ci_high: float
    n: int
    method: str


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` (e.g. courses with CR among evaluable ones); ``pct`` in percent, NaN if n = 0."""

    k: int
    n: int
    pct: float
    method: str = "count / denominator"

    def format(self, digits: int = 1) -> str:
        """The paper's style: ``"81.8% (9/11)"``; ``"- (0/0)"`` when there is no denominator."""
        if self.n == 0:
            return f"- ({self.k}/{self.n})"
        return f"{self.pct:.{digits}f}% ({self.k}/{self.n})"


@dataclass(frozen=True)
class MedianRange:
    """Median and range (min, max) of the non-missing values; NaN for all three when n = 0."""

    n: int
    median: float
    minimum: float
    maximum: float
    method: str = "median (range) of non-missing values"

    def format(self, digits: int = 2) -> str:
        """The paper's style: ``"0.96 (0.03-3.79)"``; ``"-"`` when there are no values."""
        if self.n == 0:
            return "-"
        f = f".{digits}f"
        return f"{self.median:{f}} ({self.minimum:{f}}-{self.maximum:{f}})"


@dataclass(frozen=True)
class WilcoxonResult:
    """Wilcoxon signed-rank test of paired values, differences = after - before.

    Fields: ``n`` pairs with both values; ``n_zero`` zero differences (dropped); ``n_used`` =
    n - n_zero;
    ``statistic`` = R's V, the sum of the ranks of |d| over positive differences; ``z`` and
    ``p_normal`` from the normal approximation without continuity correction and with the
    tie-corrected variance; ``p_exact`` from the exact null distribution, or None when it does not
    apply (ties, zero differences, or n_used > 49, as in R). ``p_value`` is the primary P: the
    normal approximation (the protocol's first-named method, and SPSS's default "Asymp. Sig." that
    the paper most likely printed), so sites of any size report the same statistic; ``p_exact`` is
    stated beside it. ``method`` names both.
    """

    n: int
    n_zero: int
    n_used: int
    statistic: float
    z: float
    p_normal: float
    p_exact: float | None
    p_value: float
    has_ties: bool
    method: str


def _clean_count(x: int, name: str) -> int:
    if isinstance(x, bool) or not float(x).is_integer() or x < 0:
        raise ValueError(f"{name} must be a non-negative whole count, got {x!r}")
    return int(x)


def fisher_exact_2x2(a: int, b: int, c: int, d: int) -> FisherResult:
    """Two-sided Fisher's exact test of the table ``[[a, b], [c, d]]``, as R ``fisher.test``.

    The P value sums the hypergeometric probabilities (margins fixed) of all tables whose
    probability is <= the observed table's probability times (1 + 1e-7), exactly as R does, so
    tables "tied" up to rounding are counted on both sides. A table with a zero margin has P = 1.
    """
    a, b, c, d = (_clean_count(v, k) for v, k in ((a, "a"), (b, "b"), (c, "c"), (d, "d")))
    n = a + b + c + d
    col1 = a + c  # R: m = sum(x[, 1])
    row1 = a + b  # R: k = sum(x[1, ])
    lo = max(0, row1 - (n - col1))
    hi = min(row1, col1)
    if hi == lo:
        # Only one table is possible with these margins.
        p = 1.0
    else:
        support = np.arange(lo, hi + 1)
        logp = sps.hypergeom.logpmf(support, n, col1, row1)
        dens = np.exp(logp - logp.max())
        obs = dens[a - lo]
        p = float(min(1.0, dens[dens <= obs * _FISHER_REL_ERR].sum() / dens.sum()))
    if 0 in (row1, c + d, col1, b + d):
        or_, lo_ci, hi_ci = math.nan, math.nan, math.nan
    else:
        res = _scipy_odds_ratio(np.array([[a, b], [c, d]]), kind="conditional")
        ci = res.confidence_interval(confidence_level=0.95)
        or_, lo_ci, hi_ci = float(res.statistic), float(ci.low), float(ci.high)
    return FisherResult(
        a=a,
        b=b,
        c=c,
        d=d,
        p_value=p,
        odds_ratio=or_,
        ci_low=lo_ci,
        ci_high=hi_ci,
        n=n,
        method="Fisher's exact test, two-sided (R fisher.test convention)",
    )


def proportion(k: int, n: int) -> Proportion:
    """``k`` of ``n`` with the percentage (NaN when n = 0)."""
    k, n = _clean_count(k, "k"), _clean_count(n, "n")
    if k > n:
        raise ValueError(f"numerator {k} exceeds denominator {n}")
    return Proportion(k=k, n=n, pct=(100.0 * k / n) if n else math.nan)


def _finite(values: Iterable[float | None]) -> np.ndarray:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return arr[~np.isnan(arr)]


def median_range(values: Iterable[float | None]) -> MedianRange:
    """Median (range) of ``values``; None / NaN are ignored (``n`` counts the rest)."""
    arr = _finite(values)
    if arr.size == 0:
        return MedianRange(n=0, median=math.nan, minimum=math.nan, maximum=math.nan)
    return MedianRange(
        n=int(arr.size),
        median=float(np.median(arr)),
        minimum=float(arr.min()),
        maximum=float(arr.max()),
    )


def _signrank_null_counts(n: int) -> np.ndarray:
    """Number of subsets of {1..n} with each rank sum 0..n(n+1)/2 (exact null distribution of V)."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=np.float64)  # exact: values stay below 2**49 for n <= 49
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[: top + 1 - r].copy()
    return counts


def _exact_signrank_p(v: float, n: int) -> float:
    counts = _signrank_null_counts(n)
    total = 2.0**n
    vi = int(round(v))
    # R: if V > n(n+1)/4, P = P(V >= v) else P(V <= v); two-sided = min(1, 2P).
    if v > n * (n + 1) / 4:
        p = counts[vi:].sum() / total
    else:
        p = counts[: vi + 1].sum() / total
    return float(min(1.0, 2.0 * p))


def wilcoxon_signed_rank(before: Sequence[float | None], after: Sequence[float | None]) -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``after`` vs ``before``.

    As R ``wilcox.test(after, before, paired = TRUE)``.

    Pairs with a missing value on either side are left out. Zero differences are dropped (R's
    convention), ranks of |d| use mid-ranks for ties, and the normal approximation uses the
    tie-corrected variance n(n+1)(2n+1)/24 - sum(t^3 - t)/48 without continuity correction.
    The exact P is computed when n_used <= 49 and there are no ties and no zero differences.
    With no non-zero difference the test is undefined: P is NaN and ``method`` says so.
    """
    x = np.asarray([np.nan if v is None else v for v in before], dtype=float)
    y = np.asarray([np.nan if v is None else v for v in after], dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"before has {x.size} values but after has {y.size}; pairs must align")
    keep = ~(np.isnan(x) | np.isnan(y))
    diff = y[keep] - x[keep]
    n = int(diff.size)
    nonzero = diff[diff != 0]
    n_zero = n - int(nonzero.size)
    m = int(nonzero.size)
    if m == 0:
        return WilcoxonResult(
            n=n,
            n_zero=n_zero,
            n_used=0,
            statistic=math.nan,
            z=math.nan,
            p_normal=math.nan,
            p_exact=None,
            p_value=math.nan,
            has_ties=False,
            method=f"Wilcoxon signed-rank: not computable, no non-zero paired difference (n={n})",
        )
    ranks = sps.rankdata(np.abs(nonzero))  # average ranks for ties, as R's rank()
    v = float(ranks[nonzero > 0].sum())
    _, tie_sizes = np.unique(ranks, return_counts=True)
    has_ties = bool((tie_sizes > 1).any())
    sigma2 = m * (m + 1) * (2 * m + 1) / 24.0 - float((tie_sizes**3 - tie_sizes).sum()) / 48.0
    if sigma2 > 0:
        z = (v - m * (m + 1) / 4.0) / math.sqrt(sigma2)
        p_normal = float(min(1.0, 2.0 * min(sps.norm.cdf(z), sps.norm.sf(z))))
    else:
        z, p_normal = math.nan, math.nan
    exact_ok = m <= EXACT_WILCOXON_MAX_N and not has_ties and n_zero == 0
    p_exact = _exact_signrank_p(v, m) if exact_ok else None
    normal_txt = (
        "normal approximation without continuity correction, tie-corrected variance, "
        f"zeros dropped (n={m}"
        + (f", {n_zero} zero difference{'s' if n_zero != 1 else ''} dropped" if n_zero else "")
        + ")"
    )
    if p_exact is not None:
        method = f"Wilcoxon signed-rank, {normal_txt}; exact P also given (no ties, no zeros)"
    else:
        why = "ties" if has_ties else ("zero differences" if n_zero else f"n={m} > 49")
        method = f"Wilcoxon signed-rank, {normal_txt}; exact P not computed ({why})"
    p_value = p_normal
    return WilcoxonResult(
        n=n,
        n_zero=n_zero,
        n_used=m,
        statistic=v,
        z=float(z),
        p_normal=p_normal,
        p_exact=p_exact,
        p_value=p_value,
        has_ties=has_ties,
        method=method,
    )


def format_p(p: float | None) -> str:
    """P in the paper's style: 3 decimals (``"P = 0.016"``, ``"P = 1.000"``), ``"P < 0.001"`` below,
    but 4 decimals when 0.0001 <= P < 0.001 (``"P = 0.0001"`` as printed for poor cytogenetics)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "P = -"
    if p < 0.0001:
        return "P < 0.0001"
    if p < 0.001:
        return f"P = {p:.4f}"
    return f"P = {p:.3f}"
