"""One FHIR export ingested twice under two ``--site`` values (60 persons from 30 MRNs) is a finding of
``check`` and ``build`` / ``extract`` / ``site-run`` (exit 1, with the fix), on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_fhir_ingest import blina_admin, patient, quantity_obs, write_ndjson

from blina_study.adapter.check import run_check
from blina_study.adapter.cli import main
from blina_study.adapter.db import connect
from blina_study.adapter.fhir.ingest import ingest_fhir
from blina_study.adapter.omop import create_cdm, load_study_vocabulary
from blina_study.adapter.study import load_study


def _export(tmp_path: Path, n: int = 3) -> Path:
    lines = []
    for i in range(1, n + 1):
        pid = f"p{i}"
        lines += [patient(pid), blina_admin(f"a{i}", pid, "2023-05-16", "2023-06-12"),
                  quantity_obs(f"o{i}", pid, "11150-0", 40.0, "%")]
    return write_ndjson(tmp_path / "export.ndjson", lines)


def _ingested(url: str, export: Path, sites: tuple[str, ...]) -> list[str]:
    with connect(url, cdm_schema="cdm", vocab_schema="vocab") as db:
        create_cdm(db)
        load_study_vocabulary(db)
        for site in sites:
            report = ingest_fhir(db, [export], site_id=site)
            assert report.balanced()
    return ["--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]


def test_same_mrns_under_two_site_ids_are_a_finding(engine_url: str, tmp_path: Path, capsys) -> None:
    base = _ingested(engine_url, _export(tmp_path), ("s1", "s2"))
    with connect(engine_url, cdm_schema="cdm", vocab_schema="vocab", read_only=True) as db:
        assert db.query("select count(*) from cdm.person")[0][0] == 6          # the doubled cohort
        rep = run_check(db, load_study())
    assert not rep.ok and rep.same_mrn_sites == {"mrns": 3, "sites": ["s1", "s2"]}
    assert "same MRN under two site ids" in rep.text()
    assert any(m.startswith("3 MRNs (person_source_value) appear under more than one site id (s1, s2)")
               and "ingest each hospital's export into a fresh database once" in m for m in rep.messages)
    assert main(["check", *base]) == 1
    assert "same MRN under two site ids" in capsys.readouterr().err
    for cmd in (["build", "--site-id", "s1"], ["extract", "--site-id", "s1", "--out", str(tmp_path / "out")],
                ["site-run", "--site-id", "s1", "--out", str(tmp_path / "s1.zip")]):
        assert main([cmd[0], *base, *cmd[1:]]) == 1, cmd
        err = capsys.readouterr().err
        assert "3 MRNs (person_source_value) appear under more than one site id (s1, s2)" in err, cmd
    assert not (tmp_path / "out").exists() and not (tmp_path / "s1.zip").exists()


@pytest.mark.parametrize("sites", [("s1",), ("s1", "s1")])
def test_one_site_label_is_not_a_finding(tmp_path: Path, capsys, sites: tuple[str, ...]) -> None:
    base = _ingested(str(tmp_path / "one.duckdb"), _export(tmp_path), sites)
    with connect(base[1], cdm_schema="cdm", vocab_schema="vocab", read_only=True) as db:
        rep = run_check(db, load_study())
    assert rep.same_mrn_sites is None and "MRNs (person_source_value)" not in rep.text()
    assert main(["build", *base, "--site-id", "s1"]) == 0
    assert "built 3 courses of 3 patients" in capsys.readouterr().out
