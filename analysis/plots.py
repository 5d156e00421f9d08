"""Figures of the study report: Kaplan-Meier curves with a numbers-at-risk table, as PNG bytes.

Matplotlib is used through its object API on the Agg canvas (no pyplot, no global state, no
display), so plots render identically in a headless site run and in tests. Survival times are in
days (protocol 3b.11: one year = 365 days); the x axis is shown in months of 365/12 days so the
1-year mark falls exactly on month 12.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from blina_study.analysis.survival import KaplanMeierResult

__all__ = ["DAYS_PER_MONTH", "STATUS_COLORS", "km_plot_png"]

DAYS_PER_MONTH = 365.0 / 12.0

# One colour per status at referral, the same in every plot of the report (colour-blind safe).
STATUS_COLORS: dict[str, str] = {
    "CR-MRDneg": "#0072B2",
    "CR-MRDpos": "#E69F00",
    "R/R": "#D55E00",
    "unknown": "#7F7F7F",
}
_FALLBACK_COLORS = ("#009E73", "#CC79A7", "#56B4E9", "#000000")


def _step_xy(km: KaplanMeierResult) -> tuple[np.ndarray, np.ndarray]:
    """Step-function coordinates (x in months) starting at (0, 1)."""
    t = np.asarray(km.time, dtype=float) / DAYS_PER_MONTH
    s = np.asarray(km.surv, dtype=float)
    return np.concatenate([[0.0], t]), np.concatenate([[1.0], s])


def _band(km: KaplanMeierResult, conf_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Band coordinates matching :func:`_step_xy`: 1 before the first time; where R leaves a limit
    undefined the band collapses onto the curve (S = 1 under log-log, S = 0)."""
    lo, hi = km.confidence_interval(conf_type)
    s = np.asarray(km.surv, dtype=float)
    lo_a = np.where(np.isnan(lo), s, np.asarray(lo, dtype=float))
    hi_a = np.where(np.isnan(hi), s, np.asarray(hi, dtype=float))
    return np.concatenate([[1.0], lo_a]), np.concatenate([[1.0], hi_a])


def km_plot_png(
    curves: Mapping[str, KaplanMeierResult],
    *,
    title: str,
    ylabel: str = "Survival probability",
    annotation: str | None = None,
    max_months: float | None = None,
    tick_months: float = 6.0,
    dpi: int = 110,
    conf_type: str | None = "log",
) -> bytes:
    """Kaplan-Meier curves of ``curves`` (label -> estimate, plotted in the given order) above a
    numbers-at-risk table, returned as PNG bytes.

    Censored times are marked with ``+``; the 1-year mark is a dotted vertical line. With
    ``conf_type`` (``"log"``, R's default, or ``"log-log"``; None for none) each curve carries its
    pointwise 95% confidence band, shaded in the curve's colour. The x axis
    runs from 0 to ``max_months`` (default: the last observed time, rounded up to ``tick_months``)
    with risk counts at every tick. ``annotation`` (e.g. the log-rank P) is printed in a box at
    the lower right (the legend takes the lower left). Empty groups (n = 0) are listed in the legend
    as "(no data)" and not drawn.
    """
    labels = list(curves)
    last = max((km.time[-1] for km in curves.values() if km.n), default=365.0) / DAYS_PER_MONTH
    if max_months is None:
        max_months = max(tick_months, math.ceil(last / tick_months) * tick_months)
    ticks = np.arange(0.0, max_months + 1e-9, tick_months)
    colors = {
        lab: STATUS_COLORS.get(lab, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])
        for i, lab in enumerate(labels)
    }

    n_rows = max(1, len(labels))
    # Layout in inches so the risk table keeps its row height whatever the number of groups.
    plot_h, row_h, bottom, gap, top = 3.1, 0.2, 0.1, 0.95, 0.35
    table_h = row_h * n_rows
    height = bottom + table_h + gap + plot_h + top
    fig = Figure(figsize=(7.2, height), dpi=dpi)
    FigureCanvasAgg(fig)
    left, width = 0.15, 0.81
    ax = fig.add_axes((left, (bottom + table_h + gap) / height, width, plot_h / height))
    for lab in labels:
        km = curves[lab]
        if km.n == 0:
            ax.plot([], [], color=colors[lab], label=f"{lab} (no data)")
            continue
        x, y = _step_xy(km)
        if conf_type is not None:
            lo, hi = _band(km, conf_type)
            ax.fill_between(x, lo, hi, step="post", color=colors[lab], alpha=0.13, lw=0)
        ax.step(x, y, where="post", color=colors[lab], lw=1.8, label=f"{lab} (n={km.n}, events={km.n_events})")
        cens = np.asarray(km.n_censor) > 0
        if cens.any():
            ct = np.asarray(km.time, dtype=float)[cens] / DAYS_PER_MONTH
            ax.plot(ct, np.asarray(km.surv)[cens], "+", color=colors[lab], ms=7, mew=1.2)
    ax.axvline(12.0, color="#999999", lw=0.8, ls=":")
    ax.set_xlim(0, max_months)
    ax.set_ylim(-0.02, 1.04)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("Months since the first blinatumomab course")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(True, color="#e6e6e6", lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    # Curves start at 1 and mostly stay high: the lower left is the emptiest corner.
    if conf_type is not None and any(km.n for km in curves.values()):
        ax.fill_between([], [], [], color="#888888", alpha=0.25, lw=0, label=f"95% CI ({conf_type})")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    if annotation:
        ax.text(0.98, 0.04, annotation, transform=ax.transAxes, fontsize=8.5, ha="right", va="bottom",
                bbox={"facecolor": "white", "edgecolor": "#cccccc", "boxstyle": "round,pad=0.3"})

    # Numbers at risk: one row per group, aligned with the x ticks of the plot.
    tab = fig.add_axes((left, bottom / height, width, table_h / height))
    tab.set_xlim(0, max_months)
    tab.set_ylim(-0.5, n_rows - 0.5)
    tab.axis("off")
    fig.text(0.01, (bottom + table_h + 0.08) / height, "Number at risk", fontsize=8.5, weight="bold")
    for row, lab in enumerate(labels):
        y = n_rows - 1 - row
        km = curves[lab]
        counts: Sequence[int] = km.at_risk([t * DAYS_PER_MONTH for t in ticks]) if km.n else [0] * len(ticks)
        tab.text(-0.045, y, lab, transform=tab.get_yaxis_transform(), ha="right", va="center",
                 fontsize=8, color=colors[lab])
        for t, c in zip(ticks, counts, strict=True):
            tab.text(t, y, str(c), ha="center", va="center", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
