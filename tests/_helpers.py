"""Helpers shared by several test modules (pytest puts tests/ on the path: pyproject ``pythonpath``)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pandas as pd

from blina_study.adapter.db import Database


def find_shared() -> Path:
    """The project's shared/ folder: $BLINA_SHARED, else shared/ beside the checkout or beside one of its
    parents (worktrees and CI clones sit at other depths), else this machine's /work/shared."""
    if os.environ.get("BLINA_SHARED"):
        return Path(os.environ["BLINA_SHARED"])
    here = Path(__file__).resolve().parents[1]
    for parent in here.parents:
        if (parent / "shared" / "external").is_dir():
            return parent / "shared"
    return Path("/work/shared")


def truth_rows(path: Path, site: str) -> list[dict[str, str]]:
    """The generator's truth CSV rows of one site."""
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["site_id"] == site]


def same_text(a: str, b: str, rel_tol: float = 1e-12, abs_tol: float = 1e-15) -> bool:
    """Equal as text, or as numbers up to float rounding."""
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)
    except ValueError:
        return False


def concept_id(db: Database, vocab: str, code: str) -> int:
    return int(db.query(f"select concept_id from {db.qualified('vocab', 'concept')} "
                        "where vocabulary_id = :v and concept_code = :c", {"v": vocab, "c": code})[0][0])


def insert_row(db: Database, table: str, row: dict) -> None:
    db.execute(f"insert into {db.qualified('cdm', table)} ({', '.join(row)}) "
               f"values ({', '.join(':' + k for k in row)})", row)


def synth_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The generator's reference cohort (seed 42) as the study's ``course`` and ``patient`` tables, with a
    ``person_id`` per (site, MRN) as an extract gives it."""
    from blina_study.adapter.synth import build_cohort
    from blina_study.analysis.io import coerce_table

    res = build_cohort()
    course, patient = pd.DataFrame(res.courses), pd.DataFrame(res.patient_rows)
    ids = {k: i + 1 for i, k in enumerate(sorted(set(zip(patient.site_id, patient.person_source_value,
                                                          strict=True))))}  # fmt: skip
    for df in (course, patient):
        df["person_id"] = [ids[k] for k in zip(df.site_id, df.person_source_value, strict=True)]
    return coerce_table(course, "course"), coerce_table(patient, "patient")
