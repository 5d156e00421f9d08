"""Site results packages: build, verify, refuse, scan, suppress, pool."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blina_study.analysis.federated import pool_site_statistics, site_statistics
from blina_study.analysis.federated.package import (
    PackageError,
    build_site_package,
    pool_packages,
    read_package,
    scan_package,
    suppress_counts,
)
from blina_study.analysis.federated.simulate import simulate_site
from blina_study.analysis.federated.sufficient import FederatedParams

SITES = {"A": 60, "B": 45, "C": 30, "D": 20}
INFO = {
    "package_version": "0.1.0",
    "study_definition_hash": "3f1c" * 16,
    "study_id": "blina-ped-ball",
    "study_version": "1.0",
    "parameters": {"course_gap_days": 7, "landmark_days": 365, "age_group_cut_years": 10.0},
    "vocabulary_version": "v5.0 30-AUG-24",
    "created_utc": "2026-11-24T06:00:00Z",
}


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(20261124)
    return {s: simulate_site(rng, s, n) for s, n in SITES.items()}


@pytest.fixture(scope="module")
def packages(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("packages")
    return [
        build_site_package(c, p, site_id=s, manifest_info=INFO, out_path=out / f"site_{s}.zip")
        for s, (c, p) in frames.items()
    ]


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rewrite(path: Path, out: Path, members: dict[str, bytes], *, fix_checksums: bool) -> Path:
    """Write a copy of a package with changed members (optionally re-signing the manifest)."""
    if fix_checksums:
        manifest = json.loads(members["manifest.json"])
        for name, meta in manifest["files"].items():
            meta["sha256"] = hashlib.sha256(members[name]).hexdigest()
            meta["bytes"] = len(members[name])
        members = {**members, "manifest.json": json.dumps(manifest).encode()}
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


# ---------------------------------------------------------------------------------------------
# Round trip and pooling
# ---------------------------------------------------------------------------------------------


def test_pooled_packages_equal_pooling_of_the_statistics(frames, packages):
    res = pool_packages(packages)
    params = FederatedParams(landmark_days=(365,), age_group_cut_years=10.0)
    direct = pool_site_statistics(
        [site_statistics(c, p, site_id=s, params=params) for s, (c, p) in frames.items()]
    )
    assert res.sites == list(SITES)
    assert json.loads(json.dumps(direct)) == res.results
    assert res.pooled["n_patients"] == sum(SITES.values())
    assert res.study_definition_hash == INFO["study_definition_hash"]
    json.loads(res.to_json())


def test_manifest_lists_every_file_with_checksum(packages):
    members = _members(packages[0])
    manifest = json.loads(members["manifest.json"])
    for key in ("package_version", "study_definition_hash", "parameters", "vocabulary_version",
                "input_fingerprint", "min_cell", "federated_parameters"):  # fmt: skip
        assert manifest[key] is not None, key
    assert set(manifest["files"]) == set(members) - {"manifest.json"}
    for name, meta in manifest["files"].items():
        assert meta["sha256"] == hashlib.sha256(members[name]).hexdigest()
    assert manifest["files"]["pooling/statistics.json"]["disclosure"] == "coordinator-only"
    assert manifest["files"]["results/count_tables.csv"]["disclosure"] == "publishable"


def test_build_is_deterministic(frames, tmp_path):
    c, p = frames["C"]
    a = build_site_package(c, p, site_id="C", manifest_info=INFO, out_path=tmp_path / "1.zip")
    b = build_site_package(c, p, site_id="C", manifest_info=INFO, out_path=tmp_path / "2.zip")
    assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def test_checksum_mismatch_is_refused(packages, tmp_path):
    members = _members(packages[1])
    members["results/estimates.csv"] = members["results/estimates.csv"].replace(b",0.", b",1.", 1)
    bad = _rewrite(packages[1], tmp_path / "bad.zip", members, fix_checksums=False)
    with pytest.raises(PackageError, match=r"checksum mismatch for results/estimates.csv"):
        read_package(bad)
    with pytest.raises(PackageError, match="checksum mismatch"):
        pool_packages([packages[0], bad])


def test_unlisted_or_missing_files_are_refused(packages, tmp_path):
    members = _members(packages[1])
    extra = _rewrite(packages[1], tmp_path / "x.zip", {**members, "notes.txt": b"hi"},
                     fix_checksums=False)  # fmt: skip
    with pytest.raises(PackageError, match=r"not listed in the manifest: \['notes.txt'\]"):
        read_package(extra)
    del members["disclosure_log.json"]
    gone = _rewrite(packages[1], tmp_path / "y.zip", members, fix_checksums=False)
    with pytest.raises(PackageError, match="disclosure_log.json is listed in the manifest"):
        read_package(gone)
    (tmp_path / "z.zip").write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="not a zip file"):
        read_package(tmp_path / "z.zip")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study_definition_hash": "0" * 64}, "study_definition_hash"),
        ({"package_version": "0.2.0"}, "package_version"),
        ({"parameters": {**INFO["parameters"], "course_gap_days": 10}}, "parameters differ"),
    ],
)
def test_mismatched_packages_are_refused(frames, packages, tmp_path, change, message):
    c, p = frames["D"]
    other = build_site_package(c, p, site_id="D", manifest_info={**INFO, **change},
                               out_path=tmp_path / "d.zip")  # fmt: skip
    with pytest.raises(PackageError, match=message):
        pool_packages([*packages[:3], other])


def test_expected_hash_and_duplicate_sites_are_checked(packages):
    with pytest.raises(PackageError, match=r"differs from '0+' \(expected\)"):
        pool_packages(packages, expected_study_hash="0" * 64)
    with pytest.raises(PackageError, match=r"site\(s\) \['A'\] appear in more than one"):
        pool_packages([packages[0], packages[0]])
    assert pool_packages(packages, expected_package_version="0.1.0").sites == list(SITES)


def test_build_refuses_incomplete_manifest_info(frames, tmp_path):
    c, p = frames["D"]
    info = {k: v for k, v in INFO.items() if k != "vocabulary_version"}
    with pytest.raises(PackageError, match=r"lacks \['vocabulary_version'\]"):
        build_site_package(c, p, site_id="D", manifest_info=info, out_path=tmp_path / "d.zip")
    assert not (tmp_path / "d.zip").exists()


# ---------------------------------------------------------------------------------------------
# Scanner
# ---------------------------------------------------------------------------------------------


def test_clean_packages_scan_clean_with_the_sites_source_ids(frames, packages):
    for path, (_, p) in zip(packages, frames.values(), strict=True):
        assert scan_package(path, source_ids=p["person_source_value"]) == []


@pytest.mark.parametrize(
    ("member", "plant", "problem"),
    [
        ("results/estimates.csv", b"km/efs/all,,n,2024-03-15,\n", "date-like text '2024-03-15'"),
        ("results/count_tables.csv", b"counts/flow,a,b,15/03/2024,\n", "date-like text"),
        ("results/estimates.csv", b"km/efs/all,,n,20240315,\n", "reads as a date"),
        ("results/estimates.csv", b"x,Patient/p-17,n,1,\n", "source record reference"),
        ("results/estimates.csv", b"x,measurement:991,n,1,\n", "source record reference"),
    ],
)
def test_planted_values_are_caught(packages, tmp_path, member, plant, problem):
    members = _members(packages[2])
    members[member] = members[member] + plant
    bad = _rewrite(packages[2], tmp_path / "bad.zip", members, fix_checksums=True)
    findings = scan_package(bad)
    assert any(f.file == member and problem in f.problem for f in findings), findings
    with pytest.raises(PackageError, match="disclosure finding"):
        read_package(bad)  # checksums are consistent: the scan alone refuses it


def test_planted_person_field_and_date_in_statistics_are_caught(packages, tmp_path):
    members = _members(packages[2])
    stats = json.loads(members["pooling/statistics.json"])
    stats["statistics"]["km/efs/all"]["person_id"] = [101, 102]
    stats["statistics"]["km/os/all"]["last_seen"] = "2025-01-07"
    members["pooling/statistics.json"] = json.dumps(stats).encode()
    bad = _rewrite(packages[2], tmp_path / "bad.zip", members, fix_checksums=True)
    problems = {(f.where, f.problem) for f in scan_package(bad)}
    assert ("statistics.km/efs/all.person_id", "person-level field name 'person_id'") in problems
    assert ("statistics.km/os/all.last_seen", "date-like text '2025-01-07'") in problems


def test_planted_source_id_is_caught(frames, packages, tmp_path):
    _, p = frames["C"]
    mrn = p["person_source_value"].iloc[0]
    members = _members(packages[2])
    members["results/estimates.csv"] += f"x,{mrn},n,1,\n".encode()
    bad = _rewrite(packages[2], tmp_path / "bad.zip", members, fix_checksums=True)
    assert scan_package(bad) == []  # the coordinator cannot know a site's MRNs ...
    found = scan_package(bad, source_ids=p["person_source_value"])  # ... the site can
    assert [f.problem for f in found] == ["a source patient id of this site"]


def test_build_refuses_a_date_in_the_parameters_but_allows_vocabulary_version(frames, tmp_path):
    c, p = frames["D"]
    info = {**INFO, "parameters": {**INFO["parameters"], "data_cutoff": "2025-06-30"}}
    with pytest.raises(PackageError, match=r"parameters.data_cutoff: date-like text"):
        build_site_package(c, p, site_id="D", manifest_info=info, out_path=tmp_path / "d.zip")
    assert not (tmp_path / "d.zip").exists()


def test_build_refuses_source_ids_leaking_through_labels(frames, tmp_path):
    c, p = frames["D"]
    p = p.copy()
    p.loc[p.index[0], "next_therapy"] = p.loc[p.index[0], "person_source_value"]
    with pytest.raises(PackageError, match="a source patient id of this site"):
        build_site_package(c, p, site_id="D", manifest_info=INFO, out_path=tmp_path / "d.zip")


# ---------------------------------------------------------------------------------------------
# Suppression
# ---------------------------------------------------------------------------------------------


def _solutions(counts: np.ndarray, hidden: np.ndarray) -> list[dict]:
    """Every non-negative integer table agreeing with the published cells and all row and
    column totals (depth-first enumeration, independent of suppress_counts' linear algebra)."""
    cells = [tuple(int(i) for i in c) for c in zip(*np.nonzero(hidden), strict=True)]
    row_left = counts.sum(1) - np.where(hidden, 0, counts).sum(1)
    col_left = counts.sum(0) - np.where(hidden, 0, counts).sum(0)
    last_in_row = {i: max(j for r, j in cells if r == i) for i, _ in cells}
    last_in_col = {j: max(r for r, c in cells if c == j) for _, j in cells}
    out: list[dict] = []
    values: list[int] = []

    def walk(k: int) -> None:
        if k == len(cells):
            out.append(dict(zip(cells, values, strict=True)))
            return
        i, j = cells[k]
        for v in range(min(row_left[i], col_left[j]) + 1):
            row_left[i] -= v
            col_left[j] -= v
            ok = (last_in_row[i] != j or row_left[i] == 0) and (
                last_in_col[j] != i or col_left[j] == 0)
            if ok:
                values.append(v)
                walk(k + 1)
                values.pop()
            row_left[i] += v
            col_left[j] += v

    walk(0)
    return out


def test_suppression_leaves_no_hidden_cell_computable():
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(200):
        shape = (int(rng.integers(2, 5)), int(rng.integers(2, 5)))
        counts = rng.choice([0, 1, 2, 3, 4, 6, 7, 9], size=shape, p=[.2, .15, .1, .1, .05, .2, .1, .1])
        status, log = suppress_counts(counts, 5)
        hidden = status != ""
        assert not ((counts > 0) & (counts < 5) & ~hidden).any()  # every small cell hidden
        if not hidden.any():
            continue
        assert len([e for e in log if e["cell"] is not None]) == int(hidden.sum())
        if any(e["cell"] is None for e in log):
            # Claimed unprotectable: even hiding every cell, the totals pin a non-zero cell.
            sols = _solutions(counts, np.ones_like(hidden))
            assert any(len({s[c] for s in sols}) == 1
                       for c in zip(*np.nonzero(counts > 0), strict=True))  # fmt: skip
            continue
        sols = _solutions(counts, hidden)
        for cell in zip(*np.nonzero(hidden & (counts > 0)), strict=True):
            assert len({s[cell] for s in sols}) >= 2, (counts, status, cell)
        checked += 1
    assert checked >= 100


def test_one_dimensional_and_three_dimensional_tables():
    status, _ = suppress_counts(np.array([3, 10, 12, 0]))
    assert status.tolist() == ["primary", "complementary", "", ""]
    status, _ = suppress_counts(np.array([0, 7, 9]))
    assert status.tolist() == ["", "", ""]
    cube = np.array([[[2, 9], [8, 6]], [[7, 5], [9, 11]]])
    status, _ = suppress_counts(cube, 5)
    hidden = status != ""
    for axis in range(3):  # every line with a hidden cell hides at least two
        assert not (hidden.sum(axis=axis) == 1).any()
    assert hidden[0, 0, 0]


def test_published_tables_have_no_small_counts(packages):
    for path in packages:
        members = _members(path)
        for row in csv.DictReader(io.StringIO(members["results/count_tables.csv"].decode())):
            if row["n"]:
                assert not 0 < int(row["n"]) < 5, row
            else:
                assert row["suppressed"] == "yes"
        for row in csv.DictReader(io.StringIO(members["results/estimates.csv"].decode())):
            if row["statistic"] in ("n", "n_events", "n_at_risk", "n_zero") and row["value"]:
                assert not 0 < int(row["value"]) < 5, row
        log = json.loads(members["disclosure_log.json"])
        assert log["min_cell"] == 5
        assert "pooling/statistics.json" in log["coordinator_only_files"]
        for entry in log["suppressed"]:
            assert set(entry) == {"file", "table", "cell", "rule"}  # positions, never values


def test_min_cell_is_configurable(frames, tmp_path):
    c, p = frames["A"]
    path = build_site_package(c, p, site_id="A", manifest_info=INFO, out_path=tmp_path / "a.zip",
                              min_cell=11)  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(_members(path)["results/count_tables.csv"].decode())))
    assert all(not 0 < int(r["n"]) < 11 for r in rows if r["n"])
    assert json.loads(_members(path)["manifest.json"])["min_cell"] == 11


