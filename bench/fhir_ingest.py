"""Benchmark of ``blina ingest`` on a generated Bulk Data export (not a test: run by hand).

    .venv/bin/python bench/fhir_ingest.py --sizes 100000 1000000 --noise 9 99 \\
        --pg postgresql://postgres@127.0.0.1:5432/postgres --results bench/RESULTS.md

For each size it writes a center2-style Bulk NDJSON export with the generator (``blina_study.adapter.synth``:
``--noise K`` irrelevant records per study-relevant record, so K = 9 gives <= 10 % relevant), then
measures, each in a fresh process (so peak RSS is that of the step alone):

* ``parse``: the limit: read every line and ``orjson.loads`` it, nothing else;
* ``duckdb`` / ``postgresql``: ``ingest_fhir`` end to end into a fresh database that already holds
  the CDM tables and the study vocabulary (their creation is not timed).

It reports resources/s, the ratio ingest/parse (same files, same machine, one run) and peak RSS,
and (with ``--results``) replaces the "FHIR ingest" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ generation
def _render(out: Path, patients: int, noise: int, seed: int) -> dict[str, int]:
    """Write the center2 (Bulk NDJSON) part of a generated cohort; return resources per type."""
    from blina_study.adapter.synth import build_cohort
    from blina_study.adapter.synth.catalog import Catalog
    from blina_study.adapter.synth.render_fhir import patient_resources

    res = build_cohort(seed=seed, patients=patients, noise=noise)
    cat = Catalog(res.study)
    r = random.Random(f"{seed}:bench:render")
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, object] = {}
    counts: dict[str, int] = {}
    try:
        for tl in res.timelines:
            if tl.site_id != "center2":
                continue
            for rec in patient_resources(tl, cat, r, lambda t, i: f"{t}/{i}", with_time=True):
                rtype = rec["resourceType"]
                fh = handles.get(rtype)
                if fh is None:
                    fh = handles[rtype] = open(out / f"{rtype}.ndjson", "w", encoding="utf-8")  # noqa: SIM115
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                counts[rtype] = counts.get(rtype, 0) + 1
    finally:
        for fh in handles.values():
            fh.close()
    (out / "counts.json").write_text(json.dumps({"patients": patients, "noise": noise, "counts": counts}))
    return counts


def make_export(root: Path, target: int, noise: int, seed: int = 7) -> tuple[Path, int]:
    """An export of about ``target`` resources (reused when already generated)."""
    folder = root / f"export_{target}_noise{noise}"
    meta = folder / "counts.json"
    if meta.exists():
        return folder, sum(json.loads(meta.read_text())["counts"].values())
    trial = _render(root / "trial", 60, noise, seed)
    center2_share = 25 / 105  # the generator's center weights
    per_patient = sum(trial.values()) / max(1, round(60 * center2_share))
    patients = max(20, round(target / per_patient / center2_share))
    counts = _render(folder, patients, noise, seed)
    return folder, sum(counts.values())


# ------------------------------------------------------------------------------------ measures
def _peak_rss_mb() -> float:
    # VmHWM is this process image's peak; ru_maxrss would include the parent's peak inherited at fork
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure_parse(folder: Path) -> dict:
    import orjson

    t0 = time.perf_counter()
    n = 0
    for f in sorted(folder.glob("*.ndjson")):
        with open(f, "rb") as fh:
            for line in fh:
                orjson.loads(line)
                n += 1
    return {"resources": n, "seconds": time.perf_counter() - t0}


def _measure_split(folder: Path) -> dict:
    """Where the time goes: parse + the relevance filter alone, and fhir.resources validation of the
    study-relevant resources alone (the same code paths the ingest uses)."""
    import orjson

    from blina_study.adapter.db import connect
    from blina_study.adapter.fhir.ingest import _study_mapper
    from blina_study.adapter.fhir.ingest_sql import SqlContext, StageDb
    from blina_study.adapter.fhir.mapper import _model, load_config, load_views
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary
    from blina_study.adapter.study import load_study

    db = connect(":memory:", cdm_schema="cdm", vocab_schema="vocab")
    create_cdm(db)
    load_study_vocabulary(db)
    config, views, study = load_config(), load_views(), load_study()
    sdb = StageDb(db)
    sdb.execute("CREATE TEMP TABLE _bl_cfg_var (variable VARCHAR, vocabulary_id VARCHAR, code VARCHAR, "
                "descendants BOOLEAN)")
    for n, var in study.variables.items():
        for c in var.codes:
            sdb.execute("INSERT INTO _bl_cfg_var VALUES (:n, :v, :c, :d)",
                        {"n": n, "v": c.vocabulary_id, "c": c.code, "d": c.descendants})
    ctx = SqlContext(cdm='"cdm"', vocab='"vocab"', site="bench", ucum_system=None, ucum_vocabulary=None,
                     mrn_system=None, gender_vocabulary="Gender", operator_domain="", type_vocabulary="")
    mapper = _study_mapper(sdb, ctx, views, config, None)
    sdb.close()  # its work database (DuckDB)
    t0 = time.perf_counter()
    relevant = []
    n = 0
    for f in sorted(folder.glob("*.ndjson")):
        with open(f, "rb") as fh:
            for line in fh:
                res = orjson.loads(line)
                n += 1
                if res.get("resourceType") in mapper.relevant and mapper.is_study(res):
                    relevant.append(res)
    filtered = time.perf_counter() - t0
    t0 = time.perf_counter()
    for res in relevant:
        _model(res["resourceType"]).model_validate(res)
    return {"resources": n, "relevant": len(relevant), "filter_seconds": filtered,
            "validate_seconds": time.perf_counter() - t0}


def _measure_ingest(folder: Path, url: str, workers: int | None) -> dict:
    from blina_study.adapter.db import connect
    from blina_study.adapter.fhir.ingest import _reading_workers, ingest_fhir
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    db = connect(url, cdm_schema="cdm", vocab_schema="vocab")
    create_cdm(db)
    load_study_vocabulary(db)
    files = sorted(folder.glob("*.ndjson"))
    t0 = time.perf_counter()
    rep = ingest_fhir(db, files, site_id="bench", workers=workers)
    seconds = time.perf_counter() - t0
    db.close()
    assert rep.balanced()
    return {"resources": rep.read, "seconds": seconds, "loaded": rep.n_loaded, "rejected": rep.n_rejected,
            "skipped": rep.n_skipped, "rows": sum(rep.rows.values()), "workers": _reading_workers(files, workers),
            # the largest worker process (forked: its RSS includes pages it shares with the main process)
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}


def _child(mode: str, folder: Path, url: str | None) -> dict:
    if mode == "parse":
        out = _measure_parse(folder)
    elif mode == "split":
        out = _measure_split(folder)
    else:  # ingest:1 (one process) or ingest:auto
        out = _measure_ingest(folder, url or "", None if mode.endswith(":auto") else int(mode.split(":")[1]))
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _run_child(mode: str, folder: Path, url: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(folder)] + ([url] if url else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _best_of(n: int, measure: Callable[[], dict]) -> dict:
    """The fastest of ``n`` runs (each in a fresh process, into a fresh database), with the highest peak RSS
    of all of them: the machine is shared, so one slow run says little about the code."""
    runs = [measure() for _ in range(max(1, n))]
    best = dict(min(runs, key=lambda r: r["seconds"]))
    for key in ("peak_rss_mb", "worker_rss_mb"):
        if key in best:
            best[key] = max(r[key] for r in runs)
    best["runs"] = len(runs)
    return best


def _fresh_pg(base_url: str, name: str) -> str:
    import psycopg

    conninfo = re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", base_url)
    with psycopg.connect(conninfo, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return conninfo.rsplit("/", 1)[0] + "/" + name


# ------------------------------------------------------------------------------------ report
NOTES = """Reading the numbers (FHIR ingest, issue 3):

