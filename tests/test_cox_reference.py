"""Cox PH against R's coxph on the reference suite tests/fixtures/r_cox (41 cohorts x Efron/Breslow).

The cohorts (make_cohorts.py) and R's values (cox_reference.R -> reference.json, the R call in each
block) are committed; R is not needed here. Three paths are checked to 1e-6 (relative, absolute
below 1): the fitter ``blina_study.analysis.cox.cox_fit``; the report's path (``cox_ph`` on a DataFrame: the
``CoxResult`` that analysis/report.py renders); the tidy output's path (``cox_tidy_rows`` ->
``cox.csv`` as ``write_results`` writes it). The demo cohort goes the whole way: its course and
patient CSVs through ``read_course`` / ``read_patient`` and ``analyze_tables`` (the function both
``blina analyze`` and ``blina report`` call), pooled and per centre.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blina_study.adapter.commands.report import analyze_tables
from blina_study.analysis.cox import cox_fit
from blina_study.analysis.io import read_course, read_patient, write_results
from blina_study.analysis.report import render_report
from blina_study.analysis.survival import CoxResult, cox_ph
from blina_study.analysis.tables import COX_COVARIATES, cox_tidy_rows

HERE = Path(__file__).parent / "fixtures" / "r_cox"
REF = json.loads((HERE / "reference.json").read_text())["cohorts"]
TOL = 1e-6
CASES = [(name, ties) for name in REF for ties in ("efron", "breslow")]


def _num(v: object) -> float:
    return math.nan if v is None else float(v)


def _close(ours: object, theirs: object, what: str) -> None:
    a = np.atleast_1d(np.asarray(ours, dtype=float))
    b = np.atleast_1d(np.asarray([_num(v) for v in np.atleast_1d(np.asarray(theirs, dtype=object))]))
    assert a.shape == b.shape, f"{what}: {a} vs R {b}"
    assert (np.isnan(a) == np.isnan(b)).all(), f"{what}: {a} vs R {b} (NA differs)"
    ok = ~np.isnan(a)
    err = np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(b[ok]))
    assert (err <= TOL).all(), f"{what}: {a} vs R {b} (max error {err.max():.3g})"


def _demo_frame() -> pd.DataFrame:
    """The Cox data set of cox_efs built here independently (R builds it itself the same way)."""
    course = pd.read_csv(HERE / "demo" / "course.csv", dtype=str, keep_default_na=False)
    patient = pd.read_csv(HERE / "demo" / "patient.csv", dtype=str, keep_default_na=False)
    c1 = course[course["course_number"] == "1"][["site_id", "person_id", "high_mrd"]]
    d = patient[["site_id", "person_id", "efs_days", "efs_event", "bcr_abl1", "poor_cytogenetics"]]
    d = d.merge(c1, on=["site_id", "person_id"], how="left").fillna("")
    flags = ["efs_event", *COX_COVARIATES]
    d = d[(d[[*flags, "efs_days"]] != "").all(axis=1)]
    out = pd.DataFrame({"time": d["efs_days"].astype(float).to_numpy()})
    out["event"] = d["efs_event"].map({"True": 1, "False": 0}).to_numpy()
    for c in COX_COVARIATES:
        out[c] = d[c].map({"True": 1, "False": 0}).to_numpy()
    out["site_id"] = d["site_id"].to_numpy()
    return out


def _cohort(name: str) -> tuple[pd.DataFrame, list[str], str | None]:
    b = REF[name]
    d = _demo_frame() if b["file"] == "demo" else pd.read_csv(HERE / b["file"])
    if b["site"]:
        d = d[d["site_id"] == b["site"]].reset_index(drop=True)
    assert len(d) == b["n_rows"], f"{name}: {len(d)} rows, R read {b['n_rows']}"
    return d, list(b["covariates"]), b["strata"] or None


def _r_vars(warning: str) -> list[int]:
    m = re.match(r"Loglik converged before variable\s+([\d,]+)", warning)
    return [int(i) for i in m.group(1).split(",")] if m else []


def test_suite_covers_the_issue():
    """>= 30 cohorts; sizes 20..2,000; 1-4 covariates; ties; strata incl. one without events;
    quasi- and complete separation; the demo pooled and one centre alone."""
    assert len(REF) >= 30
    sizes = [b["n_rows"] for b in REF.values()]
    assert min(sizes) == 20 and max(sizes) == 2000
    assert {len(b["covariates"]) for b in REF.values()} == {1, 2, 3, 4}
    assert any(b["site"] for b in REF.values()) and "demo_pooled" in REF
    empty = pd.read_csv(HERE / REF["strata_empty"]["file"])
    assert empty.groupby("stratum")["event"].sum().min() == 0
    warned = [n for n, b in REF.items() if any(_r_vars(w) for w in b["efron"]["warnings"])]
    assert {"sep_quasi_binary", "sep_quasi_negative", "sep_complete_strata"} <= set(warned)
    assert REF["sep_complete_continuous"]["efron"]["warnings"][0].startswith("Ran out of iterations")
    # ties matter somewhere: Efron and Breslow differ on the tied cohorts
    assert REF["ties_grid6"]["efron"]["coef"] != REF["ties_grid6"]["breslow"]["coef"]


@pytest.mark.parametrize(("name", "ties"), CASES)
def test_cox_fit_equals_r(name, ties):
    d, covs, strata = _cohort(name)
    r = REF[name][ties]
    f = cox_fit(d["time"], d["event"], d[covs].to_numpy(dtype=float), names=covs,
                strata=d[strata] if strata else None, ties=ties)
    _close(f.coef, r["coef"], "coef")
    _close(f.se, r["se"], "se")
    _close(f.p, r["p"], "P (Wald)")
    _close([f.loglik_null, f.loglik], r["loglik"], "loglik")
    for ours, theirs, what in ((f.lr_test, r["lr_test"], "LR"), (f.wald_test, r["wald_test"], "Wald"),
                               (f.score_test, r["score_test"], "score")):
        _close(ours, theirs, what + " test")
    assert f.iterations == r["iter"]
    assert f.n_events == r["nevent"]
    # R's warnings, and ours name the variable
    assert f.converged == (not any(w.startswith("Ran out") for w in r["warnings"]))
    r_inf = [i for w in r["warnings"] for i in _r_vars(w)]
    if r_inf:
        assert f.infinite == tuple(covs[i - 1] for i in r_inf)
        assert any(all(c in w for c in f.infinite) and "may be infinite" in w for w in f.warnings)
    for w in r["warnings"]:
        key = "Loglik converged before variable" if _r_vars(w) else w.strip()
        assert any(key in ours for ours in f.warnings), (w, f.warnings)
    if not f.converged:  # R names no variable here; we do
        assert f.infinite and any(f"({', '.join(f.infinite)})" in w for w in f.warnings)


def _expect_result(cx: CoxResult, name: str, ties: str, covs: list[str]) -> None:
    r = REF[name][ties]
    if any(w.startswith("Ran out") for w in r["warnings"]):
        assert not cx.estimated and not cx.terms
        assert any("did not converge in 20 iterations" in m for m in cx.messages)
        assert any("Ran out of iterations and did not converge" in m for m in cx.messages)
        return
    assert cx.estimated
    terms = {t.covariate: t for t in cx.terms}
    dropped = dict(cx.dropped)
    for i, c in enumerate(covs):
        if r["coef"][i] is None and c in dropped:  # constant covariate: R's NA, dropped by us
            assert dropped[c].startswith("constant")
            continue
        t = terms[c]
        _close([t.coef, t.se, t.p_value, t.hr], [r["coef"][i], r["se"][i], r["p"][i],
               None if r["coef"][i] is None else math.exp(r["coef"][i])], f"{c} coef/se/P/HR")
    _close([cx.loglik_null, cx.loglik], r["loglik"], "loglik")
    _close([cx.lr_chisq, cx.lr_df, cx.lr_p_value], r["lr_test"], "LR test")
    assert cx.n_events == r["nevent"] and cx.ties == ties
    r_inf = [covs[i - 1] for w in r["warnings"] for i in _r_vars(w)]
    assert list(cx.infinite) == r_inf
    for c in r_inf:  # the reader is told, by name
        assert any(c in m and "infinite" in m for m in cx.messages)


def _tidy_frame(cx: CoxResult, tmp_path: Path) -> pd.DataFrame:
    """cox_tidy_rows through CSV exactly as write_results writes cox.csv."""
    from blina_study.analysis.tables import _TIDY_TABLES

    frame = pd.DataFrame(cox_tidy_rows(cx, "pooled", "EFS"), columns=_TIDY_TABLES["cox"])
    frame.to_csv(tmp_path / "cox.csv", index=False)
    return pd.read_csv(tmp_path / "cox.csv", keep_default_na=False, na_values=[""])


def _expect_tidy(tidy: pd.DataFrame, name: str, ties: str, covs: list[str]) -> None:
    r = REF[name][ties]
    if any(w.startswith("Ran out") for w in r["warnings"]):
        assert list(tidy["status"]) == ["no model"]
        assert "did not converge" in tidy["reason"].iloc[0]
        return
    rows = tidy.set_index("covariate")
    for i, c in enumerate(covs):
        row = rows.loc[c]
        if r["coef"][i] is None:
            assert row["status"] in ("dropped", "not estimable")
            continue
        assert row["status"] == "estimated"
        _close([row["coef"], row["se"], row["p_value"]], [r["coef"][i], r["se"][i], r["p"][i]], c)
    for col in ("loglik_null", "loglik"):
        assert tidy[col].nunique() == 1
    _close([tidy["loglik_null"].iloc[0], tidy["loglik"].iloc[0]], r["loglik"], "loglik")
    _close(tidy[["lr_chisq", "lr_df", "lr_p_value"]].iloc[0].to_numpy(dtype=float), r["lr_test"], "LR")
    assert (tidy["ties"] == ties).all()


@pytest.mark.parametrize(("name", "ties"), CASES)
def test_report_and_tidy_paths_equal_r(name, ties, tmp_path):
    d, covs, strata = _cohort(name)
    if REF[name]["file"] == "demo":  # as the tables arrive: nullable booleans
        d = d.astype({c: "boolean" for c in ["event", *covs]})
    cx = cox_ph(d, "time", "event", covs, strata=strata, ties=ties)
    _expect_result(cx, name, ties, covs)
    _expect_tidy(_tidy_frame(cx, tmp_path), name, ties, covs)


@pytest.fixture(scope="module")
def demo_results():
    course = read_course(HERE / "demo" / "course.csv")
    patient = read_patient(HERE / "demo" / "patient.csv")
    params: dict = {}
    return course, patient, analyze_tables(course, patient, by_center=True, params=params)


def test_demo_cohort_end_to_end_equals_r(demo_results, tmp_path):
    """The demo's course/patient tables through analyze_tables: the pooled model and each centre
    alone, on the report's path (SiteResults.cox_efs) and in the written cox.csv / results.json."""
    _, _, results = demo_results
    covs = list(COX_COVARIATES)
    scopes = {"pooled": results.pooled, **results.by_site}
    assert set(scopes) == {"pooled", "center1", "center2", "center3", "center4"}
    write_results(results, tmp_path)
    cox_csv = pd.read_csv(tmp_path / "cox.csv", keep_default_na=False, na_values=[""])
    doc = json.loads((tmp_path / "results.json").read_text())
    cox_json = pd.DataFrame(doc["tables"]["cox"])
    for scope, site in scopes.items():
        name = "demo_pooled" if scope == "pooled" else f"demo_{scope}"
        _expect_result(site.cox_efs, name, "efron", covs)
        _expect_tidy(cox_csv[cox_csv["scope"] == scope], name, "efron", covs)
        _expect_tidy(cox_json[cox_json["scope"] == scope].fillna(value=np.nan), name, "efron", covs)
    # the pooled model is estimated, as R estimates it (issue 12: HR 5.66, 1.58, 25.3)
    hr = {t.covariate: round(t.hr, 2) for t in results.pooled.cox_efs.terms}
    assert hr == {"high_mrd": 5.66, "bcr_abl1": 1.58, "poor_cytogenetics": 25.25}


