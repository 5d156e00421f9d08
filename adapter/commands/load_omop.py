"""``blina load-omop``: load a folder of OMOP CDM CSV files (a site export)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapter.commands.common import add_db_arguments, open_db
from adapter.errors import BlinaError, DataFindings
from adapter.omop import create_cdm, load_omop_csv

HELP = ("load a folder of OMOP CDM v5.4 CSV files, with the export's own vocabulary tables, into the database "
        "(rows that do not parse are rejected)")
EXAMPLES = [
    "blina load-omop synth/center3_omop_standard --db blina.duckdb --cdm-schema center3 --vocab-schema vocab",
    "blina load-omop export/ --db site.duckdb --report load-report.json",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder with <table>.csv or <table>.csv.gz files")
    add_db_arguments(p)
    p.add_argument("--append", action="store_true", help="append rows instead of replacing each table")
    p.add_argument("--report", type=Path, default=None, help="write a JSON load report here")


def run(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        raise BlinaError(f"{args.folder}: no such folder", hint="pass the folder of the OMOP CSV export")
    if not any(f.name.lower().endswith((".csv", ".csv.gz")) for f in args.folder.iterdir()):
        raise DataFindings(f"no OMOP CSV file (<table>.csv or .csv.gz) in {args.folder}; pass the folder of the export")
    if args.report is not None and not args.report.resolve().parent.is_dir():
        raise BlinaError(f"cannot write {args.report}: its folder does not exist", hint="create the folder first")
    with open_db(args) as db:
        create_cdm(db)
        report = load_omop_csv(db, args.folder, mode="append" if args.append else "replace")
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    tables = ", ".join(f"{t} {n}" for t, n in report.loaded.items())
    print(f"read {report.rows_read} rows: loaded {report.n_loaded} ({tables}), rejected {len(report.rejected)}")
    for r in report.rejected[:20]:
        print(f"  rejected {r.file}:{r.line}: {r.reason}")
    if len(report.rejected) > 20:
        print(f"  ... {len(report.rejected) - 20} more (see --report)")
    if report.skipped_files:
        print(f"skipped files that are not CDM tables the study reads: {', '.join(report.skipped_files)}")
    from adapter.omop.ddl import field_spec

    spec = field_spec()
    if not any(spec[t][0].schema_role == "vocab" for t in report.loaded):
        print("note: the folder has no vocabulary tables (concept.csv ...): the study reads the vocabulary "
              "already in the database (blina init-db loads the study subset; blina load-vocab an Athena download)")
    return 1 if report.rejected else 0
