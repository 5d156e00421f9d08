"""User-visible wording found by the QA walk-through: no Python list reprs or garbled phrases in messages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from adapter.cli import main
from analysis.survival import cox_ph


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
