"""The CLI as a newcomer meets it: help with examples, one-line errors, exit codes 0 / 1 / 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blina_study.adapter.cli import main
from blina_study.adapter.resources import mappings_dir, sql_dir


def test_packaged_data_folders_are_found():
    assert (mappings_dir() / "study.yaml").is_file()
    assert (sql_dir() / "ddl" / "omop_cdm_v54_fields.csv").is_file()


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("init-db", "load-omop"):
        assert cmd in out
    assert "Exit codes" in out


def test_every_command_help_has_an_example(capsys):
    from blina_study.adapter.cli import _available

    for name in _available():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = capsys.readouterr().out
        assert "Examples:" in out and "blina " in out, name


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


def test_bad_schema_name_is_one_line_with_hint(capsys, tmp_path):
    assert main(["init-db", "--db", str(tmp_path / "x.duckdb"), "--cdm-schema", "a;b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: invalid cdm schema name") and "hint:" in err
    assert "Traceback" not in err


def test_unreachable_postgres_masks_password(capsys):
    rc = main(["init-db", "--db", "postgresql://u:secret@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert rc == 2 and "secret" not in err and "***" in err


def test_load_omop_exit_code_1_on_rejected_rows(tmp_path, capsys):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "person.csv").write_text(
        "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id\n1,8507,2012,0,0\nx,0,0,0,0\n"
    )
    assert main(["load-omop", str(folder), "--db", str(tmp_path / "x.duckdb")]) == 1
    out = capsys.readouterr().out
    assert "rejected 1" in out and "person.csv:3" in out


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "blina_study.adapter.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "blina-study" in res.stdout


@pytest.mark.parametrize(("param", "message"), [
    ("course_gap_days=abc", "is not a number"),
    ("no_such_param=1", "unknown parameter"),
    ("course_gap_days", "is not NAME=VALUE"),
    ("course_gap_days=-1", "--param"),
])
def test_bad_param_override_is_a_usage_error(tmp_path, capsys, param, message):
    rc = main(["build", "--db", str(tmp_path / "x.duckdb"), "--param", param])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "internal error" not in err
