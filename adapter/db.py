"""Database connections: embedded DuckDB (default) or PostgreSQL through SQLAlchemy 2 + psycopg 3.

One small surface for both engines so the same SQL runs on each:

* SQL uses ``:name`` bind parameters (translated to DuckDB's ``$name``); values are always bound,
  never formatted into SQL.
* Identifiers (schema names) are validated against a strict pattern and double-quoted.
* Bulk loads use DuckDB DataFrame appends and PostgreSQL ``COPY``, never row-by-row INSERT.

Credentials are never logged: :func:`mask_url` is the one function every printed or stored URL goes
through (user info and secret query parameters such as ``password``, ``sslpassword``, ``sslkey``).

Identifiers: schema names and site ids follow one documented pattern each, checked with
``re.fullmatch`` (so a trailing newline never passes, as it would with ``$``) before any work:

* schema names (:data:`IDENT_PATTERN`): a letter or ``_`` then letters, digits, ``_``; at most 63
  characters (PostgreSQL's NAMEDATALEN - 1); no blanks or control characters. System schemas
  (``information_schema``, ``pg_catalog``, any ``pg_*``) are refused.
* site ids (:data:`SITE_ID_PATTERN`): 1-40 letters, digits, ``_`` or ``-`` (the person map's and
  lineage's ``site_id VARCHAR(40)``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd

from blina_study.adapter.errors import BlinaError

__all__ = [
    "DEFAULT_DB",
    "IDENT_PATTERN",
    "SITE_ID_PATTERN",
    "Database",
    "Schemas",
    "connect",
    "mask_url",
    "quote_ident",
    "validate_ident",
    "validate_schema",
    "validate_site_id",
]

DEFAULT_DB = "blina.duckdb"
T = TypeVar("T")
Dialect = Literal["duckdb", "postgresql"]

IDENT_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
SITE_ID_PATTERN = r"[A-Za-z0-9_-]{1,40}"
_IDENT = re.compile(IDENT_PATTERN)
_SITE_ID = re.compile(SITE_ID_PATTERN)
_SYSTEM_SCHEMA = re.compile(r"(?i)information_schema|pg_.*")
# ``:name`` bind parameters, not ``::type`` casts and not inside a word.
_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)\b(?!:)")


def validate_ident(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise a usage error."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise BlinaError(
            f"invalid {what} {name!r}",
            hint="use letters, digits and underscores, starting with a letter (max 63 characters)",
        )
    return name


def validate_schema(name: str, what: str = "schema name") -> str:
    """Return ``name`` if it is a plain identifier and not a system schema, else raise a usage error."""
    validate_ident(name, what)
    if _SYSTEM_SCHEMA.fullmatch(name):
        raise BlinaError(f"{what} {name!r} is a system schema",
                         hint="name the schema that holds (or should hold) the OMOP tables, e.g. cdm")
    return name


def validate_site_id(site_id: object, what: str = "site id") -> str:
    """Return ``site_id`` if it matches :data:`SITE_ID_PATTERN`, else raise a usage error."""
    if not isinstance(site_id, str) or not _SITE_ID.fullmatch(site_id):
        raise BlinaError(f"invalid {what} {site_id!r}", hint="use 1-40 letters, digits, '_' or '-'")
    return site_id


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
        validate_schema(self.cdm, "cdm schema name")
        validate_schema(self.vocab, "vocabulary schema name")
        if self.results is not None:
            validate_schema(self.results, "results schema name")


# Query parameters whose value is a secret or names one (libpq: password, sslpassword, sslkey, passfile).
_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&;#]*(?:pass|secret|token|key|sslcert)[^=&;#]*=)[^&;#]*")


def _secrets(url: str) -> list[str]:
    """The secret substrings of ``url`` (password, secret query values), longest first."""
    if "://" not in url:
        return []
    rest = url.split("://", 1)[1]
    found = [m.group(0).split("=", 1)[1] for m in _SECRET_PARAM.finditer(rest)]
    userinfo, at, _ = _SECRET_PARAM.sub("", rest).rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    # A driver may have split an unencoded secret at "@" or ":" (and print a piece as the host name).
    found += [piece for f in found for piece in re.split(r"[@:/]", f) if len(piece) >= 3]
    return sorted(set(f for f in found if f), key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with every secret of ``url`` replaced by ``***``."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def mask_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``.

    The user info is everything between ``://`` and the *last* ``@`` (so an unencoded ``@`` in a
    password never shows the part after it); a URL without ``://`` (a DuckDB path) is unchanged.
    Over-masking is preferred to leaking: when in doubt a part is masked.
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    rest = _SECRET_PARAM.sub(r"\1***", rest)
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{':***' if colon else ''}@{hostpart}"
    return f"{scheme}://{rest}"




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
        return mask_url(self.url)

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
        from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

        sa_url = re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", url)
        try:
            engine = create_engine(sa_url, pool_pre_ping=False)
        except (ValueError, ArgumentError) as exc:  # e.g. port "abc": a usage error, not a crash
            raise BlinaError(f"invalid database URL {mask_url(url)}: {_scrub(str(exc), url)}",
                             hint="postgresql://user@host:5432/dbname (a numeric port)") from None
        try:
            conn = engine.connect()
        except (OperationalError, DBAPIError) as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
            raise BlinaError(
                f"cannot connect to {mask_url(url)}: {_scrub(reason, url)}",
                hint="check host, port, database name and that the server is running",
            ) from None
        return Database(url=url, dialect="postgresql", schemas=schemas, _sa_engine=engine, _sa_conn=conn)
    if url.startswith("duckdb://"):
        url = url[len("duckdb://") :].lstrip("/") if not url.startswith("duckdb:////") else url[10:]
    if "://" in url:
        raise BlinaError(f"unsupported database URL {mask_url(url)}", hint="use a .duckdb path or postgresql://...")
    import duckdb

    path = url if url == ":memory:" else str(Path(url))
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.Error as exc:
        held = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(exc))
        if held:  # DuckDB has one writer per file: a second run stops here, before any work
            raise BlinaError(f"{path} is in use by another process (PID {held.group(2)}, {held.group(1)}): "
                             "a DuckDB file has one writer at a time, so nothing was done",
                             hint="wait until the other run has finished, then run this one again") from None
        raise BlinaError(f"cannot open DuckDB file {path}: {exc}", hint="check the path and permissions") from None
    return Database(url=path, dialect="duckdb", schemas=schemas, _duck=con)
