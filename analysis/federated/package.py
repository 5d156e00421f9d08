"""Site results package: write, check, read and pool the zip a center sends to the coordinator.

Layout of a package (every file listed with its SHA-256 in the manifest):

* ``manifest.json``: package format, software version, study-definition hash, parameters,
  vocabulary version, input fingerprint, ``min_cell``, and ``files`` (sha256, bytes,
  disclosure class). ``created_utc`` and ``vocabulary_version`` are the only date-bearing
  provenance fields and the only values the scanner exempts.
* ``pooling/statistics.json``: the site's sufficient statistics (``sufficient.site_statistics``),
  **coordinator-only**: unsuppressed because suppression would make pooling inexact.
* ``results/count_tables.csv``: publishable count tables, one row per cell
  (``table, dims, cell, n, suppressed``), with primary and complementary suppression.
* ``results/estimates.csv``: publishable per-site estimates (``analysis, term, statistic,
  value, suppressed``); count-valued statistics get primary suppression.
* ``disclosure_log.json``: which cells were hidden and why (positions only, never values),
  and which files are coordinator-only. Coordinator-only itself: it tells primary from
  complementary cells, which would bound the primary ones.

Suppression: a count 0 < n < ``min_cell`` is hidden ("primary"). Totals along every axis of a
table are assumed public, so every line that hides a cell hides at least two, and a
linear-programming check confirms that no hidden non-zero cell can be derived from the
published cells, the line totals and non-negativity ("complementary"). Published files say
only ``suppressed=yes``. Zeros are published. Estimates (P, OR, HR, survival) are not
suppressed, following OHDSI practice, with one exception: Fisher's P and odds ratio of a 2x2
table that has hidden cells are hidden too (with the margins they would give the cells back).
Count-valued estimates (n, events, at risk) get primary suppression only. Complementary
suppression works within a table, not across tables that share margins.

``scan_package`` proves a package holds no person-level field, no date and no source id;
``build_site_package`` refuses to write a package that fails it and ``read_package`` refuses
one whose checksums, format or scan fail. ``pool_packages`` also refuses packages that differ
in study-definition hash, software version or parameters.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linprog

from blina_study.adapter.errors import BlinaError

from .pooling import pool_site_statistics
from .schema import statistics_problems
from .signing import SIGNATURE, SigningError, load_registry, sign_manifest, verify_signature
from .sufficient import (
    COORDINATOR_ONLY,
    PUBLISHABLE,
    FederatedParams,
    site_statistics,
)

__all__ = [
    "PACKAGE_FORMAT",
    "PackageError",
    "PooledResults",
    "ScanFinding",
    "SitePackage",
    "build_site_package",
    "SHARING_LEVEL",
    "SHARING_LEVELS",
    "aggregate_problems",
    "fingerprint_inputs",
    "singling_out_elements",
    "pool_packages",
    "read_package",
    "scan_package",
    "scan_statistics",
    "suppress_counts",
]

PACKAGE_FORMAT = "blina-site-package/1"
MANIFEST = "manifest.json"
STATISTICS = "pooling/statistics.json"
COUNT_TABLES = "results/count_tables.csv"
ESTIMATES = "results/estimates.csv"
DISCLOSURE_LOG = "disclosure_log.json"
REQUIRED_MANIFEST_INFO = (
    "package_version", "study_definition_hash", "parameters", "vocabulary_version",
)  # fmt: skip
# Provenance values that may legitimately look like dates (a vocabulary release "v5.0 30-AUG-24").
SCAN_EXEMPT_MANIFEST_KEYS = frozenset({"created_utc", "vocabulary_version"})
# A fixed member timestamp: the zip must not carry the run date, and equal inputs give equal bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class PackageError(BlinaError, ValueError):
    """A package cannot be built, read or pooled; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------
# Small-cell suppression
# ---------------------------------------------------------------------------------------------


def _lines(shape: tuple[int, ...]) -> list[list[tuple[int, ...]]]:
    """Every 1-D line of an n-D table (all cells that share all indices but one)."""
    out = []
    for axis in range(len(shape)):
        others = [range(s) for i, s in enumerate(shape) if i != axis]
        for fixed in np.ndindex(*[len(r) for r in others]) if others else [()]:
            cells = []
            for k in range(shape[axis]):
                idx = list(fixed)
                idx.insert(axis, k)
                cells.append(tuple(idx))
            out.append(cells)
    return out


def _pinned(
    counts: np.ndarray,
    status: np.ndarray,
    lines: list[list[tuple[int, ...]]],
    only: Sequence[tuple[int, ...]] | None = None,
) -> list[tuple[int, ...]]:
    """Hidden non-zero cells whose value anyone can derive from the published cells and the
    line totals, using that counts are >= 0.

    For every hidden non-zero cell, a linear program finds its smallest and largest value
    subject to: each line's hidden cells add up to the line total minus its published cells,
    and all cells are >= 0. The cell is pinned when both coincide. (For 2-D tables the
    constraint matrix is totally unimodular, so these bounds are the integer bounds.)
    ``only`` restricts the check to those cells.
    """
    hidden = [tuple(int(i) for i in c) for c in zip(*np.nonzero(status != ""), strict=True)]
    targets = [c for c in (hidden if only is None else only) if counts[c] > 0]
    if not targets:
        return []
    pos = {c: i for i, c in enumerate(hidden)}
    rows, rhs = [], []
    for line in lines:
        r = np.zeros(len(hidden))
        total = 0
        for c in line:
            if c in pos:
                r[pos[c]] = 1.0
                total += int(counts[c])
        if r.any():
            rows.append(r)
            rhs.append(total)
    A, b = np.array(rows), np.array(rhs, dtype=float)
    out = []
    for c in targets:
        obj = np.zeros(len(hidden))
        obj[pos[c]] = 1.0
        lo = linprog(obj, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
        hi = linprog(-obj, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
        if lo.status != 0 or hi.status != 0 or -hi.fun - lo.fun < 0.5:
            out.append(c)
    return out


def suppress_counts(counts: np.ndarray, min_cell: int = 5) -> tuple[np.ndarray, list[dict]]:
    """Small-cell suppression of an n-D count table, with complementary suppression.

    Returns ``(status, log)``: ``status`` has the table's shape with "" (published),
    "primary" (0 < n < min_cell) or "complementary"; ``log`` lists each hidden cell's index
    and reason. Totals along every axis are assumed public. After the line rule (no line
    hides exactly one cell), a linear-programming check (``_pinned``) adds complements
    greedily until no hidden non-zero cell has equal lower and upper bounds given the
    published cells, the totals and non-negativity. If even hiding every cell leaves one
    derivable, the log ends with an ``unprotectable`` entry (``cell`` None): the table's
    totals themselves disclose it.
    """
    counts = np.asarray(counts, dtype=np.int64)
    status = np.full(counts.shape, "", dtype=object)
    log: list[dict] = []
    for idx in zip(*np.nonzero((counts > 0) & (counts < min_cell)), strict=True):
        status[idx] = "primary"
        log.append({"cell": [int(i) for i in idx], "rule": f"primary: 0 < n < {min_cell}"})
    if not log:
        return status, log
    lines = _lines(counts.shape)

    def hide(cell: tuple[int, ...], why: str) -> None:
        status[cell] = "complementary"
        log.append({"cell": [int(i) for i in cell], "rule": f"complementary: {why}"})

    def cost(c: tuple[int, ...]) -> tuple[bool, int]:
        # Smallest positive count first (least information lost); zeros only if nothing else.
        return (bool(counts[c] == 0), int(counts[c]))

    for _ in range(counts.size + 1):
        # Fast rule: a line with exactly one hidden cell gets a second one.
        changed = False
        for line in lines:
            if sum(status[c] != "" for c in line) == 1:
                open_cells = [c for c in line if status[c] == ""]
                if open_cells:
                    hide(min(open_cells, key=cost), "the only hidden cell of its line")
                    changed = True
        if changed:
            continue
        # Exact check: can a hidden non-zero cell still be derived (bounds from the totals)?
        # Then hide the cheapest cell that lowers the number of such cells.
        stuck = _pinned(counts, status, lines)
        if not stuck:
            break
        near = {c for line in lines if any(p in line for p in stuck) for c in line}
        candidates = sorted(
            (tuple(int(i) for i in c) for c in zip(*np.nonzero(status == ""), strict=True)),
            key=lambda c: (c not in near, *cost(c)),
        )
        if not candidates:
            # Everything is hidden and the table's own totals still reveal these cells.
            log.append({"cell": None, "rule": "unprotectable: the totals of this table "
                        "reveal a hidden cell; do not publish its totals"})  # fmt: skip
            break
        # Hiding more cells never pins a free one, so only the stuck cells need re-checking.
        for cand in [c for c in candidates if c in near]:
            status[cand] = "complementary"
            helps = len(_pinned(counts, status, lines, stuck)) < len(stuck)
            status[cand] = ""
            if helps:
                hide(cand, "a hidden cell was still computable from the totals")
                break
        else:
            # No single cell helps; cells may help together: hide the cheapest and go on.
            hide(candidates[0], "a hidden cell was still computable from the totals")
    return status, log


# ---------------------------------------------------------------------------------------------
# Publishable results
# ---------------------------------------------------------------------------------------------


def _count_tables(stats: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], np.ndarray]]:
    """All publishable count tables of a site as (name, dims, levels, n-D counts)."""
    out = []
    for name, s in stats["statistics"].items():
        if s["kind"] == "count_table":
            levels = s["levels"]
            arr = np.zeros([len(lv) for lv in levels], dtype=np.int64)
            index = [{v: i for i, v in enumerate(lv)} for lv in levels]
            for *key, n in s["cells"]:
                arr[tuple(index[i][k] for i, k in enumerate(key))] = n
            out.append((name, s["dims"], levels, arr))
        elif s["kind"] == "table2x2":
            dims = ["exposure", "outcome"]
            levels = [s["row_labels"], s["col_labels"]]
            out.append((name, dims, levels, np.array(s["table"], dtype=np.int64)))
    return out


