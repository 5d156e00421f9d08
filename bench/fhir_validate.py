"""Benchmark of the FHIR validation of study-relevant resources (not a test: run by hand).

    .venv/bin/python bench/fhir_validate.py --size 100000 --ingest-size 1000000 --results bench/RESULTS.md

On a generated center2-style Bulk export (``bench/fhir_ingest.py``'s generator, ``--noise 9``: about 10 %
study-relevant) it measures, in this one process and run:

* ``parse``: ``orjson.loads`` of every line on one core (the limit every ratio is taken against);
* per study-relevant resource: the generated compiled checks (``blina_study.adapter.fhir.validate``, the default,
  ``--validate fast``), fhir.resources R4B ``model_validate`` (``--validate full``), and, when msgspec is
  installed, ``msgspec.convert`` into Structs generated from the same spec (the alternative the module
  weighs; choice exclusivity and calendar days are not in it, so it does less than the compiled checks);
* with ``--ingest-size``: ``ingest_fhir`` into a fresh DuckDB file with ``validation="fast"`` and
  ``"full"`` (each in a fresh process, the best of ``--repeat``), as resources/s and x parse.

Ratios: a validation's cost per resource as a multiple of the parse cost of one resource (lower is
better), and ingest throughput as a fraction of the parse throughput (higher is better).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "bench"))

from fhir_ingest import _fresh_pg, _peak_rss_mb, make_export  # noqa: E402

_SECTION = "## FHIR validation"


def _load(folder: Path) -> tuple[list[bytes], float]:
    import orjson

    lines = []
    for f in sorted(folder.glob("*.ndjson")):
        lines += f.read_bytes().splitlines()
    t0 = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    return lines, time.perf_counter() - t0


def _msgspec_types(spec: dict[str, Any]) -> dict[str, Any] | None:
    """Struct types for each resource of ``spec`` (None: msgspec not installed)."""
    try:
        import msgspec
    except ImportError:
        return None
    from typing import Annotated, Literal, Optional

    prims = spec["primitives"]
    kinds = {"string": str, "boolean": bool, "integer": int, "number": float}

    def prim(el: dict[str, Any]) -> Any:
        if "binding" in el:
            return Literal[tuple(spec["bindings"][el["binding"]])]
        info = prims[el["type"]]
        base = kinds[info["json"]]
        if info["json"] == "string" and info["pattern"]:
            return Annotated[base, msgspec.Meta(pattern=info["pattern"])]
        return base

    def struct(name: str, level: dict[str, Any]) -> Any:
        fields = []
        for el in level["elements"]:
            tp = prim(el) if el["type"] in prims else (
                struct(f"{name}_{el['name']}", el["children"]) if el.get("children") else dict)
            if el["list"]:
                tp = list[tp]
            if el["required"]:
                fields.append((el["name"], tp))
            else:
                fields.append((el["name"], Optional[tp], None))  # noqa: UP045 - msgspec field spelling
        fields.sort(key=lambda f: len(f) == 3)  # required first
        return msgspec.defstruct(name, fields, forbid_unknown_fields=False)

    return {rtype: struct(rtype, lvl) for rtype, lvl in spec["resources"].items()}


def _per_resource(folder: Path, full_limit: int) -> dict[str, Any]:
    import orjson

    from blina_study.adapter.fhir.mapper import ResourceMapper, _model, load_config, load_views
    from blina_study.adapter.fhir.validate import load_validator

    lines, parse_s = _load(folder)
    views, config = load_views(), load_config()
    mapper = ResourceMapper(views, config)
    relevant = [r for r in map(orjson.loads, lines) if r["resourceType"] in mapper.relevant]
    validator = load_validator(views, config)
    out: dict[str, Any] = {"resources": len(lines), "relevant": len(relevant),
                           "parse_us": 1e6 * parse_s / len(lines)}
    t0 = time.perf_counter()
    bad = sum(validator.problem(r) is not None for r in relevant)
    out["fast_us"] = 1e6 * (time.perf_counter() - t0) / len(relevant)
    out["fast_rejected"] = bad
    sample = relevant[:full_limit]
    t0 = time.perf_counter()
    for r in sample:
        _model(r["resourceType"]).model_validate(r)
    out["full_us"] = 1e6 * (time.perf_counter() - t0) / len(sample)
    out["full_sample"] = len(sample)
    types = _msgspec_types(validator.spec)
    if types is not None:
        import msgspec

        t0 = time.perf_counter()
        errors = 0
        for r in relevant:
            try:
                msgspec.convert(r, types[r["resourceType"]])
            except msgspec.ValidationError:
                errors += 1
        out["msgspec_us"] = 1e6 * (time.perf_counter() - t0) / len(relevant)
        out["msgspec_rejected"] = errors
        out["msgspec_version"] = msgspec.__version__
    return out


def _ingest(folder: Path, validation: str, url: str | None) -> dict[str, Any]:
    from blina_study.adapter.db import connect
    from blina_study.adapter.fhir.ingest import ingest_fhir
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    if url is None:
        target = folder.parent / f"validate-{validation}.duckdb"
        target.unlink(missing_ok=True)
        url = str(target)
    db = connect(url, cdm_schema="cdm", vocab_schema="vocab")
    create_cdm(db)
    load_study_vocabulary(db)
    files = sorted(folder.glob("*.ndjson"))
    t0 = time.perf_counter()
    rep = ingest_fhir(db, files, site_id="bench", validation=validation)
    seconds = time.perf_counter() - t0
    db.close()
    assert rep.balanced()
    return {"resources": rep.read, "seconds": seconds, "loaded": rep.n_loaded, "rejected": rep.n_rejected,
            "peak_rss_mb": _peak_rss_mb()}


def _run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          cwd=_ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _section(per: dict[str, Any], ingests: list[dict[str, Any]], args: argparse.Namespace) -> str:
    p = per["parse_us"]
    lines = [
        _SECTION, "",
        f"Machine: {_machine()} (shared with other jobs: compare ratios, not absolute numbers). Rerun: "
        f"`.venv/bin/python bench/fhir_validate.py --size {args.size} --ingest-size {args.ingest_size} "
        f"--repeat {args.repeat} --results bench/RESULTS.md`.", "",
        f"Per resource of a mapped type ({per['relevant']} of the {per['resources']} resources of a generated "
        f"export, noise {args.noise}: about 1 in {args.noise + 1} carries a study code); one process, one core; "
        f"x parse = cost / the orjson parse of one resource ({p:.2f} us):", "",
        "| validation | us / resource | x parse | rejected |",
        "|---|---:|---:|---:|",
        f"| compiled checks (`--validate fast`, default) | {per['fast_us']:.2f} | {per['fast_us'] / p:.1f} | "
        f"{per['fast_rejected']} |",
        f"| fhir.resources R4B `model_validate` (`--validate full`; first {per['full_sample']}) | "
        f"{per['full_us']:.1f} | {per['full_us'] / p:.1f} | - |",
    ]
    if "msgspec_us" in per:
        lines.append(f"| msgspec {per['msgspec_version']} `convert` into Structs of the same spec (no choice or "
                     f"calendar checks) | {per['msgspec_us']:.2f} | {per['msgspec_us'] / p:.1f} | "
                     f"{per['msgspec_rejected']} |")
    if ingests:
        lines += ["", f"`ingest_fhir` end to end into a fresh {ingests[0]['engine']} database (each in a fresh "
                  f"process, best of {args.repeat}; reading workers: the default); x parse = ingest resources/s "
                  "/ one-core orjson parse resources/s of the same files:", "",
                  "| resources | validation | seconds | resources/s | x parse | loaded | rejected | peak RSS MB |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in ingests:
            rate = r["resources"] / r["seconds"]
            lines.append(f"| {r['resources']} | {r['validation']} | {r['seconds']:.1f} | {rate:,.0f} | "
                         f"{rate * r['parse_us'] / 1e6:.2f} | {r['loaded']} | {r['rejected']} | "
                         f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _write_results(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(_SECTION) + r"\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _m: section.rstrip("\n") + "\n", text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        mode, folder = argv[1], Path(argv[2])
        if mode == "per":
            out = _per_resource(folder, int(argv[3]))
        elif mode == "parse":
            lines, seconds = _load(folder)
            out = {"parse_us": 1e6 * seconds / max(1, len(lines))}
        else:
            out = _ingest(folder, mode, argv[3] if len(argv) > 3 else None)
        print(json.dumps(out))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=100_000, help="resources of the export for the per-resource timing")
    ap.add_argument("--ingest-size", type=int, default=0, help="resources of the export ingested (0: no ingest)")
    ap.add_argument("--noise", type=int, default=9, help="irrelevant records per study-relevant record")
    ap.add_argument("--full-limit", type=int, default=20_000, help="resources timed with fhir.resources")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--pg", default=None, metavar="URL", help="ingest into PostgreSQL (a database is created)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/blina-bench-fhir"))
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args(argv)
    folder, n = make_export(args.work, args.size, args.noise)
    per = _run_child(["per", str(folder), str(args.full_limit)])
    print(json.dumps(per), flush=True)
    ingests = []
    if args.ingest_size:
        big, _ = make_export(args.work, args.ingest_size, args.noise)
        parse_us = min(_run_child(["parse", str(big)])["parse_us"] for _ in range(args.repeat))
        for validation in ("fast", "full"):
            runs = []
            for i in range(args.repeat):
                url = _fresh_pg(args.pg, f"bench_validate_{validation}_{i}") if args.pg else None
                runs.append(_run_child([validation, str(big)] + ([url] if url else [])))
            best = min(runs, key=lambda r: r["seconds"])
            best.update(validation=validation, parse_us=parse_us, engine="PostgreSQL" if args.pg else "DuckDB",
                        peak_rss_mb=max(r["peak_rss_mb"] for r in runs))
            print(json.dumps(best), flush=True)
            ingests.append(best)
    section = _section(per, ingests, args)
    print(section)
    if args.results:
        _write_results(args.results, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