def test_demo_report_tables_show_the_model_without_error_text(demo_results, tmp_path):
    course, patient, results = demo_results
    out = render_report(results, course=course, patient=patient, params={}, fingerprint={},
                        data_quality=None, out_path=tmp_path / "report.html")
    html = out.read_text()
    table4 = html[html.index("Table 4. Cox"):]
    table4 = table4[: table4.index("</table>")]
    for cov in COX_COVARIATES:
        assert f"<td>{cov}</td><td>estimated" in table4.replace("\n", "")
    for bad in ("Error", "error:", "Traceback", "nan", "delta contains"):
        assert bad not in table4
    assert "ConvergenceError" not in html and "Traceback" not in html


def test_zero_log_likelihood_is_not_a_crash():
    # Every event alone in its risk set: the log partial likelihood is exactly 0 at every beta.
    # R 4.2.2 / survival 3.5-3:
    #   d <- data.frame(t = c(1, 2, 3, 4), e = c(0, 0, 0, 1), x = c(0, 1, 0, 1))
    #   f <- coxph(Surv(t, e) ~ x, data = d)  # "Ran out of iterations and did not converge"
    #   f$coefficients 0; f$loglik c(0, 0); f$iter 21; f$var 0
    fit = cox_fit(np.array([1.0, 2, 3, 4]), np.array([0.0, 0, 0, 1]), np.array([[0.0], [1], [0], [1]]))
    assert fit.coef.tolist() == [0.0]
    assert (fit.loglik_null, fit.loglik) == (0.0, 0.0)
    assert fit.iterations == 21
    assert not fit.converged
    assert fit.var.tolist() == [[0.0]]