def _estimate_rows(site: dict[str, Any]) -> list[tuple[str, str, str, Any, bool]]:
    """(analysis, term, statistic, value, is_count) rows of one site's own results."""
    rows: list[tuple[str, str, str, Any, bool]] = []
    for ep, surv in site["survival"].items():
        for group, km in [*surv["groups"].items(), ("all", surv["all"])]:
            a = f"km/{ep}/{group}"
            rows += [(a, "", "n", km["n"], True), (a, "", "n_events", km["n_events"], True),
                     (a, "", "median_days", km["median_days"], False)]  # fmt: skip
            for lm in km["landmarks"]:
                term = f"day{lm['day']}"
                rows += [(a, term, "survival", lm["survival"], False),
                         (a, term, "se", lm["se"], False),
                         (a, term, "n_at_risk", lm["n_at_risk"], True)]  # fmt: skip
        lr = surv["logrank"]
        rows += [(f"logrank/{ep}", "", k, lr[k], False) for k in ("chi2", "df", "p")]
    for section in ("response", "predictors"):
        for name, t in site[section].items():
            a = f"{section}/{name}"
            rows += [(a, "", "fisher_p", t["fisher"]["p"], False),
                     (a, "", "fisher_odds_ratio", t["fisher"]["odds_ratio"], False)]  # fmt: skip
    cox = site["cox"]["efs"]
    rows += [("cox/efs", "", "n", cox["n"], True), ("cox/efs", "", "n_events", cox["n_events"], True),
             ("cox/efs", "", "converged", cox["converged"], False)]  # fmt: skip
    for i, cov in enumerate(cox["covariates"]):
        rows += [("cox/efs", cov, k, cox[k][i], False)
                 for k in ("coef", "se", "hr", "ci_lower", "ci_upper", "p")]  # fmt: skip
    for marker, w in site["wilcoxon"].items():
        a = f"wilcoxon/{marker}"
        rows += [(a, "", "n", w["n"], True), (a, "", "n_zero", w["n_zero"], True),
                 (a, "", "p", w["p"], False), (a, "", "p_exact", w["p_exact"], False)]  # fmt: skip
        for part in ("pre", "post"):
            rows.append((a, part, "median", w[part]["median"], False))
    for name, m in site["cytokines"].items():
        rows += [(f"cytokine/{name}", "", "n", m["n"], True),
                 (f"cytokine/{name}", "", "median", m["median"], False)]  # fmt: skip
    return rows


_TABLE_DERIVED = frozenset({"fisher_p", "fisher_odds_ratio"})


def _count_table_of(analysis: str) -> str:
    """The statistic (count table) an estimates row of ``response/...`` or ``predictors/...`` comes from."""
    section, _, rest = analysis.partition("/")
    return f"predictor/{rest}" if section == "predictors" else analysis


_KM_DERIVED = ("median_days", "survival", "se")


def _withheld_estimates(stats: dict[str, Any], own: dict[str, Any], min_cell: int) -> dict[tuple[str, str, str], str]:
    """Estimates that would give a suppressed count (or one patient's value) back, with the reason.

    Keys are ``(analysis, term, statistic)``; ``"*"`` matches any term or statistic. Rules:

    * KM groups of an endpoint with the "all" total form a table: the group sizes and event counts
      get primary and complementary suppression (``suppress_counts``), so no hidden group count
      follows from the total minus the others. A group with a hidden n or event count publishes no
      median_days (in a small group it is one patient's event day), survival or SE (S(1-S)/SE^2
      gives n back; n(1-S) gives the events back), and the endpoint's log-rank is withheld.
    * At a landmark, survival and SE are withheld when the events up to that day, or the patients
      censored up to it, number 1..min_cell-1 (with n and n at risk they would be recovered).
    * A Cox model or a Wilcoxon test on a suppressed n or event count publishes no estimate.
    """
    out: dict[tuple[str, str, str], str] = {}
    for ep, surv in own["survival"].items():
        groups = list(surv["groups"])
        restricted: set[str] = set()
        for count_name in ("n", "n_events"):
            counts = np.array([surv["groups"][g][count_name] or 0 for g in groups], dtype=np.int64)
            status, _ = suppress_counts(counts, min_cell) if len(groups) else (np.array([]), [])
            for g, st in zip(groups, status, strict=True):
                if st != "":
                    restricted.add(g)
                    rule = "complementary" if st == "complementary" else "primary"
                    out[(f"km/{ep}/{g}", "", count_name)] = f"{rule}: group {count_name} hidden within its endpoint"
            if 0 < (surv["all"][count_name] or 0) < min_cell:
                restricted.add("all")
        for g in restricted:
            for stat in _KM_DERIVED:
                out[(f"km/{ep}/{g}", "*", stat)] = f"derived from a group whose n or events are below {min_cell}"
        if restricted:
            out[(f"logrank/{ep}", "*", "*")] = f"log-rank over groups whose n or events are below {min_cell}"
        for g, km in [*surv["groups"].items(), ("all", surv["all"])]:
            table = stats["statistics"].get(f"km/{ep}/{g}")
            if not table:
                continue
            times, events, censored = (np.asarray(table[k], dtype=float) for k in ("time", "events", "censored"))
            for lm in km["landmarks"]:
                upto = times <= lm["day"]
                d, c = int(events[upto].sum()), int(censored[upto].sum())
                if 0 < d < min_cell or 0 < c < min_cell:
                    for stat in ("survival", "se"):
                        out[(f"km/{ep}/{g}", f"day{lm['day']}", stat)] = (
                            f"events ({d}) or censorings ({c}) up to day {lm['day']} below {min_cell}")
    cox = own["cox"]["efs"]
    if any(v is not None and 0 < v < min_cell for v in (cox["n"], cox["n_events"])):
        for stat in ("coef", "se", "hr", "ci_lower", "ci_upper", "p"):
            out[("cox/efs", "*", stat)] = f"model of fewer than {min_cell} patients or events"
    for marker, w in own["wilcoxon"].items():
        if w["n"] is not None and 0 < w["n"] < min_cell:
            for stat in ("p", "p_exact", "w_plus", "var"):
                out[(f"wilcoxon/{marker}", "*", stat)] = f"test on fewer than {min_cell} pairs"
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


