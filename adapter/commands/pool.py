"""``blina pool``: at the coordinator, verify site packages and pool them exactly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "verify site results packages and pool them (exact KM, log-rank, Fisher/CMH, Cox, Wilcoxon)"
EXAMPLES = [
    "blina pool center1.zip center2.zip center3.zip center4.zip --out pooled/",
    "blina pool center*.zip --out pooled/ --cox-strata none",
    "blina pool center*.zip --out pooled/ --keys registered-keys/",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("packages", nargs="+", type=Path, help="one package per site (from blina site-run)")
    p.add_argument("--out", type=Path, required=True, help="folder for pooled.json and pooled.html")
    p.add_argument("--keys", type=Path, default=None, metavar="DIR",
                   help="folder of the sites' registered public keys (<site_id>.pub from blina site-key): every "
                   "package must be signed by a key registered for its site; without it packages are not "
                   "authenticated (checksums only) and pool says so")
    p.add_argument("--cox-strata", choices=("site", "none"), default="site",
                   help="Cox model for EFS: a baseline hazard per site (site, default) or one baseline over the "
                   "pooled risk sets (none); `blina analyze --cox-strata` fits the same two models centrally")


def run(args: argparse.Namespace) -> int:
    from blina_study.analysis.federated.package import pool_packages
    from blina_study.analysis.pooled_report import render_pooled_report

    pooled = pool_packages(args.packages, cox_strata=args.cox_strata, keys=args.keys)
    if args.keys is None:
        print("warning: packages not authenticated (no --keys): their checksums show corruption, not forgery; "
              "register the sites' public keys and pass --keys (docs/federated.md)", file=sys.stderr)
    else:
        print("signatures verified: " + ", ".join(f"{s} (key {k})" for s, k in pooled.signatures.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pooled.json").write_text(pooled.to_json() + "\n", encoding="utf-8")
    if pooled.results.get("sharing_level") == "aggregate":
        html_path = render_pooled_report(pooled, args.out / "pooled.html")
        print(f"pooled {len(pooled.sites)} sites ({', '.join(pooled.sites)}) at the aggregate level: meta-analysis "
              f"and stratified tests from published aggregates, not the centralized analysis (each value says its "
              f"method): {args.out / 'pooled.json'}, {html_path}")
        return 0
    html = render_pooled_report(pooled, args.out / "pooled.html")
    print(f"pooled {len(pooled.sites)} sites ({', '.join(pooled.sites)}): {args.out / 'pooled.json'}, {html}")
    print(f"{pooled.pooled['n_patients']} patients, {pooled.pooled['n_courses']} courses")
    cox = pooled.pooled["cox"]["efs"]
    print(f"Cox EFS: {cox['model']}, n={cox['n']}, events={cox['n_events']}")
    return 0
