"""``blina load-vocab``: load an OHDSI Athena vocabulary download into the vocabulary schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blina_study.adapter.commands.common import add_db_arguments, open_db
from blina_study.adapter.omop import create_cdm

HELP = "load an OHDSI Athena vocabulary download (tab-separated CONCEPT.csv ...) into the vocabulary schema"
EXAMPLES = [
    "blina load-vocab athena/ --db postgresql://etl@dbhost/omop --vocab-schema vocab",
    "blina load-vocab athena/ --db site.duckdb --report vocab-load.json",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="the unzipped Athena download (CONCEPT.csv, CONCEPT_ANCESTOR.csv, ...)")
    add_db_arguments(p)
    p.add_argument("--report", type=Path, default=None, help="write a JSON load report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.omop.athena import _stderr_progress, load_athena

    with open_db(args) as db:
        create_cdm(db)
        report = load_athena(db, args.folder, progress=None if args.quiet else _stderr_progress)
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    tables = ", ".join(f"{t} {n}" for t, n in report.loaded.items())
    print(f"read {report.rows_read} rows: loaded {report.n_loaded} ({tables}), rejected {len(report.rejected)}")
    for r in report.rejected[:20]:
        print(f"  rejected {r.file}:{r.line}: {r.reason}")
    if len(report.rejected) > 20:
        print(f"  ... {len(report.rejected) - 20} more (see --report)")
    if report.skipped_files:
        print(f"skipped files that are not vocabulary tables: {', '.join(report.skipped_files)}")
    return 1 if report.rejected else 0
