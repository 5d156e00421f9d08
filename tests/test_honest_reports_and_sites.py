"""Issue 12 points 4 and 5: a report says when its data are synthetic (the data carry the fact:
CDM_SOURCE from ``blina synth`` / the FHIR HTEST tag through ``blina ingest``, into extract.json), the
files ``report --help`` names exist after the commands it names, and ``analyze``/``report`` combine
several sites' extracts by site_id, refusing a site id given twice."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from blina_study.adapter.cli import main
from blina_study.adapter.resources import mappings_dir


def _common(url: str, schema: str) -> list[str]:
    return ["--db", url, "--cdm-schema", schema, "--vocab-schema", "vocab"]


def _extract_omop(url: str, folder: Path, site: str, out: Path, *extra: str) -> Path:
    common = _common(url, site)
    assert main(["init-db", *common]) == 0
    assert main(["load-omop", str(folder), *common]) == 0
    overlay = ["--overlay", str(mappings_dir() / "sites" / "center4.yaml")] if site == "center4" else []
    assert main(["extract", *common, "--site-id", site, *overlay, "--out", str(out), *extra]) == 0
    return out


def _head(html_path: Path) -> str:
    """The title block and "At a glance" (everything before the table of contents)."""
    html = html_path.read_text()
    return html[: html.index('<nav class="toc">')]


def _glance_published(head: str) -> str:
    return re.search(r"Published figures</b><span>([^<]*)", head).group(1)


@pytest.fixture(scope="module")
def extracts(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """center3 and center4 (OMOP CSV) extracted on DuckDB."""
    base = tmp_path_factory.mktemp("extracts")
    url = str(base / "sites.duckdb")
    return {s: _extract_omop(url, synth_dir / f"{s}_omop_{kind}", s, base / s)
            for s, kind in (("center3", "standard"), ("center4", "local"))}


# ------------------------------------------------------------------------------------------------
# point 4: honest reports


def test_synthetic_data_say_so_on_both_routes(engine_url: str, synth_dir: Path, tmp_path: Path, capsys) -> None:
    """OMOP (CDM_SOURCE written by blina synth) and FHIR (HTEST meta.tag, recorded by blina ingest in
    CDM_SOURCE) both reach extract.json, and the report's title block and "At a glance" say synthetic."""
    out3 = _extract_omop(engine_url, synth_dir / "center3_omop_standard", "center3", tmp_path / "c3")
    common = _common(engine_url, "center1")
    assert main(["init-db", *common]) == 0
    assert main(["ingest", str(synth_dir / "center1_fhir_bundles"), "--site", "center1", *common]) == 0
    out1 = tmp_path / "c1"
    assert main(["extract", *common, "--site-id", "center1", "--out", str(out1)]) == 0
    for out, evidence in ((out3, "blina synth"), (out1, "30 of 30 Patients")):
        src = json.loads((out / "extract.json").read_text())["data_source"]
        assert src["synthetic"] is True and re.search("SYNTHETIC DATA|HTEST", src["evidence"]), src
        assert evidence in json.dumps(src["cdm_source"])
    capsys.readouterr()
    assert main(["report", str(out3), str(out1), "--out", str(tmp_path / "r.html")]) == 0
    assert "data: SYNTHETIC DATA: center1, center3" in capsys.readouterr().out
    head = _head(tmp_path / "r.html")
    assert "<h1>SYNTHETIC DATA: " in head and '<p class="synthetic">SYNTHETIC DATA: center1, center3' in head
    assert "SYNTHETIC" in _glance_published(head)
    assert main(["analyze", str(out3), str(out1), "--out", str(tmp_path / "a")]) == 0
    settings = pd.read_csv(tmp_path / "a" / "settings.csv").set_index("key")["value"]
    assert settings["data_source"].startswith("SYNTHETIC DATA: center1, center3")


