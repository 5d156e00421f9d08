"""``blina check``: fast pre-flight counts of an OMOP CDM database (exit 1 when a required variable
or table is missing)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blina_study.adapter.commands.common import add_db_arguments, add_study_arguments, open_db, study_from_args
from blina_study.adapter.errors import DataFindings

HELP = "pre-flight: CDM version, tables, rows per study variable, unmapped codes, unusable units"
EXAMPLES = [
    "blina check --db site.duckdb",
    "blina check --db postgresql://reader@dbhost/omop --overlay mappings/sites/center4.yaml --json check.json",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    add_study_arguments(p)
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--top", type=int, default=10, help="unmapped source codes to list per table (default 10)")


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.check import run_check

    study, overlay = study_from_args(args)
    with open_db(args, read_only=True) as db:
        report = run_check(db, study, overlay, top=args.top)
    print(report.text())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if not report.ok:
        missing = report.missing_tables + [f"variable {v}" for v in report.missing_required]
        if missing:
            raise DataFindings("required input missing: " + ", ".join(missing)
                               + ("; same MRN under two site ids" if report.same_mrn_sites else ""))
        raise DataFindings("same MRN under two site ids (see the message above)")
    return 0
