"""``blina pool`` given hostile or broken packages: one sentence naming the package and the problem,
exit 1 or 2, never a traceback or an "internal error" (issue 11 point 3, issue 16 point 4)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blina_study.adapter.cli import main
from blina_study.analysis.federated.package import build_site_package
from blina_study.analysis.federated.simulate import simulate_site

INFO = {
    "package_version": "0.1.0",
    "study_definition_hash": "3f1c" * 16,
    "parameters": {"course_gap_days": 7, "landmark_days": 365, "age_group_cut_years": 10.0},
    "vocabulary_version": "v5.0",
}
STATS = "pooling/statistics.json"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile")
    course, patient = simulate_site(np.random.default_rng(7), "A", 30)
    return build_site_package(course, patient, site_id="A", manifest_info=INFO, out_path=out / "A.zip")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(out: Path, members: dict[str, bytes], *, fix_checksums: bool = True) -> Path:
    """A copy with changed members; the manifest's checksums recomputed (a forger would)."""
    if fix_checksums and "manifest.json" in members:
        manifest = json.loads(members["manifest.json"])
        for name in manifest["files"]:
            if name in members:
                manifest["files"][name]["sha256"] = hashlib.sha256(members[name]).hexdigest()
                manifest["files"][name]["bytes"] = len(members[name])
        members = {**members, "manifest.json": json.dumps(manifest).encode()}
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def _edit_stats(good: Path, out: Path, edit) -> Path:
    members = _members(good)
    stats = json.loads(members[STATS])
    edit(stats)
    return _write(out, {**members, STATS: json.dumps(stats).encode()})


def _edit_csv(good: Path, out: Path, member: str, column: str, value: str, statistic: str | None = None) -> Path:
    """Set ``column`` of the first published (not suppressed, non-empty) row to ``value``."""
    members = _members(good)
    rows = list(csv.reader(io.StringIO(members[member].decode())))
    col, sup = rows[0].index(column), rows[0].index("suppressed")
    row = next(r for r in rows[1:] if r[sup] == "" and r[col] not in ("", "0")
               and (statistic is None or r[2] == statistic))
    row[col] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return _write(out, {**members, member: buf.getvalue().encode()})


def _first(stats: dict, kind: str) -> dict:
    return next(s for s in stats["statistics"].values() if s["kind"] == kind)


def _set(d: dict, key: str, value) -> None:
    d[key] = value


CASES = {
    "empty file": lambda g, o: (o.write_bytes(b""), o)[1],
    "truncated zip": lambda g, o: (o.write_bytes(g.read_bytes()[: len(g.read_bytes()) // 2]), o)[1],
    "text file": lambda g, o: (o.write_text("site,n\nA,3\n"), o)[1],
    "foreign zip": lambda g, o: _write(o, {"readme.txt": b"hello", "data.csv": b"a,b\n1,2\n"}),
    "directory": lambda g, o: (o.mkdir(), o)[1],
    "manifest is a list": lambda g, o: _write(o, {**_members(g), "manifest.json": b"[1, 2]"}, fix_checksums=False),
    "manifest files is a list": lambda g, o: _write(
        o, {**_members(g), "manifest.json": json.dumps({**json.loads(_members(g)["manifest.json"]),
                                                        "files": ["a"]}).encode()}, fix_checksums=False),
    "manifest not utf-8": lambda g, o: _write(o, {**_members(g), "manifest.json": b"\xff\xfe{"}, fix_checksums=False),
    "statistics not JSON": lambda g, o: _write(o, {**_members(g), STATS: b"{not json"}),
    "statistics a list": lambda g, o: _write(o, {**_members(g), STATS: b"[]"}),
    "statistics without tables": lambda g, o: _edit_stats(g, o, lambda s: s.pop("statistics")),
    "NaN in statistics": lambda g, o: _write(o, {**_members(g), STATS: _members(g)[STATS].replace(
        b'"n_patients": 30', b'"n_patients": NaN')}),
    "negative count in a 2x2 table": lambda g, o: _edit_stats(
        g, o, lambda s: _set(_first(s, "table2x2"), "table", [[-3, 1], [2, 4]])),
    "fractional count": lambda g, o: _edit_stats(
        g, o, lambda s: _set(_first(s, "table2x2"), "table", [[2.5, 1], [2, 4]])),
    "negative KM events": lambda g, o: _edit_stats(
        g, o, lambda s: _set(_first(s, "km_table"), "events", [-1] * len(_first(s, "km_table")["events"]))),
    "KM time 1e30": lambda g, o: _edit_stats(
        g, o, lambda s: _set(_first(s, "km_table"), "time", [1e30] * len(_first(s, "km_table")["time"]))),
    "KM columns of unequal length": lambda g, o: _edit_stats(
        g, o, lambda s: _set(_first(s, "km_table"), "time", [1, 2])),
    "Cox event time 1e30": lambda g, o: _edit_stats(
        g, o, lambda s: _set(_first(s, "cox_pattern_counts"), "event_times",
                             [1e30] * len(_first(s, "cox_pattern_counts")["event_times"]))),
    "unknown statistic kind": lambda g, o: _edit_stats(
        g, o, lambda s: _set(s["statistics"], "x/y", {"kind": "rows", "disclosure": "publishable"})),
    "string where a count goes": lambda g, o: _edit_stats(g, o, lambda s: _set(s, "n_patients", "thirty")),
    "negative patient count": lambda g, o: _edit_stats(g, o, lambda s: _set(s, "n_patients", -30)),
    "count table with a negative count": lambda g, o: _edit_csv(g, o, "results/count_tables.csv", "n", "-3"),
    "count table with an unsuppressed 3": lambda g, o: _edit_csv(g, o, "results/count_tables.csv", "n", "3"),
    "count table with text for a count": lambda g, o: _edit_csv(g, o, "results/count_tables.csv", "n", "many"),
    "estimates with an infinite value": lambda g, o: _edit_csv(g, o, "results/estimates.csv", "value", "inf"),
    "estimates with a new column": lambda g, o: _write(o, {**_members(g), "results/estimates.csv":
                                                           _members(g)["results/estimates.csv"].replace(
                                                               b"suppressed", b"suppressed,person", 1)}),
    "estimates with an unsuppressed n of 2": lambda g, o: _edit_csv(g, o, "results/estimates.csv", "value", "2",
                                                                   statistic="n"),
    "site id differs": lambda g, o: _edit_stats(g, o, lambda s: _set(s, "site_id", "B")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pool_names_the_package_and_the_problem(case, good, tmp_path, capsys):
    bad = CASES[case](good, tmp_path / "bad_pkg.zip")
    capsys.readouterr()
    code = main(["pool", str(good), str(bad), "--out", str(tmp_path / "pooled")])
    err = capsys.readouterr().err
    assert code in (1, 2), (case, code, err)
    assert "bad_pkg.zip" in err, (case, err)
    assert "Traceback" not in err and "internal error" not in err, (case, err)
    assert len(err.strip().splitlines()) == 1, (case, err)
    assert not (tmp_path / "pooled" / "pooled.json").exists()


def test_the_good_package_pools(good, tmp_path):
    assert main(["pool", str(good), "--out", str(tmp_path / "pooled")]) == 0
