"""Benchmark of ``blina load-vocab`` (blina_study.adapter.omop.athena) on PostgreSQL, not a test.

Writes an Athena-format folder (``CONCEPT.csv``: tab-separated, unquoted, upper-case name, dates
``YYYYMMDD``) of ``--rows`` synthetic concepts (names with quotes and non-ASCII letters, every
standard_concept / invalid_reason form), then measures in the same run (best of ``--repeat``):

* limit    = a plain ``COPY ... FROM STDIN`` of the same file (psycopg 3, streamed from the file in
  1 MB blocks, CSV with tab delimiter and a quote byte that never occurs) into a table of the same
  column types: the server's own parse and insert, no checks;
* load     = ``blina load-vocab FOLDER --db URL`` in a child process (every field parsed and checked,
  rejected rows accounted for, the vocabulary schema created, one transaction);
* peak RSS = the child's maximum resident set size (``wait4`` rusage), the issue's limit is 300 MB;
* fixed    = ``blina load-vocab`` of a 1-row file (interpreter start, imports, schema creation), the
  part of the load time that does not grow with the file.

Rows/s of both and their ratio are printed and, with ``--results``, written into bench/RESULTS.md
(section "Athena vocabulary load"). The database ``--dbname`` is created and dropped.

Run:  .venv/bin/python bench/athena_vocab.py [--rows 1000000] [--repeat 2] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

COLUMNS = ("concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id", "standard_concept",
           "concept_code", "valid_start_date", "valid_end_date", "invalid_reason")
_DOMAINS = ("Drug", "Condition", "Measurement", "Procedure", "Observation")
_VOCABS = ("RxNorm", "SNOMED", "LOINC", "ICD10CM", "xyz_lab")
_CLASSES = ("Clinical Drug", "Clinical Finding", "Lab Test", "Procedure", "Ingredient")


def write_athena(folder: Path, rows: int) -> Path:
    """CONCEPT.csv of ``rows`` concepts, as Athena writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "CONCEPT.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(COLUMNS) + "\n")
        for i in range(rows):
            k = i % 5
            std = ("S", "C", "", "S", "")[i % 5]
            inv = ("", "", "D", "", "U")[i % 5] if std == "" else ""
            name = f'concept {i} "quoted" Ménière {k}' if i % 7 == 0 else f"concept number {i} of domain {k}"
            start = f"{1970 + i % 50:04d}{1 + i % 12:02d}{1 + i % 28:02d}"
            fh.write(f"{i + 1}\t{name}\t{_DOMAINS[k]}\t{_VOCABS[(i // 5) % 5]}\t{_CLASSES[k]}\t{std}\t"
                     f"C{i:08d}\t{start}\t20991231\t{inv}\n")
    return path


def copy_limit(url: str, path: Path) -> tuple[float, int]:
    """Seconds and rows of a plain COPY of ``path`` into a fresh table of CONCEPT's column types."""
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("drop table if exists bench_copy_concept")
        conn.execute("create table bench_copy_concept (concept_id integer not null, concept_name varchar(255) "
                     "not null, domain_id varchar(20) not null, vocabulary_id varchar(20) not null, "
                     "concept_class_id varchar(20) not null, standard_concept varchar(1), concept_code "
                     "varchar(50) not null, valid_start_date date not null, valid_end_date date not null, "
                     "invalid_reason varchar(1))")
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur, open(path, "rb") as fh, cur.copy(
                "copy bench_copy_concept from stdin with (format csv, delimiter E'\\t', header true, "
                "quote E'\\x01', null '')") as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - t0
        n = conn.execute("select count(*) from bench_copy_concept").fetchone()[0]
        conn.execute("drop table bench_copy_concept")
        conn.commit()
    return elapsed, n


def load_vocab(url: str, folder: Path) -> tuple[float, int, str]:
    """Seconds and peak RSS (KB) of ``blina load-vocab`` in a child process, and its last output line."""
    cmd = [sys.executable, "-c", "import sys; from blina_study.adapter.cli import main; sys.exit(main())",
           "load-vocab", str(folder), "--db", url, "--vocab-schema", "vocab", "--cdm-schema", "cdm", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    out = proc.stdout.read().decode() + proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"load-vocab failed ({proc.returncode}): {out}")
    return elapsed, usage.ru_maxrss, out.strip().splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--dbname", default="blina_bench_vocab")
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", args.dbname):
        raise SystemExit("--dbname: lower-case letters, digits and _ only")
    base = args.server.rsplit("/", 1)[0]
    url = f"{base}/{args.dbname}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "athena"
        t0 = time.perf_counter()
        path = write_athena(folder, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows) in "
              f"{time.perf_counter() - t0:.1f} s")
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f"drop database if exists {args.dbname}")
            admin.execute(f"create database {args.dbname}")
        try:
            copies, loads = [], []
            for r in range(args.repeat):
                copy_sec, n = copy_limit(url, path)
                assert n == args.rows, (n, args.rows)
                copies.append(copy_sec)
                sec, rss, line = load_vocab(url, folder)
                loads.append((sec, rss, line))
                print(f"run {r + 1}: COPY {copy_sec:.2f} s; load-vocab {sec:.2f} s, peak RSS "
                      f"{rss / 1024:.0f} MB ({line})")
            with psycopg.connect(url) as conn:
                n_loaded = conn.execute("select count(*) from vocab.concept").fetchone()[0]
            # the fixed cost inside the load time: interpreter start, imports, schema creation
            one = Path(tmp) / "one"
            write_athena(one, 1)
            fixed = min(load_vocab(url, one)[0] for _ in range(args.repeat))
        finally:
            with psycopg.connect(args.server, autocommit=True) as admin:
                admin.execute(f"drop database if exists {args.dbname} with (force)")
    assert n_loaded == args.rows, (n_loaded, args.rows)
    copy_s = min(copies)
    load_s = min(s for s, _, _ in loads)
    peak = max(r for _, r, _ in loads) / 1024
    ratio = load_s / copy_s
    lines = [
        f"{args.rows:,} CONCEPT rows ({size_mb:.0f} MB file), best of {args.repeat}:",
        "",
        "| step | seconds | rows/s |",
        "|---|---|---|",
        f"| plain COPY of the file (limit) | {copy_s:.2f} | {args.rows / copy_s:,.0f} |",
        f"| blina load-vocab | {load_s:.2f} | {args.rows / load_s:,.0f} |",
        f"| of which fixed (load-vocab of a 1-row file: start-up, imports, schemas) | {fixed:.2f} | |",
        "",
        f"load-vocab / COPY = {ratio:.2f}x the time; peak RSS of load-vocab {peak:.0f} MB (limit 300 MB: "
        f"{'holds' if peak < 300 else 'EXCEEDED'}); rows loaded = rows in the file ({n_loaded:,}).",
    ]
    print("\n".join(lines))
    if args.results:
        _write_results(args.results, lines)
    return 0


def _write_results(path: Path, lines: list[str]) -> None:
    head = "## Athena vocabulary load"
    body = [head, "",
            f"`bench/athena_vocab.py` on {platform.node() or 'this machine'} ({os.cpu_count()} cores shared with "
            f"other jobs; {platform.python_implementation()} {platform.python_version()}; PostgreSQL at "
            f"127.0.0.1), {dt.date.today().isoformat()}. Synthetic Athena CONCEPT.csv (tab-separated, "
            "YYYYMMDD dates). The limit is a plain COPY of the same file in the same run.", "", *lines, ""]
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + "\n".join(body) + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(body)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