# Withheld from an aggregate package whatever the counts: an event day (the KM median is one patient's
# day) and individual values (a median of an odd number of values is one patient's value).
_AGGREGATE_WITHHELD = frozenset({"median_days", "median"})


def _aggregate_rows(stats: dict[str, Any], own: dict[str, Any]) -> list[tuple[str, str, str, Any, bool]]:
    """Extra estimates of an aggregate package for the coordinator's stratified tests: the site's
    log-rank score U and covariance V per level (site-stratified log-rank from site totals), and its
    signed-rank W+ and tie-corrected variance per marker (van Elteren-type stratified test)."""
    rows: list[tuple[str, str, str, Any, bool]] = []
    for ep in ("efs", "os"):
        lr = stats["statistics"].get(f"logrank/{ep}")
        if not lr:
            continue
        levels = lr["levels"]
        rows += [(f"logrank/{ep}", g, "U", u, False) for g, u in zip(levels, lr["U"], strict=True)]
        rows += [(f"logrank/{ep}", f"{a}|{b}", "V", lr["V"][i][j], False)
                 for i, a in enumerate(levels) for j, b in enumerate(levels) if j >= i]  # fmt: skip
    for marker, w in own["wilcoxon"].items():
        rows += [(f"wilcoxon/{marker}", "", "w_plus", w["w_plus"], False),
                 (f"wilcoxon/{marker}", "", "var", w.get("var"), False)]  # fmt: skip
    return rows


def _publishable(stats: dict[str, Any], min_cell: int, share: str = "exact") -> tuple[str, str, list[dict]]:
    """CSV texts of the count tables and estimates, and the disclosure log entries. ``share``
    ``aggregate`` adds the site totals of the stratified tests and withholds event days and medians."""
    log: list[dict] = []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "dims", "cell", "n", "suppressed"])
    tables_with_hidden_cells: set[str] = set()
    for name, dims, levels, arr in _count_tables(stats):
        status, entries = suppress_counts(arr, min_cell)
        if (status != "").any():
            tables_with_hidden_cells.add(name)
        for e in entries:
            cell = None if e["cell"] is None else "|".join(levels[i][k]
                                                           for i, k in enumerate(e["cell"]))
            log.append({"file": COUNT_TABLES, "table": name, "cell": cell, "rule": e["rule"]})
        for idx in np.ndindex(*arr.shape):
            hidden = status[idx] != ""
            # "yes" only: telling primary from complementary cells would bound them (1..4).
            w.writerow([name, "|".join(dims), "|".join(levels[i][k] for i, k in enumerate(idx)),
                        "" if hidden else int(arr[idx]), "yes" if hidden else ""])  # fmt: skip
    own = pool_site_statistics([stats])["per_site"][stats["site_id"]]
    withheld = _withheld_estimates(stats, own, min_cell)
    buf2 = io.StringIO()
    w2 = csv.writer(buf2, lineterminator="\n")
    w2.writerow(["analysis", "term", "statistic", "value", "suppressed"])
    small: set[str] = set()
    rows = _estimate_rows(own) + (_aggregate_rows(stats, own) if share == "aggregate" else [])
    for a, term, stat, value, is_count in rows:
        hidden = is_count and value is not None and 0 < value < min_cell
        if hidden:
            small.add(a)
            log.append({"file": ESTIMATES, "table": a, "cell": f"{term}|{stat}".strip("|"),
                        "rule": f"primary: 0 < n < {min_cell}"})  # fmt: skip
        # Fisher's P and odds ratio are functions of their 2x2 table: with its margins (published or
        # bounded) they give back the hidden cells, so they go where the table's cells went.
        if stat in _TABLE_DERIVED and _count_table_of(a) in tables_with_hidden_cells and not hidden:
            hidden = True
            log.append({"file": ESTIMATES, "table": a, "cell": stat,
                        "rule": "computed from a count table with suppressed cells"})  # fmt: skip
        # A median of fewer than min_cell values is (nearly) an individual's value.
        if stat == "median" and a in small and not hidden:
            hidden = True
            log.append({"file": ESTIMATES, "table": a, "cell": f"{term}|{stat}".strip("|"),
                        "rule": f"median of fewer than {min_cell} values"})  # fmt: skip
        why = withheld.get((a, term, stat)) or withheld.get((a, "*", stat)) or withheld.get((a, "*", "*"))
        if share == "aggregate" and stat in _AGGREGATE_WITHHELD:
            why = why or "aggregate level: an event day or an individual value is never published"
        if why and not hidden and value is not None:
            hidden = True
            log.append({"file": ESTIMATES, "table": a, "cell": f"{term}|{stat}".strip("|"), "rule": why})
        w2.writerow([a, term, stat, "" if hidden else _fmt(value), "yes" if hidden else ""])
    return buf.getvalue(), buf2.getvalue(), log


# ---------------------------------------------------------------------------------------------
# What each shared element can reveal
# ---------------------------------------------------------------------------------------------

SHARING_LEVEL = "exact"  # the level of build_site_package's default
SHARING_LEVELS = ("aggregate", "exact")
AGGREGATE_FORMAT = "blina-aggregate-estimates/1"


def _small(counts: Iterable[Any], min_cell: int) -> int:
    return sum(1 for c in counts if isinstance(c, (int, float)) and 0 < c < min_cell)


