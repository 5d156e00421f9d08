"""Two ingests at once (issue 15, point 4). PostgreSQL: both succeed, one after the other, and the database
equals two runs in a row (compared modulo surrogate ids); before, the second died on ``CREATE TABLE IF NOT
EXISTS ... already exists``. DuckDB (one writer per file): the second stops at once with a sentence naming
the other process, and the first run's result is untouched."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from conftest import _pg_url
from test_fhir_ingest import blina_admin, patient, quantity_obs, write_ndjson
from test_incremental_equals_fresh import _canonical, _differences
from test_kill_safety import _connected

from blina_study.adapter.cli import main
from blina_study.adapter.db import connect

BLINA = str(Path(sys.executable).with_name("blina"))


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return _pg_url(request)


def _waiting(url: str) -> int:
    """Backends of this database waiting for the ingest lock."""
    with psycopg.connect(url, autocommit=True) as watch:
        return watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'").fetchone()[0]


def _until_waiting(url: str, n: int, procs: list[subprocess.Popen]) -> int:
    deadline = time.monotonic() + 60
    waiting = 0
    while waiting < n and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        waiting = _waiting(url)
        time.sleep(0.05)
    return waiting


def _export(path: Path, prefix: str, n: int = 60) -> Path:
    lines: list[dict] = []
    for i in range(n):
        pid = f"{prefix}{i}"
        lines += [patient(pid), blina_admin(f"{prefix}a{i}", pid, "2023-05-02", "2023-05-29"),
                  quantity_obs(f"{prefix}o{i}", pid, "8122-4", 1 + i / 100, "10*9/L", date="2023-05-20")]
    return write_ndjson(path, lines)


def _ingest(export: Path, site: str, url: str, schema: str = "cdm") -> subprocess.Popen:
    return subprocess.Popen([BLINA, "ingest", str(export), "--site", site, "--db", url, "--cdm-schema", schema,
                             "--vocab-schema", "vocab", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_ingests_into_one_postgresql_database_both_succeed(tmp_path: Path, pg_url: str) -> None:
    url = pg_url
    for schema in ("cdm", "seq"):
        assert main(["init-db", "--db", url, "--cdm-schema", schema, "--vocab-schema", "vocab"]) == 0
    a, b = _export(tmp_path / "a.ndjson", "A"), _export(tmp_path / "b.ndjson", "B")
    # runs in a row, for comparison: site A, site B, site A again (same export)
    for export, site in ((a, "sa"), (b, "sb"), (a, "sa")):
        proc = _ingest(export, site, url, "seq")
        assert proc.wait() == 0, proc.stderr.read()

    # hold the ingest lock while three runs start, so that they really meet (two sites, one site twice)
    holder = psycopg.connect(url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('blina ingest cdm'))")
    procs = [_ingest(a, "sa", url), _ingest(b, "sb", url), _ingest(a, "sa", url)]
    waiting = _until_waiting(url, 3, procs)
    holder.rollback()  # release: the three go one after the other
    holder.close()
    results = [(p.wait(), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    assert waiting == 3  # all three had reached the lock (it was their only wait)

    with connect(url, cdm_schema="cdm", vocab_schema="vocab") as db:
        got, want = _canonical(db, "cdm"), _canonical(db, "seq")
    problems, _ = _differences(got, want)
    assert not problems, problems[:5]
    assert len(got["person"]) == 120 and len(got["measurement"]) == 120


def test_second_ingest_into_a_busy_duckdb_file_stops_at_once(tmp_path: Path) -> None:
    url = str(tmp_path / "site.duckdb")
    assert main(["init-db", "--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]) == 0
    a, b = _export(tmp_path / "a.ndjson", "A", 100), _export(tmp_path / "b.ndjson", "B")
    first = _ingest(a, "sa", url)
    while first.poll() is None and not _connected(first, url, 0):
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # the first run holds the file, mid-run, for as long as we need
    try:
        second = _ingest(b, "sb", url)
        rc2 = second.wait(timeout=120)  # returns while the first is stopped: the second did not wait
        err = second.stderr.read()
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait() == 0, first.stderr.read()
    assert rc2 == 2, err
    assert f"{url} is in use by another process (PID {first.pid}" in err, err
    assert "one writer at a time, so nothing was done" in err and "run this one again" in err
    with connect(url, cdm_schema="cdm", vocab_schema="vocab", read_only=True) as db:
        assert db.query("SELECT DISTINCT site_id FROM cdm.blina_lineage") == [("sa",)]
        assert db.query("SELECT COUNT(*) FROM cdm.person")[0][0] == 100


def test_a_run_that_waits_is_told_so(tmp_path: Path, pg_url: str) -> None:
    """The waiting run says why it waits (logging, on stderr)."""
    url = pg_url
    assert main(["init-db", "--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]) == 0
    holder = psycopg.connect(url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('blina ingest cdm'))")
    proc = _ingest(_export(tmp_path / "a.ndjson", "A", 5), "sa", url)
    assert _until_waiting(url, 1, [proc]) == 1
    holder.rollback()
    holder.close()
    rc, err = proc.wait(), proc.stderr.read()
    assert rc == 0, err
    assert "another ingest into schema cdm of this database is running: waiting for it to finish" in err
