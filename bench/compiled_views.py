"""Benchmark: the mappings/fhir ViewDefinitions compiled to DuckDB SQL vs the Python runner (by hand).

    .venv/bin/python bench/compiled_views.py --size 100000 --noise 9 99 --repeat 3

On the same generated Bulk NDJSON export as bench/fhir_ingest.py (``--noise K``: K irrelevant records
per relevant one), in one process each, paired (the three measures alternate per repetition):

* ``parse``: the limit of bench/fhir_ingest.py: every line ``orjson.loads``-ed on one core;
* ``runner``: orjson + every view's ``ViewDefinition.rows`` on the resources of its type (one core);
* ``compiled``: every view's compiled query (``blina_study.adapter.fhir.compile_sql``) over
  ``read_ndjson_objects`` of the type's file, rows fetched as Arrow (DuckDB, all cores).

Only the flattening is measured: no validation, no study-code filter, no OMOP mapping; so this is
neither the ingest nor the issue's target ratio. Prints medians and the ratio to ``parse``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fhir_ingest import make_export  # noqa: E402


def _parse(folder: Path) -> float:
    import orjson

    t0 = time.perf_counter()
    for f in sorted(folder.glob("*.ndjson")):
        with open(f, "rb") as fh:
            for line in fh:
                orjson.loads(line)
    return time.perf_counter() - t0


def _runner(folder: Path, views: dict) -> tuple[float, int]:
    import orjson

    by_type = {v.resource: v for v in views.values()}
    t0 = time.perf_counter()
    n = 0
    for f in sorted(folder.glob("*.ndjson")):
        with open(f, "rb") as fh:
            for line in fh:
                res = orjson.loads(line)
                view = by_type.get(res.get("resourceType"))
                if view is not None:
                    n += len(view.rows(res))
    return time.perf_counter() - t0, n


def _compiled(folder: Path, views: dict) -> tuple[float, int]:
    import duckdb

    from blina_study.adapter.fhir.compile_sql import compile_view

    con = duckdb.connect()
    t0 = time.perf_counter()
    n = 0
    for view in views.values():
        path = folder / f"{view.resource}.ndjson"
        if not path.exists():
            continue
        sql = compile_view(view, f"read_ndjson_objects('{path}')").sql
        n += con.execute(sql).to_arrow_table().num_rows
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--noise", type=int, nargs="+", default=[9, 99])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/blina-bench-fhir"))
    args = ap.parse_args(argv)
    from blina_study.adapter.fhir.mapper import load_views

    views = load_views()
    print(f"load (uptime): {os.getloadavg()}")
    print("| resources | share relevant | parse s | runner s | compiled s | runner/parse | compiled/parse | rows |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for noise in args.noise:
        folder, total = make_export(args.work, args.size, noise)
        parse, runner, compiled = [], [], []
        rows = (0, 0)
        for _ in range(args.repeat):
            parse.append(_parse(folder))
            r_s, r_n = _runner(folder, views)
            c_s, c_n = _compiled(folder, views)
            runner.append(r_s)
            compiled.append(c_s)
            rows = (r_n, c_n)
        p, r, c = (statistics.median(x) for x in (parse, runner, compiled))
        same = "same" if rows[0] == rows[1] else f"DIFFER {rows}"
        # speed ratio = limit time / path time (higher is faster; 1.0 = as fast as the parse)
        print(
            f"| {total} | 1/{noise + 1} | {p:.2f} | {r:.2f} | {c:.2f} | {p / r:.2f} | {p / c:.2f} | {rows[0]} {same} |"
        )
    print(f"load (uptime) after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
