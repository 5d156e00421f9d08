"""Issue 13.2, the ``aggregate`` sharing level: packages that hold only publishable aggregates, and
the coordinator's meta-analysis and stratified tests from site totals.

Sites: the four centers of the ``blina synth`` cohort and a 5-patient site cut from one of them.
The scanner test reads every file of every aggregate package; the stratified tests are checked
against the same tests computed from the patients' rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile

import numpy as np
import pytest
from _helpers import synth_tables
from scipy import stats

from blina_study.adapter.cli import main
from blina_study.analysis.federated import pool_site_statistics, site_statistics
from blina_study.analysis.federated.meta import inverse_variance
from blina_study.analysis.federated.package import (
    PackageError,
    aggregate_problems,
    build_site_package,
    pool_packages,
    read_package,
    scan_package,
)
from blina_study.analysis.federated.pooling import pool_stratified_logrank

MIN_CELL = 5
INFO = {
    "package_version": "0.1.0",
    "study_definition_hash": "5e1d" * 16,
    "parameters": {"course_gap_days": 7, "landmark_days": 365, "age_group_cut_years": 10.0},
    "vocabulary_version": "v5.0",
}
# Every statistic an aggregate package may publish a value for (an allow-list, independent of the
# package code's own deny-list): counts, survival probabilities and their SE, test statistics, P,
# odds and hazard ratios, and the site totals of the stratified tests. None of them is a time: an
# event day can only appear as a statistic outside this list (median_days), which the test refuses.
ALLOWED = {"n", "n_events", "n_at_risk", "n_zero", "survival", "se", "chi2", "df", "p", "p_exact",
           "fisher_p", "fisher_odds_ratio", "converged", "coef", "hr", "ci_lower", "ci_upper", "U", "V",
           "w_plus", "var"}  # fmt: skip
COUNTS = {"n", "n_events", "n_at_risk", "n_zero"}


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    course, patient = synth_tables()
    frames = {}
    for s in sorted(patient["site_id"].unique()):
        frames[s] = (course[course["site_id"] == s].copy(), patient[patient["site_id"] == s].copy())
    # A 5-patient site: the first five patients of center1, under their own site id.
    c1c, c1p = frames["center1"]
    five = c1p["person_id"].head(5).tolist()
    sc, sp = c1c[c1c["person_id"].isin(five)].copy(), c1p[c1p["person_id"].isin(five)].copy()
    sc["site_id"], sp["site_id"] = "small5", "small5"
    frames["small5"] = (sc, sp)
    out = tmp_path_factory.mktemp("aggregate")
    packages = {}
    for s, (c, p) in frames.items():
        for share in ("aggregate", "exact"):
            packages[(s, share)] = build_site_package(c, p, site_id=s, manifest_info=INFO,
                                                      out_path=out / f"{s}-{share}.zip", min_cell=MIN_CELL,
                                                      share=share)  # fmt: skip
    return frames, packages


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_aggregate_packages_hold_only_publishable_aggregates(sites):
    """The scanner test of issue 13: every file of every aggregate package; no unsuppressed count 1-4,
    no date, no event time, no value that identifies a patient."""
    frames, packages = sites
    for s, (c, p) in frames.items():
        members = _members(packages[(s, "aggregate")])
        assert set(members) == {"manifest.json", "results/count_tables.csv", "results/estimates.csv",
                                "disclosure_log.json"}, s  # fmt: skip
        assert scan_package(packages[(s, "aggregate")], source_ids=p["person_source_value"]) == []  # dates, ids
        assert aggregate_problems(members, MIN_CELL) == []
        values = set()
        for col in ("cd3_pre", "cd3_post", "cd4_pre", "cd4_post", "cd8_pre", "cd8_post", "il6_peak", "il10_peak",
                    "ifng_peak", "tnfa_peak"):
            values |= {float(v) for v in c[col].dropna()}
        values |= {float(v) for v in p["age_at_index_years"].dropna()}
        for r in _rows(members["results/count_tables.csv"].decode()):
            assert r["suppressed"] == "yes" or not 0 < int(r["n"]) < MIN_CELL, (s, r)
        for r in _rows(members["results/estimates.csv"].decode()):
            if r["suppressed"] or r["value"] == "":
                continue
            assert r["statistic"] in ALLOWED, (s, r)
            if r["statistic"] in COUNTS:
                assert not 0 < int(r["value"]) < MIN_CELL, (s, r)
            elif r["value"] not in ("true", "false") and r["statistic"] != "df":
                v = float(r["value"])
                assert v not in values, (s, r, "a patient's own value")
        log = json.loads(members["disclosure_log.json"])
        assert log["sharing_level"] == "aggregate" and log["can_single_out_a_patient"] == []
        assert all(set(e) == {"file", "table", "cell"} for e in log["suppressed"])
        manifest = json.loads(members["manifest.json"])
        assert manifest["sharing_level"] == "aggregate" and "pooling/statistics.json" not in manifest["files"]


def test_the_exact_package_of_the_same_site_would_fail_the_scanner(sites):
    """The scanner can fail: the exact package (coordinator-only statistics) breaks it."""
    _, packages = sites
    problems = aggregate_problems(_members(packages[("center1", "exact")]), MIN_CELL)
    assert any("pooling/statistics.json" in p for p in problems)
    assert any("an event day or an individual value" in p for p in problems)


def _replant(path, tmp_path, member: str, edit) -> str:
    members = _members(path)
    members[member] = edit(members.get(member, b""))
    manifest = json.loads(members["manifest.json"])
    import hashlib

    for name, data in members.items():
        if name != "manifest.json":
            manifest["files"].setdefault(name, {"disclosure": "publishable"})
            manifest["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    members["manifest.json"] = json.dumps(manifest).encode()
    out = tmp_path / "planted.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(out)


@pytest.mark.parametrize("member,edit,problem", [
    ("results/count_tables.csv", lambda b: b.replace(b",,yes\n", b",3,\n", 1), "below min_cell"),
    ("results/estimates.csv",
     lambda b: b + b"km/efs/all,,median_days,412,\n", "event day or an individual value"),
    ("results/estimates.csv",
     lambda b: b + b"wilcoxon/cd3,pre,median,1.811,\n", "event day or an individual value"),
    ("pooling/statistics.json", lambda b: b'{"time": [12, 40]}', "an aggregate package does not have"),
])  # fmt: skip
def test_pool_refuses_an_aggregate_package_that_breaks_the_level(sites, tmp_path, member, edit, problem):
    _, packages = sites
    planted = _replant(packages[("center2", "aggregate")], tmp_path, member, edit)
    with pytest.raises(PackageError, match=problem):
        read_package(planted)


def test_aggregate_pool_labels_every_value_and_matches_the_site_totals(sites):
    frames, packages = sites
    names = ["center1", "center2", "center3", "center4"]
    pooled = pool_packages([packages[(s, "aggregate")] for s in names])
    res = pooled.results
    assert res["sharing_level"] == "aggregate"
    p = res["pooled"]
    exact_stats = [site_statistics(*frames[s], site_id=s) for s in names]
    # Site-stratified log-rank from the published U, V = the same test from the sites' rows, over the
    # sites that published U, V (those whose KM group counts are not suppressed).
    for ep in ("efs", "os"):
        lr = p["survival"][ep]["logrank_stratified"]
        assert "site-stratified log-rank" in lr["method"]
        used = [st for st in exact_stats if st["site_id"] in lr["sites"]]
        if used:
            ref = pool_stratified_logrank([st["statistics"][f"logrank/{ep}"] for st in used])
            assert lr["chi2"] == pytest.approx(ref["chi2"], rel=1e-12)
            assert lr["p"] == pytest.approx(ref["p"], rel=1e-9)
    # Van Elteren-type stratified signed-rank = the same sum computed from the sites' own pairs.
    for m in ("cd3", "cd4", "cd8"):
        w = p["wilcoxon"][m]
        assert "van Elteren" in w["method"] and w["sites"]
        t = v = 0.0
        for s in w["sites"]:
            c = frames[s][0]
            c1 = c[c["course_number"] == 1].dropna(subset=[f"{m}_pre", f"{m}_post"])
            d = (c1[f"{m}_post"].astype(float) - c1[f"{m}_pre"].astype(float)).to_numpy()
            d = d[d != 0]
            n = len(d)
            r = stats.rankdata(np.abs(d))
            _, ties = np.unique(r, return_counts=True)
            t += (r[d > 0].sum() - n * (n + 1) / 4) / (n + 1)
            v += (n * (n + 1) * (2 * n + 1) / 24 - (ties**3 - ties).sum() / 48) / (n + 1) ** 2
        assert w["z"] == pytest.approx(t / math.sqrt(v), rel=1e-12)
    for m in p["cox"].values():
        assert "meta-analysis" in m["method"] and "Cox" in m["method"]
    for section in ("response", "predictors"):
        for t in p[section].values():
            assert "Cochran-Mantel-Haenszel" in t["cmh_method"] and "meta-analysis" in t["method"]
    # A pooled count that any site suppressed is not given as a number.
    for table in p["counts"].values():
        assert "None" not in table["method"]  # the report's caption showed Python's None
        for *cell, n in table["cells"]:
            assert n is None or n >= 0
            assert (n is None) == ("|".join(cell) in table["lower_bounds"])


def test_inverse_variance_by_hand():
    out = inverse_variance([0.0, 1.0], [1.0, 1.0])
    assert out["fixed"]["estimate"] == 0.5 and out["fixed"]["se"] == pytest.approx(math.sqrt(0.5))
    assert out["q"] == pytest.approx(0.5) and out["tau2"] == 0.0  # Q < df: no heterogeneity
    out = inverse_variance([0.0, 3.0], [1.0, 1.0])
    assert out["tau2"] == pytest.approx((4.5 - 1) / (2 - 1))
    assert out["random"]["se"] == pytest.approx(math.sqrt(1 / (2 / (1 + 3.5))))


def test_five_patient_site_gives_no_suppressed_km_count_back(sites):
    """The differencing attack of issue 16 on the 5-patient site's aggregate package (truth from its
    exact package): no suppressed KM count, no event day is recovered."""
    from test_package_differencing import _attack, _published

    _, packages = sites
    stats, _ = _published(packages[("small5", "exact")])
    with zipfile.ZipFile(packages[("small5", "aggregate")]) as zf:
        rows = _rows(zf.read("results/estimates.csv").decode())
    est = {(r["analysis"], r["term"], r["statistic"]): (None if r["suppressed"] else r["value"]) for r in rows}
    assert _attack(stats, est) == []
    assert all(v in (None, "") for (_a, _t, st), v in est.items() if st == "median_days")


def test_mixed_levels_are_refused(sites):
    _, packages = sites
    with pytest.raises(PackageError, match="both sharing levels"):
        pool_packages([packages[("center1", "aggregate")], packages[("center2", "exact")]])


def test_site_run_defaults_to_aggregate_and_pool_says_so(sites, tmp_path, capsys):
    frames, _ = sites
    pkgs = []
    for s in ("center1", "center2", "center3", "center4"):
        c, p = frames[s]
        c.to_parquet(tmp_path / f"{s}-c.parquet")
        p.to_parquet(tmp_path / f"{s}-p.parquet")
        pkg = tmp_path / f"{s}.zip"
        assert main(["site-run", "--course", str(tmp_path / f"{s}-c.parquet"), "--patient",
                     str(tmp_path / f"{s}-p.parquet"), "--site-id", s, "--out", str(pkg)]) == 0
        assert "sharing level 'aggregate'" in capsys.readouterr().out
        assert json.loads(zipfile.ZipFile(pkg).read("manifest.json"))["sharing_level"] == "aggregate"
        pkgs.append(str(pkg))
    assert main(["pool", *pkgs, "--out", str(tmp_path / "pooled")]) == 0
    assert "aggregate level" in capsys.readouterr().out
    html = (tmp_path / "pooled" / "pooled.html").read_text()
    assert "not the centralized analysis" in html and "van Elteren" in html
    # count tables read as words, not as the package's machine names
    assert "Status at referral by status before the first course" in html and "chemotherapy delay" in html
    assert "Count table" not in html and "referral_by_course1" not in html and "chemo_delay" not in html
    pooled = json.loads((tmp_path / "pooled" / "pooled.json").read_text())
    assert pooled["results"]["sharing_level"] == "aggregate"


def test_exact_pooling_is_unchanged_by_the_aggregate_level(sites):
    frames, packages = sites
    names = ["center1", "center2", "center3", "center4"]
    pooled = pool_packages([packages[(s, "exact")] for s in names])
    direct = pool_site_statistics([site_statistics(*frames[s], site_id=s) for s in names])
    assert json.dumps(pooled.results["pooled"], sort_keys=True) == json.dumps(
        json.loads(json.dumps(direct["pooled"])), sort_keys=True)


@pytest.fixture(scope="module")
def large_sites(tmp_path_factory):
    """Four simulated sites large enough that most site estimates are published at min_cell 5."""
    from blina_study.analysis.federated.simulate import simulate_site

    rng = np.random.default_rng(20261204)
    out = tmp_path_factory.mktemp("aggregate_large")
    frames = {s: simulate_site(rng, s, n, event_scale=4.0) for s, n in (("A", 400), ("B", 300), ("C", 250),
                                                                       ("D", 200))}  # fmt: skip
    pkgs = {s: build_site_package(c, p, site_id=s, manifest_info=INFO, out_path=out / f"{s}.zip",
                                  min_cell=MIN_CELL, share="aggregate") for s, (c, p) in frames.items()}  # fmt: skip
    return frames, pkgs


def test_stratified_tests_from_site_totals_equal_those_from_the_rows(large_sites):
    """Where the sites publish their totals, the site-stratified log-rank and the CMH test of the
    aggregate level are the exact stratified tests (same value as from the sites' rows)."""
    frames, pkgs = large_sites
    pooled = pool_packages(list(pkgs.values())).results["pooled"]
    rows = [site_statistics(c, p, site_id=s) for s, (c, p) in frames.items()]
    checked = 0
    for ep in ("efs", "os"):
        lr = pooled["survival"][ep]["logrank_stratified"]
        if len(lr["sites"]) < 2:
            continue
        ref = pool_stratified_logrank([st["statistics"][f"logrank/{ep}"] for st in rows
                                       if st["site_id"] in lr["sites"]])
        assert lr["chi2"] == pytest.approx(ref["chi2"], rel=1e-12) and lr["df"] == ref["df"]
        checked += 1
    assert checked >= 1
    from blina_study.analysis.federated.pooling import pool_table2x2

    n_cmh = 0
    for name, t in pooled["predictors"].items():
        if len(t["sites_complete"]) < 2:
            continue
        ref = pool_table2x2([st["statistics"][f"predictor/{name}"] for st in rows
                             if st["site_id"] in t["sites_complete"]])["cmh"]  # fmt: skip
        assert t["cmh"]["chi2"] == pytest.approx(ref["chi2"], rel=1e-12)
        assert t["cmh"]["p_exact"] == pytest.approx(ref["p_exact"], rel=1e-12)
        n_cmh += 1
    assert n_cmh >= 3
    assert sum(len(m["sites"]) >= 2 for m in pooled["cox"].values()) >= 1
    assert sum(len(m["sites"]) >= 2 for m in pooled["survival"]["efs"]["landmark"].values()) >= 1


def test_cox_meta_analysis_equals_statsmodels(large_sites):
    from statsmodels.stats.meta_analysis import combine_effects

    _, pkgs = large_sites
    pooled = pool_packages(list(pkgs.values()))
    checked = 0
    for cov, m in pooled.results["pooled"]["cox"].items():
        if len(m["sites"]) < 2:
            continue
        est = {s: {(r["term"], r["statistic"]): float(r["value"]) for r in _rows(pooled.published[s]["estimates"])
                   if r["analysis"] == "cox/efs" and r["value"] not in ("", "true", "false")} for s in m["sites"]}
        y = np.array([est[s][(cov, "coef")] for s in m["sites"]])
        se = np.array([est[s][(cov, "se")] for s in m["sites"]])
        ref = combine_effects(y, se**2, method_re="dl")
        assert m["fixed"]["estimate"] == pytest.approx(ref.mean_effect_fe, rel=1e-10)
        assert m["fixed"]["value"] == pytest.approx(math.exp(ref.mean_effect_fe), rel=1e-10)
        if ref.tau2 >= 0:
            assert m["random"]["estimate"] == pytest.approx(ref.mean_effect_re, rel=1e-10)
            assert m["random"]["se"] == pytest.approx(ref.sd_eff_w_re, rel=1e-8)
        else:  # statsmodels leaves DerSimonian-Laird's tau^2 negative; the estimator truncates it at 0
            assert m["tau2"] == 0.0 and m["random"]["estimate"] == pytest.approx(m["fixed"]["estimate"], rel=1e-12)
        checked += 1
    assert checked >= 2



def _recovered_cells(stats: dict, count_rows: list[dict], est: dict) -> list[tuple]:
    """Suppressed non-zero cells of the patient tables that share the status-at-referral margin
    (referral x course 1, burden reduction, next therapy, pathway) that an attacker pins down from all
    published cells, the published KM group sizes (= the referral margin) and the site's published
    patient count: a joint linear program over the hidden cells and the unknown margin."""
    from scipy.optimize import linprog

    tables = ["counts/referral_by_course1", "counts/burden_reduction", "counts/next_therapy", "counts/pathway"]
    truth = {n: {"|".join(c[:-1]): int(c[-1]) for c in stats["statistics"][n]["cells"]} for n in tables}
    hidden = [(r["table"], r["cell"]) for r in count_rows if r["table"] in tables and r["suppressed"] == "yes"]
    shown = {(r["table"], r["cell"]): int(r["n"]) for r in count_rows if r["table"] in tables and not r["suppressed"]}
    levels = sorted({c.split("|")[0] for t in tables for c in truth[t]})
    nv = len(hidden) + len(levels)
    a_eq, b_eq = [], []
    for i, lv in enumerate(levels):
        for t in tables:  # every table's row lv adds up to the same (unknown) margin m_lv
            row = np.zeros(nv)
            for j, (tt, c) in enumerate(hidden):
                row[j] = float(tt == t and c.split("|")[0] == lv)
            row[len(hidden) + i] = -1.0
            a_eq.append(row)
            b_eq.append(-sum(n for (tt, c), n in shown.items() if tt == t and c.split("|")[0] == lv))
        g = est.get((f"km/efs/{lv}", "", "n"))
        if g not in (None, ""):
            row = np.zeros(nv)
            row[len(hidden) + i] = 1.0
            a_eq.append(row)
            b_eq.append(float(g))
    row = np.zeros(nv)
    row[len(hidden):] = 1.0
    a_eq.append(row)
    b_eq.append(float(est[("km/efs/all", "", "n")]))
    found = []
    for j, (t, c) in enumerate(hidden):
        if truth[t].get(c, 0) == 0:
            continue
        obj = np.zeros(nv)
        obj[j] = 1.0
        lo = linprog(obj, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        hi = linprog(-obj, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        assert lo.status == 0 and hi.status == 0
        if -hi.fun - lo.fun < 0.5:
            found.append((t, c, truth[t][c]))
    return found


def test_no_suppressed_count_cell_is_recovered_across_tables(sites):
    """The 5-patient site and the four synthetic centres: no suppressed cell of the tables that share
    the referral margin follows from the published cells, the published group sizes and n."""
    from test_package_differencing import _published

    frames, packages = sites
    n_hidden = 0
    for s in frames:
        stats, _ = _published(packages[(s, "exact")])
        with zipfile.ZipFile(packages[(s, "aggregate")]) as zf:
            count_rows = _rows(zf.read("results/count_tables.csv").decode())
            est = {(r["analysis"], r["term"], r["statistic"]): (None if r["suppressed"] else r["value"])
                   for r in _rows(zf.read("results/estimates.csv").decode())}  # fmt: skip
        assert _recovered_cells(stats, count_rows, est) == [], s
        n_hidden += sum(r["suppressed"] == "yes" for r in count_rows)
    assert n_hidden > 50


def test_the_cross_table_attack_works_on_unsuppressed_margins(sites):
    """The attack can succeed: publish the hidden cells of all but one table and it pins that table's
    hidden cells (so the test above is not vacuous)."""
    from test_package_differencing import _published

    _, packages = sites
    stats, _ = _published(packages[("center1", "exact")])
    with zipfile.ZipFile(packages[("center1", "aggregate")]) as zf:
        count_rows = _rows(zf.read("results/count_tables.csv").decode())
        est = {(r["analysis"], r["term"], r["statistic"]): (None if r["suppressed"] else r["value"])
               for r in _rows(zf.read("results/estimates.csv").decode())}  # fmt: skip
    truth = {"|".join(c[:-1]): int(c[-1]) for c in stats["statistics"]["counts/next_therapy"]["cells"]}
    leaky = [dict(r) for r in count_rows]
    row = [r for r in leaky if r["table"] == "counts/next_therapy" and r["suppressed"] == "yes"]
    keep = next(r for r in row if truth[r["cell"]] > 0)  # the one cell left hidden in its line
    line = keep["cell"].split("|")[0]
    for r in row:
        if r is not keep and r["cell"].split("|")[0] == line:
            r.update(n=str(truth[r["cell"]]), suppressed="")
    assert (est.get((f"km/efs/{line}", "", "n")) or "") != ""  # the line's margin is published
    assert ("counts/next_therapy", keep["cell"], truth[keep["cell"]]) in _recovered_cells(stats, leaky, est)
