"""Benchmark of ``blina ingest`` on a generated Bulk Data export, paired with two limits (not a test: run by hand).

    .venv/bin/python bench/fhir_ingest.py --sizes 1000000 --noise 9 99 --repeat 3 --work /work/bench \\
        --pg postgresql://postgres@127.0.0.1:5432/postgres --results bench/RESULTS.md
    .venv/bin/python bench/fhir_ingest.py --sizes 10000000 --noise 9 --engines duckdb --repeat 1 \\
        --work /work/bench --results bench/RESULTS.md --section "FHIR ingest at 1e7 resources"

For each size and share it writes (once; reused from ``--work``) a center2-style Bulk NDJSON export with the
generator (``blina_study.adapter.synth``: ``--noise K`` irrelevant records per study-relevant record, so
K = 9 gives <= 10 % relevant, K = 99 <= 1 %; above 1e6 resources the export is written as several cohorts
of ~1e6 resources, one after the other, so the generator never holds more than one of them). Then, for each
of ``--repeat`` repetitions, it runs these steps back to back, each in a fresh process (peak RSS = that
process's VmHWM), the order reversed every other repetition:

* ``parse`` (limit): read every line of every file and ``orjson.loads`` it, on one core, nothing else;
* ``DuckDB scan`` (limit): DuckDB (in memory, default threads) reads every NDJSON file of the export with
  ``read_ndjson`` and typed columns (``columns=``: no JSON values in the result), one query per resource type:
  Observation files: the Observations whose ``code.coding`` has a study code (or no coding: the ingest keeps
  those) flattened to the 19 columns of the Observation view (mappings/fhir/observation.json: the same
  names, types, the two ``forEachOrNull`` unnested; its rows equal the compiled view's, checked by
  ``--check-scan``), aggregated as count and ``bit_xor(hash(all columns))`` so every value is computed;
  the other code-filtered types (Condition, MedicationAdministration, Procedure: the views' study-filter
  coding) typed as ``resourceType``, ``id`` and that coding, the study-relevant ones counted; every other
  file typed as ``resourceType``, ``id``, counted. The study codes are those the ingest resolves
  (``_study_mapper``: code sets with descendants and 'Maps to' sources), built before the clock starts.
  Not measured here: the other views' flattening, follow-up dates, duplicate ids, validation, OMOP SQL.
  (The compiled SQL of every view, ``compile_sql.compile_view`` over ``read_ndjson_objects`` with the same
  study-code filter, took 1.6 s against a 0.15 s parse at 1e5 resources, 10 % relevant: not a limit.)
* ``ingest``: ``ingest_fhir`` end to end for each engine (``--engines``: duckdb, postgresql with ``--pg``)
  into a fresh database that already holds the CDM tables and the study vocabulary (their creation is not
  timed). ``--readers`` is for an ``ingest_fhir`` that takes ``reader=`` (none does today: a DuckDB line
  classifier was measured and not adopted, bench/duckdb_line_scan.py); with two readers the outcome
  (resources read, loaded, skipped, rejected, CDM rows) must be the same: a difference is printed as an
  ERROR and marked in the table.

It reports per step the median seconds, resources/s, and two ratios to the limits of the same repetition:
``x parse`` = parse seconds / step seconds and ``x DuckDB scan`` = scan seconds / step seconds (median over
the repetitions; higher is faster, 1.0 = as fast as the limit), and the highest peak RSS over repetitions.
With ``--results`` it replaces the ``## <--section>`` section of that file (default "FHIR ingest").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_CHUNK_RESOURCES = 1_000_000  # resources per generated cohort (the generator holds one cohort in memory)
ENGINES = ("duckdb", "postgresql")
READERS = ("python", "duckdb")


# ------------------------------------------------------------------------------------ generation
def _render(out: Path, cohorts: list[tuple[int, int]], noise: int) -> dict[str, int]:
    """Write the center2 (Bulk NDJSON) part of generated cohorts, given as (patients, seed), one after the
    other into the same files (streamed: one patient's resources at a time); return resources per type.

    Resource ids are random UUIDs (distinct between cohorts); the MRNs of cohort k > 0 get the suffix ``-k``."""
    from blina_study.adapter.synth import build_cohort
    from blina_study.adapter.synth.catalog import Catalog
    from blina_study.adapter.synth.render_fhir import patient_resources

    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, object] = {}
    counts: dict[str, int] = {}
    try:
        for k, (patients, seed) in enumerate(cohorts):
            res = build_cohort(seed=seed, patients=patients, noise=noise)
            cat = Catalog(res.study)
            r = random.Random(f"{seed}:bench:render")
            for tl in res.timelines:
                if tl.site_id != "center2":
                    continue
                if k:
                    tl.mrn = f"{tl.mrn}-{k}"
                for rec in patient_resources(tl, cat, r, lambda t, i: f"{t}/{i}", with_time=True):
                    rtype = rec["resourceType"]
                    fh = handles.get(rtype)
                    if fh is None:
                        fh = handles[rtype] = open(out / f"{rtype}.ndjson", "w", encoding="utf-8")  # noqa: SIM115
                    fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                    counts[rtype] = counts.get(rtype, 0) + 1
            del res
    finally:
        for fh in handles.values():
            fh.close()
    patients = sum(p for p, _ in cohorts)
    (out / "counts.json").write_text(json.dumps({"patients": patients, "noise": noise, "counts": counts,
                                                 "cohorts": len(cohorts)}))
    return counts


def make_export(root: Path, target: int, noise: int, seed: int = 7) -> tuple[Path, int]:
    """An export of about ``target`` resources (reused when already generated: ``counts.json`` is written last).

    Up to 1e6 resources one cohort (seed ``seed``); above, ceil(target / 1e6) cohorts of equal size with seeds
    ``seed``, ``seed + 1``, ... (peak memory of the generation: that of one 1e6 cohort, ~1 GB)."""
    folder = root / f"export_{target}_noise{noise}"
    meta = folder / "counts.json"
    if meta.exists():
        return folder, sum(json.loads(meta.read_text())["counts"].values())
    trial = _render(root / "trial", [(60, seed)], noise)
    center2_share = 25 / 105  # the generator's center weights
    per_patient = sum(trial.values()) / max(1, round(60 * center2_share))
    patients = max(20, round(target / per_patient / center2_share))
    n_cohorts = max(1, math.ceil(target / _CHUNK_RESOURCES))
    size, extra = divmod(patients, n_cohorts)
    cohorts = [(size + (1 if k < extra else 0), seed + k) for k in range(n_cohorts)]
    counts = _render(folder, cohorts, noise)
    return folder, sum(counts.values())


def _ndjson_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz")))


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
    for f in _ndjson_files(folder):
        with open(f, "rb") as fh:
            for line in fh:
                orjson.loads(line)
                n += 1
    return {"resources": n, "seconds": time.perf_counter() - t0}


def _bench_mapper():  # noqa: ANN202 (ResourceMapper, views)
    """The ingest's study mapper (study codes resolved through the study vocabulary), without an ingest."""
    from blina_study.adapter.db import connect
    from blina_study.adapter.fhir.ingest import _study_mapper
    from blina_study.adapter.fhir.ingest_sql import SqlContext, StageDb
    from blina_study.adapter.fhir.mapper import load_config, load_views
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
    return mapper, views


def _measure_split(folder: Path) -> dict:
    """Where the time goes: parse + the relevance filter alone, and fhir.resources validation of the
    study-relevant resources alone (holds them all: not for 1e7)."""
    import orjson

    from blina_study.adapter.fhir.mapper import _model

    mapper, _ = _bench_mapper()
    t0 = time.perf_counter()
    relevant = []
    n = 0
    for f in _ndjson_files(folder):
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


# --- the DuckDB typed scan (see the module doc)
_CODING = 'STRUCT("system" VARCHAR, code VARCHAR)'
_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_OBS_COLUMNS = {  # the elements the Observation view reads, typed as the view declares them
    "resourceType": "VARCHAR", "id": "VARCHAR", "subject": "STRUCT(reference VARCHAR)",
    "encounter": "STRUCT(reference VARCHAR)", "effectiveDateTime": "VARCHAR", "effectiveInstant": "VARCHAR",
    "effectivePeriod": 'STRUCT("start" VARCHAR)', "category": f"STRUCT(coding {_CODING}[])[]",
    "valueQuantity": 'STRUCT("value" DOUBLE, comparator VARCHAR, unit VARCHAR, "system" VARCHAR, code VARCHAR)',
    "valueInteger": "BIGINT", "valueString": "VARCHAR", "valueBoolean": "BOOLEAN",
    "valueCodeableConcept": f"STRUCT(coding {_CODING}[])", "code": f"STRUCT(coding {_CODING}[])",
}
_OBS_FLAT = {  # view column -> typed expression (in the view's column order)
    "id": "id", "subject_ref": "subject.reference", "encounter_ref": "encounter.reference",
    "effective_datetime": "effectiveDateTime", "effective_instant": "effectiveInstant",
    "effective_period_start": "effectivePeriod.start",
    "category_code": f"list_filter(flatten(list_transform(category, lambda c: c.coding)), "
                     f"lambda x: x.system = '{_OBS_CATEGORY}')[1].code",
    "value_number": "valueQuantity.value", "value_integer": "valueInteger",
    "value_comparator": "valueQuantity.comparator", "value_unit": "valueQuantity.unit",
    "value_unit_system": "valueQuantity.system", "value_unit_code": "valueQuantity.code",
    "value_string": "valueString", "value_boolean": "valueBoolean",
    "code_system": "cc.system", "code_code": "cc.code", "value_system": "vc.system", "value_code": "vc.code",
}


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns_arg(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in columns.items()) + "}"


def _scan_queries(folder: Path, mapper, views: dict) -> list[tuple[str, str]]:  # noqa: ANN001
    """(resource type, SQL returning (rows, hash)) per resource type of the export (see the module doc)."""
    codes = sorted(f"{s if s is not None else chr(0)}|{c}" for s, c in mapper.study_codes)
    code_list = "[" + ", ".join(_sql_str(c) for c in codes) + "]::VARCHAR[]"
    anys = "[" + ", ".join(_sql_str(c) for c in sorted(mapper.any_system_codes)) + "]::VARCHAR[]"

    def study(codings: str) -> str:  # ResourceMapper.is_study on a typed coding list
        pairs = f"list_transform({codings}, lambda c: coalesce(c.system, chr(0)) || '|' || coalesce(c.code, chr(0)))"
        return (f"(coalesce(len({codings}), 0) = 0 OR list_has_any({pairs}, {code_list}) "
                f"OR list_has_any(list_transform({codings}, lambda c: c.code), {anys}))")

    obs_view = next((v for v in views.values() if v.resource == "Observation"), None)
    if obs_view is not None and list(obs_view.column_names) != list(_OBS_FLAT):
        raise SystemExit(f"the Observation view's columns changed: {list(obs_view.column_names)}; "
                         "update _OBS_FLAT in bench/fhir_ingest.py")
    by_type: dict[str, list[str]] = {}
    for p in _ndjson_files(folder):
        by_type.setdefault(p.name.split(".")[0], []).append(str(p))
    queries = []
    for rtype, paths in sorted(by_type.items()):
        files = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
        keys = mapper._filter_keys.get(rtype)
        if rtype == "Observation":
            unnest = "unnest(CASE WHEN coalesce(len({0}), 0) = 0 THEN [NULL::{1}] ELSE {0} END)"
            cols = ", ".join(f"{expr}" for expr in _OBS_FLAT.values())
            sql = (f"WITH obs AS (SELECT * FROM read_ndjson({files}, columns = {_columns_arg(_OBS_COLUMNS)}) "
                   f"WHERE resourceType = 'Observation' AND {study('code.coding')}), "
                   f"c1 AS (SELECT *, {unnest.format('code.coding', _CODING)} AS cc FROM obs), "
                   f"c2 AS (SELECT *, {unnest.format('valueCodeableConcept.coding', _CODING)} AS vc FROM c1) "
                   f"SELECT count(*), bit_xor(hash({cols})) FROM c2")
        elif keys is not None and len(keys) == 2:
            columns = {"resourceType": "VARCHAR", "id": "VARCHAR", keys[0]: f"STRUCT({keys[1]} {_CODING}[])"}
            sql = (f"SELECT count(*) FILTER (WHERE {study(f'{keys[0]}.{keys[1]}')}), bit_xor(hash(id)) "
                   f"FROM read_ndjson({files}, columns = {_columns_arg(columns)})")
        else:
            columns = {"resourceType": "VARCHAR", "id": "VARCHAR"}
            sql = (f"SELECT count(*), bit_xor(hash(resourceType, id)) "
                   f"FROM read_ndjson({files}, columns = {_columns_arg(columns)})")
        queries.append((rtype, sql))
    return queries


def _check_scan(con, folder: Path, mapper, views: dict, got: tuple[int, int]) -> str:  # noqa: ANN001
    """The compiled Observation view over the same study-filtered Observations: same rows and hash?"""
    from blina_study.adapter.fhir.compile_sql import compile_view

    view = next(v for v in views.values() if v.resource == "Observation")
    files = [str(p) for p in _ndjson_files(folder) if p.name.split(".")[0] == "Observation"]
    keys = mapper._filter_keys["Observation"]
    codings = f"try_cast(json->'$.{keys[0]}.{keys[1]}' AS JSON[])"
    codes = sorted(f"{s if s is not None else chr(0)}|{c}" for s, c in mapper.study_codes)
    pairs = (f"list_transform({codings}, lambda c: coalesce(c->>'$.system', chr(0)) || '|' || "
             f"coalesce(c->>'$.code', chr(0)))")
    anys = [_sql_str(c) for c in sorted(mapper.any_system_codes)]
    keep = (f"coalesce(len({codings}), 0) = 0 OR list_has_any({pairs}, [{', '.join(map(_sql_str, codes))}]) "
            f"OR list_has_any(list_transform({codings}, lambda c: c->>'$.code'), [{', '.join(anys)}]::VARCHAR[])")
    src = f"(SELECT json FROM read_ndjson_objects([{', '.join(map(_sql_str, files))}]) WHERE {keep}) AS s"
    compiled = compile_view(view, src)
    cols = ", ".join(f'"{c}"' for c in compiled.columns)
    want = con.execute(f"SELECT count(*), bit_xor(hash({cols})) FROM ({compiled.sql}) AS v").fetchone()
    return "same" if tuple(want) == tuple(got) else f"DIFFER: typed {got}, compiled view {tuple(want)}"


def _measure_scan(folder: Path, check: bool) -> dict:
    import duckdb

    mapper, views = _bench_mapper()
    queries = _scan_queries(folder, mapper, views)
    con = duckdb.connect()  # in memory, default threads
    t0 = time.perf_counter()
    found = {rtype: con.execute(sql).fetchone() for rtype, sql in queries}
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "rows": sum(int(n) for n, _ in found.values()),
           "rows_by_type": {t: int(n) for t, (n, _) in found.items()},
           "threads": int(con.execute("SELECT current_setting('threads')").fetchone()[0]),
           "peak_rss_mb": _peak_rss_mb()}  # before the check
    if check and "Observation" in found:
        out["check"] = _check_scan(con, folder, mapper, views, found["Observation"])
    return out


