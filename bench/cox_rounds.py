"""Benchmark of the multi-round federated Cox (blina_study.analysis.federated.cox_rounds), not a test.

Four simulated sites (``blina_study.analysis.federated.simulate.simulate_site``, sizes in the ratio 6:4.5:3:2)
at several total sizes; the sites are answered in-process (no vantage6, no network), so the time is
the computation of every round at every site plus the centre's update. Measured per size (best of
``--repeat`` runs):

* limit        = ``blina_study.analysis.cox.cox_fit`` of the concatenated complete cases (the centralized fit of the
  same model, R's iteration), stratified by site and unstratified;
* federated    = ``federated_cox_fit`` with site-stratified rounds / unstratified rounds (setup + risk-set
  sums at the union event grid);
* rounds       = derivative evaluations asked of the sites.

Run:  .venv/bin/python bench/cox_rounds.py [--sizes 1000,10000,100000] [--repeat 3] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import time
from pathlib import Path

import numpy as np

from blina_study.analysis.cox import cox_fit
from blina_study.analysis.federated.cox_rounds import (
    cox_design,
    federated_cox_fit,
    site_cox_derivatives,
    site_cox_setup,
    site_risk_set_sums,
)
from blina_study.analysis.federated.simulate import simulate_site

COVS = ("high_mrd", "bcr_abl1", "poor_cytogenetics", "age_at_index_years")
SHARES = (6.0, 4.5, 3.0, 2.0)


def _designs(total: int, seed: int = 20261204):
    rng = np.random.default_rng(seed)
    sizes = [max(5, round(total * s / sum(SHARES))) for s in SHARES]
    return [cox_design(*simulate_site(rng, f"S{i}", n), COVS) for i, n in enumerate(sizes)]


def _request(designs):
    def request(kind, kw):
        if kind == "derivatives":
            return [site_cox_derivatives(d, kw["beta"]) for d in designs]
        if kind == "setup":
            return [site_cox_setup(d) for d in designs]
        return [site_risk_set_sums(d, kw["beta"], kw["grid"]) for d in designs]

    return request


def _best(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    for total in sizes:
        designs = _designs(total)
        t = np.concatenate([d.time for d in designs])
        e = np.concatenate([d.event for d in designs])
        x = np.concatenate([d.x for d in designs])
        strata = np.repeat(np.arange(len(designs)), [d.time.size for d in designs])
        for model in ("stratified", "unstratified"):
            s = strata if model == "stratified" else None
            limit, ref = _best(lambda t=t, e=e, x=x, s=s: cox_fit(t, e, x, names=COVS, strata=s), repeat)
            fed_t, fed = _best(lambda d=designs, m=model: federated_cox_fit(_request(d), COVS, model=m), repeat)
            diff = float(np.max(np.abs(np.asarray(fed["coef"]) - ref.coef)))
            rows.append({"n": int(t.size), "events": int(e.sum()), "grid": int(np.unique(t[e == 1]).size),
                         "model": model, "limit": limit, "federated": fed_t, "rounds": fed["rounds"],
                         "ratio": fed_t / limit, "max_coef_diff": diff})  # fmt: skip
            print(f"{model:12s} n={t.size:7d} limit {limit:.4f}s federated {fed_t:.4f}s "
                  f"({fed_t / limit:.1f}x) rounds {fed['rounds']} max|dcoef| {diff:.1e}")  # fmt: skip
    return rows


def _markdown(rows: list[dict]) -> str:
    head = (
        "## Federated Cox rounds\n\n"
        f"Run {dt.date.today().isoformat()} on {platform.machine()}, {platform.python_version()}; best of the "
        "repeats. Rerun with:\n\n```\n.venv/bin/python bench/cox_rounds.py\n```\n\n"
        "Four simulated sites (6:4.5:3:2), covariates high_mrd, bcr_abl1, poor_cytogenetics, age; sites answered "
        "in-process. limit = `cox_fit` of the concatenated complete cases (same model); federated = "
        "`federated_cox_fit` (every round at every site + the centre's update); grid = distinct event days.\n\n"
        "| model | patients | events | grid | limit s | federated s | federated/limit | rounds | max abs coef diff |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['model']} | {r['n']:,} | {r['events']:,} | {r['grid']:,} | {r['limit']:.4f} | {r['federated']:.4f} | "
        f"{r['ratio']:.1f} | {r['rounds']} | {r['max_coef_diff']:.1e} |\n"
        for r in rows
    )
    return head + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", type=Path, help="replace this benchmark's section in RESULTS.md")
    args = ap.parse_args()
    rows = run([int(s) for s in args.sizes.split(",")], args.repeat)
    if args.results:
        text = args.results.read_text(encoding="utf-8")
        section = _markdown(rows)
        pat = re.compile(r"## Federated Cox rounds\n.*?(?=\n## |\Z)", re.S)
        text = pat.sub(lambda _m: section.rstrip("\n") + "\n", text) if pat.search(text) else (
            text.rstrip("\n") + "\n\n" + section)
        args.results.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
