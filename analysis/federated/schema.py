"""The schema ``pool`` enforces on a package's ``pooling/statistics.json`` before it pools it.

Why: a package comes from outside the coordinator's control. Checksums only show that the file is
the one the manifest lists, not that it is well formed; a forged or broken file must be refused
with a sentence naming what is wrong, never reach the pooling code (where it would crash or, worse,
shift the pooled result). Rules: every number finite; every count a non-negative integer; every
time a finite day count within ``MAX_DAYS``; the columns of a table of equal length; only known
statistic kinds and disclosure classes. Hand-written (a few dozen lines) rather than a JSON-Schema
dependency: the rules that matter (integers >= 0, equal lengths, nested count grids) are
cross-field checks that JSON Schema does not express well.
"""

from __future__ import annotations

import math
from typing import Any

from .sufficient import COORDINATOR_ONLY, PUBLISHABLE

__all__ = ["MAX_DAYS", "KNOWN_KINDS", "statistics_problems"]

# Follow-up longer than 150 years is not a time, it is a forgery or a unit error.
MAX_DAYS = 150 * 366
KNOWN_KINDS = frozenset({
    "km_table", "logrank_scores", "table2x2", "cox_pattern_counts", "value_histogram",
    "paired_difference_histogram", "count_table",
})  # fmt: skip


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _counts(where: str, v: Any, depth: int) -> str | None:
    """``v`` is a (nested, ``depth`` levels) list of non-negative integers."""
    if depth == 0:
        return None if _is_count(v) else f"{where}: {v!r} is not a non-negative integer count"
    if not isinstance(v, list):
        return f"{where}: expected a list, found {type(v).__name__}"
    for i, x in enumerate(v):
        if (p := _counts(f"{where}[{i}]", x, depth - 1)) is not None:
            return p
    return None


def _times(where: str, v: Any) -> str | None:
    if not isinstance(v, list):
        return f"{where}: expected a list of days, found {type(v).__name__}"
    for i, t in enumerate(v):
        if not _is_number(t) or not 0 <= t <= MAX_DAYS:
            return f"{where}[{i}]: {t!r} is not a day count between 0 and {MAX_DAYS}"
    return None


def _numbers(where: str, v: Any) -> str | None:
    """Every number anywhere inside ``v`` is finite."""
    if isinstance(v, dict):
        items = v.items()
    elif isinstance(v, list):
        items = enumerate(v)
    else:
        if isinstance(v, float) and not math.isfinite(v):
            return f"{where}: {v!r} is not a finite number"
        return None
    for k, x in items:
        if (p := _numbers(f"{where}.{k}" if isinstance(v, dict) else f"{where}[{k}]", x)) is not None:
            return p
    return None


def _histogram(where: str, bins: Any) -> str | None:
    if not isinstance(bins, list):
        return f"{where}: expected a list of [value, count] bins"
    for i, b in enumerate(bins):
        if not (isinstance(b, list) and len(b) == 2 and _is_number(b[0]) and _is_count(b[1])):
            return f"{where}[{i}]: {b!r} is not a [value, non-negative integer count] bin"
    return None


def _same_length(where: str, s: dict, keys: tuple[str, ...]) -> str | None:
    lengths = {k: len(s[k]) for k in keys if isinstance(s.get(k), list)}
    if len(lengths) != len(keys):
        return f"{where}: needs lists {', '.join(keys)}"
    if len(set(lengths.values())) > 1:
        return f"{where}: {', '.join(f'{k} has {n}' for k, n in lengths.items())} entries (must be equal)"
    return None


def _kind_problem(where: str, s: dict) -> str | None:
    kind = s["kind"]
    if kind == "km_table":
        return (_same_length(where, s, ("time", "events", "censored")) or _times(f"{where}.time", s["time"])
                or _counts(f"{where}.events", s["events"], 1) or _counts(f"{where}.censored", s["censored"], 1))
    if kind == "table2x2":
        t = s.get("table")
        if not (isinstance(t, list) and len(t) == 2 and all(isinstance(r, list) and len(r) == 2 for r in t)):
            return f"{where}.table: not a 2x2 table"
        return _counts(f"{where}.table", t, 2)
    if kind == "count_table":
        cells = s.get("cells")
        if not isinstance(cells, list) or not all(isinstance(c, list) and c for c in cells):
            return f"{where}.cells: expected a list of [level..., count] rows"
        return next((p for i, c in enumerate(cells) if (p := _counts(f"{where}.cells[{i}]", c[-1], 0))), None)
    if kind == "logrank_scores":
        return _counts(f"{where}.n", s.get("n"), 1)
    if kind == "value_histogram":
        return _histogram(f"{where}.bins", s.get("bins"))
    if kind == "paired_difference_histogram":
        return next((p for k in ("differences", "pre", "post")
                     if k in s and (p := _histogram(f"{where}.{k}", s[k]))), None)  # fmt: skip
    if kind == "cox_pattern_counts":
        return (_same_length(where, s, ("event_times", "at_risk", "events"))
                or _times(f"{where}.event_times", s["event_times"])
                or _counts(f"{where}.at_risk", s["at_risk"], 2) or _counts(f"{where}.events", s["events"], 2)
                or next((f"{where}.{k}: {s.get(k)!r} is not a non-negative integer count"
                         for k in ("n", "n_events") if k in s and not _is_count(s[k])), None))
    return None


def statistics_problems(stats: Any) -> str | None:
    """The first way ``stats`` breaks the schema, as a phrase; None when it conforms."""
    if not isinstance(stats, dict):
        return f"expected a JSON object, found {type(stats).__name__}"
    if (p := _numbers("statistics.json", stats)) is not None:
        return p
    if not isinstance(stats.get("site_id"), str) or not stats["site_id"]:
        return "site_id is missing or not text"
    for key in ("n_patients", "n_courses"):
        if not _is_count(stats.get(key)):
            return f"{key}: {stats.get(key)!r} is not a non-negative integer count"
    table = stats.get("statistics")
    if not isinstance(table, dict) or not table:
        return "no 'statistics' object"
    for name, s in table.items():
        where = f"statistics[{name!r}]"
        if not isinstance(s, dict):
            return f"{where}: expected an object"
        if s.get("kind") not in KNOWN_KINDS:
            return f"{where}: unknown kind {s.get('kind')!r}"
        if s.get("disclosure") not in (COORDINATOR_ONLY, PUBLISHABLE):
            return f"{where}: unknown disclosure class {s.get('disclosure')!r}"
        if (p := _kind_problem(where, s)) is not None:
            return p
    return None
