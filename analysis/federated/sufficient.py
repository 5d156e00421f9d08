"""Per-site sufficient statistics for the study's pooled analyses (protocol section 5).

Every function here reads one site's ``course`` / ``patient`` DataFrames (protocol section 4)
and returns plain JSON-serializable dicts: sums over that site's patients that let the
coordinator rebuild the centralized analysis *exactly* (see ``pooling``). No DataFrame,
numpy scalar, date or source identifier ends up in the output.

Each statistic carries ``"disclosure"``:

* ``"coordinator-only"``: a pooling input (per-time survival counts, per-pattern risk sets,
  difference histograms, full 2x2 tables). Needed unsuppressed for exactness; it travels
  to the coordinator under the data-use agreement and is never published as a table.
* ``"publishable"``: an aggregate meant for the report (count tables, per-site log-rank
  scores). Count cells are still subject to small-cell suppression before publication.

Units: survival times in integer days; lab values in the protocol's canonical units at the
data's own precision (``decimals`` None, the default: the float itself, which JSON carries
exactly), or, when a study sets ``lab_decimals`` / ``cytokine_decimals``, quantized to that many
places and stored as integers in units of ``10**-decimals``. Rounding is not the default because
it changes the test: rounding CD3 values to 2 decimals moved min(W+, W-) from 1149 to 1148.5 on
the demo cohort (issue 13), so the pooled test was no longer the centralized one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from blina_study.adapter.errors import BlinaError

__all__ = [
    "FORMAT_VERSION",
    "COORDINATOR_ONLY",
    "PUBLISHABLE",
    "FederatedInputError",
    "FederatedParams",
    "COURSE_COLUMNS",
    "PATIENT_COLUMNS",
    "km_table",
    "logrank_scores",
    "table2x2",
    "cox_pattern_counts",
    "value_histogram",
    "paired_difference_histogram",
    "count_table",
    "site_statistics",
]

FORMAT_VERSION = "blina-federated-stats/1"
COORDINATOR_ONLY = "coordinator-only"
PUBLISHABLE = "publishable"

# Columns of the protocol's section 4 that the pooled analyses read. person_source_value and
# the date columns are deliberately absent: they never enter a statistic.
COURSE_COLUMNS: tuple[str, ...] = (
    "site_id", "person_id", "course_number", "pre_status", "cr", "mrd_maintained",
    "high_mrd", "cd19_loss", "cd3_pre", "cd3_post", "cd4_pre", "cd4_post", "cd8_pre",
    "cd8_post", "il6_peak", "il10_peak", "ifng_peak", "tnfa_peak",
)  # fmt: skip
PATIENT_COLUMNS: tuple[str, ...] = (
    "site_id", "person_id", "sex", "age_at_index_years", "indication", "status_at_referral",
    "burden_reduction", "poor_cytogenetics", "bcr_abl1", "next_therapy", "efs_event",
    "efs_days", "os_event", "os_days",
)  # fmt: skip

STATUS_LEVELS = ("R/R", "CR-MRDpos", "CR-MRDneg", "unknown")
MISSING = "missing"


class FederatedInputError(BlinaError, ValueError):
    """A site's course/patient table cannot produce statistics; the message names the fix."""


