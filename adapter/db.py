"""Database connections: embedded DuckDB (default) or PostgreSQL through SQLAlchemy 2 + psycopg 3.

One small surface for both engines so the same SQL runs on each:

* SQL uses ``:name`` bind parameters (translated to DuckDB's ``$name``); values are always bound,
  never formatted into SQL.
* Identifiers (schema names) are validated against a strict pattern and double-quoted.
* Bulk loads use DuckDB DataFrame appends and PostgreSQL ``COPY``, never row-by-row INSERT.

Credentials are never logged: :meth:`Database.safe_url` masks the password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd

from adapter.errors import BlinaError

__all__ = [
    "DEFAULT_DB",
    "Database",
    "Schemas",
    "connect",
    "quote_ident",
    "validate_ident",
]

DEFAULT_DB = "blina.duckdb"
T = TypeVar("T")
Dialect = Literal["duckdb", "postgresql"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# ``:name`` bind parameters, not ``::type`` casts and not inside a word.
_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)\b(?!:)")


def validate_ident(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise a usage error."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise BlinaError(
            f"invalid {what} {name!r}",
            hint="use letters, digits and underscores, starting with a letter (max 63 characters)",
        )
    return name


def quote_ident(name: str, what: str = "identifier") -> str:
    """Validate and double-quote an identifier."""
    return '"' + validate_ident(name, what) + '"'


@dataclass(frozen=True)
class Schemas:
    """Schema names: ``cdm`` (clinical tables), ``vocab`` (CONCEPT...), ``results`` (persisted views)."""

    cdm: str = "cdm"
    vocab: str = "cdm"
    results: str | None = None

    def __post_init__(self) -> None:
        validate_ident(self.cdm, "cdm schema name")
        validate_ident(self.vocab, "vocabulary schema name")
        if self.results is not None:
            validate_ident(self.results, "results schema name")


def _mask(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@dataclass
class Database:
    """An open connection to one database. Use :func:`connect` to make one."""

    url: str
    dialect: Dialect
    schemas: Schemas = field(default_factory=Schemas)
    _duck: Any = None
    _sa_engine: Any = None
    _sa_conn: Any = None
    _in_tx: bool = False

    # ----------------------------------------------------------------- basics
    @property
    def safe_url(self) -> str:
        return _mask(self.url)

    def q(self, name: str) -> str:
        """Quote an identifier for this database."""
        return quote_ident(name)

    def qualified(self, role: str, table: str) -> str:
        """``"schema"."table"`` for role ``cdm``, ``vocab`` or ``results``."""
        schema = getattr(self.schemas, role)
        if schema is None:
            raise BlinaError(f"no {role} schema configured", hint=f"pass --{role}-schema")
        return f"{quote_ident(schema)}.{quote_ident(table)}"

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
            self._duck = None
        if self._sa_conn is not None:
            self._sa_conn.close()
            self._sa_engine.dispose()
            self._sa_conn = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- execution
    def _duck_sql(self, sql: str) -> str:
        return _BIND.sub(r"$\1", sql)

    def _pg(self, sql: str, params: Mapping[str, Any] | None, read: Callable[[Any], T]) -> T:
        """Run one PostgreSQL statement; outside :meth:`transaction` commit it, or roll back on error
        so one failed statement does not leave the connection unusable ("transaction is aborted")."""
        from sqlalchemy import text

        try:
            out = read(self._sa_conn.execute(text(sql), dict(params or {})))
        except BaseException:
            if not self._in_tx:
                self._sa_conn.rollback()
            raise
        if not self._in_tx:
            self._sa_conn.commit()
        return out

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run one statement (committed at once unless inside :meth:`transaction`)."""
        if self.dialect == "duckdb":
            self._duck.execute(self._duck_sql(sql), dict(params) if params else None)
            return
        self._pg(sql, params, lambda res: None)

    def executescript(self, sql: str) -> None:
        """Run several ``;``-separated statements without parameters."""
        for stmt in split_statements(sql):
            self.execute(stmt)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        """Run a query and return its rows as tuples."""
        if self.dialect == "duckdb":
            return self._duck.execute(self._duck_sql(sql), dict(params) if params else None).fetchall()
        return self._pg(sql, params, lambda res: [tuple(r) for r in res.fetchall()])

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a query and return a DataFrame (column names as in the query)."""
        if self.dialect == "duckdb":
            rel = self._duck.execute(self._duck_sql(sql), dict(params) if params else None)
            return rel.df()
        return self._pg(sql, params, lambda res: pd.DataFrame(res.fetchall(), columns=list(res.keys())))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """All statements inside commit together or not at all."""
        if self._in_tx:
            yield self
            return
        self._in_tx = True
        try:
            if self.dialect == "duckdb":
                self._duck.execute("BEGIN TRANSACTION")
            else:
                self._sa_conn.commit()  # close any implicit transaction first
            yield self
        except BaseException:
            if self.dialect == "duckdb":
                self._duck.execute("ROLLBACK")
            else:
                self._sa_conn.rollback()
            raise
        else:
            if self.dialect == "duckdb":
                self._duck.execute("COMMIT")
            else:
                self._sa_conn.commit()
        finally:
            self._in_tx = False

    # ------------------------------------------------------------ bulk loads
    def bulk_insert(self, qualified_table: str, df: pd.DataFrame, columns: Sequence[str] | None = None) -> int:
        """Append ``df`` to a table: DuckDB appends the frame, PostgreSQL uses COPY.

        ``qualified_table`` must come from :meth:`qualified` (already quoted).
        """
        if df.empty:
            return 0
        cols = list(columns or df.columns)
        col_sql = ", ".join(quote_ident(c, "column name") for c in cols)
        if self.dialect == "duckdb":
            view = "_blina_bulk"
            self._duck.register(view, df[cols])
            try:
                self._duck.execute(f"INSERT INTO {qualified_table} ({col_sql}) SELECT {col_sql} FROM {view}")
            finally:
                self._duck.unregister(view)
            return len(df)
        raw = self._sa_conn.connection.driver_connection
        frame = df[cols].astype(object).where(df[cols].notna(), None)
        with raw.cursor() as cur, cur.copy(f"COPY {qualified_table} ({col_sql}) FROM STDIN") as copy:
            for row in frame.itertuples(index=False, name=None):
                copy.write_row(row)
        if not self._in_tx:
            self._sa_conn.commit()
        return len(df)

    # ------------------------------------------------------------- metadata
    def table_exists(self, schema: str, table: str) -> bool:
        rows = self.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s AND table_name = :t",
            {"s": schema, "t": table},
        )
        return bool(rows[0][0])

    def table_columns(self, schema: str, table: str) -> list[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position",
            {"s": schema, "t": table},
        )
        return [r[0] for r in rows]


def split_statements(sql: str) -> list[str]:
    """Split SQL text on ``;`` at line ends, dropping comment-only chunks."""
    out = []
    for chunk in re.split(r";\s*(?:\n|$)", sql):
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--"))
        if body.strip():
            out.append(chunk.strip())
    return out


def connect(
    url: str | None = None,
    *,
    cdm_schema: str = "cdm",
    vocab_schema: str | None = None,
    results_schema: str | None = None,
    read_only: bool = False,
) -> Database:
    """Open a database from a URL.

    ``None`` or a path (``blina.duckdb``, ``duckdb:///path``) opens embedded DuckDB;
    ``postgresql://user@host:5432/db`` opens PostgreSQL with psycopg 3.
    """
    schemas = Schemas(cdm=cdm_schema, vocab=vocab_schema or cdm_schema, results=results_schema)
    url = url or DEFAULT_DB
    if url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        from sqlalchemy import create_engine
        from sqlalchemy.exc import OperationalError

        sa_url = re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", url)
        engine = create_engine(sa_url, pool_pre_ping=False)
        try:
            conn = engine.connect()
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
            raise BlinaError(
                f"cannot connect to {_mask(url)}: {reason}",
                hint="check host, port, database name and that the server is running",
            ) from None
        return Database(url=url, dialect="postgresql", schemas=schemas, _sa_engine=engine, _sa_conn=conn)
    if url.startswith("duckdb://"):
        url = url[len("duckdb://") :].lstrip("/") if not url.startswith("duckdb:////") else url[10:]
    if "://" in url:
        raise BlinaError(f"unsupported database URL {_mask(url)}", hint="use a .duckdb path or postgresql://...")
    import duckdb

    path = url if url == ":memory:" else str(Path(url))
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.Error as exc:
        raise BlinaError(f"cannot open DuckDB file {path}: {exc}", hint="check the path and permissions") from None
    return Database(url=path, dialect="duckdb", schemas=schemas, _duck=con)