def test_a_hospital_cdm_source_is_not_called_synthetic(synth_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "hospital"
    shutil.copytree(synth_dir / "center3_omop_standard", folder)
    text = (folder / "cdm_source.csv").read_text().splitlines()
    cols = text[0].split(",")
    row = dict(zip(cols, text[1].split(","), strict=True))
    row.update(cdm_source_name="St Example Hospital OMOP", cdm_source_abbreviation="STEX",
               cdm_holder="St Example", source_description="EHR extract 2015-2024", cdm_etl_reference="in-house ETL")
    (folder / "cdm_source.csv").write_text(text[0] + "\n" + ",".join(row[c] for c in cols) + "\n")
    url = str(tmp_path / "h.duckdb")
    out = _extract_omop(url, folder, "center3", tmp_path / "out")
    src = json.loads((out / "extract.json").read_text())["data_source"]
    assert src["synthetic"] is False and "St Example Hospital OMOP" in src["evidence"]
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    head = _head(tmp_path / "r.html")
    assert "SYNTHETIC" not in head and "St Example Hospital OMOP" in head
    assert "reproduced as printed" in _glance_published(head)

    # no CDM_SOURCE at all: nothing is known, and the report says so rather than guessing
    (folder / "cdm_source.csv").unlink()
    out2 = _extract_omop(str(tmp_path / "h2.duckdb"), folder, "center3", tmp_path / "out2")
    assert json.loads((out2 / "extract.json").read_text())["data_source"]["synthetic"] is None
    assert main(["report", str(out2), "--out", str(tmp_path / "r2.html")]) == 0
    head = _head(tmp_path / "r2.html")
    assert "SYNTHETIC" not in head and "not recorded for center3" in head


@pytest.mark.parametrize("command", ["report", "analyze"])
def test_every_file_the_help_names_is_written_by_the_commands_it_names(
    command: str, synth_dir: Path, tmp_path: Path, capsys
) -> None:
    """report --help pointed at run-info.json and data-quality.json, which no command writes."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = capsys.readouterr().out
    named = set(re.findall(r"[\w.-]+\.json", help_text))
    assert "run-info.json" not in named and "data-quality.json" not in named
    # the examples name extract folders (extract.json inside) and the --report file of ingest
    common = _common(str(tmp_path / "c1.duckdb"), "cdm")
    assert main(["init-db", *common]) == 0
    written = {"extract.json": tmp_path / "out" / "c1" / "extract.json",
               "results.json": tmp_path / "results" / "results.json"}
    reports = named - set(written)
    assert len(reports) <= 1
    for name in reports:  # named as the file 'blina ingest --report NAME' writes
        assert re.search(rf"blina ingest [^']*--report {re.escape(name)}", help_text), name
        written[name] = tmp_path / name
    assert main(["ingest", str(synth_dir / "center1_fhir_bundles"), "--site", "c1", *common,
                 "--report", str(tmp_path / (next(iter(reports)) if reports else "ingest.json"))]) == 0
    assert main(["extract", *common, "--site-id", "c1", "--out", str(tmp_path / "out" / "c1")]) == 0
    assert main(["analyze", str(tmp_path / "out" / "c1"), "--out", str(tmp_path / "results")]) == 0
    if command == "report":  # the documented example runs as written
        assert main(["report", str(tmp_path / "out" / "c1"), "--out", str(tmp_path / "r.html"),
                     *[a for n in reports for a in ("--data-quality", str(written[n]))]]) == 0
    for name in named:
        assert written[name].is_file(), name


# ------------------------------------------------------------------------------------------------
# point 5: combining sites


def test_several_pairs_and_folders_are_combined_by_site(extracts: dict[str, Path], tmp_path: Path) -> None:
    c3, c4 = extracts["center3"], extracts["center4"]
    n3 = len(pd.read_parquet(c3 / "patient.parquet"))
    n4 = len(pd.read_parquet(c4 / "patient.parquet"))
    pairs = ["--course", str(c3 / "course.csv"), "--patient", str(c3 / "patient.csv"),
             "--course", str(c4 / "course.parquet"), "--patient", str(c4 / "patient.parquet")]
    assert main(["analyze", *pairs, "--out", str(tmp_path / "a")]) == 0   # was: center4 only, silently
    flow = pd.read_csv(tmp_path / "a" / "flow.csv")
    n = flow[flow["view"] == "indication"].groupby("scope")["n"].sum().to_dict()
    assert n == {"pooled": n3 + n4, "center3": n3, "center4": n4}
    # extract folders give the same results as the pairs
    assert main(["analyze", str(c3), str(c4), "--out", str(tmp_path / "b")]) == 0
    for name in ("flow", "response", "tcells", "survival_tests"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / f"{name}.csv"),
                                      pd.read_csv(tmp_path / "b" / f"{name}.csv"))
    assert main(["report", str(c3), str(c4), "--out", str(tmp_path / "r.html")]) == 0
    head = _head(tmp_path / "r.html")
    assert f"{n3 + n4} patients" in head and "center(s)" in head


@pytest.mark.parametrize("argv_tail, rc, message", [
    (lambda c3, c4: [str(c3), str(c3)], 2, "site id 'center3' is in two inputs"),
    (lambda c3, c4: [str(c3), "--course", str(c3 / "course.csv"), "--patient", str(c3 / "patient.csv")], 2,
     "site id 'center3' is in two inputs"),
    (lambda c3, c4: ["--course", str(c3 / "course.csv"), "--course", str(c4 / "course.csv"),
                     "--patient", str(c4 / "patient.csv")], 2, "2 --course but 1 --patient"),
    (lambda c3, c4: ["--course", str(c3 / "course.csv"), "--patient", str(c4 / "patient.csv")], 2,
     "are not in"),
    (lambda c3, c4: [], 2, "no study tables given"),
])
@pytest.mark.parametrize("command", ["analyze", "report"])
def test_bad_combinations_are_refused(extracts: dict[str, Path], tmp_path: Path, capsys, command, argv_tail,
                                      rc, message) -> None:
    out = tmp_path / ("r.html" if command == "report" else "a")
    assert main([command, *argv_tail(extracts["center3"], extracts["center4"]), "--out", str(out)]) == rc
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_sites_derived_with_different_parameters_are_refused(extracts: dict[str, Path], synth_dir: Path,
                                                              tmp_path: Path, capsys) -> None:
    other = _extract_omop(str(tmp_path / "x.duckdb"), synth_dir / "center4_omop_local", "center4",
                          tmp_path / "c4", "--param", "course_gap_days=10")
    assert main(["analyze", str(extracts["center3"]), str(other), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "different study parameters" in err and "re-extract" in err
    assert not (tmp_path / "a").exists()


def test_one_empty_site_among_several_is_a_finding(extracts: dict[str, Path], tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("course", "patient"):
        frame = pd.read_csv(extracts["center3"] / f"{name}.csv").iloc[0:0]
        frame.to_csv(empty / f"{name}.csv", index=False)
    assert main(["report", str(extracts["center4"]), str(empty), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "nothing to analyse" in err and str(empty / "patient.csv") in err


def test_site_packages_and_the_pooled_report_say_synthetic(extracts: dict[str, Path], tmp_path: Path) -> None:
    """A site package carries only a boolean (no CDM_SOURCE text, which may hold dates); the pooled
    report's title block says synthetic when a package says so, and not when none does."""
    import zipfile

    for share in ("exact", "aggregate"):
        packages = []
        for site, folder in extracts.items():
            pkg = tmp_path / f"{share}-{site}.zip"
            assert main(["site-run", "--course", str(folder / "course.parquet"), "--patient",
                         str(folder / "patient.parquet"), "--site-id", site, "--share", share,
                         "--out", str(pkg)]) == 0
            with zipfile.ZipFile(pkg) as zf:
                assert json.loads(zf.read("manifest.json"))["synthetic_data"] is True
            packages.append(str(pkg))
        assert main(["pool", *packages, "--out", str(tmp_path / share)]) == 0
        html = (tmp_path / share / "pooled.html").read_text()
        head = html[: html.index("</h1>") + 400]
        assert "<h1>SYNTHETIC DATA: " in head and "the packages of center3, center4 were built from generated" in head
        if share == "exact":
            assert "reproduced as printed (section 9), from SYNTHETIC data" in _head(tmp_path / share / "pooled.html")
            assert "published figures reproduced as printed, from SYNTHETIC data" in html  # Table 9 caption too

    # the same tables without extract.json: nothing recorded, nothing claimed
    plain = []
    for site, folder in extracts.items():
        bare = tmp_path / f"bare-{site}"
        bare.mkdir()
        for name in ("course.parquet", "patient.parquet"):
            shutil.copy(folder / name, bare / name)
        pkg = tmp_path / f"bare-{site}.zip"
        assert main(["site-run", "--course", str(bare / "course.parquet"), "--patient",
                     str(bare / "patient.parquet"), "--site-id", site, "--out", str(pkg)]) == 0
        plain.append(str(pkg))
    assert main(["pool", *plain, "--out", str(tmp_path / "plain")]) == 0
    assert "SYNTHETIC" not in (tmp_path / "plain" / "pooled.html").read_text()


def test_a_real_synthetic_cdm_is_recognised(shared_dir: Path, tmp_path: Path) -> None:
    """OHDSI's Eunomia (Synthea) CDM_SOURCE row, as shipped, reads as synthetic; nothing of ours in it."""
    import csv
    import io
    import zipfile

    from blina_study.adapter.db import connect
    from blina_study.adapter.omop import create_cdm
    from blina_study.adapter.provenance import read_data_source

    with zipfile.ZipFile(shared_dir / "external" / "eunomia-synthea27nj-5.4" / "Synthea27Nj_5.4.zip") as zf:
        name = next(n for n in zf.namelist() if n.endswith("CDM_SOURCE.csv"))
        row = next(csv.DictReader(io.StringIO(zf.read(name).decode("utf-8"))))
    with connect(str(tmp_path / "e.duckdb"), cdm_schema="cdm", vocab_schema="vocab") as db:
        create_cdm(db)
        assert read_data_source(db)["synthetic"] is None  # empty CDM_SOURCE: nothing known
        cols = [c for c in row if c in {"cdm_source_name", "cdm_source_abbreviation", "cdm_holder",
                                        "source_description", "cdm_version", "vocabulary_version"}]
        db.execute(f"insert into {db.qualified('cdm', 'cdm_source')} ({', '.join(cols)}, source_release_date, "
                   f"cdm_release_date, cdm_version_concept_id) values ({', '.join(':' + c for c in cols)}, "
                   "'2022-10-10', '2022-10-10', 0)", {c: row[c] for c in cols})
        src = read_data_source(db)
    assert src["synthetic"] is True and "synthetic" in src["evidence"]
