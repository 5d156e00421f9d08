"""The HTML study report and the ``blina analyze`` / ``blina report`` commands.

The fixture is a small hand-built cohort (two centers, 30 patients, three referral groups of 10, 9 and 11, events
in every group) written to follow the contract of protocol section 4, so each section of the
report has something to show, including a test that is not computable at one small center.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from blina_study.adapter.cli import main
from blina_study.analysis.plots import km_plot_png
from blina_study.analysis.published import PUBLISHED, published_by_key
from blina_study.analysis.report import render_report, run_figures
from blina_study.analysis.survival import kaplan_meier
from blina_study.analysis.tables import analyze

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Per patient: (site, status at referral, burden reduction, pre-status course 1, cr / mrd_maintained of
# course 1, n_courses, efs days, efs event type or None, os days, death, next therapy,
# poor cytogenetics, bcr_abl1, sex, age)
_PATIENTS: list[tuple] = [
    ("A", "R/R", False, "R/R", True, 2, 500, None, 500, False, "HSCT", False, False, "M", 6.0),
    ("A", "R/R", False, "R/R", False, 1, 0, "non_response", 200, True, "CAR-T", True, True, "F", 12.5),
    ("A", "R/R", True, "CR-MRDpos", True, 1, 420, None, 420, False, "HSCT", False, False, "M", 4.1),
    ("A", "R/R", True, "CR-MRDpos", False, 1, 150, "relapse", 390, False, "CAR-T", True, False, "F", 9.3),
    ("A", "R/R", True, "CR-MRDneg", True, 2, 610, None, 610, False, "protocol", False, False, "M", 3.2),
    ("A", "CR-MRDpos", False, "CR-MRDpos", True, 1, 380, None, 380, False, "HSCT", False, False, "F", 7.7),
    ("A", "CR-MRDpos", False, "CR-MRDpos", True, 2, 300, "relapse", 540, False, "protocol", False, True, "M", 11.0),
    ("A", "CR-MRDpos", False, "CR-MRDpos", False, 1, 90, "relapse", 700, False, "CAR-T", True, False, "F", 14.2),
    ("A", "CR-MRDpos", False, "CR-MRDpos", True, 1, 450, None, 450, False, "none", True, True, "M", 5.5),
    ("A", "CR-MRDneg", False, "CR-MRDneg", True, 2, 520, None, 520, False, "protocol", False, False, "F", 8.0),
    ("A", "CR-MRDneg", False, "CR-MRDneg", True, 1, 600, None, 600, False, "protocol", False, False, "M", 2.9),
    ("A", "CR-MRDneg", False, "CR-MRDneg", True, 1, 410, None, 410, False, "protocol", True, False, "F", 10.4),
    ("A", "CR-MRDneg", False, "CR-MRDneg", False, 1, 250, "death", 250, True, "none", False, False, "M", 6.6),
    ("A", "CR-MRDneg", False, "CR-MRDneg", True, 1, 480, None, 480, False, "protocol", False, False, "F", 13.1),
    ("A", "CR-MRDneg", False, "CR-MRDneg", True, 1, 395, None, 395, False, "HSCT", False, False, "M", 4.8),
    ("B", "R/R", False, "R/R", True, 1, 300, "relapse", 460, False, "HSCT", False, False, "F", 7.2),
    ("B", "R/R", False, "R/R", False, 1, 0, "non_response", 120, True, "none", True, True, "M", 15.0),
    ("B", "R/R", True, "CR-MRDpos", True, 1, 520, None, 520, False, "HSCT", False, False, "F", 3.9),
    ("B", "R/R", True, "R/R", True, 2, 390, None, 390, False, "CAR-T", False, False, "M", 9.9),
    ("B", "R/R", False, "R/R", True, 1, 200, "relapse", 330, True, "HSCT", True, False, "F", 16.0),
    ("B", "CR-MRDpos", False, "CR-MRDpos", True, 1, 480, None, 480, False, "protocol", False, False, "M", 5.1),
    ("B", "CR-MRDpos", False, "CR-MRDpos", True, 1, 430, None, 430, False, "HSCT", True, True, "F", 6.3),
    ("B", "CR-MRDpos", False, "CR-MRDpos", False, 2, 180, "relapse", 560, False, "HSCT", False, True, "M", 12.8),
    ("B", "CR-MRDpos", False, "CR-MRDpos", True, 1, 505, None, 505, False, "none", False, False, "F", 2.5),
    ("B", "CR-MRDpos", False, "CR-MRDpos", True, 1, 390, None, 390, False, "protocol", False, False, "M", 8.8),
    ("B", "CR-MRDneg", False, "CR-MRDneg", True, 1, 560, None, 560, False, "protocol", True, False, "F", 4.4),
    ("B", "CR-MRDneg", False, "CR-MRDneg", True, 2, 470, None, 470, False, "protocol", False, False, "M", 7.0),
    ("B", "CR-MRDneg", False, "CR-MRDneg", True, 1, 380, None, 380, False, "none", False, False, "F", 11.6),
    ("B", "CR-MRDneg", False, "CR-MRDneg", True, 1, 440, None, 440, False, "protocol", False, False, "M", 3.3),
    ("B", "CR-MRDneg", False, "CR-MRDneg", True, 1, 620, None, 620, False, "protocol", False, False, "F", 9.1),
]


def make_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(course, patient) following protocol section 4, from ``_PATIENTS``."""
    courses, patients = [], []
    for i, row in enumerate(_PATIENTS):
        (site, ref, br, pre1, resp1, n_c, efs_d, efs_type, os_d, death, nxt, poor, bcr, sex, age) = row
        pid = 1000 + i
        index = date(2022, 1, 3) + timedelta(days=7 * i)
        indication = "R/R" if ref == "R/R" else ("CR-MRDpos" if ref == "CR-MRDpos" and i % 2 else "chemo_delay")
        patients.append({
            "site_id": site, "person_id": pid, "person_source_value": f"MRN{pid}", "sex": sex,
            "age_at_index_years": age, "index_date": index, "n_courses": n_c, "indication": indication,
            "status_at_referral": ref, "burden_reduction": br, "poor_cytogenetics": poor, "bcr_abl1": bcr,
            "next_therapy": nxt, "last_followup": index + timedelta(days=os_d),
            "efs_event": efs_type is not None, "efs_event_type": efs_type, "efs_days": efs_d,
            "os_event": death, "os_days": os_d,
        })
        for k in range(1, n_c + 1):
            start = index + timedelta(days=42 * (k - 1))
            pre = pre1 if k == 1 else "CR-MRDneg"
            ok = resp1 if k == 1 else True
            active = pre in ("R/R", "CR-MRDpos")
            # T cells rise over the course for most patients (a few fall, so the test has both signs).
            base = 0.2 + 0.05 * (i % 9)
            rise = 1.6 if i % 5 else 0.7
            courses.append({
                "site_id": site, "person_id": pid, "person_source_value": f"MRN{pid}", "course_number": k,
                "course_start": start, "course_end": start + timedelta(days=27), "infusion_days": 28,
                "pre_status": pre,
                "pre_mrd": {"R/R": None, "CR-MRDpos": 2e-3 if i % 3 else 3e-4, "CR-MRDneg": 0.0}[pre],
                "pre_blasts_pct": 22.0 if pre == "R/R" else 1.0,
                "post_status": ("CR-MRDneg" if ok else ("R/R" if pre == "R/R" else "CR-MRDpos")),
                "post_mrd": 0.0 if ok else 1e-3,
                "cr": ok if active else None, "mrd_maintained": ok if pre == "CR-MRDneg" else None,
                "high_mrd": (True if pre == "R/R" else (i % 3 != 0)) if pre != "CR-MRDneg" else False,
                "cd19_loss": (not ok) if i % 4 else None,
                "cd3_pre": 3 * base, "cd3_post": 3 * base * rise,
                "cd4_pre": base, "cd4_post": base * rise + 0.01 * (i % 3),
                "cd8_pre": 1.2 * base, "cd8_post": 1.2 * base * rise,
                "il6_peak": 40.0 + 7 * (i % 6), "il10_peak": 15.0 + i % 4, "ifng_peak": 30.0 + 2 * (i % 5),
                "tnfa_peak": 8.0 + (i % 3), "crs_max_grade": 1 if i % 3 == 0 else None, "icans_max_grade": None,
            })
    return pd.DataFrame(courses), pd.DataFrame(patients)