- Memory target met at both sizes and both shares: main process <= 338 MB (~150 MB of it is the imported
  libraries), each worker <= 127 MB; the workers are forked, so their RSS counts pages they share with the
  main process. Per-resource state is one int per study-relevant resource id (duplicate detection).
- Speed target NOT met. Best ratio to the orjson-only parse at 1e6 resources: 0.44 at 1 % study-relevant
  (K = 99) and 0.16 at 10 % (K = 9), into DuckDB with the default 2 reading processes; one process: 0.25
  and 0.09. PostgreSQL: 0.44 and 0.13. At 1e5 resources the fixed costs (SQL resolution steps, work
  tables, starting the workers: ~0.5 s against a 0.16 s parse) keep it at 0.09-0.25.
- Why 0.5 cannot be reached at 10 % relevant while every relevant resource is validated with
  fhir.resources (R4B): validation costs ~70 us per resource, ~45x its parse, so at 10 % it is 4.2-4.6x the
  whole parse (6.7 s against 1.4-1.6 s at 1e6). All the work of an ingest at K = 9 is ~13 CPU-seconds
  (parse 1.5, relevance test and follow-up dates 1.5, validation 6.7, ViewDefinitions and staging ~3,
  SQL ~1); 2 cores can at best halve that: ~6.5 s, a ratio of ~0.23. The issue's own figure (35x) gives
  1 / (1 + 3.5) = 0.22 for one process as well.
