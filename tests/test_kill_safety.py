"""Kill-safety (issue 15, point 3): real ``blina ingest`` and ``blina load-omop`` processes are killed
(SIGKILL, some SIGINT) at 20 random points per engine; afterwards every table of the database (CDM,
vocabulary, our support tables) has the checksum it had before the run or, when the kill came after the
commit, the one a completed run gives, and no work table of ours (``_bl_*``) is anywhere.

The kill points are spread over the whole run: half are drawn over the process's life (start-up
included), half over the part after it opened the database (DuckDB: the process holds the file open;
PostgreSQL: its backend appears), where the work is. The runs are small so that 40 kills stay within
about two minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_fhir_ingest import blina_admin, patient, quantity_obs, write_ndjson

from blina_study.adapter.cli import main
from blina_study.adapter.db import connect

KILLS = {"ingest": 12, "load-omop": 8}
BLINA = str(Path(sys.executable).with_name("blina"))


def _export(path: Path, value: float) -> Path:
    """80 patients with a course and two results each; ``value`` changes every result (same resources)."""
    lines: list[dict] = []
    for i in range(80):
        pid = f"k{i}"
        lines += [patient(pid), blina_admin(f"a{i}", pid, "2023-05-02", "2023-05-29"),
                  quantity_obs(f"o{i}", pid, "8122-4", value + i / 100, "10*9/L", date="2023-05-20"),
                  quantity_obs(f"m{i}", pid, "11150-0", value, "%", date="2023-06-20")]
    return write_ndjson(path, lines)


def _omop_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "person.csv").write_text("person_id,gender_concept_id,year_of_birth,race_concept_id,"
                                       "ethnicity_concept_id,person_source_value\n"
                                       + "".join(f"{i},0,{2005 + i % 10},0,0,P{i}\n" for i in range(1, 1001)))
    (folder / "measurement.csv").write_text(
        "measurement_id,person_id,measurement_concept_id,measurement_date,measurement_type_concept_id,"
        "value_as_number\n" + "".join(f"{i},{1 + i % 1000},0,2023-0{1 + i % 9}-1{i % 10},0,{i / 7:.4f}\n"
                                      for i in range(1, 4001)))
    return folder


def _checksums(url: str) -> dict[str, str]:
    """schema.table -> SHA-256 of its rows (sorted), for every base table outside the system schemas."""
    out = {}
    with connect(url, cdm_schema="cdm", vocab_schema="vocab", read_only=not url.startswith("postgresql")) as db:
        tables = db.query("SELECT table_schema, table_name FROM information_schema.tables "
                          "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
                          "('information_schema', 'pg_catalog', 'pg_toast')"
                          + (" AND table_catalog = current_database()" if db.dialect == "duckdb" else ""))
        for schema, table in tables:
            rows = sorted(repr(r) for r in db.query(f'SELECT * FROM "{schema}"."{table}"'))
            out[f"{schema}.{table}"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return out


def _pg_backends(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()[0]


def _connected(proc: subprocess.Popen, url: str, baseline: int) -> bool:
    if url.startswith("postgresql"):
        return _pg_backends(url) > baseline
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == url:
                    return True
    return False


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([BLINA, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _settle(url: str, baseline: int) -> None:
    """PostgreSQL: wait until the killed client's backend has ended (its transaction rolled back)."""
    if not url.startswith("postgresql"):
        return
    deadline = time.monotonic() + 30
    while _pg_backends(url) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)


def test_killed_runs_leave_the_database_as_before(engine_url: str, tmp_path: Path) -> None:
    url = engine_url
    common = ["--db", url, "--vocab-schema", "vocab"]
    assert main(["init-db", *common, "--cdm-schema", "cdm"]) == 0
    assert main(["init-db", *common, "--cdm-schema", "omop2"]) == 0
    e1, e2 = _export(tmp_path / "e1.ndjson", 1.0), _export(tmp_path / "e2.ndjson", 2.0)
    folder = _omop_folder(tmp_path / "omop")
    ingest = {e: ["ingest", str(e), "--site", "s1", *common, "--cdm-schema", "cdm", "--quiet"] for e in (e1, e2)}
    load = ["load-omop", str(folder), *common, "--cdm-schema", "omop2"]
    assert main(ingest[e1]) == 0
    assert main(load) == 0
    before = _checksums(url)
    baseline = _pg_backends(url) if url.startswith("postgresql") else 0

    # the states a run may leave: as before, or as after a completed run (ingest e2); load-omop of the
    # same folder again leaves the database as it is
    timing: dict[str, tuple[float, float]] = {}
    for name, args in (("ingest", ingest[e2]), ("load-omop", load)):
        t0 = time.monotonic()
        proc = _start(args)
        t_conn = None
        while proc.poll() is None:
            if t_conn is None and _connected(proc, url, baseline):
                t_conn = time.monotonic() - t0
            time.sleep(0.01)
        assert proc.returncode == 0, proc.stderr.read().decode()
        timing[name] = (time.monotonic() - t0, t_conn or 0.0)
    after = {"ingest": _checksums(url), "load-omop": before}
    assert after["ingest"] != before
    assert main(ingest[e1]) == 0 and _checksums(url) == before  # back to the state before (ids are stable)

    rng = random.Random(15_3)
    outcomes: list[tuple[str, str, int, str]] = []
    for name, n in KILLS.items():
        args = ingest[e2] if name == "ingest" else load
        total, t_conn = timing[name]
        for k in range(n):
            sig = signal.SIGINT if k % 4 == 3 else signal.SIGKILL
            proc = _start(args)
            if k % 2:  # a point after the database was opened
                t0 = time.monotonic()
                while proc.poll() is None and not _connected(proc, url, baseline) and time.monotonic() - t0 < total:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, max(total - t_conn, 0.1)))
            else:  # a point anywhere in the process's life
                time.sleep(rng.uniform(0, total))
            if proc.poll() is None:
                proc.send_signal(sig)
            rc = proc.wait()
            _settle(url, baseline)
            state = _checksums(url)
            which = "before" if state == before else "after" if state == after[name] else "other"
            leftovers = [t for t in state if t.split(".", 1)[1].startswith("_bl_")]
            assert which != "other" and not leftovers, (
                f"{name} killed by {sig.name} (rc {rc}) left "
                + ", ".join(t for t in set(state) | set(before) if state.get(t) != before.get(t)
                            and state.get(t) != after[name].get(t)))
            outcomes.append((name, sig.name, rc, which))
            if which == "after" and name == "ingest":
                assert main(ingest[e1]) == 0 and _checksums(url) == before
    killed = [o for o in outcomes if o[2] in (-signal.SIGKILL, -signal.SIGINT, 130, 2)]
    print("kill outcomes (command, signal, exit code, state):", outcomes)  # shown with pytest -s
    # runs were really interrupted (not all finished before the signal came; typically 15-18 of 20)
    assert len(killed) >= 5, outcomes
    assert any(o[1] == "SIGKILL" and o[3] == "before" for o in killed if o[0] == "ingest"), outcomes
    if not url.startswith("postgresql"):  # DuckDB: no work database of a killed run stays behind
        assert main(ingest[e1]) == 0
        stale = [p for p in Path(url).parent.glob(".blina-work-*")
                 if not Path(f"/proc/{p.name.split('-')[2]}").exists()]
        assert stale == []