def test_fisher_results_of_a_suppressed_table_are_suppressed(packages):
    """A 2x2 table with hidden cells must not be recoverable from its Fisher P or odds ratio."""
    checked = hidden = 0
    for path in packages:
        members = _members(path)
        suppressed_tables = {r["table"] for r in csv.DictReader(io.StringIO(
            members["results/count_tables.csv"].decode())) if r["suppressed"] == "yes"}
        for row in csv.DictReader(io.StringIO(members["results/estimates.csv"].decode())):
            if row["statistic"] not in ("fisher_p", "fisher_odds_ratio"):
                continue
            section, _, rest = row["analysis"].partition("/")
            table = f"predictor/{rest}" if section == "predictors" else row["analysis"]
            checked += 1
            if table in suppressed_tables:
                hidden += 1
                assert (row["value"], row["suppressed"]) == ("", "yes"), row
        log = json.loads(members["disclosure_log.json"])
        assert all(e["cell"] in ("fisher_p", "fisher_odds_ratio") for e in log["suppressed"]
                   if e["rule"] == "computed from a count table with suppressed cells")
    assert checked and hidden, (checked, hidden)  # the fixture has small tables: the rule is exercised


# ---------------------------------------------------------------------------------------------
# Disclosure log: every element that can single out a patient, with its reason (issue 13)
# ---------------------------------------------------------------------------------------------