def singling_out_elements(stats: dict[str, Any], min_cell: int) -> list[dict[str, Any]]:
    """Every element of ``pooling/statistics.json`` that can single out a patient, with the reason.

    An element is listed when it holds a count below ``min_cell`` (a small group) or a per-patient
    quantity (an event day, a lab value, a covariate pattern): the worst case is stated concretely
    for this site's data, e.g. "7 of 19 rows have one patient: each gives that patient's day of
    event or censoring relative to index". Elements with nothing below ``min_cell`` are not listed.
    """
    out: list[dict[str, Any]] = []

    def add(name: str, s: dict[str, Any], reveals: str) -> None:
        out.append({"file": STATISTICS, "element": name, "kind": s["kind"], "reveals": reveals})

    for name, s in stats["statistics"].items():
        kind = s["kind"]
        if kind == "km_table":
            rows = [e + c for e, c in zip(s["events"], s["censored"], strict=True)]
            ones = sum(1 for r in rows if r == 1)
            if rows:
                add(name, s, f"{len(rows)} distinct {s['endpoint'].upper()} times in days from index, "
                    f"{ones} of them of one patient (that patient's exact day of event or censoring); "
                    f"{_small(rows, min_cell)} rows below {min_cell}")
        elif kind == "cox_pattern_counts":
            n_t = len(s["event_times"])
            if n_t:
                add(name, s, f"{n_t} event days with the at-risk and event counts of each covariate pattern "
                    f"({', '.join(s['covariates'])}): an event day whose event falls in a pattern with one "
                    "member gives that patient's covariates and event day")
        elif kind in ("value_histogram", "paired_difference_histogram"):
            parts = [("bins", s.get("bins"))] if kind == "value_histogram" else [
                (k, s.get(k)) for k in ("differences", "pre", "post")]
            for part, bins in parts:
                bins = bins or []
                ones = sum(1 for _, c in bins if c == 1)
                if ones:
                    add(f"{name}:{part}" if part != "bins" else name, s,
                        f"{ones} of {len(bins)} values of {s.get('variable')} held by one patient each "
                        "(the value itself, " + ("at the data's own precision)" if s.get("decimals") is None
                                                 else f"to {s.get('decimals')} decimals)"))
        elif kind == "table2x2":
            k = _small([c for row in s["table"] for c in row], min_cell)
            if k:
                add(name, s, f"{k} cell(s) below {min_cell}: membership of one to {min_cell - 1} patients "
                    "in a response/predictor combination")
        elif kind == "count_table":
            k = _small([c[-1] for c in s["cells"]], min_cell)
            if k:
                add(name, s, f"{k} cell(s) below {min_cell} (unsuppressed here; suppressed in "
                    f"{COUNT_TABLES})")
        elif kind == "logrank_scores":
            k = _small(list(s["n"]) + list(s.get("observed", [])), min_cell)
            if k:
                add(name, s, f"{k} group size(s) or event count(s) below {min_cell}")
    return out


# ---------------------------------------------------------------------------------------------
# Scanner
# ---------------------------------------------------------------------------------------------

_FORBIDDEN_NAMES = frozenset({
    "person_id", "person_source_value", "patient_id", "subject_id", "mrn", "identifier",
    "birth_date", "birth_datetime", "birthdate", "date_of_birth", "year_of_birth",
    "index_date", "last_followup", "course_start", "course_end", "death_date",
    "efs_days", "os_days", "age_at_index_years", "lineage", "source_record", "name", "address",
})  # fmt: skip
_DATE_PATTERNS = [
    re.compile(r"(?<!\d)(1[89]|20)\d\d[-/.](0?[1-9]|1[0-2])[-/.](0?[1-9]|[12]\d|3[01])(?!\d)"),
    re.compile(r"(?<!\d)(0?[1-9]|[12]\d|3[01])[-/.](0?[1-9]|1[0-2])[-/.](1[89]|20)\d\d(?!\d)"),
    # Not inside a longer token: a SHA-256 hex digest may contain "9dec82".
    re.compile(r"(?<![0-9A-Za-z])(0?[1-9]|[12]\d|3[01])[- ]?(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV"
               r"|DEC)[A-Z]*[- ]?(\d\d)?\d\d(?![0-9A-Za-z])", re.IGNORECASE),  # fmt: skip
]
_SOURCE_REF = re.compile(
    r"\b(Patient|Observation|Condition|Procedure|Encounter|MedicationAdministration|"
    r"MedicationRequest|MedicationStatement|DiagnosticReport|Specimen|Immunization|"
    r"person|measurement|condition_occurrence|drug_exposure|procedure_occurrence|observation|"
    r"death|visit_occurrence|observation_period|episode|specimen|note)[/:][A-Za-z0-9.\-]+"
)


@dataclass(frozen=True)
class ScanFinding:
    """One reason a package is not aggregate-only: file, location and what was found."""

    file: str
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file} {self.where}: {self.problem}"