@dataclass(frozen=True)
class FederatedParams:
    """Study parameters of the pooled analyses; every site must use the same values.

    ``predictors`` are evaluated among courses with pre-status R/R or CR-MRDpos and a
    non-NULL ``cr``; ``age_group`` is ``age_at_index_years >= age_group_cut_years`` and
    ``sex`` is M (True) versus F (False). ``scopes``: ``course1`` (first course only) and
    ``all`` (every course).
    """

    km_groups: tuple[str, ...] = ("CR-MRDneg", "CR-MRDpos", "R/R")
    landmark_days: tuple[int, ...] = (365,)
    # The centralized report's risk-table days (blina_study.analysis.tables.DEFAULT_SETTINGS["risk_times_days"]).
    risk_table_days: tuple[int, ...] = (0, 90, 180, 270, 365, 545, 730)
    cox_covariates: tuple[str, ...] = ("high_mrd", "bcr_abl1", "poor_cytogenetics")
    predictors: tuple[str, ...] = (
        "poor_cytogenetics", "bcr_abl1", "cd19_loss", "high_mrd", "age_group", "sex",
    )  # fmt: skip
    scopes: tuple[str, ...] = ("course1", "all")
    lab_markers: tuple[str, ...] = ("cd3", "cd4", "cd8")
    lab_decimals: int | None = None
    cytokines: tuple[str, ...] = ("il6", "il10", "ifng", "tnfa")
    cytokine_decimals: int | None = None
    age_group_cut_years: float = 10.0
    exact_wilcoxon_max_n: int = 200

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FederatedParams:
        """Inverse of ``to_dict``; unknown keys are an error, missing keys take defaults."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FederatedInputError(
                f"unknown federated parameter(s) {unknown}; valid names are {sorted(known)}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Input normalization
# ---------------------------------------------------------------------------------------------


def _where(df: pd.DataFrame, idx: Any, table: str) -> str:
    row = df.loc[idx]
    parts = [f"{table} row {idx!r}"]
    for key in ("site_id", "person_id", "course_number"):
        if key in df.columns:
            value = row[key]
            parts.append(f"{key}={value.item() if isinstance(value, np.generic) else value!r}")
    return ", ".join(parts)


def _require_columns(df: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise FederatedInputError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FederatedInputError(
            f"{table} table lacks column(s) {missing}; it must have the columns of "
            "study-protocol section 4 (re-run the adapter that builds it)"
        )


def _bool_column(df: pd.DataFrame, column: str, table: str) -> list[bool | None]:
    """Column as a list of True/False/None; anything else is an error naming the row."""
    out: list[bool | None] = []
    for idx, v in df[column].items():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif isinstance(v, (int, np.integer, float, np.floating)) and v in (0, 1):
            out.append(bool(v))
        else:
            raise FederatedInputError(
                f"{_where(df, idx, table)}: column {column!r} must be boolean or NULL, got {v!r}"
            )
    return out


def _text_column(df: pd.DataFrame, column: str) -> list[str | None]:
    out: list[str | None] = []
    for v in df[column].tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(str(v))
    return out


def _float_column(df: pd.DataFrame, column: str, table: str) -> list[float | None]:
    out: list[float | None] = []
    for idx, v in df[column].items():
        if v is None or v is pd.NA:
            out.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise FederatedInputError(
                f"{_where(df, idx, table)}: column {column!r} must be numeric or NULL, got {v!r}"
            ) from None
        if math.isnan(f):
            out.append(None)
        elif math.isinf(f):
            raise FederatedInputError(f"{_where(df, idx, table)}: column {column!r} is infinite")
        else:
            out.append(f)
    return out


def _days_column(df: pd.DataFrame, column: str, table: str) -> list[int]:
    """Non-NULL, non-negative integer day counts (survival times)."""
    out: list[int] = []
    for idx, v in zip(df.index, _float_column(df, column, table), strict=True):
        if v is None or v < 0 or v != int(v):
            raise FederatedInputError(
                f"{_where(df, idx, table)}: column {column!r} must be a non-negative whole "
                f"number of days, got {df.at[idx, column]!r}; fix the derivation of this patient"
            )
        out.append(int(v))
    return out


def _check_site(df: pd.DataFrame, site_id: str, table: str) -> None:
    other = sorted({str(s) for s in df["site_id"].tolist()} - {site_id})
    if other:
        raise FederatedInputError(
            f"{table} table holds rows of site(s) {other} besides {site_id!r}; "
            "pass one site's rows at a time"
        )


def _check_unique(df: pd.DataFrame, keys: list[str], table: str) -> None:
    dup = df.duplicated(subset=keys, keep=False)
    if dup.any():
        first = df.index[dup.to_numpy()][0]
        raise FederatedInputError(
            f"{_where(df, first, table)}: duplicate key {keys}; each key must appear once"
        )


def _quantize(value: float, decimals: int | None) -> float | int:
    """``value`` itself (decimals None: the data's own precision) or an integer in 10**-decimals."""
    if decimals is None:
        return float(value)
    # Round half away from zero on the decimal string so 0.125 -> 13 regardless of binary noise.
    scaled = value * 10**decimals
    q = int(math.floor(abs(scaled) + 0.5 + 1e-9))
    return q if scaled >= 0 else -q


# ---------------------------------------------------------------------------------------------
# Generic building blocks (also used directly by the vantage6 partial functions)
# ---------------------------------------------------------------------------------------------


def km_table(times: Sequence[int], events: Sequence[bool]) -> dict[str, Any]:
    """Per distinct follow-up time: events and censorings (one group, one site).

    Returns ``{"time": [...], "events": [...], "censored": [...]}`` sorted by time (days).
    The risk set at t is everyone with time >= t, so it is rebuilt exactly by summing
    ``events + censored`` over times >= t.
    """
    counts: dict[int, list[int]] = {}
    for t, e in zip(times, events, strict=True):
        cell = counts.setdefault(int(t), [0, 0])
        cell[0 if e else 1] += 1
    ts = sorted(counts)
    return {
        "time": ts,
        "events": [counts[t][0] for t in ts],
        "censored": [counts[t][1] for t in ts],
    }


def logrank_scores(
    times: Sequence[int], events: Sequence[bool], groups: Sequence[str], levels: Sequence[str]
) -> dict[str, Any]:
    """Log-rank score vector U = O - E (per level) and its covariance V within one site.

    Computed over the site's own risk sets, so that summing U and V over sites gives the
    site-stratified log-rank test. ``observed`` and ``expected`` are per level.
    """
    g_idx = {g: i for i, g in enumerate(levels)}
    sel = [i for i, g in enumerate(groups) if g in g_idx]
    t = np.asarray([times[i] for i in sel], dtype=np.int64)
    e = np.asarray([bool(events[i]) for i in sel], dtype=bool)
    g = np.asarray([g_idx[groups[i]] for i in sel], dtype=np.int64)
    G = len(levels)
    observed = np.zeros(G)
    expected = np.zeros(G)
    V = np.zeros((G, G))
    for tj in np.unique(t[e]):
        at_risk = t >= tj
        n_g = np.bincount(g[at_risk], minlength=G).astype(float)
        d_g = np.bincount(g[(t == tj) & e], minlength=G).astype(float)
        n, d = n_g.sum(), d_g.sum()
        observed += d_g
        expected += d * n_g / n
        if n > 1:
            p = n_g / n
            V += d * (n - d) / (n - 1) * (np.diag(p) - np.outer(p, p))
    return {
        "levels": list(levels),
        "n": [int(x) for x in np.bincount(g, minlength=G)],
        "observed": [float(x) for x in observed],
        "expected": [float(x) for x in expected],
        "U": [float(x) for x in observed - expected],
        "V": [[float(x) for x in row] for row in V],
    }


def table2x2(
    exposure: Sequence[bool | None],
    outcome: Sequence[bool | None],
    *,
    row_labels: tuple[str, str],
    col_labels: tuple[str, str],
) -> dict[str, Any]:
    """2x2 table [[a, b], [c, d]]: rows exposure True/False, columns outcome True/False.

    Pairs with a NULL on either side are left out and counted in ``n_missing``.
    """
    tab = [[0, 0], [0, 0]]
    n_missing = 0
    for x, y in zip(exposure, outcome, strict=True):
        if x is None or y is None:
            n_missing += 1
            continue
        tab[0 if x else 1][0 if y else 1] += 1
    return {
        "row_labels": list(row_labels),
        "col_labels": list(col_labels),
        "table": tab,
        "n_missing": n_missing,
    }


def cox_pattern_counts(
    times: Sequence[int], events: Sequence[bool], covariates: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """One site's exact sufficient statistic for a Cox model with discrete covariates.

    For each distinct covariate pattern x_p and each event time t_j of the site:
    ``at_risk[j][p]`` = #(pattern p, time >= t_j) and ``events[j][p]`` = #(pattern p,
    event at t_j); ``censored[k][p]`` = #(pattern p, censored at ``censor_times[k]``).
    Every Efron-ties term of the site's stratum (S0/S1/S2 over the risk
    set, T0/T1/T2 over the tied events) is a sum over patterns of these counts times
    exp(x_p beta), so the coordinator can run Newton-Raphson without further rounds.
    """
    pats: dict[tuple[float, ...], int] = {}
    p_of = []
    for row in covariates:
        key = tuple(float(v) for v in row)
        p_of.append(pats.setdefault(key, len(pats)))
    t = np.asarray(times, dtype=np.int64)
    e = np.asarray(events, dtype=bool)
    p_arr = np.asarray(p_of, dtype=np.int64)
    P = len(pats)
    ev_times = np.unique(t[e]) if len(t) else np.array([], dtype=np.int64)
    at_risk = [[int(x) for x in np.bincount(p_arr[t >= tj], minlength=P)] for tj in ev_times]
    n_ev = [[int(x) for x in np.bincount(p_arr[(t == tj) & e], minlength=P)] for tj in ev_times]
    cens_times = np.unique(t[~e]) if len(t) else np.array([], dtype=np.int64)
    n_cens = [[int(x) for x in np.bincount(p_arr[(t == tc) & ~e], minlength=P)] for tc in cens_times]
    return {
        "patterns": [list(k) for k in pats],
        "event_times": [int(x) for x in ev_times],
        "at_risk": at_risk,
        "events": n_ev,
        # Censorings per pattern: with the events they are the site's (time, event, pattern)
        # multiset, so the coordinator can also fit the unstratified model (pooled risk sets).
        "censor_times": [int(x) for x in cens_times],
        "censored": n_cens,
        "n": len(t),
        "n_events": int(e.sum()),
    }


def value_histogram(values: Iterable[float | None], decimals: int | None) -> dict[str, Any]:
    """Counts of values: ``[[value, count], ...]``; the value itself (decimals None) or quantized to
    ``decimals`` places in units of 10**-decimals."""
    counts: dict[float | int, int] = {}
    for v in values:
        if v is None:
            continue
        q = _quantize(v, decimals)
        counts[q] = counts.get(q, 0) + 1
    return {"decimals": decimals, "bins": [[k, counts[k]] for k in sorted(counts)]}


def paired_difference_histogram(
    pre: Sequence[float | None], post: Sequence[float | None], decimals: int | None
) -> dict[str, Any]:
    """Histogram of post - pre, plus the two marginal histograms.

    ``decimals`` None (default): the difference is ``post - pre`` computed in float64 exactly as
    the centralized test computes it, so the pooled ranks, ties and zeros are the centralized
    ones. With ``decimals`` set, values are quantized first and the difference is an integer in
    units of 10**-decimals. Only complete pairs count; ``n_incomplete`` pairs are left out.
    """
    diffs: dict[float | int, int] = {}
    pre_v: list[float] = []
    post_v: list[float] = []
    n_incomplete = 0
    for a, b in zip(pre, post, strict=True):
        if a is None or b is None:
            n_incomplete += 1
            continue
        d = float(b) - float(a) if decimals is None else _quantize(b, decimals) - _quantize(a, decimals)
        diffs[d] = diffs.get(d, 0) + 1
        pre_v.append(a)
        post_v.append(b)
    return {
        "decimals": decimals,
        "differences": [[k, diffs[k]] for k in sorted(diffs)],
        "pre": value_histogram(pre_v, decimals)["bins"],
        "post": value_histogram(post_v, decimals)["bins"],
        "n_incomplete": n_incomplete,
    }


def count_table(
    columns: Sequence[Sequence[str | None]], dims: Sequence[str], levels: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Cross-tabulated counts over ``dims``; every combination of ``levels`` is present (zeros
    included) and values outside them are appended as extra levels (NULL = "missing").

    Returns ``{"dims", "levels", "cells": [[level_1, ..., level_k, n], ...]}``.
    """
    lv = [list(x) for x in levels]
    counts: dict[tuple[str, ...], int] = {}
    for row in zip(*columns, strict=True):
        key = tuple(MISSING if v is None else str(v) for v in row)
        for i, v in enumerate(key):
            if v not in lv[i]:
                lv[i].append(v)
        counts[key] = counts.get(key, 0) + 1
    cells = [[*k, counts.get(k, 0)] for k in _product(lv)]
    return {"dims": list(dims), "levels": lv, "cells": cells}


def _product(levels: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for lv in levels:
        out = [(*k, v) for k in out for v in lv]
    return out


# ---------------------------------------------------------------------------------------------
# The study's site statistics
# ---------------------------------------------------------------------------------------------


def _stat(kind: str, disclosure: str, **payload: Any) -> dict[str, Any]:
    return {"kind": kind, "disclosure": disclosure, **payload}


def _prepare(
    course: pd.DataFrame, patient: pd.DataFrame, site_id: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    _require_columns(course, COURSE_COLUMNS, "course")
    _require_columns(patient, PATIENT_COLUMNS, "patient")
    # Positional index, so error messages can name "row N" of the table as given.
    course = course.loc[:, list(COURSE_COLUMNS)].reset_index(drop=True)
    patient = patient.loc[:, list(PATIENT_COLUMNS)].reset_index(drop=True)
    _check_site(course, site_id, "course")
    _check_site(patient, site_id, "patient")
    _check_unique(course, ["person_id", "course_number"], "course")
    _check_unique(patient, ["person_id"], "patient")
    orphans = sorted(set(course["person_id"].tolist()) - set(patient["person_id"].tolist()))
    if orphans:
        raise FederatedInputError(
            f"course table has person_id(s) {orphans[:5]} with no patient row; "
            "build both tables from the same run"
        )
    return course, patient


def _response_population(course: pd.DataFrame, patient: pd.DataFrame, params: FederatedParams):
    """Courses with pre-status R/R or CR-MRDpos and non-NULL cr, with patient covariates."""
    pre = _text_column(course, "pre_status")
    cr = _bool_column(course, "cr", "course")
    keep = [p in ("R/R", "CR-MRDpos") and c is not None for p, c in zip(pre, cr, strict=True)]
    sub = course.loc[keep].reset_index(drop=True)
    pat = patient.set_index("person_id")
    by_person = {
        "poor_cytogenetics": dict(
            zip(pat.index, _bool_column(patient, "poor_cytogenetics", "patient"), strict=True)
        ),
        "bcr_abl1": dict(zip(pat.index, _bool_column(patient, "bcr_abl1", "patient"), strict=True)),
        "age": dict(
            zip(pat.index, _float_column(patient, "age_at_index_years", "patient"), strict=True)
        ),
        "sex": dict(zip(pat.index, _text_column(patient, "sex"), strict=True)),
    }
    return sub, by_person


def _predictor_values(
    sub: pd.DataFrame, by_person: dict[str, dict], name: str, params: FederatedParams
) -> list[bool | None]:
    pid = sub["person_id"].tolist()
    if name in ("poor_cytogenetics", "bcr_abl1"):
        return [by_person[name][p] for p in pid]
    if name in ("cd19_loss", "high_mrd"):
        return _bool_column(sub, name, "course")
    if name == "age_group":
        return [None if by_person["age"][p] is None
                else by_person["age"][p] >= params.age_group_cut_years for p in pid]  # fmt: skip
    if name == "sex":
        return [{"M": True, "F": False}.get(by_person["sex"][p] or "") for p in pid]
    raise FederatedInputError(
        f"unknown predictor {name!r}; valid: poor_cytogenetics, bcr_abl1, cd19_loss, "
        "high_mrd, age_group, sex"
    )


def _scoped(course: pd.DataFrame, scope: str) -> pd.DataFrame:
    if scope == "course1":
        return course.loc[course["course_number"] == 1].reset_index(drop=True)
    if scope == "all":
        return course
    raise FederatedInputError(f"unknown scope {scope!r}; valid: 'course1', 'all'")


def site_statistics(
    course: pd.DataFrame,
    patient: pd.DataFrame,
    *,
    site_id: str,
    params: FederatedParams | None = None,
) -> dict[str, Any]:
    """All sufficient statistics of one site for the study's pooled analyses.

    Input: the site's ``course`` and ``patient`` tables (protocol section 4). Output: a
    JSON-serializable dict ``{"format", "site_id", "parameters", "n_patients", "n_courses",
    "statistics": {name: {"kind", "disclosure", ...}}}``. Names:

    * ``km/<efs|os>/<group>`` (group = a ``km_groups`` level or ``all``): ``km_table``.
    * ``logrank/<efs|os>``: per-site U, V over ``km_groups`` (site-stratified log-rank).
    * ``response/<scope>``: 2x2 R/R vs CR-MRDpos x cr, for Fisher / CMH.
    * ``predictor/<scope>/<name>``: 2x2 predictor x poor response (cr false).
    * ``cox/efs``: per-pattern risk-set counts for the site-stratified Cox model.
    * ``wilcoxon/<marker>``: course-1 paired difference histogram (post - pre).
    * ``cytokine/<scope>/<cytokine>/<group>``: value histograms; group responder / poor_responder
      (pre R/R or CR-MRDpos: CR / no CR), mrdneg_maintained / mrdneg_lost (pre CR-MRDneg) and
      all_courses (every course with a value).
    * ``counts/<name>``: publishable count tables (patient flow, response, next therapy).
    """
    params = params or FederatedParams()
    site_id = str(site_id)
    course, patient = _prepare(course, patient, site_id)
    stats: dict[str, dict[str, Any]] = {}

    # Survival (patient level).
    groups = _text_column(patient, "status_at_referral")
    for ep in ("efs", "os"):
        times = _days_column(patient, f"{ep}_days", "patient")
        ev = _bool_column(patient, f"{ep}_event", "patient")
        for idx, flag in enumerate(ev):
            if flag is None:
                raise FederatedInputError(
                    f"{_where(patient, idx, 'patient')}: {ep}_event is NULL; every patient "
                    "needs an event flag (false = censored)"
                )
        events = [bool(x) for x in ev]
        for g in (*params.km_groups, "all"):
            sel = [i for i, x in enumerate(groups) if g == "all" or x == g]
            stats[f"km/{ep}/{g}"] = _stat(
                "km_table", COORDINATOR_ONLY, endpoint=ep, group=g,
                **km_table([times[i] for i in sel], [events[i] for i in sel]),
            )  # fmt: skip
        lr_groups = [g if g is not None else MISSING for g in groups]
        stats[f"logrank/{ep}"] = _stat(
            "logrank_scores", PUBLISHABLE, endpoint=ep,
            **logrank_scores(times, events, lr_groups, params.km_groups),
        )  # fmt: skip

    # Response and predictors (course level).
    sub, by_person = _response_population(course, patient, params)
    for scope in params.scopes:
        sc = _scoped(sub, scope)
        pre = _text_column(sc, "pre_status")
        cr = _bool_column(sc, "cr", "course")
        stats[f"response/{scope}"] = _stat(
            "table2x2", COORDINATOR_ONLY, scope=scope,
            **table2x2([p == "R/R" for p in pre], cr,
                       row_labels=("R/R", "CR-MRDpos"), col_labels=("cr", "no_cr")),
        )  # fmt: skip
        poor = [None if c is None else not c for c in cr]
        for name in params.predictors:
            stats[f"predictor/{scope}/{name}"] = _stat(
                "table2x2", COORDINATOR_ONLY, scope=scope, predictor=name,
                **table2x2(_predictor_values(sc, by_person, name, params), poor,
                           row_labels=(f"{name}=yes", f"{name}=no"),
                           col_labels=("poor_response", "response")),
            )  # fmt: skip
        for cyt in params.cytokines:
            vals = _float_column(sc, f"{cyt}_peak", "course")
            for label, want in (("responder", True), ("poor_responder", False)):
                stats[f"cytokine/{scope}/{cyt}/{label}"] = _stat(
                    "value_histogram", COORDINATOR_ONLY, scope=scope, variable=f"{cyt}_peak",
                    group=label,
                    **value_histogram(
                        [v for v, c in zip(vals, cr, strict=True) if c is want],
                        params.cytokine_decimals,
                    ),
                )  # fmt: skip
        # Every course of the scope with a value, whatever the response (the centralized "all courses").
        every = _scoped(course, scope)
        for cyt in params.cytokines:
            stats[f"cytokine/{scope}/{cyt}/all_courses"] = _stat(
                "value_histogram", COORDINATOR_ONLY, scope=scope, variable=f"{cyt}_peak",
                group="all_courses",
                **value_histogram(_float_column(every, f"{cyt}_peak", "course"), params.cytokine_decimals),
            )  # fmt: skip
        # Courses in CR-MRDneg before the course, by MRD negativity maintained or lost: with the
        # two groups above, the four response groups of the centralized cytokine table (5.5).
        neg = _scoped(course, scope)
        neg_pre = _text_column(neg, "pre_status")
        kept = _bool_column(neg, "mrd_maintained", "course")
        for cyt in params.cytokines:
            vals = _float_column(neg, f"{cyt}_peak", "course")
            for label, want in (("mrdneg_maintained", True), ("mrdneg_lost", False)):
                stats[f"cytokine/{scope}/{cyt}/{label}"] = _stat(
                    "value_histogram", COORDINATOR_ONLY, scope=scope, variable=f"{cyt}_peak",
                    group=label,
                    **value_histogram(
                        [v for v, p, k in zip(vals, neg_pre, kept, strict=True)
                         if p == "CR-MRDneg" and k is want],
                        params.cytokine_decimals,
                    ),
                )  # fmt: skip

    # Cox PH for EFS, stratified by site (complete cases on the covariates).
    stats["cox/efs"] = _site_cox(course, patient, params)

    # Paired T-cell values around course 1.
    c1 = _scoped(course, "course1")
    for m in params.lab_markers:
        stats[f"wilcoxon/{m}"] = _stat(
            "paired_difference_histogram", COORDINATOR_ONLY, variable=m, scope="course1",
            **paired_difference_histogram(
                _float_column(c1, f"{m}_pre", "course"),
                _float_column(c1, f"{m}_post", "course"),
                params.lab_decimals,
            ),
        )  # fmt: skip

    stats.update(_site_counts(course, patient))
    return {
        "format": FORMAT_VERSION,
        "site_id": site_id,
        "parameters": params.to_dict(),
        "n_patients": len(patient),
        "n_courses": len(course),
        "statistics": stats,
    }


def _site_cox(
    course: pd.DataFrame, patient: pd.DataFrame, params: FederatedParams
) -> dict[str, Any]:
    c1 = course.loc[course["course_number"] == 1]
    cols: list[list[bool | None]] = []
    for name in params.cox_covariates:
        if name in patient.columns and name not in ("efs_event", "os_event"):
            cols.append(_bool_column(patient, name, "patient"))
        elif name in c1.columns:
            m = dict(zip(c1["person_id"].tolist(), _bool_column(c1, name, "course"), strict=True))
            cols.append([m.get(p) for p in patient["person_id"].tolist()])
        else:
            raise FederatedInputError(
                f"Cox covariate {name!r} is neither a patient nor a course column"
            )
    times = _days_column(patient, "efs_days", "patient")
    events = _bool_column(patient, "efs_event", "patient")
    rows = list(zip(*cols, strict=True)) if cols else [()] * len(patient)
    keep = [all(v is not None for v in r) and e is not None for r, e in zip(rows, events,
                                                                             strict=True)]
    counts = cox_pattern_counts(
        [t for t, k in zip(times, keep, strict=True) if k],
        [bool(e) for e, k in zip(events, keep, strict=True) if k],
        [[1.0 if v else 0.0 for v in r] for r, k in zip(rows, keep, strict=True) if k],
    )
    return _stat(
        "cox_pattern_counts", COORDINATOR_ONLY, endpoint="efs",
        covariates=list(params.cox_covariates), n_excluded_missing=keep.count(False), **counts,
    )  # fmt: skip


def _site_counts(course: pd.DataFrame, patient: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Publishable count tables: patient flow (section 1), response, next therapy.

    Kept to one or two dimensions without structural zeros, so small-cell suppression hides
    as little as possible. ``response/<scope>``: per pre-status, ``response`` = CR (pre R/R or
    CR-MRDpos, rule 7) or MRD negativity maintained (pre CR-MRDneg); ``not_evaluable`` = NULL.
    """
    c1 = course.loc[course["course_number"] == 1]
    pre1 = dict(zip(c1["person_id"].tolist(), _text_column(c1, "pre_status"), strict=True))
    pid = patient["person_id"].tolist()
    referral = _text_column(patient, "status_at_referral")
    course1 = [pre1.get(p) for p in pid]
    burden = [None if b is None else ("yes" if b else "no")
              for b in _bool_column(patient, "burden_reduction", "patient")]  # fmt: skip
    status = list(STATUS_LEVELS)
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, unit: str, columns, dims, levels) -> None:
        out[f"counts/{name}"] = _stat(
            "count_table", PUBLISHABLE, unit=unit, **count_table(columns, dims, levels)
        )

    add("indication", "patients", [_text_column(patient, "indication")], ["indication"],
        [["R/R", "CR-MRDpos", "chemo_delay"]])  # fmt: skip
    add("referral_by_course1", "patients", [referral, course1],
        ["status_at_referral", "pre_status_course1"], [status, status])  # fmt: skip
    add("burden_reduction", "patients", [referral, burden],
        ["status_at_referral", "burden_reduction"], [status, ["yes", "no"]])  # fmt: skip
    # The pathway of section 1 (referral > burden reduction > status before course 1), as the
    # centralized flow counts it; a 3-D table (suppression handles any number of dimensions).
    add("pathway", "patients", [referral, burden, course1],
        ["status_at_referral", "burden_reduction", "pre_status_course1"], [status, ["yes", "no"], status])
    rr = [i for i, r in enumerate(referral) if r == "R/R"]
    add("rr_burden_by_course1", "patients", [[burden[i] for i in rr], [course1[i] for i in rr]],
        ["burden_reduction", "pre_status_course1"], [["yes", "no"], status])  # fmt: skip
    add("next_therapy", "patients", [referral, _text_column(patient, "next_therapy")],
        ["status_at_referral", "next_therapy"],
        [status, ["HSCT", "CAR-T", "protocol", "none"]])  # fmt: skip
    for scope in ("course1", "all"):
        sc = _scoped(course, scope)
        pre = _text_column(sc, "pre_status")
        cr = _bool_column(sc, "cr", "course")
        kept = _bool_column(sc, "mrd_maintained", "course")
        outcome = []
        for p, c, k in zip(pre, cr, kept, strict=True):
            v = k if p == "CR-MRDneg" else c
            outcome.append("not_evaluable" if v is None else "response" if v else "no_response")
        add(f"response/{scope}", "courses", [pre, outcome], ["pre_status", "response"],
            [status, ["response", "no_response", "not_evaluable"]])  # fmt: skip
    return out
