"""Which OMOP CDM version a database is (v5.3 or v5.4), and the v5.4-only columns the study reads.

The version comes from ``CDM_SOURCE.cdm_version`` when it is filled; otherwise from the columns
present (``procedure_occurrence.procedure_end_date`` exists only in v5.4). The study views read both:
a v5.4-only column the study uses is read as NULL on a database without it, by the staging macro
``{v54(alias.column, type)}`` (see :data:`V54_ONLY_COLUMNS` and docs/omop-conventions.md for the
rule that then falls back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blina_study.adapter.db import Database

__all__ = ["V54_ONLY_COLUMNS", "CdmVersion", "detect_cdm_version", "missing_v54_columns"]

# (table, column) -> what the study loses when the column is absent (documented fallback).
V54_ONLY_COLUMNS: dict[tuple[str, str], str] = {
    ("procedure_occurrence", "procedure_end_date"):
        "last follow-up counts a procedure on its procedure_date only",
}


@dataclass(frozen=True)
class CdmVersion:
    """``version`` is "5.3", "5.4" or None (unknown); ``declared`` is CDM_SOURCE's text as found;
    ``source`` says how the version was decided."""

    version: str | None
    declared: str | None
    source: str

    def text(self) -> str:
        if self.version is None:
            return "unknown (no CDM_SOURCE version and no procedure_occurrence table)"
        shown = f"v{self.version}"
        if self.declared and self.source == "cdm_source":
            shown += f" (CDM_SOURCE.cdm_version {self.declared!r})"
        elif self.declared:
            shown += f" (from the columns present; CDM_SOURCE says {self.declared!r})"
        else:
            shown += " (from the columns present; CDM_SOURCE has no version)"
        return shown


def missing_v54_columns(db: Database) -> set[tuple[str, str]]:
    """The v5.4-only columns the study reads that this database's CDM tables lack. A Database without a
    connection (``build --sql-only``) is taken as v5.4."""
    missing: set[tuple[str, str]] = set()
    if db._duck is None and db._sa_conn is None:
        return missing
    by_table: dict[str, list[str]] = {}
    for table, column in V54_ONLY_COLUMNS:
        if table not in by_table:
            by_table[table] = [c.lower() for c in db.table_columns(db.schemas.cdm, table)]
        if by_table[table] and column not in by_table[table]:
            missing.add((table, column))
    return missing


def _declared(db: Database) -> str | None:
    if not db.table_exists(db.schemas.cdm, "cdm_source"):
        return None
    if "cdm_version" not in [c.lower() for c in db.table_columns(db.schemas.cdm, "cdm_source")]:
        return None
    rows = db.query(f"select max(cdm_version) from {db.qualified('cdm', 'cdm_source')}")
    value = rows[0][0] if rows else None
    return str(value).strip() if value not in (None, "") else None


def detect_cdm_version(db: Database) -> CdmVersion:
    """CDM_SOURCE.cdm_version when it names 5.3 or 5.4, else the columns present."""
    declared = _declared(db)
    m = re.match(r"^\s*v?(5\.[34])\b", declared or "", re.IGNORECASE)
    if m:
        return CdmVersion(m.group(1), declared, "cdm_source")
    cols = [c.lower() for c in db.table_columns(db.schemas.cdm, "procedure_occurrence")]
    if not cols:
        return CdmVersion(None, declared, "unknown")
    return CdmVersion("5.4" if "procedure_end_date" in cols else "5.3", declared, "columns")