def _looks_like_date_number(v: int) -> bool:
    if not 18000101 <= v <= 20991231:
        return False
    try:
        date(v // 10000, v // 100 % 100, v % 100)
    except ValueError:
        return False
    return True


def _scan_value(file: str, where: str, v: Any, source_ids: frozenset[str]) -> list[ScanFinding]:
    out = []
    if isinstance(v, bool):
        return out
    if isinstance(v, int) and _looks_like_date_number(v):
        out.append(ScanFinding(file, where, f"number {v} reads as a date (YYYYMMDD)"))
    if isinstance(v, str):
        for pat in _DATE_PATTERNS:
            m = pat.search(v)
            if m:
                out.append(ScanFinding(file, where, f"date-like text {m.group(0)!r}"))
                break
        m = _SOURCE_REF.search(v)
        if m:
            out.append(ScanFinding(file, where, f"source record reference {m.group(0)!r}"))
        for sid in source_ids:
            if sid and sid in v:
                out.append(ScanFinding(file, where, "a source patient id of this site"))
                break
    return out


def _scan_json(file: str, obj: Any, path: str, source_ids: frozenset[str],
               exempt: frozenset[str] = frozenset()) -> list[ScanFinding]:  # fmt: skip
    out: list[ScanFinding] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if str(k).lower() in _FORBIDDEN_NAMES:
                out.append(ScanFinding(file, where, f"person-level field name {k!r}"))
            out += _scan_value(file, f"{where} (key)", k, source_ids)
            if path == "" and k in exempt:
                continue
            out += _scan_json(file, v, where, source_ids)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _scan_json(file, v, f"{path}[{i}]", source_ids)
    else:
        out += _scan_value(file, path, obj, source_ids)
    return out


def _scan_csv(file: str, text: str, source_ids: frozenset[str]) -> list[ScanFinding]:
    out: list[ScanFinding] = []
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return out
    for col in rows[0]:
        if col.lower() in _FORBIDDEN_NAMES:
            out.append(ScanFinding(file, f"header {col!r}", "person-level column"))
    for i, row in enumerate(rows[1:], start=2):
        for col, cell in zip(rows[0], row, strict=False):
            where = f"line {i}, column {col!r}"
            out += _scan_value(file, where, cell, source_ids)
            if cell.isdigit():
                out += _scan_value(file, where, int(cell), source_ids)
    return out


def _scan_members(members: dict[str, bytes], source_ids: frozenset[str]) -> list[ScanFinding]:
    out: list[ScanFinding] = []
    for name, data in members.items():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            out.append(ScanFinding(name, "", "not UTF-8 text; packages hold only JSON and CSV"))
            continue
        if name.endswith(".json"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                out.append(ScanFinding(name, f"line {exc.lineno}", f"invalid JSON ({exc.msg})"))
                continue
            exempt = SCAN_EXEMPT_MANIFEST_KEYS if name == MANIFEST else frozenset()
            out += _scan_json(name, obj, "", source_ids, exempt)
        elif name.endswith(".csv"):
            out += _scan_csv(name, text, source_ids)
        else:
            out.append(ScanFinding(name, "", "unexpected file type; only .json and .csv"))
    return out


def _read_members(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    except FileNotFoundError:
        raise PackageError(f"{path}: package not found", hint="check the path") from None
    except IsADirectoryError:
        raise PackageError(f"{path}: is a folder, not a package file", hint="give the .zip file") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, ValueError, OSError) as exc:
        # Empty, truncated, encrypted or otherwise unreadable archives.
        raise PackageError(f"{path}: not a readable zip file ({type(exc).__name__}: {exc})",
                           hint="ask the site to resend it") from None


def scan_package(path: str | Path, *, source_ids: Iterable[str] = ()) -> list[ScanFinding]:
    """Check every file of a package for person-level field names, dates and source ids.

    ``source_ids``: the site's ``person_source_value`` list (known only at the site), searched
    as substrings. Also flags FHIR ``ResourceType/id`` and OMOP ``table:row_id`` references and
    integers that read as YYYYMMDD dates. Returns the findings (empty = clean).
    """
    return _scan_members(_read_members(Path(path)), frozenset(str(s) for s in source_ids))


def scan_statistics(stats: Any, *, source_ids: Iterable[str] = ()) -> list[ScanFinding]:
    """The scanner of ``scan_package`` applied to an in-memory JSON object (e.g. what a
    vantage6 partial function is about to return)."""
    return _scan_json("statistics", stats, "", frozenset(str(s) for s in source_ids))


# ---------------------------------------------------------------------------------------------
# Build and read
# ---------------------------------------------------------------------------------------------


def fingerprint_inputs(course: pd.DataFrame, patient: pd.DataFrame) -> str:
    """SHA-256 of the two input tables in a canonical form (sorted columns and rows, CSV)."""
    h = hashlib.sha256()
    for name, df in (("course", course), ("patient", patient)):
        cols = sorted(df.columns)
        keys = [c for c in ("site_id", "person_id", "course_number") if c in cols]
        canon = df[cols].sort_values(keys, kind="mergesort") if keys else df[cols]
        h.update(name.encode())
        h.update(canon.to_csv(index=False, lineterminator="\n").encode())
    return h.hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _strict_json(path: Path, member: str, data: bytes) -> Any:
    """JSON of a package member; NaN/Infinity, bad UTF-8 or bad syntax are a PackageError."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PackageError(f"{path}: {member} is not valid JSON ({exc})",
                           hint="the package was altered or corrupted; ask the site to resend it") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")


def _federated_params(info: dict[str, Any]) -> FederatedParams:
    """Federated parameters: explicit ``federated_parameters``, else the study's shared ones."""
    if "federated_parameters" in info:
        return FederatedParams.from_dict(info["federated_parameters"])
    p = info.get("parameters") or {}
    kw: dict[str, Any] = {}
    if "landmark_days" in p:
        lm = p["landmark_days"]
        kw["landmark_days"] = tuple(lm) if isinstance(lm, (list, tuple)) else (int(lm),)
    if "age_group_cut_years" in p:
        kw["age_group_cut_years"] = float(p["age_group_cut_years"])
    return FederatedParams(**kw)


def build_site_package(
    course: pd.DataFrame,
    patient: pd.DataFrame,
    *,
    site_id: str,
    manifest_info: dict[str, Any],
    out_path: str | Path,
    min_cell: int = 5,
    share: str = "exact",
    sign_key: str | Path | None = None,
) -> Path:
    """Write a site's results package (zip) and return its path.

    ``share``: ``"exact"`` (coordinator-only sufficient statistics in ``pooling/statistics.json``
    besides the published files; the pooled analysis equals the centralized one) or
    ``"aggregate"`` (only the published, suppressed ``results/`` files, with the site totals of the
    stratified tests; no event day, no individual value; pooled by meta-analysis). See
    docs/federated.md. ``sign_key``: the site's Ed25519 private key file (``blina site-key``); the
    package then carries ``signature.json`` over its manifest (``signing``).

    ``manifest_info`` needs ``package_version`` (software), ``study_definition_hash``,
    ``parameters`` (the study parameters as a dict) and ``vocabulary_version``; optional
    ``input_fingerprint`` (default: ``fingerprint_inputs``), ``study_id``, ``study_version``,
    ``created_utc`` and ``federated_parameters`` (default: ``FederatedParams`` with the study's
    ``landmark_days`` / ``age_group_cut_years``). The package is scanned before it is written
    (with the site's ``person_source_value`` values as source ids); a finding is an error.
    """
    missing = [k for k in REQUIRED_MANIFEST_INFO if k not in manifest_info]
    if missing:
        raise PackageError(
            f"manifest_info lacks {missing}",
            hint="pass the software version, study-definition hash, parameters and vocabulary "
            "version of this run",
        )
    if not isinstance(min_cell, int) or isinstance(min_cell, bool) or min_cell < 1:
        raise PackageError(f"min_cell must be a positive integer, got {min_cell!r}")
    if share not in SHARING_LEVELS:
        raise PackageError(f"sharing level {share!r} is not one of {list(SHARING_LEVELS)}",
                           hint="use --share aggregate or --share exact")  # fmt: skip
    params = _federated_params(manifest_info)
    stats = site_statistics(course, patient, site_id=site_id, params=params)
    counts_csv, estimates_csv, log = _publishable(stats, min_cell, share)
    if share == "aggregate":
        return _write_aggregate_package(course, patient, stats, counts_csv, estimates_csv, log, site_id=site_id,
                                        manifest_info=manifest_info, params=params, min_cell=min_cell,
                                        out_path=out_path, sign_key=sign_key)  # fmt: skip
    elements = singling_out_elements(stats, min_cell)
    disclosure = {
        "sharing_level": SHARING_LEVEL,
        "sharing_level_means": "pooling/statistics.json holds the site's sufficient statistics at the "
        "data's own detail for the coordinator only (see docs/federated.md); results/ holds "
        "suppressed aggregates for publication",
        "can_single_out_a_patient": elements,
        "min_cell": min_cell,
        "rule": "counts 0 < n < min_cell hidden; complementary cells hidden so that no hidden "
        "cell follows from line totals; estimates not suppressed",
        "coordinator_only_files": [STATISTICS, DISCLOSURE_LOG],
        "coordinator_only_statistics": sorted(
            k for k, s in stats["statistics"].items() if s["disclosure"] == COORDINATOR_ONLY
        ),
        "publishable_statistics": sorted(
            k for k, s in stats["statistics"].items() if s["disclosure"] == PUBLISHABLE
        ),
        "suppressed": log,
    }
    files = {
        STATISTICS: (_json_bytes(stats), COORDINATOR_ONLY),
        COUNT_TABLES: (counts_csv.encode("utf-8"), PUBLISHABLE),
        ESTIMATES: (estimates_csv.encode("utf-8"), PUBLISHABLE),
        # The log says which hidden cells are primary (1..min_cell-1): not for publication.
        DISCLOSURE_LOG: (_json_bytes(disclosure), COORDINATOR_ONLY),
    }
    manifest = _manifest(manifest_info, site_id, params, course, patient, min_cell, "exact", stats["format"], files)
    return _write_members(manifest, files, patient, site_id, out_path, sign_key)


def _manifest(manifest_info: dict[str, Any], site_id: str, params: FederatedParams, course: pd.DataFrame,
              patient: pd.DataFrame, min_cell: int, share: str, statistics_format: str,
              files: dict[str, tuple[bytes, str]]) -> dict[str, Any]:
    return {
        "package_format": PACKAGE_FORMAT,
        "sharing_level": share,
        "package_version": str(manifest_info["package_version"]),
        "site_id": str(site_id),
        "study_id": manifest_info.get("study_id"),
        "study_version": manifest_info.get("study_version"),
        "study_definition_hash": str(manifest_info["study_definition_hash"]),
        "parameters": manifest_info["parameters"],
        # the site's own unit factors (site overlay unit + unit_factor): site-specific, never compared
        "site_unit_factors": manifest_info.get("site_unit_factors") or [],
        "federated_parameters": params.to_dict(),
        "vocabulary_version": str(manifest_info["vocabulary_version"]),
        "input_fingerprint": manifest_info.get("input_fingerprint")
        or fingerprint_inputs(course, patient),
        "created_utc": manifest_info.get("created_utc"),
        # True when the site's data state they are synthetic (CDM_SOURCE / FHIR HTEST), None: not recorded
        "synthetic_data": manifest_info.get("synthetic_data"),
        "min_cell": min_cell,
        "statistics_format": statistics_format,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data), "disclosure": cls}
                  for name, (data, cls) in files.items()},  # fmt: skip
    }


