"""The CLI owns the terminal (issue 15, point 6): Python warnings (numpy's RuntimeWarnings) become debug log
records instead of terminal noise, library code logs through ``logging``, and the ingest summary is one
line and the reject table shows whole file paths when stdout is not a terminal (a log file, a pipe)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pytest
from test_fhir_ingest import ingest, patient, quantity_obs, write_ndjson

import blina_study.adapter.commands.pool as pool_command
from blina_study.adapter.cli import main
from blina_study.adapter.db import Database


def _noisy_run(args: argparse.Namespace) -> int:
    np.exp(np.array([1000.0]))  # RuntimeWarning: overflow encountered in exp
    print("done")
    return 0


def test_numpy_warnings_do_not_reach_the_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(pool_command, "run", _noisy_run)
    assert main(["pool", "x.zip", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "done\n" and err == ""
    # with --debug the warning is a debug log record on stderr
    assert main(["pool", "x.zip", "--out", str(tmp_path), "--debug"]) == 0
    err = capsys.readouterr().err
    assert "DEBUG blina_study.warnings" in err and "overflow encountered in exp" in err


def test_ingest_logs_through_logging(db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P")])
    with caplog.at_level(logging.INFO, logger="blina_study"):
        ingest(db, path)
    assert any(r.name == "blina_study.adapter.fhir.ingest" and "read 1, loaded 1" in r.getMessage()
               for r in caplog.records)


def test_ingest_summary_is_one_line_and_paths_are_whole_when_not_a_terminal(
        engine_url: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from blina_study.adapter.db import connect
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    database = connect(engine_url, cdm_schema="cdm", vocab_schema="cdm")
    create_cdm(database)
    load_study_vocabulary(database)
    database.close()
    folder = tmp_path / ("a-rather-long-folder-name-of-a-hospital-export-" * 2)
    folder.mkdir()
    path = write_ndjson(folder / "Observation.000.ndjson",
                        [patient("P"), quantity_obs("o1", "P", "8122-4", 2, "10*9/L", date="2023-05")])
    assert len(str(path)) > 80
    for quiet in (["--quiet"], []):
        assert main(["ingest", str(path), "--site", "s1", "--db", engine_url, *quiet]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("site s1: read 2 resources") and lines[0].endswith(" s)"), lines
        if not quiet:
            assert any(f"{path}:2" in line for line in lines), lines  # the whole path, on one line
