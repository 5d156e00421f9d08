"""OMOP CDM v5.4 DDL for DuckDB and PostgreSQL, rendered from one field-level spec.

The spec is ``sql/ddl/omop_cdm_v54_fields.csv`` (table, column, type, required, primary_key,
schema_role), restating the OHDSI v5.4 PostgreSQL DDL for the tables this study uses. The only
dialect difference lives in :data:`_TYPE_MAP`: DuckDB's bare ``NUMERIC`` is DECIMAL(18,3), which
would round an MRD of 0.0001 to 0, so numeric columns are DOUBLE there.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache

from blina_study.adapter.db import Database, quote_ident
from blina_study.adapter.resources import sql_dir

__all__ = ["CDM_TABLES", "Field", "create_cdm", "field_spec", "render_ddl"]


@dataclass(frozen=True)
class Field:
    table: str
    column: str
    type: str
    required: bool
    primary_key: bool
    schema_role: str  # "cdm" or "vocab"


_TYPE_MAP = {
    "duckdb": {"numeric": "DOUBLE"},
    "postgresql": {"numeric": "NUMERIC"},
}


@lru_cache(maxsize=1)
def field_spec() -> dict[str, list[Field]]:
    """Table name -> ordered fields, from the committed field-level CSV."""
    spec: dict[str, list[Field]] = {}
    with open(sql_dir() / "ddl" / "omop_cdm_v54_fields.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            spec.setdefault(row["table"], []).append(
                Field(
                    table=row["table"],
                    column=row["column"],
                    type=row["type"],
                    required=row["required"] == "1",
                    primary_key=row["primary_key"] == "1",
                    schema_role=row["schema_role"],
                )
            )
    return spec


CDM_TABLES: tuple[str, ...] = tuple(field_spec())


def _sql_type(dialect: str, declared: str) -> str:
    return _TYPE_MAP[dialect].get(declared, declared).upper()


def render_ddl(dialect: str, *, cdm_schema: str, vocab_schema: str) -> list[str]:
    """CREATE SCHEMA / CREATE TABLE statements for ``dialect`` ("duckdb" or "postgresql")."""
    schemas = {"cdm": quote_ident(cdm_schema), "vocab": quote_ident(vocab_schema)}
    stmts = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in dict.fromkeys(schemas.values())]
    for table, fields in field_spec().items():
        cols = ",\n  ".join(
            f"{f.column} {_sql_type(dialect, f.type)}{' NOT NULL' if f.required else ''}" for f in fields
        )
        target = f"{schemas[fields[0].schema_role]}.{quote_ident(table)}"
        stmts.append(f"CREATE TABLE IF NOT EXISTS {target} (\n  {cols}\n)")
    return stmts


def _postgres_keys_and_indexes(db: Database, new_tables: set[str]) -> list[str]:
    """Primary keys (OHDSI primary_keys.sql) and the standard indexes, PostgreSQL only, for the tables in
    ``new_tables`` (``"role.table"``) only: an existing CDM (the hospital's) is never altered, so its
    own key and index names never matter."""
    cdm, vocab = quote_ident(db.schemas.cdm), quote_ident(db.schemas.vocab)
    stmts = []
    for table, fields in field_spec().items():
        pk = [f.column for f in fields if f.primary_key]
        role = fields[0].schema_role
        if pk and f"{role}.{table}" in new_tables:
            schema = cdm if role == "cdm" else vocab
            stmts.append(f"ALTER TABLE {schema}.{quote_ident(table)} ADD CONSTRAINT xpk_{table} "
                         f"PRIMARY KEY ({', '.join(pk)})")
    text = (sql_dir() / "ddl" / "omop_indexes.sql").read_text()
    for line in text.splitlines():
        if line.strip() and not line.startswith("--"):
            target = re.search(r"ON \{(cdm|vocab)\}\.(\w+)", line)
            if target and f"{target.group(1)}.{target.group(2)}" in new_tables:
                stmts.append(line.rstrip(";").replace("{cdm}", cdm).replace("{vocab}", vocab))
    return stmts


def create_cdm(db: Database, *, indexes: bool = True) -> None:
    """Create the CDM and vocabulary schemas and the missing tables (idempotent); on PostgreSQL also keys
    and indexes of the tables created now. Existing tables are left exactly as they are (no ALTER)."""
    existing = {f"{role}.{table}" for table, fields in field_spec().items()
                for role in [fields[0].schema_role]
                if db.table_exists(getattr(db.schemas, role), table)}
    for stmt in render_ddl(db.dialect, cdm_schema=db.schemas.cdm, vocab_schema=db.schemas.vocab):
        db.execute(stmt)
    if db.dialect == "postgresql" and indexes:
        new_tables = {f"{fields[0].schema_role}.{table}" for table, fields in field_spec().items()} - existing
        for stmt in _postgres_keys_and_indexes(db, new_tables):
            db.execute(stmt)
