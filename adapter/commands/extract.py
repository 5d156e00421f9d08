"""``blina extract``: build the study tables and write them (CSV + Parquet), lineage and a JSON sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path

from blina_study.adapter.commands.build import add_common
from blina_study.adapter.commands.common import open_db, study_from_args

HELP = "write course/patient CSV + Parquet, lineage.csv (stays at the site) and extract.json"
EXAMPLES = [
    "blina extract --db site.duckdb --site-id center3 --out out/center3",
    "blina extract --db postgresql://reader@dbhost/omop --overlay mappings/sites/center4.yaml --out out/c4",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, results=False)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.cohort import require_one_site_per_person
    from blina_study.adapter.views import extract

    study, overlay = study_from_args(args)
    with open_db(args, read_only=True) as db:
        require_one_site_per_person(db)
        paths = extract(db, study, overlay, site_id=args.site_id, out_dir=args.out)
    print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {args.out}")
    return 0
