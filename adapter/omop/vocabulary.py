"""Load the study's vocabulary subset (``mappings/vocabulary/*.csv``) into CONCEPT and friends.

For a database that has no OHDSI vocabulary (the demo, tests, FHIR-only sites). A hospital database
keeps its own full vocabulary; this loader is never run against it.
"""

from __future__ import annotations

import pandas as pd

from blina_study.adapter.db import Database
from blina_study.adapter.omop.ddl import field_spec
from blina_study.adapter.resources import mappings_dir

__all__ = ["foreign_concept_count", "load_study_vocabulary", "study_concepts"]

_VALID_START, _VALID_END = "1970-01-01", "2099-12-31"


def study_concepts() -> pd.DataFrame:
    """The master concept list, with its ``confidence`` and ``provenance`` columns."""
    return pd.read_csv(mappings_dir() / "vocabulary" / "study_concepts.csv", dtype=str, keep_default_na=False)


def _frames() -> dict[str, pd.DataFrame]:
    vdir = mappings_dir() / "vocabulary"
    concept = study_concepts().drop(columns=["confidence", "provenance"])
    concept["concept_id"] = concept["concept_id"].astype("int64")
    concept["standard_concept"] = concept["standard_concept"].replace("", None)
    concept["valid_start_date"] = pd.Timestamp(_VALID_START).date()
    concept["valid_end_date"] = pd.Timestamp(_VALID_END).date()
    concept["invalid_reason"] = None
    rel = pd.read_csv(vdir / "concept_relationship.csv")
    rel["valid_start_date"] = pd.Timestamp(_VALID_START).date()
    rel["valid_end_date"] = pd.Timestamp(_VALID_END).date()
    rel["invalid_reason"] = None
    anc = pd.read_csv(vdir / "concept_ancestor.csv")
    voc = pd.read_csv(vdir / "vocabulary.csv")
    return {"concept": concept, "concept_relationship": rel, "concept_ancestor": anc, "vocabulary": voc}


def foreign_concept_count(db: Database) -> int:
    """CONCEPT rows that are not the study subset's: > 0 means the database has its own vocabulary,
    which the subset must not overwrite."""
    id_list = ",".join(str(int(i)) for i in study_concepts()["concept_id"])
    rows = db.query(f"SELECT count(*) FROM {db.qualified('vocab', 'concept')} WHERE concept_id NOT IN ({id_list})")
    return int(rows[0][0])


def load_study_vocabulary(db: Database) -> dict[str, int]:
    """Replace the subset's rows in the vocabulary tables (idempotent). Returns rows per table."""
    frames = _frames()
    ids = frames["concept"]["concept_id"].tolist()
    counts = {}
    with db.transaction():
        id_list = ",".join(str(int(i)) for i in ids)  # integers from our own CSV, never user text
        for table, column in (("concept_ancestor", "descendant_concept_id"),
                              ("concept_relationship", "concept_id_1"), ("concept", "concept_id")):
            db.execute(f"DELETE FROM {db.qualified('vocab', table)} WHERE {column} IN ({id_list})")
        vocab_ids = frames["vocabulary"]["vocabulary_id"].tolist()
        db.execute(
            f"DELETE FROM {db.qualified('vocab', 'vocabulary')} WHERE vocabulary_id IN ("
            + ",".join(f":v{i}" for i in range(len(vocab_ids)))
            + ")",
            {f"v{i}": v for i, v in enumerate(vocab_ids)},
        )
        for table, df in frames.items():
            cols = [f.column for f in field_spec()[table]]
            counts[table] = db.bulk_insert(db.qualified("vocab", table), df[cols])
    return counts
