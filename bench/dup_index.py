"""Memory of the ingest's duplicate-id check (``blina_study.adapter.fhir.dupes.DuplicateIndex``) as the input grows
(not a test: run by hand).

    .venv/bin/python bench/dup_index.py --sizes 1000000 10000000 --results bench/RESULTS.md

For each size N, in a fresh process (so peak RSS is that of the step alone): N resources of 8 types with
uuid-like ids, 1 % of them a second copy (half identical, half different content), are added one by one
as the ingest adds them, then every duplicate group is streamed (``groups``). Reported: peak RSS, seconds,
the index's disk size at its largest, groups found (must be N/100), and, as the limit the index avoids,
the peak RSS of a Python dict holding the same N keys (the in-memory alternative), measured the same way.
``index-all``: every resource read twice (an export passed twice: N groups, the sort path of ``groups``).

The check's cost inside a real ingest (a generated export of ~N resources, 10 % study-relevant, one process,
DuckDB), with the index and with a no-op in its place (CPU seconds of the process, less moved by the load of
the shared machine than wall time):

    for k in ingest-nop ingest ingest-nop ingest; do .venv/bin/python bench/dup_index.py --child $k 200000; done
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

TYPES = ["Observation", "Condition", "Encounter", "Procedure", "MedicationRequest", "DocumentReference",
         "Immunization", "Practitioner"]


def _ids(n: int, every: int = 100):
    for i in range(n):
        yield TYPES[i % 8], f"{i:08x}-4a1b-4c2d-8e3f-{(i * 2654435761) % (1 << 48):012x}", hash(i)
        if i % every == 0:  # a second copy: identical for even hundreds, different content otherwise
            yield TYPES[i % 8], f"{i:08x}-4a1b-4c2d-8e3f-{(i * 2654435761) % (1 << 48):012x}", hash(
                i if i % 200 == 0 else -i - 1)


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child(kind: str, n: int) -> dict:
    t0 = time.perf_counter()
    if kind == "dict":
        seen: dict[str, int] = {}
        for rtype, rid, digest in _ids(n):
            seen[f"{rtype}/{rid}"] = digest
        groups, disk = -1, 0
    elif kind in ("ingest", "ingest-nop"):  # the check's cost in a real ingest: with it, and with a no-op index
        return _ingest_child(kind, n)
    elif kind == "sql":  # the index filled by SQL (fast), to measure groups() at sizes add() takes long to fill
        from blina_study.adapter.fhir.dupes import DuplicateIndex

        with DuplicateIndex() as index:
            index.con.execute(
                "INSERT INTO idx SELECT ['Observation','Condition','Encounter','Procedure'][1 + i % 4], "
                f"printf('%08x-4a1b-4c2d-8e3f-%012x', i % {n}, (i % {n}) * 7), "
                f"CAST(i % {n} * (CASE WHEN i >= {n} AND i % 2 = 1 THEN -1 ELSE 1 END) AS BIGINT), "
                f"false, 0, i, NULL, i, false FROM range({n + n // 100}) t(i)")
            disk = _disk(index.dir)
            groups = sum(1 for _ in index.groups())
            disk = max(disk, _disk(index.dir))
    else:
        from blina_study.adapter.fhir.dupes import DuplicateIndex

        with DuplicateIndex() as index:
            for j, (rtype, rid, digest) in enumerate(_ids(n, 1 if kind == "index-all" else 100)):
                index.add(rtype, rid, digest, False, 0, j + 1, None)
            index.flush()
            disk = _disk(index.dir)
            groups = sum(1 for _ in index.groups())
            disk = max(disk, _disk(index.dir))
    return {"kind": kind, "n": n, "seconds": round(time.perf_counter() - t0, 1), "groups": groups,
            "disk_mb": round(disk / 1e6),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _ingest_child(kind: str, n: int) -> dict:
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    import fhir_ingest as fb

    import blina_study.adapter.fhir.ingest as ing
    from blina_study.adapter.db import connect
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    class _Nop:
        n = 0

        def __init__(self, *a: object, **k: object) -> None: ...
        def add(self, *a: object) -> None: ...
        def groups(self):  # noqa: ANN202
            return iter(())
        def close(self) -> None: ...

    folder, _ = fb.make_export(Path(tempfile.gettempdir()) / "blina-bench-dup", n, 9)
    if kind == "ingest-nop":
        ing.DuplicateIndex = _Nop  # type: ignore[misc,assignment]
    with tempfile.TemporaryDirectory() as d:
        db = connect(str(Path(d) / "x.duckdb"), cdm_schema="cdm", vocab_schema="vocab")
        create_cdm(db)
        load_study_vocabulary(db)
        t0, c0 = time.perf_counter(), time.process_time()
        rep = ing.ingest_fhir(db, sorted(folder.glob("*.ndjson")), site_id="bench", workers=1)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        db.close()
    return {"kind": kind, "n": rep.read, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "groups": -1,
            "disk_mb": 0, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--sql-sizes", type=int, nargs="*", default=[],
                    help="sizes at which the index is filled by SQL (fast) and only groups() is measured")
    ap.add_argument("--no-dict", action="store_true", help="skip the in-memory dict baseline")
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    rows = []
    jobs = [(n, kind) for n in args.sizes
            for kind in (("index", "index-all") if args.no_dict else ("index", "index-all", "dict"))]
    jobs += [(n, "sql") for n in args.sql_sizes]
    for n, kind in jobs:
        if True:
            proc = subprocess.run([sys.executable, __file__, "--child", kind, str(n)], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{kind} {n} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = [
        "## Duplicate-id check (issue 15.2)",
        "",
        f"`bench/dup_index.py` on {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; each row a fresh process. N resources + N/100 second copies added to "
        "`DuplicateIndex` (DuckDB file in a temp folder, memory_limit 256MB, batches of 200k), then all "
        "duplicate groups streamed. `index-all`: every resource twice (2N added, N groups: the external-sort path). "
        "`dict`: the same keys in a Python dict (the in-memory alternative). `sql`: the index filled by one SQL "
        "statement (N + N/100 rows, 4 types), only `groups()` measured: the sizes `add()` takes too long to fill.",
        "",
        "| what | resources | seconds | peak RSS MB | index disk MB | groups found |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['n']:,} | {r['seconds']} | {r['peak_rss_mb']} | "
                     f"{r['disk_mb'] if r['kind'] != 'dict' else '-'} | "
                     f"{r['groups'] if r['kind'] != 'dict' else '-'} |")
    lines += ["", "Peak RSS includes the imported pandas and DuckDB (~200 MB); the index holds one batch of 200k "
              "rows in Python and DuckDB at most its memory_limit (256MB), spilling the rest to its temp folder."]
    section = "\n".join(lines) + "\n"
    if args.results:
        text = args.results.read_text() if args.results.exists() else "# Benchmark results\n"
        pat = re.compile(r"## Duplicate-id check \(issue 15\.2\)\n.*?(?=\n## |\Z)", re.S)
        text = pat.sub(section.rstrip("\n") + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
        args.results.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