def _measure_ingest(folder: Path, url: str, workers: int | None, reader: str | None) -> dict:
    from blina_study.adapter.db import connect
    from blina_study.adapter.fhir.ingest import _reading_workers, ingest_fhir
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    db = connect(url, cdm_schema="cdm", vocab_schema="vocab")
    create_cdm(db)
    load_study_vocabulary(db)
    files = _ndjson_files(folder)
    kwargs = {} if reader is None else {"reader": reader}  # None: an ingest_fhir without the argument
    t0 = time.perf_counter()
    rep = ingest_fhir(db, files, site_id="bench", workers=workers, **kwargs)
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
    elif mode in ("scan", "scan:check"):
        out = _measure_scan(folder, mode == "scan:check")
    elif mode == "split":
        out = _measure_split(folder)
    else:  # ingest:<workers: auto or a number>:<reader, or - for an ingest_fhir without the argument>
        _, workers, reader = mode.split(":")
        out = _measure_ingest(folder, url or "", None if workers == "auto" else int(workers),
                              None if reader == "-" else reader)
    out.setdefault("peak_rss_mb", _peak_rss_mb())
    return out


def _run_child(mode: str, folder: Path, url: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(folder)] + ([url] if url else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fresh_pg(base_url: str, name: str) -> str:
    import psycopg

    conninfo = re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", base_url)
    with psycopg.connect(conninfo, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return conninfo.rsplit("/", 1)[0] + "/" + name


def _drop_pg(base_url: str, name: str) -> None:
    import psycopg

    conninfo = re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", base_url)
    with psycopg.connect(conninfo, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _remove_duckdb(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):  # the database, its WAL, its temporary folder
        if p.is_dir():
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()


# ------------------------------------------------------------------------------------ the paired runs
def _reader_supported() -> bool:
    """Whether this checkout's ``ingest_fhir`` takes ``reader=``."""
    import inspect

    from blina_study.adapter.fhir.ingest import ingest_fhir

    return "reader" in inspect.signature(ingest_fhir).parameters


def _outcome(r: dict) -> tuple:
    return (r["resources"], r["loaded"], r["skipped"], r["rejected"], r["rows"])


def _bench_export(args: argparse.Namespace, size: int, noise: int, with_reader: bool) -> dict:
    folder, n = make_export(args.work, size, noise)
    print(f"export {folder}: {n:,} resources", flush=True)
    variants = [(e, r) for e in args.engines for r in args.readers]
    steps: list[tuple[str, ...]] = [("parse",), ("scan",), *variants]
    runs: dict[tuple[str, ...], list[dict]] = {s: [] for s in steps}
    errors: list[str] = []
    differ: set[str] = set()  # engines whose outcome depends on the reader
    for rep in range(args.repeat):
        for step in (steps if rep % 2 == 0 else steps[::-1]):
            if step == ("parse",):
                res = _run_child("parse", folder, None)
                res["label"] = f"{n / res['seconds']:,.0f}/s"
            elif step == ("scan",):
                res = _run_child("scan:check" if args.check_scan and rep == 0 else "scan", folder, None)
                res["label"] = f"{n / res['seconds']:,.0f}/s, {res['rows']:,} rows, {res['threads']} threads" + (
                    f", check: {res['check']}" if "check" in res else "")
                if "DIFFER" in res.get("check", ""):
                    errors.append(f"DuckDB scan: {res['check']}")
            else:
                engine, reader = step
                mode = f"ingest:{args.workers}:{reader if with_reader else '-'}"
                if engine == "duckdb":
                    db_path = args.work / f"bench_{size}_{noise}.duckdb"
                    _remove_duckdb(db_path)
                    res = _run_child(mode, folder, str(db_path))
                    _remove_duckdb(db_path)
                else:
                    name = f"blina_bench_{size}_{noise}"
                    res = _run_child(mode, folder, _fresh_pg(args.pg, name))
                    _drop_pg(args.pg, name)
                res["label"] = (f"{n / res['seconds']:,.0f}/s, loaded {res['loaded']:,}, skipped {res['skipped']:,}, "
                                f"rejected {res['rejected']:,}, rows {res['rows']:,}")
            runs[step].append(res)
            print(f"  rep {rep + 1} {'/'.join(step)}: {res['seconds']:.2f} s ({res['label']}), "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
        for engine in args.engines:  # the outcome must not depend on the reader
            outcomes = {r: _outcome(runs[(engine, r)][rep]) for r in args.readers}
            if len(set(outcomes.values())) > 1:
                differ.add(engine)
                errors.append(f"{engine}, repetition {rep + 1}: outcome (read, loaded, skipped, rejected, rows) "
                              f"differs between readers: {outcomes}")
    for msg in errors:
        print(f"\n!!!!!!!! ERROR: {msg} !!!!!!!!\n", file=sys.stderr, flush=True)
    split = None
    if args.split:
        split = _run_child("split", folder, None)
        print(f"  split: parse+filter {split['filter_seconds']:.2f} s, validation of {split['relevant']:,} "
              f"relevant {split['validate_seconds']:.2f} s", flush=True)
    return {"size": size, "noise": noise, "resources": n, "runs": runs, "errors": errors, "differ": differ,
            "split": split}


def _summary(export: dict, step: tuple[str, ...]) -> dict:
    runs = export["runs"][step]
    parse = [r["seconds"] for r in export["runs"][("parse",)]]
    scan = [r["seconds"] for r in export["runs"][("scan",)]]
    secs = [r["seconds"] for r in runs]
    out = {"seconds": statistics.median(secs), "all": secs,
           "x_parse": statistics.median(p / s for p, s in zip(parse, secs, strict=True)),
           "x_scan": statistics.median(c / s for c, s in zip(scan, secs, strict=True)),
           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    if "workers" in runs[0]:
        out["worker_rss_mb"] = max(r["worker_rss_mb"] for r in runs)
    return out


# ------------------------------------------------------------------------------------ report
def _machine() -> str:
    model = ""
    mem = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
        mem = next((f"{int(ln.split()[1]) / 1024 ** 2:.0f} GB RAM" for ln in
                    Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:")), "")
    except OSError:
        pass
    return ", ".join(x for x in (model or platform.processor() or platform.machine(), f"{os.cpu_count()} cores",
                                 mem) if x)


def _code_version() -> str:
    def git(*a: str) -> str:
        proc = subprocess.run(["git", "-C", str(_ROOT), *a], capture_output=True, text=True, check=False)
        return proc.stdout

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [ln[3:] for ln in git("status", "--porcelain", "--", "adapter", "mappings").splitlines() if ln]
    return f"`{head}`" + (f" with uncommitted changes to {', '.join(f'`{c}`' for c in changed)}" if changed else "")


def _versions(pg: str | None) -> str:
    import duckdb

    parts = [f"{platform.python_implementation()} {platform.python_version()}", f"DuckDB {duckdb.__version__}"]
    if pg:
        import psycopg

        conninfo = re.sub(r"^postgresql(\+psycopg)?://", "postgresql://", pg)
        with psycopg.connect(conninfo) as con:
            parts.append(f"PostgreSQL {con.execute('SHOW server_version').fetchone()[0]}")
    return ", ".join(parts)


def _section(args: argparse.Namespace, exports: list[dict], meta: dict) -> str:
    reps = args.repeat
    lines = [
        f"## {args.section}",
        "",
        f"`bench/fhir_ingest.py`, {meta['date']}, code {meta['code']}. Machine: {meta['machine']}; load average "
        f"(1, 5, 15 min) {meta['load_start']} at the start, {meta['load_end']} at the end. {meta['versions']}.",
        "",
        f"Rerun: `{meta['command']}`",
        "",
        "Input: a generated center2 Bulk NDJSON export (`blina_study.adapter.synth`, noise K = "
        f"{' and '.join(map(str, args.noise))}: K irrelevant records per study-relevant record, so 1/(K+1) of the "
        "resources are study-relevant; above 1e6 resources several cohorts of ~1e6 written one after the other).",
        "",
        f"Paired runs: each of {reps} repetition{'s' if reps > 1 else ''} runs every step below back to back, each in "
        "a fresh process, the order reversed every other repetition. `seconds` = the median over the repetitions "
        "(all of them in brackets); `x parse` = the median over repetitions of (that repetition's parse seconds / "
        "the step's seconds), `x DuckDB scan` likewise with the scan (higher is faster; 1.0 = as fast as the limit); "
        "peak RSS = the highest VmHWM over the repetitions (largest worker: forked reading processes, their RSS "
        "includes pages shared with the main process).",
        "",
        "- `parse` (limit): read every line of every file and `orjson.loads` it, one core, nothing else.",
        "- `DuckDB scan` (limit): DuckDB in memory with its default threads reads every file with `read_ndjson` "
        "and typed columns: the Observations with a study code (or no coding) flattened to the 19 typed columns of "
        "the Observation view (both `forEachOrNull` unnested; count and a hash of every value), the study-relevant "
        "Conditions, MedicationAdministrations and Procedures counted on their typed study-filter coding, the other "
        "types counted by `resourceType` and `id`. Study codes as the ingest resolves them. Not in it: the other "
        "views' columns, follow-up dates, duplicate ids, validation, OMOP SQL.",
        "- ingest: `ingest_fhir` end to end (validation of the study-relevant resources, ViewDefinitions, staging, "
        "SQL resolution, OMOP rows, lineage) into a fresh database holding the CDM and the study vocabulary "
        "(not timed). Reader `python`: every line parsed in Python (forked reading processes for large files, "
        "their number in brackets).",
        "",
        "| noise K | resources | step | engine | reader | seconds | resources/s | x parse | x DuckDB scan "
        "| peak RSS MB | largest worker MB | loaded / skipped / rejected |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ex in exports:
        n, k = ex["resources"], ex["noise"]
        for step in ex["runs"]:
            s = _summary(ex, step)
            secs = f"{s['seconds']:.2f} ({', '.join(f'{x:.2f}' for x in s['all'])})" if reps > 1 else \
                f"{s['seconds']:.2f}"
            x_parse = "" if step == ("parse",) else f"{s['x_parse']:.2f}"
            x_scan = "" if step == ("scan",) else f"{s['x_scan']:.2f}"
            if step == ("parse",):
                name, engine, reader, worker, outcome = "limit: orjson parse, 1 core", "", "", "", ""
            elif step == ("scan",):
                threads = ex["runs"][step][0]["threads"]
                name, engine, reader, worker, outcome = f"limit: DuckDB scan, {threads} threads", "duckdb", "", "", ""
            else:
                engine, reader = step
                last = ex["runs"][step][-1]
                name = "ingest"
                if reader == "python" or not args.with_reader:
                    reader = f"{reader} ({last['workers']})"
                worker = f"{s['worker_rss_mb']:.0f}" if last.get("workers", 1) > 1 and reader.startswith("python") \
                    else ""
                outs = {_outcome(r) for r in ex["runs"][step]}
                outcome = f"{last['loaded']:,} / {last['skipped']:,} / {last['rejected']:,}"
                if len(outs) > 1 or engine in ex["differ"]:
                    outcome += " **DIFFER (see the run's output)**"
            lines.append(f"| {k} | {n:,} | {name} | {engine} | {reader} | {secs} | {n / s['seconds']:,.0f} | "
                         f"{x_parse} | {x_scan} | {s['peak_rss_mb']:.0f} | {worker} | {outcome} |")
    errors = [e for ex in exports for e in ex["errors"]]
    if errors:
        lines += ["", *(f"**ERROR: {e}**" for e in errors)]
    lines += ["", "Targets (issue 14), at 1e6 resources, medians of paired runs: ingest into DuckDB >= 0.8x the "
              "one-core parse at 10 % study-relevant (K = 9) and >= 1.0x at 1 % (K = 99); PostgreSQL >= 0.5x. "
              "Peak RSS < 400 MB at 1e6 and 1e7 resources.", ""]
    if not args.with_reader:
        lines += ["The ingest has one NDJSON reader (`python`); a DuckDB line classifier was measured and not "
                  "adopted (bench/duckdb_line_scan.py, section below).", ""]
    splits = [ex for ex in exports if ex["split"]]
    if splits:
        lines += ["Where the time goes (separate runs, `--split`):", "",
                  "| noise K | resources | parse + relevance filter, s | study-relevant "
                  "| fhir.resources validation of them, s | per relevant resource, us |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for ex in splits:
            s = ex["split"]
            lines.append(f"| {ex['noise']} | {ex['resources']:,} | {s['filter_seconds']:.2f} | {s['relevant']:,} | "
                         f"{s['validate_seconds']:.2f} | {1e6 * s['validate_seconds'] / max(1, s['relevant']):.0f} |")
        lines.append("")
    return "\n".join(lines)


def _write_results(path: Path, section: str, notes: str, title: str = "FHIR ingest") -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    block = section + ("\n" + notes.strip() + "\n" if notes.strip() else "")
    pattern = re.compile(rf"## {re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _m: block.rstrip("\n") + "\n", text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(_ROOT))  # blina_study from this checkout, in the measuring children too
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1], Path(argv[2]), argv[3] if len(argv) > 3 else None)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000],
                    help="resources per export (about); 1e7 is written as ten cohorts of 1e6 (default 1000000)")
    ap.add_argument("--noise", type=int, nargs="+", default=[9, 99],
                    help="irrelevant records per relevant record, one export per value (default 9 99)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/blina-bench-fhir"),
                    help="where exports (reused) and the DuckDB databases are written")
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=None,
                    help="ingest targets (default: duckdb, and postgresql when --pg is given)")
    ap.add_argument("--readers", nargs="+", choices=READERS, default=None,
                    help="NDJSON readers of ingest_fhir (default: both when ingest_fhir takes reader=, else python)")
    ap.add_argument("--pg", default=None, metavar="URL", help="PostgreSQL server URL (a database is created)")
    ap.add_argument("--workers", default="auto", help="ingest_fhir(workers=): auto (default) or a number")
    ap.add_argument("--repeat", type=int, default=3, help="paired repetitions, medians reported (default 3)")
    ap.add_argument("--check-scan", action="store_true",
                    help="in the first repetition, check the scan's Observation rows against the compiled view's "
                         "(untimed, but slow: ~10x the scan)")
    ap.add_argument("--split", action="store_true",
                    help="also measure parse+filter and fhir.resources validation apart (holds the relevant "
                         "resources: not for 1e7)")
    ap.add_argument("--results", type=Path, default=None, help="update this RESULTS.md")
    ap.add_argument("--section", default="FHIR ingest", help="its section title (default 'FHIR ingest')")
    ap.add_argument("--notes", default="", help="text under the table(s), or @file to read it from a file")
    args = ap.parse_args(argv)
    if args.workers != "auto" and not args.workers.isdigit():
        ap.error("--workers: auto or a number")
    if args.engines is None:
        args.engines = ["duckdb"] + (["postgresql"] if args.pg else [])
    if "postgresql" in args.engines and not args.pg:
        ap.error("--engines postgresql needs --pg URL")
    args.with_reader = _reader_supported()
    if args.readers is None:
        args.readers = list(READERS) if args.with_reader else ["python"]
    elif not args.with_reader and args.readers != ["python"]:
        ap.error("this checkout's ingest_fhir has no reader= argument: only --readers python")
    notes = Path(args.notes[1:]).read_text(encoding="utf-8") if args.notes.startswith("@") else args.notes
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(), "code": _code_version(),
            "versions": _versions(args.pg), "load_start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "command": ".venv/bin/python bench/fhir_ingest.py " + shlex.join(argv)}
    print(f"load average at the start: {meta['load_start']}", flush=True)
    exports = [_bench_export(args, size, noise, args.with_reader) for noise in args.noise for size in args.sizes]
    meta["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    section = _section(args, exports, meta)
    print(section)
    if args.results:
        _write_results(args.results, section, notes, args.section)
    errors = [e for ex in exports for e in ex["errors"]]
    for msg in errors:
        print(f"!!!!!!!! ERROR: {msg}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
