"""Load a folder of OMOP CDM CSV files (the format sites export) into the CDM and vocabulary schemas.

Nothing is lost: every data row of every file is either loaded or rejected with its file, line and
reason; files that are not CDM tables this study uses are skipped and listed. The export's own
vocabulary tables (CONCEPT, CONCEPT_ANCESTOR, CONCEPT_RELATIONSHIP, VOCABULARY, DOMAIN,
CONCEPT_CLASS, RELATIONSHIP, CONCEPT_SYNONYM, DRUG_STRENGTH) are loaded into the vocabulary schema,
replacing what was there (e.g. the study subset): a site's local concepts live there. File names are
matched case-insensitively (``CONCEPT.csv``). An Athena download (tab-separated) is refused with the
command that loads it (``blina load-vocab``). Values are parsed per
the field-level spec (integers, numbers, ISO dates ``YYYY-MM-DD`` or ``YYYYMMDD``, timestamps); a
value that does not parse, a missing required value, or text longer than the column allows rejects
the row. It is never turned into NULL or 0.

A site export is a snapshot: by default each table present in the folder is replaced (idempotent
reloads); ``mode="append"`` adds rows instead. All of it runs in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from blina_study.adapter.db import Database
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.omop.ddl import Field, field_spec

__all__ = ["LoadReport", "Rejection", "load_omop_csv"]

_CHUNK = 250_000
_INT = re.compile(r"^[+-]?\d+$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COMPACT_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int
    reason: str


@dataclass
class LoadReport:
    """What happened to each file and row."""

    loaded: dict[str, int] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    rows_read: int = 0

    @property
    def n_loaded(self) -> int:
        return sum(self.loaded.values())

    def balanced(self) -> bool:
        return self.rows_read == self.n_loaded + len(self.rejected)

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "loaded": dict(self.loaded),
            "rejected": [r.__dict__ for r in self.rejected],
            "skipped_files": list(self.skipped_files),
        }


def _table_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _parse_column(raw: pd.Series, f: Field) -> tuple[pd.Series, pd.Series]:
    """Return (typed values, bad-row mask) for one column of strings."""
    s = raw.str.strip()
    empty = s.eq("")
    if f.type == "integer":
        ok = s.str.match(_INT) | empty
        vals = pd.to_numeric(s.where(ok & ~empty), errors="coerce").astype("Int64")
        bad = ~ok
    elif f.type == "numeric":
        vals = pd.to_numeric(s.where(~empty), errors="coerce")
        bad = vals.isna() & ~empty
    elif f.type == "date":
        # the shape first: strptime alone would read "2020013" as 2020-01-03
        iso_shape, compact_shape = s.str.match(_ISO_DATE), s.str.match(_COMPACT_DATE)
        iso = pd.to_datetime(s.where(~empty & iso_shape), format="%Y-%m-%d", errors="coerce")
        compact = pd.to_datetime(s.where(~empty & iso.isna() & compact_shape), format="%Y%m%d", errors="coerce")
        vals = iso.fillna(compact)
        bad = vals.isna() & ~empty
        vals = vals.dt.date
    elif f.type == "timestamp":
        vals = pd.to_datetime(s.where(~empty), format="ISO8601", errors="coerce")
        bad = vals.isna() & ~empty
    else:
        m = re.match(r"varchar\((\d+)\)", f.type)
        limit = int(m.group(1)) if m else None
        vals = raw.where(~empty, None)
        bad = raw.str.len().gt(limit) if limit else pd.Series(False, index=raw.index)
    if f.required:
        bad = bad | empty
    return vals, bad


def _reason(f: Field, value: str) -> str:
    if value.strip() == "":
        return f"{f.column} is required but empty"
    if f.type.startswith("varchar"):
        return f"{f.column} is longer than {f.type}: {value[:60]!r}"
    form = {"integer": "a whole number", "numeric": "a number", "date": "a date YYYY-MM-DD",
            "timestamp": "a timestamp YYYY-MM-DD HH:MM:SS"}.get(f.type, f.type)
    return f"{f.column}: {value[:60]!r} is not {form}"


def load_omop_csv(db: Database, folder: str | Path, *, mode: str = "replace") -> LoadReport:
    """Load every ``<table>.csv`` / ``.csv.gz`` in ``folder`` into ``db``'s CDM schema (vocabulary
    tables into its vocabulary schema).

    Raises :class:`BlinaError` for problems with a whole file (unknown column, missing required
    column); row problems become :class:`Rejection` entries in the report.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BlinaError(f"{folder}: not a folder", hint="pass the folder that holds the OMOP CSV files")
    if mode not in ("replace", "append"):
        raise BlinaError(f"unknown load mode {mode!r}", hint="use replace or append")
    spec = field_spec()
    report = LoadReport()
    files = sorted(p for p in folder.iterdir() if p.is_file())
    plan: list[tuple[Path, str]] = []
    for path in files:
        table = _table_of(path)
        if table in spec:
            if spec[table][0].schema_role == "vocab" and _is_tab_separated(path):
                raise BlinaError(
                    f"{path}: a tab-separated vocabulary file (an Athena download), not an OMOP CSV export",
                    hint=f"load the vocabulary with: blina load-vocab {folder} (same --db / --vocab-schema); "
                         "then load-omop the folder of CDM tables without it")
            plan.append((path, table))
        else:
            report.skipped_files.append(path.name)
    with db.transaction():
        for path, table in plan:
            _load_file(db, path, table, spec[table], report, mode)
    return report


def _is_tab_separated(path: Path) -> bool:
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    return "\t" in header and "," not in header


def _load_file(db: Database, path: Path, table: str, fields: list[Field], report: LoadReport, mode: str) -> None:
    by_name = {f.column: f for f in fields}
    target = db.qualified(fields[0].schema_role, table)
    if mode == "replace":
        db.execute(f"DELETE FROM {target}")
    report.loaded.setdefault(table, 0)
    reader = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=_CHUNK, encoding="utf-8")
    first_line = 2  # line 1 is the header
    for chunk in reader:
        chunk.columns = [c.strip().lower() for c in chunk.columns]
        unknown = [c for c in chunk.columns if c not in by_name]
        if unknown:
            raise BlinaError(
                f"{path}: unknown column(s) {', '.join(unknown)} for OMOP table {table}",
                hint="column names must be those of OMOP CDM v5.4 (see sql/ddl/omop_cdm_v54_fields.csv)",
            )
        missing = [f.column for f in fields if f.required and f.column not in chunk.columns]
        if missing:
            raise BlinaError(
                f"{path}: missing required column(s) {', '.join(missing)} for OMOP table {table}",
                hint="add the column; OMOP CDM v5.4 requires it",
            )
        report.rows_read += len(chunk)
        typed = {}
        bad_any = np.zeros(len(chunk), dtype=bool)
        reasons: dict[int, str] = {}
        for col in chunk.columns:
            vals, bad = _parse_column(chunk[col], by_name[col])
            typed[col] = vals
            bad_arr = bad.to_numpy(dtype=bool)
            for i in np.flatnonzero(bad_arr & ~bad_any):
                reasons[int(i)] = _reason(by_name[col], chunk[col].iloc[i])
            bad_any |= bad_arr
        for i, why in sorted(reasons.items()):
            report.rejected.append(Rejection(file=str(path), line=first_line + i, reason=why))
        good = pd.DataFrame(typed)[~bad_any]
        report.loaded[table] += db.bulk_insert(target, good, list(good.columns))
        first_line += len(chunk)