def _small_counts(s: dict, min_cell: int) -> bool:
    """Independent of the package code: does a statistic hold a count 1..min_cell-1 or a per-patient
    quantity (an event day; a value bin of one patient)?"""
    kind = s["kind"]
    if kind == "km_table":
        return bool(s["time"])
    if kind == "cox_pattern_counts":
        return bool(s["event_times"])
    if kind == "value_histogram":
        return any(c == 1 for _, c in s["bins"])
    if kind == "paired_difference_histogram":
        return any(c == 1 for k in ("differences", "pre", "post") for _, c in s[k])
    cells = {"table2x2": lambda: [c for r in s["table"] for c in r],
             "count_table": lambda: [c[-1] for c in s["cells"]],
             "logrank_scores": lambda: list(s["n"]) + list(s["observed"])}[kind]()
    return any(0 < c < min_cell for c in cells)


def test_disclosure_log_lists_every_element_that_can_single_out_a_patient(packages):
    for path in packages:
        members = _members(path)
        stats = json.loads(members["pooling/statistics.json"])
        log = json.loads(members["disclosure_log.json"])
        assert log["sharing_level"] == "exact"
        listed = {e["element"].split(":")[0] for e in log["can_single_out_a_patient"]}
        assert all(e["reveals"] for e in log["can_single_out_a_patient"])
        expected = {k for k, s in stats["statistics"].items() if _small_counts(s, log["min_cell"])}
        assert expected and listed == expected, (path, expected ^ listed)