- At 1 %, the ingest is mostly the per-record path of the 99 % that is not loaded: parse ~1.8 us, then the
  study-code test and the follow-up dates ~2 us per record in CPython (measured on one 8 MB range).
  Since session 2: the reader hands those records to a sink (no per-record object), the study-code test
  walks plain JSON keys (`code.coding`), status and dates are checked only when a record would move the
  patient's follow-up, and worker ranges are iterated without copying lines. Measured back to back on the
  1e6, K = 99 files (in-memory DuckDB): one process 6.0-6.8 s before these changes, 5.1-5.5 s after; 2
  reading processes 2.9 s at best.
- This 2-core VM is noisy: the same code and files took 2.9-3.9 s within half an hour, and the parse
  limit ranged 590k-660k resources/s between runs (770k/s in session 2). Each ratio is taken within one
  run, from the best of its repeats.
- Parallel reading: NDJSON ranges of 8 MB are parsed, filtered and validated by forked workers; the main
  process merges them in input order (counts, follow-up extremes, then the relevant lines through the same
  code as one process), so the outcome is identical: `test_parallel_reading_gives_the_serial_outcome`
  (it caught a difference in a malformed line's error text while this was written). With 2 cores: 2
  workers + the merging process; 3 workers measured slower; flattening in the workers too measured slower
  (8.2 s -> 9.2 s at K = 9: the rows cost more to send than to compute).
- PostgreSQL: the work tables are now ANALYZEd as they are staged (TEMP tables get no statistics): the
  SQL steps at 1e6, K = 9 went from 5.2 s to 3.2 s. COPY from Python rows and the SQL still make it slower
  than DuckDB at 10 %.
- Rerun: `.venv/bin/python bench/fhir_ingest.py --sizes 100000 1000000 --noise 9 99
  --pg postgresql://postgres@127.0.0.1:5432/postgres --results bench/RESULTS.md`
"""


def _section(rows: list[dict], noises: list[int], splits: list[dict], repeat: int) -> str:
    lines = [
        "## FHIR ingest",
        "",
        f"`bench/fhir_ingest.py` on {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}. Input: a generated center2 Bulk NDJSON export "
        f"(`blina_study.adapter.synth`, noise K = {' and '.join(map(str, noises))}: K irrelevant records per "
        "study-relevant record, so 1/(K+1) of the resources are study-relevant). "
        f"Each figure is the best of several runs (parse: {repeat + 1}, ingest: {repeat}; peak RSS: the highest), "
        "every run in a "
        "fresh process. `parse` = read lines + `orjson.loads` only "
        "(the limit); ingest = `ingest_fhir` end to end (validation with fhir.resources R4B of the "
        "study-relevant resources, ViewDefinitions, staging, SQL resolution, OMOP rows, lineage; the CDM "
        "writes in one transaction) into a fresh database with the CDM and the study vocabulary already created. "
        "`reading processes`: 1 = all in one process (`workers=1`); 2 = the default on this 2-core machine for "
        "16 MB of NDJSON or more: forked worker processes parse, filter and validate NDJSON ranges and the main "
        "process merges them in input order (same outcome, tested).",
        "",
        "| noise K | resources | relevant (loaded) | engine | reading processes | seconds | resources/s "
        "| ratio to parse | peak RSS MB, main | peak RSS MB, largest worker |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        loaded = f"{r['loaded']:,} ({100 * r['loaded'] / r['resources']:.1f} %)" if "loaded" in r else ""
        workers = r.get("workers", "")
        worker_rss = f"{r['worker_rss_mb']:.0f}" if r.get("workers", 1) > 1 else ""
        lines.append(
            f"| {r['noise']} | {r['resources']:,} | {loaded} | {r['engine']} | {workers} | {r['seconds']:.2f} | "
            f"{r['resources'] / r['seconds']:,.0f} | {r.get('ratio', '')} | {r['peak_rss_mb']:.0f} | {worker_rss} |"
        )
    lines += ["", "Targets: ratio >= 0.5 into DuckDB; peak RSS < 400 MB at both sizes.", "",
              "Where the time goes (separate runs of the same code paths):", "",
              "| noise K | resources | parse + relevance filter, s | study-relevant "
              "| fhir.resources validation of them, s | per relevant resource, us |",
              "|---:|---:|---:|---:|---:|---:|"]
    for s in splits:
        lines.append(f"| {s['noise']} | {s['resources']:,} | {s['filter_seconds']:.2f} | {s['relevant']:,} | "
                     f"{s['validate_seconds']:.2f} | {1e6 * s['validate_seconds'] / max(1, s['relevant']):.0f} |")
    lines.append("")
    return "\n".join(lines)


def _write_results(path: Path, section: str, notes: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    block = section + ("\n" + notes.strip() + "\n" if notes.strip() else "")
    pattern = re.compile(r"## FHIR ingest\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _m: block.rstrip("\n") + "\n", text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


def _bench_one(args: argparse.Namespace, size: int, noise: int, rows: list[dict], splits: list[dict]) -> None:
    folder, n = make_export(args.work, size, noise)
    parse = _best_of(args.repeat + 1, lambda: _run_child("parse", folder, None))
    rows.append({"engine": "parse (orjson only)", "noise": noise, **parse})
    print(f"{n:,} resources: parse {parse['resources'] / parse['seconds']:,.0f}/s", flush=True)
    split = _run_child("split", folder, None)
    splits.append({"resources": n, "noise": noise, **split})
    print(f"  split: parse+filter {split['filter_seconds']:.2f} s, validation of {split['relevant']:,} "
          f"relevant {split['validate_seconds']:.2f} s", flush=True)
    targets = [("duckdb", "ingest:1"), ("duckdb", "ingest:auto")]
    if args.pg:
        targets.append(("postgresql", "ingest:auto"))
    for engine, mode in targets:
        def one(engine: str = engine, mode: str = mode) -> dict:
            if engine == "duckdb":
                url = str(args.work / f"bench_{size}_{noise}.duckdb")
                for p in Path(url).parent.glob(Path(url).name + "*"):
                    p.unlink()
            else:
                url = _fresh_pg(args.pg, f"blina_bench_{size}_{noise}")
            return _run_child(mode, folder, url)

        res = _best_of(args.repeat, one)
        res["ratio"] = f"{(parse['seconds'] / res['seconds']):.2f}"
        rows.append({"engine": engine, "noise": noise, **res})
        print(f"  {engine} ({res['workers']} reading processes): {res['resources'] / res['seconds']:,.0f}/s, "
              f"ratio {res['ratio']}, peak RSS {res['peak_rss_mb']:.0f} MB (workers {res['worker_rss_mb']:.0f}), "
              f"loaded {res['loaded']:,}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1], Path(argv[2]), argv[3] if len(argv) > 3 else None)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--noise", type=int, nargs="+", default=[9, 99],
                    help="irrelevant records per relevant record, one run per value (default 9 99)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/blina-bench-fhir"), help="where exports are written")
    ap.add_argument("--pg", default=None, metavar="URL", help="PostgreSQL server URL (a database is created)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per ingest measurement, best taken (the parse gets one more; default 2)")
    ap.add_argument("--results", type=Path, default=None, help="update this RESULTS.md")
    ap.add_argument("--notes", default=NOTES, help="text appended under the table (default: the reading notes)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(_ROOT))
    rows: list[dict] = []
    splits: list[dict] = []
    for noise in args.noise:
        for size in args.sizes:
            _bench_one(args, size, noise, rows, splits)
    section = _section(rows, args.noise, splits, args.repeat)
    print(section)
    if args.results:
        _write_results(args.results, section, args.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