class _Links(HTMLParser):
    """Collects every URL-bearing attribute and tag of the document."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for k, v in attrs:
            if k in ("src", "href", "action", "poster", "data") and v is not None:
                self.urls.append((tag, k, v))
            if tag == "img" and k == "src" and v:
                self.images.append(v)


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_tables()


@pytest.fixture(scope="module")
def results(tables):
    course, patient = tables
    return analyze(course, patient, by_center=True, parameters={"landmark_days": 365, "age_group_cut_years": 10})


@pytest.fixture(scope="module")
def report_html(tables, results, tmp_path_factory) -> str:
    course, patient = tables
    out = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    dq = {"resources_read": 1234, "rejected": 3,
          "quarantine": {"Observation": {"count": 2, "reason": "unit not convertible"}},
          "coverage": [{"variable": "mrd", "patients": 28, "pct": 93.3},
                       {"variable": "cd3_abs", "patients": 30, "pct": 100.0}]}
    path = render_report(
        results, course=course, patient=patient,
        params={"course_gap_days": 7, "landmark_days": 365},
        fingerprint={"study_definition": "abc123", "input": "def456"},
        data_quality=dq, out_path=out, generated="2025-01-01 00:00 UTC",
    )
    assert path == out and out.is_file()
    return out.read_text(encoding="utf-8")


def test_fixture_follows_the_contract(tables):
    course, patient = tables
    groups = patient["status_at_referral"].value_counts().to_dict()
    assert groups == {"R/R": 10, "CR-MRDpos": 9, "CR-MRDneg": 11}
    assert patient["efs_event"].groupby(patient["status_at_referral"]).sum().min() >= 1


def test_report_has_every_section(report_html):
    for heading in ("Patient flow", "Response", "Univariate predictors of poor response",
                    "Cox model for event-free survival", "T-cell subsets and cytokines",
                    "Kaplan-Meier survival by status at referral", "Next therapy", "Published vs this run",
                    "Per-center breakdown and pooled", "Data quality", "Notes, exclusions and warnings"):
        assert f"{heading}</h2>" in report_html, heading
    for caption in ("Table 1.", "Table 2.", "Table 3a.", "Table 4.", "Table 5.", "Table 6.", "Table 7a.",
                    "Table 7b.", "Table 8.", "Table 9.", "Table 10."):
        assert caption in report_html, caption
    # Run stamp: version, fingerprints, parameters, the computed digest.
    assert "blina-study 0." in report_html
    assert "abc123" in report_html and "def456" in report_html
    assert "course_gap_days = 7" in report_html
    assert re.search(r"Tables digest</b><span><code>[0-9a-f]{64}</code>", report_html)
    # Data quality: scalars, a mapping of records and a list of records all became tables.
    assert "resources_read" in report_html and "unit not convertible" in report_html
    assert "cd3_abs" in report_html


def test_report_is_self_contained_with_embedded_plots(report_html):
    parser = _Links()
    parser.feed(report_html)
    assert not {"script", "link", "iframe", "object", "embed"} & parser.tags
    for tag, attr, url in parser.urls:
        assert url.startswith(("#", "data:image/png;base64,")), (tag, attr, url[:60])
    # EFS + OS pooled, and EFS + OS for each of the two centers.
    assert len(parser.images) == 6
    for src in parser.images:
        png = base64.b64decode(src.removeprefix("data:image/png;base64,"))
        assert png.startswith(PNG_MAGIC)
    assert "url(" not in report_html and "@import" not in report_html


def test_report_states_method_and_n_for_each_statistic(report_html, results):
    captions = re.findall(r"<caption>(.*?)</caption>", report_html)
    stats_tables = [c for c in captions if c.startswith("Table")]
    assert len(stats_tables) >= 12
    for c in stats_tables:
        assert re.search(r"\(n = \d+|: n = \d+|\[n=\]", c), c
    notes = re.findall(r'<p class="note">(.*?)</p>', report_html)
    assert sum(n.startswith("Method:") for n in notes) >= 10
    for word in ("Fisher&#x27;s exact test", "Wilcoxon signed-rank", "Cox proportional hazards",
                 "Kaplan-Meier", "log-rank", "Greenwood"):
        assert word in report_html, word
    # The pooled numbers in the report are those of the results.
    c1 = results.pooled.response[0]
    rr = next(r for r in c1.rates if r.group == "R/R")
    assert rr.rate.format() in report_html
    assert results.pooled.efs.groups[0].text in report_html


def test_no_person_identifiers_in_the_report(report_html, tables):
    course, patient = tables
    for mrn in patient["person_source_value"]:
        assert mrn not in report_html


def test_published_comparison_covers_every_figure(results):
    run = run_figures(results.pooled)
    assert set(published_by_key()) <= set(run), set(published_by_key()) - set(run)
    # Counts of this cohort: 10 R/R at referral, 5 of them with burden reduction.
    assert run["flow.referral.R/R"].text == "10"
    assert run["flow.rr.burden_reduction"].text == "5"
    assert run["flow.rr.direct"].text == "5"
    for key, fig in run.items():
        assert fig.method, key


def test_published_figures_match_the_protocol():
    pub = published_by_key()
    assert len(pub) == len(PUBLISHED)
    assert pub["response.cr.R/R"].text == "81.8% (9/11)"
    assert pub["response.fisher_p"].text == "P = 1.000"
    assert pub["efs.1y.CR-MRDneg"].text == "97.8% ± 2.2%"
    assert pub["os.1y.CR-MRDpos"].text == "100%"
    assert pub["tcells.cd3.post"].text == "1.13 (0.26-7.74)"


def test_km_plot_png_handles_an_empty_group():
    km = kaplan_meier([10, 200, 400, 500], [1, 0, 1, 0], label="R/R")
    empty = kaplan_meier([], [], label="CR-MRDpos")
    png = km_plot_png({"R/R": km, "CR-MRDpos": empty}, title="EFS", annotation="Log-rank P = -")
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


@pytest.fixture
def table_files(tables, tmp_path) -> tuple[Path, Path]:
    course, patient = tables
    c, p = tmp_path / "course.csv", tmp_path / "patient.parquet"
    course.to_csv(c, index=False)
    patient.to_parquet(p, index=False)
    return c, p


def test_cli_analyze_writes_tidy_files(table_files, tmp_path, capsys):
    c, p = table_files
    out = tmp_path / "results"
    assert main(["analyze", "--course", str(c), "--patient", str(p), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {"response", "survival", "cox", "flow"} <= set(doc["tables"])
    assert (out / "response.csv").is_file()
    printed = capsys.readouterr().out
    assert "30 patients" in printed and "results.json" in printed


def test_cli_report_with_run_info_and_data_quality(table_files, tmp_path, capsys):
    c, p = table_files
    run_info = tmp_path / "run-info.json"
    run_info.write_text(json.dumps({"params": {"course_gap_days": 9, "landmark_days": 365},
                                    "fingerprint": {"study_definition": "f00d", "input": "beef"}}))
    dq = tmp_path / "dq.json"
    dq.write_text(json.dumps({"rejected": 4, "coverage": {"mrd": {"patients": 29}}}))
    out = tmp_path / "r" / "report.html"
    rc = main(["report", "--course", str(c), "--patient", str(p), "--out", str(out),
               "--run-info", str(run_info), "--data-quality", str(dq)])
    assert rc == 0
    text = out.read_text(encoding="utf-8")
    assert "course_gap_days = 9" in text and "f00d" in text and "Data quality</h2>" in text
    assert str(out) in capsys.readouterr().out


def test_cli_report_without_run_info_says_so(table_files, tmp_path):
    c, p = table_files
    out = tmp_path / "report.html"
    assert main(["report", "--course", str(c), "--patient", str(p), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "no --run-info" in text
    assert "Data quality</h2>" not in text


def test_cli_report_bad_run_info_is_one_line_error(table_files, tmp_path, capsys):
    c, p = table_files
    bad = tmp_path / "run-info.json"
    bad.write_text("{not json")
    rc = main(["report", "--course", str(c), "--patient", str(p), "--out", str(tmp_path / "r.html"),
               "--run-info", str(bad)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "run-info.json" in err and "hint" in err


def test_cli_analyze_bad_table_names_the_file(tmp_path, capsys):
    c = tmp_path / "course.csv"
    c.write_text("site_id,person_id\nA,1\n")
    p = tmp_path / "patient.csv"
    p.write_text("site_id\nA\n")
    rc = main(["analyze", "--course", str(c), "--patient", str(p), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "course.csv" in capsys.readouterr().err


def test_report_survives_a_center_with_quasi_separated_cox_fit(tmp_path):
    course, patient = make_tables()
    # Center A: every BCR-ABL1 and every poor-cytogenetics patient has an event (quasi-separation).
    for row in (8, 11):
        patient.loc[row, ["poor_cytogenetics", "bcr_abl1"]] = [False, False]
    results = analyze(course, patient, by_center=True)
    out = render_report(results, course=course, patient=patient, params={}, fingerprint={},
                        data_quality=None, out_path=tmp_path / "r.html")
    assert out.is_file()


def test_cli_report_pooled_only(table_files, tmp_path, capsys):
    c, p = table_files
    out = tmp_path / "pooled.html"
    assert main(["report", "--course", str(c), "--patient", str(p), "--out", str(out), "--no-by-center"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "Per-center breakdown not computed" in text and "2 center(s)" in text
    assert text.count("data:image/png;base64,") == 2
    assert "pooled only" in capsys.readouterr().out


@pytest.mark.slow
def test_report_on_synthetic_truth_reproduces_the_abstract(tmp_path):
    """The 105-patient synthetic cohort (``blina synth``) is designed to the abstract's figures: the
    report must show the flow counts and the response figures as published."""
    assert main(["synth", "--out", str(tmp_path / "syn")]) == 0
    tables = {}
    for name in ("course", "patient"):
        df = pd.read_csv(tmp_path / "syn" / "truth" / f"{name}.csv", dtype=str)
        # FHIR centers' truth leaves person_id to the adapter; number those patients here.
        ids = {v: str(10_000 + i) for i, v in enumerate(sorted(df["person_source_value"].unique()))}
        df["person_id"] = df["person_id"].fillna(df["person_source_value"].map(ids))
        tables[name] = tmp_path / f"{name}.csv"
        df.to_csv(tables[name], index=False)
    out = tmp_path / "report.html"
    assert main(["report", "--course", str(tables["course"]), "--patient", str(tables["patient"]),
                 "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    course = pd.read_csv(tables["course"], dtype=str)
    patient = pd.read_csv(tables["patient"], dtype=str)
    run = run_figures(analyze(course, patient, by_center=False).pooled)
    for key in ("flow.indication.R/R", "flow.indication.CR-MRDpos", "flow.indication.chemo_delay",
                "flow.referral.R/R", "flow.referral.CR-MRDpos", "flow.referral.CR-MRDneg",
                "flow.precourse.R/R", "flow.precourse.CR-MRDpos", "flow.precourse.CR-MRDneg",
                "flow.rr.direct", "flow.rr.burden_reduction", "response.cr.R/R", "response.cr.CR-MRDpos",
                "response.fisher_p", "response.mrd_maintained"):
        assert run[key].text == published_by_key()[key].text, key
    for shown in ("81.8% (9/11)", "82.5% (33/40)", "P = 1.000", "98.6% (73/74)"):
        assert shown in text, shown


def test_cli_report_reports_a_diverging_center_cox_as_not_estimable(tmp_path):
    course, patient = make_tables()
    for row in (8, 11):  # center A: every BCR-ABL1 / poor-cytogenetics patient has an event
        patient.loc[row, ["poor_cytogenetics", "bcr_abl1"]] = [False, False]
    c, p = tmp_path / "course.csv", tmp_path / "patient.csv"
    course.to_csv(c, index=False)
    patient.to_csv(p, index=False)
    out = tmp_path / "r.html"
    assert main(["report", "--course", str(c), "--patient", str(p), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "not estimated" in text or "no model" in text
