"""Read the ``course`` / ``patient`` tables (CSV or Parquet) typed per the contract; write results.

The contract is protocol section 4. Column types after :func:`coerce_table`:

* text      -> pandas ``string`` (missing = ``<NA>``)
* bigint/int -> pandas ``Int64`` (nullable)
* double    -> ``float64`` (missing = NaN)
* boolean   -> pandas ``boolean`` (nullable: ``<NA>`` is "not applicable / unknown", never False)
* date      -> ``datetime64[ns]`` at midnight (calendar dates; no time zone)

Columns beyond the contract (e.g. lineage) are kept unchanged. Enumerated text columns
(``pre_status``, ``sex``, ...) must hold one of the contract's values. Any problem raises
:class:`StudyTableError`, naming the file, the line (CSV: physical line, header = line 1) or row
(Parquet / DataFrame: 1-based), the column, the bad value and the fix.

:func:`write_results` writes every tidy table of a ``StudyResults`` as ``<name>.csv`` plus one
``results.json`` holding all of them and the run's settings and parameters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from blina_study.adapter.errors import BlinaError

if TYPE_CHECKING:  # pragma: no cover
    from blina_study.analysis.tables import StudyResults

__all__ = [
    "COURSE_SCHEMA",
    "PATIENT_SCHEMA",
    "ENUMS",
    "StudyTableError",
    "coerce_table",
    "read_table",
    "read_course",
    "read_patient",
    "write_results",
    "to_jsonable",
]

TableName = Literal["course", "patient"]

COURSE_SCHEMA: dict[str, str] = {
    "site_id": "text",
    "person_id": "int",
    "person_source_value": "text",
    "course_number": "int",
    "course_start": "date",
    "course_end": "date",
    "infusion_days": "int",
    "pre_status": "text",
    "pre_mrd": "double",
    "pre_blasts_pct": "double",
    "post_status": "text",
    "post_mrd": "double",
    "cr": "boolean",
    "mrd_maintained": "boolean",
    "high_mrd": "boolean",
    "cd19_loss": "boolean",
    "cd3_pre": "double",
    "cd3_post": "double",
    "cd4_pre": "double",
    "cd4_post": "double",
    "cd8_pre": "double",
    "cd8_post": "double",
    "il6_peak": "double",
    "il10_peak": "double",
    "ifng_peak": "double",
    "tnfa_peak": "double",
    "crs_max_grade": "int",
    "icans_max_grade": "int",
}

PATIENT_SCHEMA: dict[str, str] = {
    "site_id": "text",
    "person_id": "int",
    "person_source_value": "text",
    "sex": "text",
    "age_at_index_years": "double",
    "index_date": "date",
    "n_courses": "int",
    "indication": "text",
    "status_at_referral": "text",
    "burden_reduction": "boolean",
    "poor_cytogenetics": "boolean",
    "bcr_abl1": "boolean",
    "next_therapy": "text",
    "last_followup": "date",
    "efs_event": "boolean",
    "efs_event_type": "text",
    "efs_days": "int",
    "os_event": "boolean",
    "os_days": "int",
}

_STATUS = ("R/R", "CR-MRDpos", "CR-MRDneg", "unknown")
ENUMS: dict[str, tuple[str, ...]] = {
    "pre_status": _STATUS,
    "post_status": (*_STATUS, "NE"),
    "status_at_referral": _STATUS,
    "sex": ("F", "M", "other", "unknown"),
    "indication": ("R/R", "CR-MRDpos", "chemo_delay"),
    "next_therapy": ("HSCT", "CAR-T", "protocol", "none"),
    "efs_event_type": ("relapse", "non_response", "death"),
}

_SCHEMAS: dict[str, dict[str, str]] = {"course": COURSE_SCHEMA, "patient": PATIENT_SCHEMA}
_KEYS: dict[str, tuple[str, ...]] = {
    "course": ("site_id", "person_id", "course_number"),
    "patient": ("site_id", "person_id"),
}
# person_source_value stays at the site (protocol section 4): exported tables may lack it.
_OPTIONAL = {"person_source_value"}
_TRUE = {"true", "t", "1", "yes", "y", "1.0"}
_FALSE = {"false", "f", "0", "no", "n", "0.0"}
_MAX_LISTED = 5


class StudyTableError(BlinaError):
    """A course/patient table that does not follow the contract (protocol section 4)."""


def _where(source: str, rows: list[int], csv: bool) -> str:
    # CSV: the header is line 1, so DataFrame row i (0-based) is line i + 2.
    label = "line" if csv else "row"
    shown = ", ".join(str(r + (2 if csv else 1)) for r in rows[:_MAX_LISTED])
    more = f" (+{len(rows) - _MAX_LISTED} more)" if len(rows) > _MAX_LISTED else ""
    return f"{source} {label}{'s' if len(rows) > 1 else ''} {shown}{more}"


def _bad(source: str, col: str, kind: str, values: pd.Series, csv: bool, fix: str) -> str:
    rows = [int(i) for i in np.flatnonzero(values.to_numpy())]
    return f"{_where(source, rows, csv)}: column {col!r} is not a valid {kind}: {fix}"


def _present(raw: pd.Series) -> pd.Series:
    """True where a value is given (not NA and not an empty / whitespace string)."""
    s = raw.astype("object")
    return s.notna() & ~s.map(lambda v: isinstance(v, str) and v.strip() == "")


def _coerce_column(
    raw: pd.Series, col: str, kind: str, source: str, csv: bool
) -> tuple[pd.Series, str | None]:
    present = _present(raw).to_numpy()
    obj = raw.astype("object").where(present, None)
    if kind == "text":
        out = obj.map(lambda v: None if v is None else str(v).strip()).astype("string")
        allowed = ENUMS.get(col)
        if allowed is not None:
            bad = out.notna() & ~out.isin(allowed).fillna(False)
            if bad.any():
                vals = sorted({str(v) for v in out[bad]})[:_MAX_LISTED]
                fix = f"got {vals}; allowed: {list(allowed)} (or empty)"
                return out, _bad(source, col, "category", bad, csv, fix)
        return out, None
    if kind == "double":
        num = pd.to_numeric(obj, errors="coerce").astype(float)
        bad = pd.Series(present & np.isnan(num.to_numpy()), index=raw.index)
        if bad.any():
            vals = [str(v) for v in obj[bad].tolist()[:_MAX_LISTED]]
            fix = f"got {vals}; write a plain number (no comparator or unit), or leave it empty"
            return num, _bad(source, col, "number", bad, csv, fix)
        return num, None
    if kind == "int":
        num = pd.to_numeric(obj, errors="coerce").astype(float)
        arr = num.to_numpy()
        bad = pd.Series(
            present & (np.isnan(arr) | (np.nan_to_num(arr) % 1 != 0)), index=raw.index
        )
        if bad.any():
            vals = [str(v) for v in obj[bad].tolist()[:_MAX_LISTED]]
            fix = f"got {vals}; write a whole number, or leave it empty"
            return num, _bad(source, col, "whole number", bad, csv, fix)
        return num.astype("Int64"), None
    if kind == "boolean":

        def parse(v: object) -> object:
            if v is None:
                return None
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            text = str(v).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            return "?"

        parsed = obj.map(parse)
        bad = parsed.map(lambda v: v == "?")
        if bad.any():
            vals = sorted({str(v) for v in obj[bad]})[:_MAX_LISTED]
            fix = f"got {vals}; write true/false (or 1/0), empty for unknown"
            return parsed, _bad(source, col, "boolean", bad, csv, fix)
        return parsed.astype("boolean"), None
    if kind == "date":
        def parse_date(v: object) -> object:
            if v is None:
                return pd.NaT
            if isinstance(v, (datetime, date, pd.Timestamp, np.datetime64)):
                return pd.Timestamp(v)
            text = str(v).strip()
            # The contract's dates are calendar dates: keep the date part of a dateTime as is.
            try:
                return pd.Timestamp(date.fromisoformat(text[:10]))
            except ValueError:
                return "?"

        parsed = obj.map(parse_date)
        bad = parsed.map(lambda v: isinstance(v, str))
        if bad.any():
            vals = sorted({str(v) for v in obj[bad]})[:_MAX_LISTED]
            fix = f"got {vals}; write an ISO date YYYY-MM-DD, or leave it empty"
            return parsed, _bad(source, col, "date", bad, csv, fix)
        return pd.to_datetime(parsed).dt.normalize().astype("datetime64[ns]"), None
    raise ValueError(f"unknown column kind {kind!r}")  # programming error, not data


def coerce_table(
    df: pd.DataFrame, table: TableName, *, source: str | None = None, csv: bool = False
) -> pd.DataFrame:
    """Return a copy of ``df`` with the contract columns of ``table`` typed (see module docstring).

    ``source`` names the input in error messages (a file path; default "<table> table");
    ``csv=True`` makes row numbers physical CSV lines. Raises :class:`StudyTableError` listing every
    missing column, every bad value and duplicated keys.
    """
    if table not in _SCHEMAS:
        raise ValueError(f"table must be 'course' or 'patient', got {table!r}")
    schema = _SCHEMAS[table]
    source = source or f"{table} table"
    missing = [c for c in schema if c not in df.columns and c not in _OPTIONAL]
    if missing:
        raise StudyTableError(
            f"{source}: missing {table} column(s) {missing}",
            hint="export the table with every column of protocol section 4 "
            f"(columns found: {list(df.columns)[:12]}{' ...' if len(df.columns) > 12 else ''})",
        )
    out = df.copy().reset_index(drop=True)
    problems: list[str] = []
    for col, kind in schema.items():
        if col not in out.columns:
            continue
        converted, problem = _coerce_column(out[col], col, kind, source, csv)
        if problem:
            problems.append(problem)
        else:
            out[col] = converted
    if problems:
        raise StudyTableError(
            f"{source}: {len(problems)} column(s) with invalid values:\n  " + "\n  ".join(problems),
            hint="fix the values named above (protocol section 4 gives each column's type)",
        )
    keys = list(_KEYS[table])
    for k in keys:
        nulls = out[k].isna()
        if nulls.any():
            problems.append(
                _bad(source, k, "key", nulls, csv, "the key is empty; every row needs it")
            )
    dup = out.duplicated(keys, keep=False)
    if dup.any():
        problems.append(
            f"{_where(source, [int(i) for i in np.flatnonzero(dup.to_numpy())], csv)}: "
            f"duplicated key {keys}"
        )
    if problems:
        raise StudyTableError(
            f"{source}: " + "; ".join(problems),
            hint=f"each {table} row needs a unique, non-empty key {keys}",
        )
    return out


def read_table(path: str | Path, table: TableName) -> pd.DataFrame:
    """Read ``course`` or ``patient`` from CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``,
    ``.pq``) and type it with :func:`coerce_table`."""
    p = Path(path)
    name = p.name.lower()
    if not p.is_file():
        raise StudyTableError(f"{p}: file not found", hint=f"give the path of the {table} table")
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
            return coerce_table(df, table, source=str(p), csv=False)
        if name.endswith((".csv", ".csv.gz")):
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
            return coerce_table(df, table, source=str(p), csv=True)
    except StudyTableError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise StudyTableError(
            f"{p}: cannot read the {table} table ({type(exc).__name__}: {exc})",
            hint="check the file is a complete CSV with a header line, or a Parquet file",
        ) from exc
    raise StudyTableError(
        f"{p}: unsupported file type", hint="use .csv, .csv.gz, .parquet or .pq"
    )


def read_course(path: str | Path) -> pd.DataFrame:
    """The ``course`` table from CSV or Parquet, typed (see :func:`coerce_table`)."""
    return read_table(path, "course")


def read_patient(path: str | Path) -> pd.DataFrame:
    """The ``patient`` table from CSV or Parquet, typed (see :func:`coerce_table`)."""
    return read_table(path, "patient")


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN/NA -> None, numpy scalars -> Python, dates -> ISO strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) or math.isinf(obj) else float(obj)
    if isinstance(obj, (pd.Timestamp, datetime, date)):
        return obj.date().isoformat() if isinstance(obj, datetime) else obj.isoformat()
    return obj if isinstance(obj, str) else str(obj)


def write_results(results: StudyResults, folder: str | Path) -> list[Path]:
    """Write ``results.to_tidy()`` as ``<name>.csv`` files and ``results.json`` into ``folder``
    (created if needed). Returns the written paths. JSON: ``{"settings": ..., "parameters": ...,
    "tables": {name: [row, ...]}}`` with NaN written as null."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyTableError(
            f"{out}: cannot create the output folder ({exc})", hint="choose a writable folder"
        ) from exc
    tables = results.to_tidy()
    written: list[Path] = []
    for name, frame in tables.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    doc = {
        "settings": to_jsonable(results.settings),
        "parameters": to_jsonable(results.parameters),
        "tables": {name: to_jsonable(frame) for name, frame in tables.items()},
    }
    path = out / "results.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    written.append(path)
    return written
