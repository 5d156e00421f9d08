"""``blina analyze``: every analysis of protocol section 5 as tidy CSV + JSON files."""

from __future__ import annotations

import argparse

from blina_study.adapter.commands.inputs import add_input_arguments, describe, read_inputs
from blina_study.adapter.commands.report import add_km_conf_type, analyze_tables, run_info_parts

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

HELP = "run the study's analyses on course/patient tables and write tidy CSV + JSON results"
EXAMPLES = [
    "blina analyze out/center1 out/center2 out/center3 --out results/   (extract folders, combined by site_id)",
    "blina analyze --course out/c1/course.csv --patient out/c1/patient.csv "
    "--course out/c2/course.csv --patient out/c2/patient.csv --out results/",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <table>.csv and results.json")
    p.add_argument("--no-by-center", action="store_true", help="pooled results only (no per-center breakdown)")
    add_km_conf_type(p)
    p.add_argument("--cox-strata", choices=("none", "site"), default="none",
                   help="Cox model for EFS over all centers: one baseline hazard (none, default) or a baseline "
                   "per center (site); `blina pool --cox-strata` fits the same two models from site packages")


def run(args: argparse.Namespace) -> int:
    from blina_study.analysis.io import write_results
    from blina_study.analysis.stats import format_p

    inputs = read_inputs(args)
    course, patient, info = inputs.course, inputs.patient, inputs.run_info
    params, _, _ = run_info_parts(info) if info is not None else ({}, {}, None)
    results = analyze_tables(course, patient, by_center=not args.no_by_center, params=params,
                             source=inputs.source_label, km_conf_type=args.km_conf_type,
                             cox_strata_by_site=args.cox_strata == "site")
    data_source = describe(inputs)
    results.settings["data_source"] = data_source  # recorded in settings.csv and results.json
    written = write_results(results, args.out)
    r = results.pooled
    c1 = r.response[0]
    rates = "; ".join(f"{x.group} {x.endpoint} {x.rate.format()}" for x in c1.rates)
    print(f"{r.n_patients} patients, {r.n_courses} courses, {len(results.by_site)} center(s); data: {data_source}")
    print(f"response (course 1): {rates}; Fisher {format_p(c1.comparison.p_value)}")
    for sv in (r.efs, r.os):
        groups = ", ".join(f"{g.group} {g.text}" for g in sv.groups)
        print(f"{sv.endpoint} at day {sv.landmark_days:g}: {groups}; log-rank {format_p(sv.logrank.p_value)}")
    cox = r.cox_efs
    model = ("stratified by center" if args.cox_strata == "site" and len(set(patient["site_id"].dropna())) > 1
             else "unstratified")
    hrs = ", ".join(f"{t.covariate} HR {t.hr:.3g}" for t in cox.terms) or "; ".join(cox.messages[-1:])
    print(f"Cox EFS ({model}, n={cox.n}, events={cox.n_events}): {hrs}")
    print(f"wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    return 0