def _write_aggregate_package(course: pd.DataFrame, patient: pd.DataFrame, stats: dict[str, Any], counts_csv: str,
                             estimates_csv: str, log: list[dict], *, site_id: str, manifest_info: dict[str, Any],
                             params: FederatedParams, min_cell: int, out_path: str | Path,
                             sign_key: str | Path | None = None) -> Path:
    """An aggregate package: the published files and a disclosure log that lists hidden positions only
    (no rule that would tell a primary cell from a complementary one or name a count)."""
    disclosure = {
        "sharing_level": "aggregate",
        "sharing_level_means": "only publishable aggregates leave the site: results/ with counts below "
        "min_cell suppressed (complementary suppression), no event day, no individual value; the "
        "coordinator pools them by meta-analysis and stratified tests from site totals (docs/federated.md)",
        "can_single_out_a_patient": [],
        "min_cell": min_cell,
        "rule": "counts 0 < n < min_cell hidden, complementary cells hidden; estimates that would give a "
        "hidden count back withheld; KM medians (event days) and medians of values withheld",
        "coordinator_only_files": [],
        "suppressed": [{"file": e["file"], "table": e["table"], "cell": e["cell"]} for e in log],
    }
    files = {
        COUNT_TABLES: (counts_csv.encode("utf-8"), PUBLISHABLE),
        ESTIMATES: (estimates_csv.encode("utf-8"), PUBLISHABLE),
        DISCLOSURE_LOG: (_json_bytes(disclosure), PUBLISHABLE),
    }
    manifest = _manifest(manifest_info, site_id, params, course, patient, min_cell, "aggregate",
                         AGGREGATE_FORMAT, files)
    members = {MANIFEST: _json_bytes(manifest), **{k: v[0] for k, v in files.items()}}
    problems = aggregate_problems(members, min_cell)
    if problems:  # a bug, never the data: the aggregate level must not carry these
        raise PackageError(f"aggregate package for site {site_id!r} not written: " + "; ".join(problems[:5]))
    return _write_members(manifest, files, patient, site_id, out_path, sign_key)


def _write_members(manifest: dict[str, Any], files: dict[str, tuple[bytes, str]], patient: pd.DataFrame,
                   site_id: str, out_path: str | Path, sign_key: str | Path | None = None) -> Path:
    members = {MANIFEST: _json_bytes(manifest), **{k: v[0] for k, v in files.items()}}
    if sign_key is not None:
        # The signature covers the manifest bytes, and the manifest every other file's SHA-256.
        members[SIGNATURE] = sign_manifest(members[MANIFEST], str(site_id), sign_key)
    source_ids = frozenset(
        str(s) for s in patient.get("person_source_value", pd.Series(dtype=object)).dropna()
    )
    findings = _scan_members(members, source_ids)
    if findings:
        raise PackageError(
            f"package for site {site_id!r} not written: {len(findings)} disclosure finding(s): "
            + "; ".join(str(f) for f in findings[:5]),
            hint="remove dates and identifiers from the manifest_info / inputs and re-run",
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), data,
                        compress_type=zipfile.ZIP_DEFLATED)  # fmt: skip
    tmp.replace(out)  # never leave a half-written package under the final name
    return out


_COUNT_STATISTICS = frozenset({"n", "n_events", "n_at_risk", "n_zero"})
_COUNT_HEADER = ["table", "dims", "cell", "n", "suppressed"]
_ESTIMATE_HEADER = ["analysis", "term", "statistic", "value", "suppressed"]


