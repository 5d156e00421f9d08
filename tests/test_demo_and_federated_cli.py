"""End to end as a user runs it: ``blina demo`` (all four centers through both routes, report), then
``blina site-run`` at each center and ``blina pool`` at the coordinator on the demo's extracts."""

from __future__ import annotations

import json
import re
import zipfile

import pandas as pd
import pytest

from blina_study.adapter.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_demo_reproduces_the_published_response_figures(demo_dir):
    resp = pd.read_csv(demo_dir / "analysis" / "response.csv")
    pooled = resp[resp["scope"] == "pooled"].set_index(["courses", "group"])
    assert pooled.loc[("course 1", "R/R"), ["k", "n"]].tolist() == [9, 11]
    assert pooled.loc[("course 1", "CR-MRDpos"), ["k", "n"]].tolist() == [33, 40]
    assert pooled.loc[("all courses", "CR-MRDneg"), ["k", "n"]].tolist() == [73, 74]
    html = (demo_dir / "report.html").read_text()
    assert "P = 1.000" in html and "97.8% ± 2.2%" in html


def test_demo_estimates_the_cox_model_without_error_text(demo_dir):
    """Issue 12: Tables 4 and 9 showed ``ConvergenceError: delta contains nan value(s)``."""
    cox = pd.read_csv(demo_dir / "analysis" / "cox.csv")
    pooled = cox[cox["scope"] == "pooled"].set_index("covariate")
    assert set(pooled.index) == {"high_mrd", "bcr_abl1", "poor_cytogenetics"}
    assert (pooled["status"] == "estimated").all()
    assert pooled[["coef", "se", "p_value", "loglik", "lr_chisq"]].notna().all().all()
    html = (demo_dir / "report.html").read_text()
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    table4 = [t for t in tables if "Table 4. Cox" in t]
    table9 = [t for t in tables if "Table 9." in t]
    assert table4 and table9
    for t in table4 + table9:
        for bad in ("Error", "Traceback", "delta contains", "nan value"):
            assert bad not in t
    flat = re.sub(r"\s+", " ", table4[0])
    for cov in ("high_mrd", "bcr_abl1", "poor_cytogenetics"):
        assert f"<td>{cov}</td><td>estimated</td>" in flat
    for label in ("High MRD, Cox P", "BCR-ABL1, Cox P", "Poor cytogenetics, Cox P"):
        row = next(r for r in re.findall(r"<tr>.*?</tr>", table9[0], flags=re.S) if label in r)
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)  # figure, published, this run, ...
        assert re.match(r"P (=|&lt;) ", cells[2]) and "not estimated" not in row, row


def test_demo_flow_counts_match_the_protocol(demo_dir):
    patient = pd.concat([pd.read_parquet(demo_dir / "study" / f"center{k}" / "patient.parquet") for k in range(1, 5)])
    assert len(patient) == 105
    assert patient["indication"].value_counts().to_dict() == {"chemo_delay": 54, "R/R": 30, "CR-MRDpos": 21}
    assert patient["status_at_referral"].value_counts().to_dict() == {"CR-MRDneg": 45, "R/R": 30, "CR-MRDpos": 30}


def test_demo_combines_the_centers_through_the_command_and_says_synthetic(demo_dir):
    """Issue 12, 4 and 5: the demo's analyze/report steps are the user's command on the four extract
    folders (no internal concatenation), and the report's title block and "At a glance" say synthetic."""
    log = (demo_dir / "demo.log").read_text()
    folders = " ".join(str(demo_dir / "study" / f"center{k}") for k in range(1, 5))
    assert f"$ blina analyze {folders} --out" in log and f"$ blina report {folders} --out" in log
    assert not (demo_dir / "study" / "patient.parquet").exists()
    flow = pd.read_csv(demo_dir / "analysis" / "flow.csv")
    assert sorted(flow["scope"].unique()) == ["center1", "center2", "center3", "center4", "pooled"]
    html = (demo_dir / "report.html").read_text()
    head = html[: html.index('<nav class="toc">')]
    assert "<h1>SYNTHETIC DATA: " in head and '<p class="synthetic">' in head
    glance = re.search(r"Published figures</b><span>([^<]*)", head).group(1)
    assert "reproduced as printed" in glance and "SYNTHETIC" in glance


def test_demo_accounts_for_every_input_record(demo_dir):
    rows = json.loads((demo_dir / "quality" / "data-quality.json").read_text())["records"]
    assert len(rows) == 4
    for r in rows:
        assert r["read"] == r["loaded"] + r["skipped"] + r["rejected"], r
        assert r["rejected"] == 0


def test_site_run_and_pool_on_the_demo_centers(demo_dir, tmp_path, capsys):
    packages = []
    for site in ("center1", "center2", "center3", "center4"):
        pkg = tmp_path / f"{site}.zip"
        study = demo_dir / "study" / site
        assert main(["site-run", "--course", str(study / "course.parquet"), "--patient",
                     str(study / "patient.parquet"), "--site-id", site, "--out", str(pkg), "--share", "exact"]) == 0
        captured = capsys.readouterr()
        out = captured.out
        assert "Warning" not in captured.err, captured.err  # numpy warnings never reach the terminal
        # The site is told the level it used and what the coordinator can learn, never "nothing person-level".
        assert "sharing level 'exact'" in out and "can single out a patient" in out, out
        assert "nothing person-level" not in out
        packages.append(str(pkg))
        with zipfile.ZipFile(pkg) as zf:
            text = " ".join(zf.read(n).decode("utf-8", "replace") for n in zf.namelist())
        patient = pd.read_parquet(study / "patient.parquet")
        for mrn in patient["person_source_value"]:
            assert mrn not in text  # no source patient id leaves the site
    assert main(["pool", *packages, "--out", str(tmp_path / "pooled")]) == 0
    captured = capsys.readouterr()
    assert "Warning" not in captured.err and "{" not in captured.out, captured  # no raw dict, no warning
    assert re.search(r"^\d+ patients, \d+ courses$", captured.out, re.M), captured.out
    pooled = json.loads((tmp_path / "pooled" / "pooled.json").read_text())["results"]["pooled"]
    assert pooled["response"]["course1"]["table"] == [[9, 2], [33, 7]]
    groups = pooled["survival"]["efs"]["groups"]
    one_year = {g: round(groups[g]["landmarks"][0]["survival"], 4) for g in ("CR-MRDneg", "CR-MRDpos", "R/R")}
    assert one_year == {"CR-MRDneg": round(44 / 45, 4), "CR-MRDpos": round(26 / 30, 4), "R/R": round(22 / 30, 4)}
    html = (tmp_path / "pooled" / "pooled.html").read_text(encoding="utf-8")
    # The pooled report of the demo's four packages: KM curves and the published-vs-this-run table.
    assert 'alt="Event-free survival Kaplan-Meier plot, pooled"' in html
    assert "Published figures (protocol sections 1 and 6) vs this run" in html


def test_pool_refuses_a_tampered_package(demo_dir, tmp_path, capsys):
    study = demo_dir / "study" / "center3"
    pkg = tmp_path / "c3.zip"
    assert main(["site-run", "--course", str(study / "course.parquet"), "--patient", str(study / "patient.parquet"),
                 "--site-id", "center3", "--out", str(pkg)]) == 0
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(pkg) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".csv"):
                data = data.replace(b"1", b"2", 1)
            dst.writestr(name, data)
    capsys.readouterr()
    assert main(["pool", str(tampered), "--out", str(tmp_path / "p")]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
