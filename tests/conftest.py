"""Shared fixtures: every database test runs on DuckDB and on real PostgreSQL.

PostgreSQL comes from pytest-postgresql: the server at 127.0.0.1:5432 when it answers (CI and the dev
machine), otherwise a server pytest-postgresql starts itself (which PostgreSQL refuses to do as root).
Each test gets its own fresh database (PostgreSQL) or file (DuckDB); nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import find_shared
from pytest_postgresql import factories

from blina_study.adapter.db import Database, connect
from blina_study.adapter.omop import create_cdm, load_study_vocabulary

PG_HOST = os.environ.get("BLINA_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BLINA_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BLINA_TEST_PG_USER", "postgres")
SHARED = find_shared()


def _server_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


PG_EXTERNAL = _server_answers(PG_HOST, PG_PORT)
if PG_EXTERNAL:
    # dbname: the template database is named after the server fixture's dbname ("<dbname>_tmpl"), so it
    # must be per run too (with the default, concurrent runs on one server collide on "tests_tmpl").
    postgresql_server = factories.postgresql_noproc(host=PG_HOST, port=PG_PORT, user=PG_USER,
                                                    dbname=f"blina_tests_{os.getpid()}")
else:
    _pg_ctl = shutil.which("pg_ctl") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), "pg_ctl"
    )
    postgresql_server = factories.postgresql_proc(executable=_pg_ctl, port=None)
# A per-run name: pytest-postgresql derives its template database from it, so two runs on one
# server (or a template left by a killed run) cannot collide.
postgresql = factories.postgresql("postgresql_server", dbname=f"blina_tests_{os.getpid()}")


def _pg_url(request: pytest.FixtureRequest) -> str:
    if not PG_EXTERNAL and os.geteuid() == 0:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 and PostgreSQL will not start as root")
    conn = request.getfixturevalue("postgresql")
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


@pytest.fixture(params=["duckdb", "postgresql"])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each engine, fresh for this test."""
    if request.param == "duckdb":
        return str(tmp_path / "test.duckdb")
    return _pg_url(request)


@pytest.fixture
def db(engine_url: str) -> Iterator[Database]:
    """An open database with the OMOP CDM v5.4 tables (schema ``cdm``) and the study vocabulary
    subset (schema ``vocab``) loaded."""
    database = connect(engine_url, cdm_schema="cdm", vocab_schema="vocab")
    create_cdm(database)
    load_study_vocabulary(database)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def shared_dir() -> Path:
    """The project's shared/ folder (beside the checkout), or skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared/ not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator's four centers and truth (default settings), written once per test run; read only."""
    from blina_study.adapter.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out)
    return out

