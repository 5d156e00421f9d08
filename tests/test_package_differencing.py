"""Differencing attack on published site packages (issue 16 point 4, issue 13 acceptance): from each
package's published files, try to recover every suppressed KM count (group n, event counts, events up
to a landmark) and one patient's event day; the attack must fail. Sites: the four centres of
``blina synth`` (demo) and simulated sites of 3 to 6 patients."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blina_study.analysis.federated.package import build_site_package
from blina_study.analysis.federated.simulate import simulate_site
from blina_study.analysis.io import read_course, read_patient

INFO = {
    "package_version": "0.1.0",
    "study_definition_hash": "3f1c" * 16,
    "parameters": {"course_gap_days": 7, "landmark_days": 365, "age_group_cut_years": 10.0},
    "vocabulary_version": "v5.0",
}
MIN_CELL = 5


def _published(path: Path) -> tuple[dict, dict]:
    with zipfile.ZipFile(path) as zf:
        stats = json.loads(zf.read("pooling/statistics.json"))
        rows = list(csv.DictReader(io.StringIO(zf.read("results/estimates.csv").decode())))
    est = {(r["analysis"], r["term"], r["statistic"]): (None if r["suppressed"] else r["value"]) for r in rows}
    return stats, est


def _num(v: str | None) -> float | None:
    return None if v in (None, "") else float(v)


def _attack(stats: dict, est: dict) -> list[str]:
    """Every suppressed KM quantity the published estimates give back exactly."""
    found = []
    for name, s in stats["statistics"].items():
        if s["kind"] != "km_table":
            continue
        a = name
        ep, group = name.split("/")[1], name.split("/", 2)[2]
        n_true = sum(s["events"]) + sum(s["censored"])
        e_true = sum(s["events"])
        n_pub, e_pub = _num(est.get((a, "", "n"))), _num(est.get((a, "", "n_events")))
        # Total minus the other groups (the groups partition "all").
        if group != "all":
            others = [k for k in est if k[0].startswith(f"km/{ep}/") and k[0] not in (a, f"km/{ep}/all")
                      and k[1] == "" and k[2] == "n"]
            for field, true, pub in (("n", n_true, n_pub), ("n_events", e_true, e_pub)):
                tot = _num(est.get((f"km/{ep}/all", "", field)))
                rest = [_num(est.get((k[0], "", field))) for k in others]
                if pub is None and 0 < true < MIN_CELL and tot is not None and None not in rest:
                    if tot - sum(rest) == true:
                        found.append(f"{a} {field}={true} from the total minus the other groups")
        for day in stats["parameters"]["landmark_days"] if "parameters" in stats else [365]:
            S, se = _num(est.get((a, f"day{day}", "survival"))), _num(est.get((a, f"day{day}", "se")))
            upto = [t <= day for t in s["time"]]
            d_true = sum(e for e, u in zip(s["events"], upto, strict=True) if u)
            if S is not None and se and 0 < S < 1:
                n_hat = S * (1 - S) / se**2  # Greenwood without censoring
                if n_pub is None and 0 < n_true < MIN_CELL and abs(n_hat - n_true) < 1e-6:
                    found.append(f"{a} n={n_true} from S(1-S)/SE^2")
                for n_guess in {n_pub, n_true if abs(n_hat - round(n_hat)) < 1e-6 else None} - {None}:
                    d_hat = n_guess * (1 - S)
                    if 0 < d_true < MIN_CELL and abs(d_hat - d_true) < 1e-6:
                        found.append(f"{a} events up to day {day} = {d_true} from n(1-S)")
        if (n_pub is None or e_pub is None) and est.get((a, "", "median_days")) not in (None, ""):
            found.append(f"{a} median_days (one patient's day) published with a suppressed n or event count")
    return found


def _sites(demo_dir: Path, tmp: Path) -> list[Path]:
    out = []
    for center in ("center1", "center2", "center3", "center4"):
        d = demo_dir / "study" / center
        out.append(build_site_package(read_course(d / "course.parquet"), read_patient(d / "patient.parquet"),
                                      site_id=center, manifest_info=INFO, out_path=tmp / f"{center}.zip"))
    rng = np.random.default_rng(20261203)
    for n in (3, 4, 5, 5, 6, 6):
        for rep in range(3):
            course, patient = simulate_site(rng, f"s{n}_{rep}", n)
            out.append(build_site_package(course, patient, site_id=f"s{n}_{rep}", manifest_info=INFO,
                                          out_path=tmp / f"s{n}_{rep}_{len(out)}.zip"))
    return out


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from blina_study.adapter.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo-output"
    assert main(["demo", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def site_packages(demo_dir, tmp_path_factory):
    return _sites(demo_dir, tmp_path_factory.mktemp("differencing"))


def test_no_suppressed_km_count_or_day_is_recovered(site_packages):
    recovered = {}
    for path in site_packages:
        stats, est = _published(path)
        hits = _attack(stats, est)
        if hits:
            recovered[path.name] = hits
    assert not recovered, recovered


def test_the_attack_works_on_unprotected_estimates(site_packages):
    """The attack is real: on the coordinator's unsuppressed per-site estimates it recovers cells."""
    from blina_study.analysis.federated import pool_site_statistics
    from blina_study.analysis.federated.package import _estimate_rows

    hits = 0
    for path in site_packages:
        stats, _ = _published(path)
        own = pool_site_statistics([stats])["per_site"][stats["site_id"]]
        raw = {(a, t, s): (None if v is None or (c and 0 < v < MIN_CELL) else _fmt(v))
               for a, t, s, v, c in _estimate_rows(own)}
        hits += len(_attack(stats, raw))
    assert hits > 0


def _fmt(v) -> str:
    return "true" if v is True else "false" if v is False else str(v)
