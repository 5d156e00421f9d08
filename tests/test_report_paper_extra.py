"""Report side of issue 12 point 3: the added analyses appear in the report and in the
published-vs-this-run table (one row each), KM plots carry a confidence band, and no figure is
called reproduced at n = 0, when not estimable, or when the paper gives no number."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from test_report import make_tables

from blina_study.analysis.plots import km_plot_png
from blina_study.analysis.published import PUBLISHED, PublishedFigure, published_by_key
from blina_study.analysis.report import RunFigure, _agreement, render_report, run_figures
from blina_study.analysis.survival import kaplan_meier
from blina_study.analysis.tables import analyze

NEW_KEYS = (
    "flow.chemo_delay_by_referral", "courses.pre_status.CR-MRDneg", "courses.per_patient", "baseline.age",
    "baseline.sex", "efs.pairwise", "os.pairwise", "followup.median", "cytokines.il6_peak",
    "cytokines.il10_peak", "cytokines.ifng_peak", "cytokines.tnfa_peak", "ae.crs", "ae.icans", "efs.event_types",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    course, patient = make_tables()
    course["crs_max_grade"] = None
    course["il6_peak"] = None
    course.loc[course.index[:3], "crs_max_grade"] = [1, 3, 2]
    course.loc[course.index[:2], "il6_peak"] = [12.0, 40.0]
    res = analyze(course, patient, by_center=True)
    out = tmp_path_factory.mktemp("rep") / "r.html"
    render_report(res, course=course, patient=patient, params={}, fingerprint={}, data_quality=None,
                  out_path=out, generated="2025-01-01 00:00 UTC")
    return res, out.read_text(encoding="utf-8")


def test_every_added_analysis_has_a_row_in_the_published_table(built):
    res, html = built
    keys = published_by_key()
    assert set(NEW_KEYS) <= set(keys)
    run = run_figures(res.pooled)
    assert set(NEW_KEYS) <= set(run), set(NEW_KEYS) - set(run)
    table9 = html.split("Table 9.")[1].split("</table>")[0]
    for key in NEW_KEYS:
        assert keys[key].label.replace("&", "&amp;") in table9 or keys[key].label in table9, key
    assert table9.count("no published value") == sum(not p.published for p in PUBLISHED)
    # The abstract's 74 CR-MRDneg courses is a published number; this cohort has its own count.
    assert keys["courses.pre_status.CR-MRDneg"].published
    n_pub = sum(p.published for p in PUBLISHED)
    assert re.search(rf"\d+ of {n_pub} published figures reproduced", html)
    # Courses 0 and 1 are the same patient's two courses (grades 1 and 3): worst grade 3 counts once.
    assert run["ae.crs"].text == "any 2/30 (G2 1, G3 1)"
    assert run["cytokines.il6_peak"].text == "26.0 (12.0-40.0)"


def test_report_shows_the_added_tables(built):
    _, html = built
    for caption in ("Table 1d. Indication by status", "Table 1e. Courses per patient",
                    "Table 1f. Baseline characteristics", "Table 7c. Pairwise log-rank",
                    "Table 7d. Median follow-up by reverse Kaplan-Meier",
                    "Table 7e. First EFS event by type", "Table 8b. CRS", "Table 8c. ICANS"):
        assert caption in html, caption
    assert "Adverse events: CRS and ICANS</h2>" in html
    assert "95% CI (log)" in html and "pointwise 95% confidence band, log" in html
    assert "all courses" in html.split("Table 6.")[1].split("</table>")[0]


def test_never_reproduced_at_n_0_not_estimable_or_unpublished():
    pub = PublishedFigure("x", "flow", "x", "0", k=0)
    assert not _agreement(pub, RunFigure("0", 0, "m"))[0]
    assert _agreement(pub, RunFigure("0", 5, "m"))[0]
    p = PublishedFigure("p", "cox", "p", "P = -", value=None)
    assert not _agreement(p, RunFigure("P = -", 30, "m"))[0]
    s = PublishedFigure("s", "efs", "s", "-")
    assert not _agreement(s, RunFigure("-", 4, "m"))[0]
    u = PublishedFigure("u", "ae", "u", "not published", published=False)
    assert not _agreement(u, RunFigure("not published", 10, "m"))[0]
    assert not _agreement(pub, None)[0]


def test_km_plot_draws_the_confidence_band():
    km = kaplan_meier([10, 40, 90, 200, 400, 500], [1, 1, 0, 1, 0, 0], label="R/R")
    with_band = km_plot_png({"R/R": km}, title="EFS", conf_type="log")
    without = km_plot_png({"R/R": km}, title="EFS", conf_type=None)
    loglog = km_plot_png({"R/R": km}, title="EFS", conf_type="log-log")
    assert with_band != without and with_band != loglog


def test_cli_analyze_offers_log_log_limits_and_states_the_transform(tmp_path):
    from blina_study.adapter.cli import main

    course, patient = make_tables()
    c, p = tmp_path / "course.csv", tmp_path / "patient.csv"
    course.to_csv(c, index=False)
    patient.to_csv(p, index=False)
    for ct in ("log", "log-log"):
        out = tmp_path / ct
        args = ["analyze", "--course", str(c), "--patient", str(p), "--out", str(out), "--no-by-center"]
        assert main(args + ([] if ct == "log" else ["--km-conf-type", ct])) == 0
        surv = pd.read_csv(out / "survival.csv")
        assert set(surv["conf_type"]) == {ct} and surv["ci_low"].notna().all()
        assert set(pd.read_csv(out / "km_curves.csv")["conf_type"]) == {ct}
    a = pd.read_csv(tmp_path / "log" / "survival.csv")["ci_low"]
    b = pd.read_csv(tmp_path / "log-log" / "survival.csv")["ci_low"]
    assert (a != b).any()
    html = tmp_path / "r.html"
    assert main(["report", "--course", str(c), "--patient", str(p), "--out", str(html), "--no-by-center",
                 "--km-conf-type", "log-log"]) == 0
    assert "95% CI (log-log)" in html.read_text(encoding="utf-8")


def test_pairwise_table_shows_no_statistic_when_a_pair_has_no_test(tmp_path):
    course, patient = make_tables()
    # No EFS events at all in two groups: their pairwise log-rank test is not computable.
    quiet = patient["status_at_referral"].isin(["CR-MRDneg", "CR-MRDpos"])
    patient.loc[quiet, ["efs_event", "efs_event_type"]] = [False, None]
    res = analyze(course, patient, by_center=False)
    pair = next(lr for lr in res.pooled.efs.pairwise if set(lr.groups) == {"CR-MRDneg", "CR-MRDpos"})
    assert pair.df == 0
    out = tmp_path / "r.html"
    render_report(res, course=course, patient=patient, params={}, fingerprint={}, data_quality=None,
                  out_path=out, generated="2025-01-01 00:00 UTC")
    table = out.read_text(encoding="utf-8").split("Table 7c.")[1].split("</table>")[0]
    row = re.search(r"<td>EFS</td><td>CR-MRDneg vs CR-MRDpos</td>(.*?)</tr>", table).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", row)[:2] == ["-", "-"]