def _published_csv_problem(text: str, header: list[str], min_cell: int) -> str | None:
    """The first way a published CSV breaks its schema: exact header; a suppressed row is empty; a
    count is a non-negative integer and never 0 < n < min_cell unsuppressed; a value is empty,
    true/false or a finite number."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != header:
        return f"header {rows[0] if rows else None} is not {header}"
    value_col = 3
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            return f"line {i} has {len(row)} fields, expected {len(header)}"
        value, suppressed = row[value_col], row[4]
        if suppressed not in ("", "yes"):
            return f"line {i}: suppressed is {suppressed!r}, expected '' or 'yes'"
        if suppressed == "yes":
            if value != "":
                return f"line {i}: a suppressed cell carries a value"
            continue
        is_count = header is _COUNT_HEADER or row[2] in _COUNT_STATISTICS
        if is_count and value != "":
            if not value.isdigit():
                return f"line {i}: count {value!r} is not a non-negative integer"
            if 0 < int(value) < min_cell:
                return f"line {i}: count {value} is below min_cell {min_cell} and not suppressed"
        elif value not in ("", "true", "false"):
            try:
                number = float(value)
            except ValueError:
                return f"line {i}: value {value!r} is not a number"
            if not np.isfinite(number):
                return f"line {i}: value {value!r} is not finite"
    return None


_PERSON_LEVEL_KEYS = frozenset({"time", "event_times", "censor_times", "bins", "differences", "pre", "post",
                                "patterns", "at_risk"})
_INDIVIDUAL_STATISTICS = frozenset({"median_days", "median", "min", "max", "time"})


def aggregate_problems(members: dict[str, bytes], min_cell: int) -> list[str]:
    """Why ``members`` (file name -> bytes) is not an aggregate-only package; empty when it is.

    The scanner of the aggregate level (issue 13): only the manifest and the three published files;
    no count 1..min_cell-1 that is not suppressed (every count column and count statistic); no event
    day (no KM median, no time or event-time list anywhere); no individual value (no median, minimum,
    maximum, histogram bin or covariate pattern); a disclosure log of positions only. Dates, source
    ids and person-level field names are the package scanner's (``scan_package``).
    """
    out: list[str] = []
    allowed = {MANIFEST, COUNT_TABLES, ESTIMATES, DISCLOSURE_LOG, SIGNATURE}
    extra = sorted(set(members) - allowed)
    if extra:
        out.append(f"files other than the published ones: {extra}")
    for name, header in ((COUNT_TABLES, _COUNT_HEADER), (ESTIMATES, _ESTIMATE_HEADER)):
        if name not in members:
            out.append(f"{name} is missing")
            continue
        text = members[name].decode("utf-8", "replace")
        problem = _published_csv_problem(text, header, min_cell)
        if problem:
            out.append(f"{name}: {problem}")
        if name == ESTIMATES:
            for i, row in enumerate(csv.reader(io.StringIO(text)), start=1):
                if i > 1 and len(row) == 5 and row[2] in _INDIVIDUAL_STATISTICS and row[3] != "":
                    out.append(f"{name} line {i}: {row[2]} of {row[0]} is an event day or an individual value")

    def walk(file: str, obj: Any, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in _PERSON_LEVEL_KEYS:
                    out.append(f"{file} {path}.{k}: person-level structure {k!r}")
                walk(file, v, f"{path}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(file, v, f"{path}[{i}]")

    for name in (MANIFEST, DISCLOSURE_LOG):
        if name in members:
            try:
                obj = json.loads(members[name].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                out.append(f"{name} is not valid JSON")
                continue
            walk(name, {k: v for k, v in obj.items() if k != "files"} if name == MANIFEST else obj, "")
            if name == DISCLOSURE_LOG:
                if obj.get("can_single_out_a_patient"):
                    out.append(f"{name}: lists elements that can single out a patient")
                for e in obj.get("suppressed") or []:
                    if not isinstance(e, dict) or set(e) - {"file", "table", "cell"}:
                        out.append(f"{name}: a suppressed entry says more than its position: {e!r}")
                        break
    return out


@dataclass(frozen=True)
class SitePackage:
    """A package read and verified: its manifest, statistics (None at the aggregate level) and
    published tables."""

    path: Path
    manifest: dict[str, Any]
    statistics: dict[str, Any] | None
    count_tables: str
    estimates: str
    disclosure_log: dict[str, Any]
    signed_by: str | None = None  # key id of the verified signature (read with registered keys)


def read_package(path: str | Path, *, keys: dict[str, dict[str, Any]] | None = None) -> SitePackage:
    """Open a package, verify format, file list and SHA-256 checksums, and scan it; with ``keys``
    (``signing.load_registry``) also its Ed25519 signature against the keys registered for its site.

    Raises ``PackageError`` naming the file and the problem on any mismatch.
    """
    p = Path(path)
    members = _read_members(p)
    if MANIFEST not in members:
        raise PackageError(f"{p}: no {MANIFEST}", hint="not a blina-study site package")
    manifest = _strict_json(p, MANIFEST, members[MANIFEST])
    if not isinstance(manifest, dict):
        raise PackageError(f"{p}: {MANIFEST} is not a JSON object", hint="not a blina-study site package")
    if manifest.get("package_format") != PACKAGE_FORMAT:
        raise PackageError(
            f"{p}: package format {manifest.get('package_format')!r}, expected {PACKAGE_FORMAT!r}",
            hint="build the package and pool it with the same blina-study release",
        )
    listed = manifest.get("files") or {}
    if not isinstance(listed, dict) or not all(isinstance(m, dict) for m in listed.values()):
        raise PackageError(f"{p}: the manifest's 'files' is not an object of file entries",
                           hint="the package was altered; ask the site to resend it")  # fmt: skip
    signed_by = None
    if keys is not None:
        try:
            signed_by = verify_signature(members[MANIFEST], members.get(SIGNATURE), str(manifest.get("site_id")), keys)
        except SigningError as exc:
            raise PackageError(f"{p}: {exc.message}", hint=exc.hint) from None
    share = manifest.get("sharing_level", "exact")
    if share not in SHARING_LEVELS:
        raise PackageError(f"{p}: sharing level {share!r} is not one of {list(SHARING_LEVELS)}",
                           hint="the package was altered; ask the site to resend it")  # fmt: skip
    required = (COUNT_TABLES, ESTIMATES, DISCLOSURE_LOG) + ((STATISTICS,) if share == "exact" else ())
    missing_required = [m for m in required if m not in listed]
    unknown = sorted(set(listed) - set(required))
    if unknown:
        # A listed extra file (e.g. person-level rows with innocent column names) is as foreign as an
        # unlisted one: a package holds exactly the files of its level.
        raise PackageError(f"{p}: the manifest lists files that an {share} package does not have: {unknown}",
                           hint="do not pool this package; ask the site to rebuild it with blina site-run")
    if missing_required:
        raise PackageError(f"{p}: the manifest does not list {missing_required}",
                           hint="not a complete blina-study site package; ask the site to rebuild it")
    extra = sorted(set(members) - set(listed) - {MANIFEST, SIGNATURE})
    if extra:
        raise PackageError(f"{p}: files not listed in the manifest: {extra}",
                           hint="the package was altered; ask the site to resend it")  # fmt: skip
    for name, meta in listed.items():
        if name not in members:
            raise PackageError(f"{p}: {name} is listed in the manifest but missing",
                               hint="ask the site to resend the package")  # fmt: skip
        if _sha256(members[name]) != meta.get("sha256"):
            raise PackageError(
                f"{p}: checksum mismatch for {name}",
                hint="the package was altered or corrupted; ask the site to resend it",
            )
    findings = _scan_members(members, frozenset())
    if findings:
        raise PackageError(
            f"{p}: {len(findings)} disclosure finding(s): "
            + "; ".join(str(f) for f in findings[:5]),
            hint="do not pool this package; ask the site to rebuild it",
        )
    if share == "aggregate":
        return replace(_read_aggregate(p, manifest, members), signed_by=signed_by)
    stats = _strict_json(p, STATISTICS, members[STATISTICS])
    problem = statistics_problems(stats)
    if problem is not None:
        raise PackageError(f"{p}: {STATISTICS} breaks the package schema: {problem}",
                           hint="do not pool this package; ask the site to rebuild it with blina site-run")
    if stats.get("site_id") != manifest.get("site_id"):
        raise PackageError(f"{p}: statistics belong to site {stats.get('site_id')!r}, manifest "
                           f"says {manifest.get('site_id')!r}")  # fmt: skip
    min_cell = manifest.get("min_cell")
    if not isinstance(min_cell, int) or isinstance(min_cell, bool) or min_cell < 1:
        raise PackageError(f"{p}: the manifest's min_cell {min_cell!r} is not a positive integer",
                           hint="the package was altered; ask the site to resend it")
    for member, header in ((COUNT_TABLES, _COUNT_HEADER), (ESTIMATES, _ESTIMATE_HEADER)):
        problem = _published_csv_problem(members[member].decode("utf-8"), header, min_cell)
        if problem is not None:
            raise PackageError(f"{p}: {member} breaks the package schema: {problem}",
                               hint="do not pool this package; ask the site to rebuild it with blina site-run")
    try:
        # Pooled alone first, so that statistics the schema admits but the analyses cannot use
        # are blamed on this package rather than on the pool of all of them.
        pool_site_statistics([stats])
    except Exception as exc:  # noqa: BLE001 - any failure here is this package's content
        raise PackageError(f"{p}: its statistics cannot be analysed ({type(exc).__name__}: {exc})",
                           hint="do not pool this package; ask the site to rebuild it with blina site-run") from None
    return SitePackage(
        path=p,
        manifest=manifest,
        statistics=stats,
        count_tables=members[COUNT_TABLES].decode("utf-8"),
        estimates=members[ESTIMATES].decode("utf-8"),
        disclosure_log=_strict_json(p, DISCLOSURE_LOG, members[DISCLOSURE_LOG]),
        signed_by=signed_by,
    )


def _read_aggregate(p: Path, manifest: dict[str, Any], members: dict[str, bytes]) -> SitePackage:
    min_cell = manifest.get("min_cell")
    if not isinstance(min_cell, int) or isinstance(min_cell, bool) or min_cell < 1:
        raise PackageError(f"{p}: the manifest's min_cell {min_cell!r} is not a positive integer",
                           hint="the package was altered; ask the site to resend it")
    problems = aggregate_problems(members, min_cell)
    if problems:
        raise PackageError(f"{p}: not an aggregate-only package: " + "; ".join(problems[:3]),
                           hint="do not pool or publish this package; ask the site to rebuild it with "
                           "blina site-run --share aggregate")  # fmt: skip
    return SitePackage(
        path=p, manifest=manifest, statistics=None,
        count_tables=members[COUNT_TABLES].decode("utf-8"), estimates=members[ESTIMATES].decode("utf-8"),
        disclosure_log=_strict_json(p, DISCLOSURE_LOG, members[DISCLOSURE_LOG]),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Pool
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PooledResults:
    """Pooled analyses of several site packages.

    ``results``: ``pool_site_statistics`` output (``pooled`` and ``per_site`` blocks, see
    ``pooling``); ``manifests``: each site's manifest; ``published``: each site's
    publishable CSV texts (``count_tables``, ``estimates``); ``disclosure_logs`` per site.
    ``study_definition_hash`` / ``package_version`` are the values all packages share.
    """

    sites: list[str]
    study_definition_hash: str
    package_version: str
    parameters: dict[str, Any]
    results: dict[str, Any]
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, dict[str, str]] = field(default_factory=dict)
    disclosure_logs: dict[str, dict[str, Any]] = field(default_factory=dict)
    signatures: dict[str, str | None] = field(default_factory=dict)  # site -> verified key id (None: not checked)

    @property
    def pooled(self) -> dict[str, Any]:
        return self.results["pooled"]

    @property
    def per_site(self) -> dict[str, dict[str, Any]]:
        return self.results["per_site"]

    def to_json(self) -> str:
        """The whole object as JSON text (no NaN)."""
        return json.dumps(
            {"sites": self.sites, "study_definition_hash": self.study_definition_hash,
             "package_version": self.package_version, "parameters": self.parameters,
             "results": self.results, "manifests": self.manifests,
             "signatures": self.signatures},  # fmt: skip
            allow_nan=False,
        )


def pool_packages(
    paths: Sequence[str | Path],
    *,
    expected_study_hash: str | None = None,
    expected_package_version: str | None = None,
    cox_strata: str = "site",
    keys: str | Path | dict[str, dict[str, Any]] | None = None,
) -> PooledResults:
    """Read, verify and pool site packages.

    Refuses (``PackageError``) when a package fails ``read_package``, when packages differ in
    study-definition hash, software version, parameters or min_cell, when a site appears
    twice, or when the optional ``expected_*`` values do not match. ``cox_strata``: ``"site"`` or
    ``"none"`` (see ``pooling.pool_site_statistics``). ``keys``: the coordinator's registered public
    keys (a folder of ``<site_id>.pub`` files, or ``signing.load_registry``'s result); every package
    must then carry a valid signature by a key registered for its site.
    """
    if not paths:
        raise PackageError("no packages to pool", hint="give one package per site")
    registry = None
    if keys is not None:
        try:
            registry = keys if isinstance(keys, dict) else load_registry(keys)
        except SigningError as exc:
            raise PackageError(exc.message, hint=exc.hint) from None
    pkgs = [read_package(p, keys=registry) for p in paths]
    ref = pkgs[0]
    checks = [("study_definition_hash", expected_study_hash),
              ("package_version", expected_package_version)]  # fmt: skip
    for key, expected in checks:
        want = expected if expected is not None else ref.manifest.get(key)
        for pkg in pkgs:
            if pkg.manifest.get(key) != want:
                raise PackageError(
                    f"{pkg.path}: {key} {pkg.manifest.get(key)!r} differs from "
                    f"{want!r} ({'expected' if expected is not None else ref.path})",
                    hint="every site must run the same study definition with the same "
                    "blina-study release",
                )
    for key in ("parameters", "federated_parameters", "min_cell"):
        for pkg in pkgs:
            if pkg.manifest.get(key) != ref.manifest.get(key):
                raise PackageError(
                    f"{pkg.path}: {key} differ from those of {ref.path}",
                    hint="every site must run with the same study parameters",
                )
    levels = sorted({pkg.manifest.get("sharing_level", "exact") for pkg in pkgs})
    if len(levels) > 1:
        raise PackageError(
            "packages of both sharing levels: " + ", ".join(
                f"{pkg.path} ({pkg.manifest.get('sharing_level', 'exact')})" for pkg in pkgs),
            hint="pooling needs one level: ask every site for --share aggregate, or every site for --share exact")
    ids = [pkg.manifest["site_id"] for pkg in pkgs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        paths = [str(pkg.path) for pkg in pkgs if pkg.manifest["site_id"] in dup]
        raise PackageError(f"site(s) {dup} appear in more than one package ({', '.join(paths)})",
                           hint="pool one package per site")  # fmt: skip
    if levels == ["aggregate"]:
        from .meta import pool_aggregate

        results = pool_aggregate({pkg.manifest["site_id"]: (pkg.count_tables, pkg.estimates) for pkg in pkgs},
                                 params=ref.manifest.get("federated_parameters") or {})
        return _pooled_results(pkgs, ids, ref, results)
    try:
        results = pool_site_statistics([pkg.statistics for pkg in pkgs], cox_strata=cox_strata)
    except PackageError:
        raise
    except Exception as exc:  # noqa: BLE001 - each package pooled alone, so it is their combination
        raise PackageError(f"packages {', '.join(str(pkg.path) for pkg in pkgs)} cannot be pooled together "
                           f"({type(exc).__name__}: {exc})",
                           hint="check that every site ran the same blina-study release") from None
    return _pooled_results(pkgs, ids, ref, results)


def _pooled_results(pkgs: list[SitePackage], ids: list[str], ref: SitePackage,
                    results: dict[str, Any]) -> PooledResults:
    return PooledResults(
        sites=ids,
        study_definition_hash=ref.manifest["study_definition_hash"],
        package_version=ref.manifest["package_version"],
        parameters=ref.manifest["parameters"],
        results=results,
        manifests={pkg.manifest["site_id"]: pkg.manifest for pkg in pkgs},
        published={pkg.manifest["site_id"]: {"count_tables": pkg.count_tables,
                                             "estimates": pkg.estimates} for pkg in pkgs},
        disclosure_logs={pkg.manifest["site_id"]: pkg.disclosure_log for pkg in pkgs},
        signatures={pkg.manifest["site_id"]: pkg.signed_by for pkg in pkgs},
    )
