"""``blina demo``: the whole pipeline on embedded DuckDB, in one command.

Generates the four synthetic centers, ingests the FHIR centers, loads the OMOP centers (center 4
through its site overlay), builds and extracts ``course`` / ``patient`` per center, analyzes the
centers' extract folders together (``blina analyze``/``blina report`` combine them by site_id) and writes
the HTML report, which says its data are synthetic. Each step is the same ``blina`` command a user would run;
their output goes to ``demo.log`` in the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import pandas as pd

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.resources import mappings_dir

HELP = "run the whole pipeline on synthetic data in embedded DuckDB and write the study report"
EXAMPLES = ["blina demo", "blina demo --out demo-output --seed 7 --patients 210"]

CENTERS = (
    ("center1", "center1_fhir_bundles", "fhir"),
    ("center2", "center2_bulk_ndjson", "fhir"),
    ("center3", "center3_omop_standard", "omop"),
    ("center4", "center4_omop_local", "omop"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default 42: the reference cohort)")
    p.add_argument("--patients", type=int, default=105, help="patients across the four centers (default 105)")


def _step(log: io.TextIOBase, argv: list[str]) -> int:
    from blina_study.adapter.cli import main

    log.write(f"\n$ blina {' '.join(argv)}\n")
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        rc = main(argv)
    log.write(buf_out.getvalue() + buf_err.getvalue() + f"[exit {rc}]\n")
    if rc == 2:
        raise BlinaError(f"demo step failed: blina {' '.join(argv)}: {buf_err.getvalue().strip()}",
                         hint="see demo.log in the output folder")
    return rc


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    db = str(out / "demo.duckdb")
    synth, study_dir, quality = out / "synth", out / "study", out / "quality"
    quality.mkdir()
    steps: list[tuple[str, list[str]]] = [
        ("generate four centers", ["synth", "--out", str(synth), "--seed", str(args.seed),
                                   "--patients", str(args.patients)]),
    ]
    for site, folder, kind in CENTERS:
        common = ["--db", db, "--cdm-schema", site, "--vocab-schema", "vocab"]
        steps.append((f"{site}: create OMOP tables", ["init-db", *common]))
        if kind == "fhir":
            steps.append((f"{site}: ingest FHIR", ["ingest", str(synth / folder), "--site", site, *common,
                                                   "--report", str(quality / f"{site}-ingest.json"),
                                                   "--quarantine", str(quality / f"{site}-quarantine.ndjson")]))
        else:
            steps.append((f"{site}: load OMOP CSV", ["load-omop", str(synth / folder), *common,
                                                     "--report", str(quality / f"{site}-load.json")]))
        overlay = ["--overlay", str(mappings_dir() / "sites" / f"{site}.yaml")] if site == "center4" else []
        steps.append((f"{site}: build + extract", ["extract", *common, "--site-id", site, *overlay,
                                                   "--out", str(study_dir / site)]))
    started = time.perf_counter()
    findings = 0
    with open(out / "demo.log", "w", encoding="utf-8") as log, Progress(
        TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("starting", total=len(steps) + 2)
        for label, argv in steps:
            progress.update(task, description=label)
            findings += _step(log, argv) == 1
            progress.advance(task)
        progress.update(task, description="combine centers, analyze")
        dq = {p.stem: json.loads(p.read_text()) for p in sorted(quality.glob("*.json"))}
        (quality / "data-quality.json").write_text(json.dumps(_quality_summary(dq), indent=2))
        # the centers' extract folders, combined by site_id by analyze/report themselves (as a user
        # combines sites), each with its extract.json (parameters, fingerprints, synthetic data source)
        folders = [str(study_dir / s) for s, _, _ in CENTERS]
        _step(log, ["analyze", *folders, "--out", str(out / "analysis")])
        progress.advance(task)
        progress.update(task, description="write report")
        _step(log, ["report", *folders, "--out", str(out / "report.html"),
                    "--data-quality", str(quality / "data-quality.json")])
        progress.advance(task)
    elapsed = time.perf_counter() - started
    n_pat = sum(len(pd.read_parquet(study_dir / s / "patient.parquet")) for s, _, _ in CENTERS)
    n_course = sum(len(pd.read_parquet(study_dir / s / "course.parquet")) for s, _, _ in CENTERS)
    print(f"demo finished in {elapsed:.1f} s: {n_pat} patients, {n_course} courses at 4 centers (synthetic data)")
    print(f"report:   {(out / 'report.html').resolve()}")
    print(f"tables:   {study_dir.resolve()}  (course/patient CSV + Parquet and extract.json, per center)")
    print(f"analysis: {(out / 'analysis').resolve()}")
    print(f"log:      {(out / 'demo.log').resolve()}")
    if findings:
        print(f"note: {findings} step(s) reported data findings (see {quality.resolve()})")
    return 0


def _quality_summary(reports: dict[str, dict]) -> dict:
    """Per center: records read, loaded, skipped, rejected (from the ingest and load reports)."""
    rows = []
    for name, rep in reports.items():
        site, _, kind = name.partition("-")
        if kind == "load":
            rows.append({"center": site, "route": "OMOP CSV", "read": rep.get("rows_read"),
                         "loaded": sum((rep.get("loaded") or {}).values()), "skipped": 0,
                         "rejected": len(rep.get("rejected") or [])})
        else:
            rows.append({"center": site, "route": "FHIR", "read": rep.get("resources_read"),
                         "loaded": (rep.get("loaded") or {}).get("total"),
                         "skipped": (rep.get("skipped") or {}).get("total"),
                         "rejected": (rep.get("rejected") or {}).get("total")})
    return {"records": rows}
