"""Load an OHDSI Athena vocabulary download (``CONCEPT.csv``, ``CONCEPT_ANCESTOR.csv``, ...) into the
vocabulary schema.

Athena's files are tab-separated, unquoted (a concept name may contain ``"``), upper-case named, with
dates ``YYYYMMDD``; CONCEPT has 5-6 million rows and CONCEPT_ANCESTOR tens of millions. Each file is
streamed in chunks of :data:`CHUNK_ROWS` rows (memory does not grow with the file), every value is
parsed by the same field-level rules as ``load-omop`` (a row that does not parse is rejected with its
file, line and reason, never coerced), and the good rows go to PostgreSQL by ``COPY`` (as CSV text
written by pandas, psycopg 3's copy protocol) or to DuckDB by appending the frame. Rows are accounted
for: read = loaded + rejected. Each table present is replaced, in one transaction. Files that are not
vocabulary tables (``CONCEPT_CPT4.csv``, ``readme.txt``, ``cpt4.jar`` ...) are skipped and listed.

Memory: the chunks are freed, but glibc keeps the freed heap pages of their many small strings, so the
resident size crept up with the file (1e6 rows, 50,000-row chunks: 173 MB after 1e5 rows, 237 MB
after 1e6, peak 304 MB in ``bench/athena_vocab.py``). A full garbage collection (the chunk's frames are
in reference cycles) and returning the freed pages to the system (``malloc_trim``, Linux) after each
chunk keep it flat (152-153 MB from 1e5 to 1e6 rows, measured in-process; with ``malloc_trim`` alone it
still grew to 215 MB); chunks of 20,000 rows lower the per-chunk peak (bench/RESULTS.md, "Athena
vocabulary load").
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import gc
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from blina_study.adapter.db import Database, quote_ident
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.omop.csv_loader import LoadReport, Rejection, _parse_column, _reason
from blina_study.adapter.omop.ddl import Field, field_spec

__all__ = ["CHUNK_ROWS", "VOCABULARY_TABLES", "load_athena"]

CHUNK_ROWS = 20_000
# Loaded in this order: small reference tables first, then CONCEPT and the big link tables.
VOCABULARY_TABLES: tuple[str, ...] = ("vocabulary", "domain", "concept_class", "relationship", "concept",
                                      "concept_relationship", "concept_ancestor", "concept_synonym",
                                      "drug_strength")

Progress = Callable[[str, int, int, int], None]  # (table, rows so far, bytes read, file bytes)


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)`` (give freed heap pages back), or a no-op where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


_release_memory = _malloc_trim()


def _stderr_progress(table: str, rows: int, done: int, total: int) -> None:
    pct = 100.0 * done / total if total else 100.0
    bar = "#" * int(pct / 5)
    print(f"\r  {table:<22} [{bar:<20}] {pct:5.1f}% {rows:>12,} rows", end="", file=sys.stderr, flush=True)


def load_athena(db: Database, folder: str | Path, *, progress: Progress | None = _stderr_progress) -> LoadReport:
    """Replace the vocabulary tables with the Athena files in ``folder``. Raises :class:`BlinaError`
    for a problem with a whole file (not tab-separated, unknown or missing column)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BlinaError(f"{folder}: not a folder", hint="pass the unzipped Athena download folder")
    by_table: dict[str, Path] = {}
    report = LoadReport()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name = path.name.lower()
        table = name[:-4] if name.endswith(".csv") else None
        if table in VOCABULARY_TABLES:
            by_table[table] = path
        else:
            report.skipped_files.append(path.name)
    if "concept" not in by_table:
        raise BlinaError(f"{folder}: no CONCEPT.csv", hint="pass the folder of the unzipped Athena download")
    spec = field_spec()
    with db.transaction():
        for table in VOCABULARY_TABLES:
            if table in by_table:
                _load_table(db, by_table[table], table, spec[table], report, progress)
    return report


def _load_table(db: Database, path: Path, table: str, fields: list[Field], report: LoadReport,
                progress: Progress | None) -> None:
    by_name = {f.column: f for f in fields}
    target = db.qualified("vocab", table)
    db.execute(f"DELETE FROM {target}")
    report.loaded[table] = 0
    total = path.stat().st_size
    with open(path, "rb") as raw:
        header = raw.readline().decode("utf-8-sig")
        if "\t" not in header:
            raise BlinaError(f"{path}: not tab-separated (line 1: {header.strip()[:80]!r})",
                             hint="an Athena download is tab-separated; load an OMOP CSV export with "
                                  "blina load-omop")
        columns = [c.strip().lower() for c in header.rstrip("\r\n").split("\t")]
        unknown = [c for c in columns if c not in by_name]
        missing = [f.column for f in fields if f.required and f.column not in columns]
        if unknown or missing:
            raise BlinaError(f"{path}: " + "; ".join(
                ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing required column(s) {', '.join(missing)}"] if missing else [])),
                hint=f"an Athena {table.upper()}.csv has the OMOP v5.4 columns of {table}")
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = pd.read_csv(text, sep="\t", header=None, names=columns, dtype=str, keep_default_na=False,
                             quoting=csv.QUOTE_NONE, chunksize=CHUNK_ROWS, engine="c")
        first_line = 2
        for chunk in reader:
            report.rows_read += len(chunk)
            typed: dict[str, pd.Series] = {}
            bad_any = np.zeros(len(chunk), dtype=bool)
            reasons: dict[int, str] = {}
            for col in columns:
                vals, bad = _parse_column(chunk[col], by_name[col])
                typed[col] = vals
                bad_arr = bad.to_numpy(dtype=bool)
                for i in np.flatnonzero(bad_arr & ~bad_any):
                    reasons[int(i)] = _reason(by_name[col], chunk[col].iloc[i])
                bad_any |= bad_arr
            for i, why in sorted(reasons.items()):
                report.rejected.append(Rejection(file=str(path), line=first_line + i, reason=why))
            good = pd.DataFrame(typed)[~bad_any]
            report.loaded[table] += _append(db, target, good, columns)
            first_line += len(chunk)
            del chunk, typed, good
            gc.collect()  # the chunk's frames sit in reference cycles (pandas accessors) until a full collection
            _release_memory()
            if progress is not None:
                progress(table, report.loaded[table], raw.tell(), total)
    if progress is not None:
        progress(table, report.loaded[table], total, total)
        print(file=sys.stderr)


def _append(db: Database, target: str, df: pd.DataFrame, columns: list[str]) -> int:
    if df.empty:
        return 0
    if db.dialect == "duckdb":
        return db.bulk_insert(target, df, columns)
    # PostgreSQL: COPY the chunk as CSV text (unquoted empty = NULL); one write per chunk instead of one
    # Python call per row.
    buf = io.StringIO()
    df.to_csv(buf, header=False, index=False, columns=columns, lineterminator="\n")
    col_sql = ", ".join(quote_ident(c, "column name") for c in columns)
    raw = db._sa_conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {target} ({col_sql}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buf.getvalue())
    return len(df)
