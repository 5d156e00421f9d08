"""Issue 13.4, as a user runs it: ``blina analyze`` and ``blina pool`` both offer the unstratified and
the site-stratified Cox model (``--cox-strata none|site``), say which one they fit, and give the same
coefficients for the same model (centralized tables vs the four synthetic centers' packages)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from _helpers import synth_tables

from blina_study.adapter.cli import main


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    course, patient = synth_tables()
    out = tmp_path_factory.mktemp("coxcli")
    course.to_parquet(out / "course.parquet")
    patient.to_parquet(out / "patient.parquet")
    packages = []
    for site in sorted(patient["site_id"].unique()):
        folder = out / site
        folder.mkdir()
        course[course["site_id"] == site].to_parquet(folder / "course.parquet")
        patient[patient["site_id"] == site].to_parquet(folder / "patient.parquet")
        pkg = out / f"{site}.zip"
        assert main(["site-run", "--course", str(folder / "course.parquet"), "--patient",
                     str(folder / "patient.parquet"), "--site-id", site, "--out", str(pkg), "--share", "exact"]) == 0
        packages.append(str(pkg))
    return out, packages


@pytest.mark.parametrize("strata", ["none", "site"])
def test_analyze_and_pool_fit_the_same_cox_model(tables, strata, tmp_path, capsys):
    out, packages = tables
    capsys.readouterr()
    assert main(["analyze", "--course", str(out / "course.parquet"), "--patient", str(out / "patient.parquet"),
                 "--out", str(tmp_path / "central"), "--no-by-center", "--cox-strata", strata]) == 0
    said = capsys.readouterr().out
    model = "stratified by center" if strata == "site" else "unstratified"
    assert f"Cox EFS ({model}" in said
    cox = pd.read_csv(tmp_path / "central" / "cox.csv")
    cox = cox[cox["status"] == "estimated"].set_index("covariate")
    assert cox["method"].str.contains("baseline stratified by site_id").all() == (strata == "site")
    assert main(["pool", *packages, "--out", str(tmp_path / "pooled"), "--cox-strata", strata]) == 0
    said = capsys.readouterr().out
    assert f"Cox EFS: {model}" in said
    assert "{" not in said and " patients, " in said, said  # was a raw JSON dict {"n_patients": ...}
    pooled = json.loads((tmp_path / "pooled" / "pooled.json").read_text())["results"]["pooled"]["cox"]["efs"]
    assert pooled["strata"] == strata and pooled["model"].startswith(model)
    assert len(cox) == 3
    for i, cov in enumerate(pooled["covariates"]):
        for key, col in (("coef", "coef"), ("se", "se"), ("p", "p_value")):
            # CSV text round trip of the central value: 1e-9 is far above its 17-digit repr.
            assert abs(pooled[key][i] - cox.loc[cov, col]) <= 1e-9, (strata, cov, key)


def test_the_two_models_differ(tables, tmp_path):
    """Otherwise the test above could not tell the options apart."""
    _, packages = tables
    coefs = {}
    for strata in ("none", "site"):
        assert main(["pool", *packages, "--out", str(tmp_path / strata), "--cox-strata", strata]) == 0
        coefs[strata] = json.loads((tmp_path / strata / "pooled.json").read_text())["results"]["pooled"]["cox"][
            "efs"]["coef"]
    assert max(abs(a - b) for a, b in zip(coefs["none"], coefs["site"], strict=True)) > 1e-3


@pytest.mark.parametrize("strata,said", [("none", "one baseline hazard (no strata)"),
                                         ("site", "baseline stratified by site_id")])
def test_the_report_says_which_cox_model_it_shows(tables, tmp_path, strata, said):
    out, _ = tables
    html = tmp_path / "report.html"
    assert main(["report", "--course", str(out / "course.parquet"), "--patient", str(out / "patient.parquet"),
                 "--out", str(html), "--cox-strata", strata]) == 0
    text = html.read_text()
    table4 = text[text.index("Table 4."):]
    assert said in table4[:4000]
