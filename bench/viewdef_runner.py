"""Benchmark of the SQL-on-FHIR ViewDefinition runner alone (not a test: run by hand).

    .venv/bin/python bench/viewdef_runner.py [N] [RELEVANT_SHARE]

``eval_*``: one Observation view over N pre-parsed resources. ``stream_*``: orjson-parse N NDJSON
lines (RELEVANT_SHARE of them Observations, the rest Encounters) with and without running the view;
``stream_ratio`` is the end-to-end throughput as a fraction of the parse-only throughput (same run).
The end-to-end ingest benchmark is ``bench/fhir_ingest.py``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from blina_study.adapter.fhir.viewdef import ViewDefinition, run_view

_BENCH_VIEW: dict[str, Any] = {
    "resourceType": "ViewDefinition",
    "resource": "Observation",
    "name": "obs_bench",
    "select": [
        {
            "column": [
                {"name": "id", "path": "getResourceKey()", "type": "string"},
                {"name": "person", "path": "subject.getReferenceKey(Patient)", "type": "string"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).unit", "type": "string"},
                {"name": "comparator", "path": "value.ofType(Quantity).comparator", "type": "code"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
            ]
        },
        {
            "forEach": "code.coding",
            "column": [
                {"name": "system", "path": "system", "type": "uri"},
                {"name": "code", "path": "code", "type": "code"},
            ],
        },
    ],
    "where": [{"path": "status != 'entered-in-error'"}],
}


def _synthetic_observation(i: int) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{i}",
        "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "26881-3", "display": "Interleukin 6"}],
            "text": "IL-6",
        },
        "subject": {"reference": f"Patient/pt-{i % 997}"},
        "effectiveDateTime": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}T08:30:00+01:00",
        "valueQuantity": {
            "value": round(1.5 + (i % 400) * 0.25, 2),
            "unit": "pg/mL",
            "system": "http://unitsofmeasure.org",
            "code": "pg/mL",
        },
    }
    if i % 10 == 0:
        obs["valueQuantity"]["comparator"] = "<"
    return obs


def _synthetic_encounter(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"enc-{i}",
        "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [
            {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}
                ],
                "text": "Check up",
            }
        ],
        "subject": {"reference": f"Patient/pt-{i % 997}"},
        "participant": [{"individual": {"reference": f"Practitioner/pr-{i % 50}"}}],
        "period": {
            "start": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}T08:00:00+01:00",
            "end": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}T09:00:00+01:00",
        },
        "serviceProvider": {"reference": "Organization/org-1"},
    }


def measure(n: int = 100_000, relevant_share: float = 0.1) -> dict[str, float]:
    """Time the benchmark view over ``n`` synthetic resources held as NDJSON lines.

    ``eval_*``: the view alone over ``n`` pre-parsed Observations (rows/s).
    ``stream_*``: parse every line with orjson (``relevant_share`` of them Observations, the
    rest Encounters) with and without running the view; ``stream_ratio`` is the end-to-end
    throughput as a fraction of parse-only throughput.
    """
    import gc

    view = ViewDefinition(_BENCH_VIEW, source="benchmark")
    every = max(1, round(1 / relevant_share)) if relevant_share > 0 else n + 1
    lines = [orjson.dumps(_synthetic_observation(i) if i % every == 0 else _synthetic_encounter(i)) for i in range(n)]
    observations = [_synthetic_observation(i) for i in range(n)]
    gc.collect()
    gc.freeze()  # the pre-parsed list is long-lived; keep the cyclic GC out of the timing
    try:
        t0 = time.perf_counter()
        nrows = sum(1 for _ in run_view(view, observations))
        t1 = time.perf_counter()
        loads = orjson.loads
        for line in lines:
            loads(line)
        t2 = time.perf_counter()
        stream_rows = 0
        for row_list in (view.rows(loads(line)) for line in lines):
            stream_rows += len(row_list)
        t3 = time.perf_counter()
    finally:
        gc.unfreeze()
    nbytes = sum(len(line) for line in lines)
    return {
        "resources": n,
        "eval_rows": nrows,
        "eval_rows_per_s": nrows / (t1 - t0),
        "eval_us_per_resource": (t1 - t0) / n * 1e6,
        "stream_bytes": nbytes,
        "stream_relevant_share": relevant_share,
        "stream_rows": stream_rows,
        "parse_only_mb_per_s": nbytes / (t2 - t1) / 1e6,
        "parse_and_view_mb_per_s": nbytes / (t3 - t2) / 1e6,
        "stream_ratio": (t2 - t1) / (t3 - t2),
    }


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100_000
    share = float(argv[1]) if len(argv) > 1 else 0.1
    for k, v in measure(n, share).items():
        print(f"{k}: {v:,.2f}" if isinstance(v, float) else f"{k}: {v:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
