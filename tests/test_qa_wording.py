"""User-visible wording found by the QA walk-through: no Python list reprs or garbled phrases in messages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from blina_study.adapter.cli import main
from blina_study.analysis.survival import cox_ph


def test_cox_messages_name_covariates_without_a_python_list() -> None:
    """The report's notes showed "R gives NA): ['poor_cytogenetics']" (a list repr)."""
    time = [5, 8, 12, 20, 25, 30, 33, 40, 41, 50]
    event = [1, 0, 1, 1, 0, 1, 0, 1, 0, 1]
    x = [0, 1, 0, 1, 1, 0, 1, 0, 0, 1]
    data = pd.DataFrame({"t": time, "e": event, "a": x, "b": x})  # b == a: collinear, not estimable
    res = cox_ph(data, "t", "e", ["a", "b"])
    collinear = [m for m in res.messages if m.startswith("not estimable")]
    assert collinear == ["not estimable (collinear with the other covariates; R gives NA): b"], res.messages
    assert not any("[" in m for m in res.messages), res.messages


def test_init_db_and_check_say_where_and_what_plainly(tmp_path: Path, capsys) -> None:
    """init-db said '(schemas cdm, cdm)'; check said 'unknown (no VOCABULARY row None)'."""
    db = str(tmp_path / "site.duckdb")
    assert main(["init-db", "--db", db]) == 0
    assert "(schema cdm)" in capsys.readouterr().out
    assert main(["init-db", "--db", db, "--cdm-schema", "c3", "--vocab-schema", "vocab"]) == 0
    assert "(schemas c3, vocabulary vocab)" in capsys.readouterr().out
    main(["check", "--db", db, "--cdm-schema", "c3", "--vocab-schema", "vocab"])
    out = capsys.readouterr().out
    assert "vocabulary version: unknown (VOCABULARY has no row 'None', where the CDM records it)" in out


def test_results_schema_named_like_the_duckdb_file_is_one_clear_error(tmp_path: Path) -> None:
    """`blina build --results-schema blina` on the default blina.duckdb failed with DuckDB's 'Binder Error:
    Ambiguous reference to catalog or schema'; another schema name in the same file works."""
    import pytest

    from blina_study.adapter.db import connect
    from blina_study.adapter.errors import BlinaError
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary
    from blina_study.adapter.study import load_study
    from blina_study.adapter.views import persist

    db = connect(str(tmp_path / "blina.duckdb"))
    create_cdm(db)
    load_study_vocabulary(db)
    try:
        with pytest.raises(BlinaError, match="has the name of the DuckDB file") as err:
            persist(db, load_study(), site_id="c1", results_schema="blina")
        assert "another --results-schema" in (err.value.hint or "")
        assert "results.course" in persist(db, load_study(), site_id="c1", results_schema="results")
    finally:
        db.close()


def test_every_overlay_file_named_in_the_help_examples_exists() -> None:
    """`blina ingest --help` named mappings/sites/center2.yaml, which the repository does not have."""
    import importlib
    import re

    from blina_study.adapter.cli import COMMANDS

    repo = Path(__file__).resolve().parents[1]
    named = {m for mod in COMMANDS.values()
             for ex in getattr(importlib.import_module(mod), "EXAMPLES", ())
             for m in re.findall(r"mappings/\S+\.yaml", ex)}
    assert named and all((repo / m).is_file() for m in named), named


def test_help_examples_on_site_duckdb_use_the_schemas_init_db_created() -> None:
    """`blina init-db --db site.duckdb` puts CDM and vocabulary in schema cdm; `blina check --db site.duckdb
    --vocab-schema vocab` (its help example) then found no vocab.concept (exit 1)."""
    import importlib
    import re

    from blina_study.adapter.cli import COMMANDS

    examples = [ex for mod in COMMANDS.values() for ex in getattr(importlib.import_module(mod), "EXAMPLES", ())
                if "--db site.duckdb" in ex]
    schemas = {ex: tuple(re.findall(r"--(?:cdm|vocab)-schema \S+", ex)) for ex in examples}
    assert len(examples) >= 5 and set(schemas.values()) == {()}, schemas


def test_a_cox_p_of_an_infinite_estimate_is_marked() -> None:
    """The demo report's Table 10 showed 'P = 0.999' for high_mrd at center1 and center4, whose estimate is
    infinite (monotone likelihood): a reader takes it as 'no effect'; it is never counted as reproduced."""
    import dataclasses

    from test_report import make_tables

    from blina_study.analysis.published import PUBLISHED
    from blina_study.analysis.report import _agreement, run_figures
    from blina_study.analysis.tables import analyze

    course, patient = make_tables()
    site = analyze(course, patient, parameters={"landmark_days": 365, "age_group_cut_years": 10}).pooled
    cox = site.cox_efs
    assert cox.terms and not cox.infinite
    plain = run_figures(site)["cox.high_mrd"]
    marked = run_figures(dataclasses.replace(site, cox_efs=dataclasses.replace(cox, infinite=("high_mrd",))))
    assert marked["cox.high_mrd"].text == f"{plain.text} (HR infinite)"
    assert "monotone likelihood" in marked["cox.high_mrd"].method
    pub = next(p for p in PUBLISHED if p.key == "cox.high_mrd")
    assert not _agreement(dataclasses.replace(pub, text=plain.text), marked["cox.high_mrd"])[0]


def test_table_9_says_synthetic_beside_its_reproduced_count(tmp_path: Path) -> None:
    """At a glance qualified '23 of 39 reproduced' on synthetic data; Table 9's caption did not."""
    import re

    from test_report import make_tables

    from blina_study.analysis.report import render_report
    from blina_study.analysis.tables import analyze

    course, patient = make_tables()
    results = analyze(course, patient, by_center=False, parameters={"landmark_days": 365, "age_group_cut_years": 10})
    captions = {}
    for name, source in (("synthetic", "SYNTHETIC DATA: c1 holds generated patients, not real ones (test)."),
                         ("real", "as the CDM states it (CDM_SOURCE): c1: hospital")):
        out = render_report(results, course=course, patient=patient, params={}, fingerprint={}, data_quality=None,
                            out_path=tmp_path / f"{name}.html", data_source=source)
        captions[name] = re.search(r"Table 9\..*?</caption>", out.read_text(encoding="utf-8"), flags=re.S).group(0)
    assert "reproduced as printed, from SYNTHETIC data: this shows the pipeline runs" in captions["synthetic"]
    assert "SYNTHETIC" not in captions["real"] and "reproduced as printed;" in captions["real"]


def test_synth_names_its_files_without_a_double_slash(tmp_path: Path, capsys, monkeypatch) -> None:
    """`blina synth --out synth/` (its help example) printed 'truth in synth//truth'."""
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "synth/", "--patients", "8"]) == 0
    out = capsys.readouterr().out
    assert "truth in synth/truth, manifest synth/manifest.json" in out and "//" not in out, out


def test_forest_plot_texts_are_not_cut_at_the_right_edge() -> None:
    """The aggregate pooled report's forest plots cut 'not estimable (no center published an estimate)'."""
    import io

    import numpy as np
    from PIL import Image

    from blina_study.analysis.pooled_report import _forest_png

    rows = [("all: center1", 0.9, 0.8, 0.97, "90.0% (80.0-97.0%); n 30"),
            ("all: Pooled", None, None, None, "not estimable (no center published an estimate)")]
    img = np.asarray(Image.open(io.BytesIO(_forest_png(rows, "EFS at day 365"))).convert("L"))
    assert (img[:, -6:] > 250).all()  # the last columns are background: nothing runs off the image
