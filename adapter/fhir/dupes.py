"""Duplicate resource ids anywhere in the input, in memory bounded whatever the input size.

Every input resource with a type and an id, study-relevant or not, is appended to :class:`DuplicateIndex`
as (type, id, content digest, study?, file, line, Bundle entry). The index is a DuckDB table in a file of
its own in a temporary folder (never the user's database), filled in column batches of
:data:`BATCH` rows, with DuckDB's buffer pool capped (``memory_limit``), so it spills to disk: the
process holds one batch, whatever the number of resources (bench/dup_index.py: peak RSS 467 MB at 1e7
resources, ~200 MB of it the imported pandas and DuckDB, and 218 MB of disk; a Python dict of the same keys
took 1572 MB). After reading, :meth:`DuplicateIndex.groups` streams the ids seen
more than once with all their copies in input order.

Why DuckDB and not a Python set or dict: a dict of 1e8 keys needs ~10 GB of memory; DuckDB's grouping
spills to disk and is already a dependency. Why not the run's own database: on PostgreSQL every row
would cross the network, and the user's DuckDB file would grow by the index.

The content digest is the 64-bit hash of the resource serialised with sorted keys (``orjson``), so two
copies that differ only in key order or white space are the same content; a resource that cannot be
serialised (nested deeper than orjson writes) gets no digest (NULL) and never counts as identical.
The NDJSON resources that worker processes take as not study-relevant come without a digest
(:meth:`DuplicateIndex.add_lazy`, a Parquet file per range that DuckDB loads in one statement after
reading): almost no id is read twice, so the digest
of such a copy is computed, from its line read again, only when another copy shares its id
(:meth:`DuplicateIndex.fill_lazy_digests`, before :meth:`DuplicateIndex.groups`).
Batches are Arrow arrays (pyarrow, already a dependency): building pandas object columns from the lists
took most of the ingest's main-process time at 1e6 resources.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

__all__ = ["BATCH", "Copy", "DuplicateIndex"]

BATCH = 50_000  # rows held in Python between appends: 200k took ~40 MB more peak RSS at 1e6 resources
_JOIN_MAX = 100_000  # duplicate ids joined back to their copies; more: the whole index streamed in key order
_COLUMNS = ("rtype", "rid", "digest", "study", "file_idx", "line", "entry", "seq", "lazy")
_TYPES = (pa.string(), pa.string(), pa.int64(), pa.bool_(), pa.int32(), pa.int64(), pa.string(), pa.int64(),
          pa.bool_())


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a resource id: its content digest (None: unknown), whether the ingest took it as a
    study resource, and where it is."""

    digest: int | None
    study: bool
    file_idx: int
    line: int | None
    entry: str | None


class DuplicateIndex:
    """Disk-backed record of every (type, id) read (see module doc). Use as a context manager."""

    def __init__(self, memory_limit: str = "128MB", folder: str | Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="blina-dup-", dir=folder))
        self.con = duckdb.connect(str(self.dir / "index.duckdb"))
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        spill = str(self.dir / "spill").replace("'", "''")
        self.con.execute(f"SET temp_directory = '{spill}'")
        self.con.execute("SET threads = 1")  # the machine's cores belong to the ingest
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("CREATE TABLE idx (rtype VARCHAR, rid VARCHAR, digest BIGINT, study BOOLEAN, "
                         "file_idx INTEGER, line BIGINT, entry VARCHAR, seq BIGINT, lazy BOOLEAN)")
        # one transaction while reading: a commit per appended batch (the WAL written and synced each time)
        # took 20 ms per 12k rows, 1.4 s of the main process in a 3.4 s ingest of 1e6 resources
        self.con.execute("BEGIN TRANSACTION")
        self._open = True
        self._lazy_files: list[tuple[str, int, int, int]] = []  # (Parquet file, file, first line, first seq)
        self._cols: tuple[list, ...] = tuple([] for _ in _COLUMNS)
        self.n = 0

    def add(self, rtype: str, rid: str, digest: int | None, study: bool, file_idx: int, line: int | None,
            entry: str | None) -> None:
        c = self._cols
        c[0].append(rtype)
        c[1].append(rid)
        c[2].append(digest)
        c[3].append(study)
        c[4].append(file_idx)
        c[5].append(line)
        c[6].append(entry)
        c[7].append(self.n)  # input order, for "first" and "later" copies
        c[8].append(False)
        self.n += 1
        if len(c[0]) >= BATCH:
            self.flush()

    def add_lazy(self, parquet: str, lines: int, file_idx: int, first_line: int) -> None:
        """Add NDJSON resources that are not study-relevant: a Parquet file (in :attr:`dir`, written by a
        reading worker) of ``rtype``, ``rid`` and ``line`` within a range of ``lines`` lines that starts
        after line ``first_line`` of file ``file_idx``; loaded with the others in one statement before the
        groups are read. They come without their digest: it is taken from the line only when the id is read
        more than once (:meth:`fill_lazy_digests`), which spares a sorted serialisation and a hash each."""
        self._lazy_files.append((parquet, file_idx, first_line, self.n))
        self.n += lines + 1  # seq = the range's first + its line

    def _load_lazy(self) -> None:
        if not self._lazy_files:
            return
        con = self.con
        con.execute("CREATE TEMP TABLE lazy_file (path VARCHAR, file_idx INTEGER, first_line BIGINT, seq BIGINT)")
        con.executemany("INSERT INTO lazy_file VALUES (?, ?, ?, ?)", self._lazy_files)
        con.execute(f"SET threads = {max(1, min(os.cpu_count() or 1, 4))}")  # the reading workers are done
        try:
            con.execute("INSERT INTO idx SELECT p.rtype, p.rid, NULL, false, f.file_idx, f.first_line + p.line, NULL, "
                        "f.seq + p.line, true FROM read_parquet($files, filename = true) p JOIN lazy_file f "
                        "ON p.filename = f.path", {"files": [f[0] for f in self._lazy_files]})
        finally:
            con.execute("SET threads = 1")
        con.execute("DROP TABLE lazy_file")
        for path, *_ in self._lazy_files:
            Path(path).unlink(missing_ok=True)
        self._lazy_files.clear()

    def flush(self) -> None:
        if not self._cols[0]:
            return
        # Arrow arrays from the lists (C loops); pandas object columns took most of the ingest's main process
        batch = pa.table([pa.array(col, type=t) for col, t in zip(self._cols, _TYPES, strict=True)],
                         names=list(_COLUMNS))
        self.con.register("_batch", batch)
        self.con.execute(f"INSERT INTO idx SELECT {', '.join(_COLUMNS)} FROM _batch")
        self.con.unregister("_batch")
        for col in self._cols:
            col.clear()

    def fill_lazy_digests(self, digests: Callable[[Iterator[tuple[int, int]]], Iterator[int | None]]) -> int:
        """Give a content digest to the copies added by :meth:`add_lazy` whose (type, id) another copy shares.
        ``digests(places)`` gets their (file, line) in file order and yields one digest each. Returns how
        many were digested."""
        self._commit()
        con = self.con
        con.execute("CREATE OR REPLACE TABLE dup AS SELECT hash(rtype, rid) AS h FROM idx GROUP BY h "
                    "HAVING COUNT(*) > 1")
        con.execute("CREATE OR REPLACE TABLE lazy_digest (file_idx INTEGER, line BIGINT, digest BIGINT)")
        cur = con.cursor()  # read while this connection writes
        cur.execute("SELECT DISTINCT file_idx, line FROM idx WHERE lazy AND hash(rtype, rid) IN (SELECT h FROM dup) "
                    "ORDER BY file_idx, line")
        places: list[tuple[int, int]] = []

        def stream() -> Iterator[tuple[int, int]]:
            while rows := cur.fetchmany(10_000):
                for file_idx, line in rows:
                    places.append((int(file_idx), int(line)))
                    yield places[-1]

        done: list[int | None] = []
        n = 0
        for digest in digests(stream()):
            done.append(digest)
            if len(done) >= BATCH:
                n += self._store_digests(places[: len(done)], done)
                del places[: len(done)]
                done.clear()
        n += self._store_digests(places[: len(done)], done)
        cur.close()
        if n <= BATCH:  # the common case: none or a few
            con.execute("UPDATE idx SET digest = d.digest, lazy = false FROM lazy_digest d "
                        "WHERE idx.lazy AND idx.file_idx = d.file_idx AND idx.line = d.line")
        elif n:  # many (an export read twice): the index rewritten by a join that spills (UPDATE's ran out of memory)
            con.execute("CREATE TABLE idx_digested AS SELECT i.rtype, i.rid, coalesce(i.digest, d.digest) AS digest, "
                        "i.study, i.file_idx, i.line, i.entry, i.seq, i.lazy AND d.line IS NULL AS lazy FROM idx i "
                        "LEFT JOIN lazy_digest d ON i.lazy AND i.file_idx = d.file_idx AND i.line = d.line")
            con.execute("DROP TABLE idx")
            con.execute("ALTER TABLE idx_digested RENAME TO idx")
        con.execute("DROP TABLE lazy_digest")
        return n

    def _commit(self) -> None:
        """End the reading transaction (before another cursor reads the table)."""
        self.flush()
        self._load_lazy()
        if self._open:
            self.con.execute("COMMIT")
            self._open = False

    def _store_digests(self, places: list[tuple[int, int]], digests: list[int | None]) -> int:
        if not digests:
            return 0
        batch = pa.table([pa.array([p[0] for p in places], pa.int32()), pa.array([p[1] for p in places], pa.int64()),
                          pa.array(digests, pa.int64())], names=["file_idx", "line", "digest"])
        self.con.register("_digests", batch)
        self.con.execute("INSERT INTO lazy_digest SELECT * FROM _digests")
        self.con.unregister("_digests")
        return len(digests)

    def groups(self) -> Iterator[tuple[str, str, list[Copy]]]:
        """(type, id, copies in input order) for every id read more than once within its type.

        The ids seen twice are counted first (a grouping that spills to disk); none is the common case.
        A few (up to :data:`_JOIN_MAX`) are joined back to their copies; more (an export read twice) are
        found by streaming the whole index in key order (an external sort): within the memory limit where
        the join's hash table would not be."""
        self.flush()
        self._load_lazy()
        con = self.con
        # grouped by a 64-bit hash of the key (a small aggregate state, where the strings did not fit 64 MB at
        # 1e7 resources); a hash shared by two keys only makes a candidate, the exact grouping is below
        con.execute("CREATE OR REPLACE TABLE dup AS SELECT hash(rtype, rid) AS h FROM idx GROUP BY h "
                    "HAVING COUNT(*) > 1")
        (n_dup,) = con.execute("SELECT COUNT(*) FROM dup").fetchone() or (0,)
        if not n_dup:
            return
        cols = "i.rtype, i.rid, i.digest, i.study, i.file_idx, i.line, i.entry"
        if n_dup <= _JOIN_MAX:
            cur = con.execute(f"SELECT {cols} FROM idx i WHERE hash(i.rtype, i.rid) IN (SELECT h FROM dup) "
                              "ORDER BY i.rtype, i.rid, i.file_idx, i.line NULLS FIRST, i.seq")
        else:
            cur = con.execute(f"SELECT {cols} FROM idx i "
                              "ORDER BY i.rtype, i.rid, i.file_idx, i.line NULLS FIRST, i.seq")
        group: list[Copy] = []
        key: tuple[str, str] | None = None
        while True:
            rows = cur.fetchmany(10_000)
            if not rows:
                break
            for rtype, rid, digest, study, file_idx, line, entry in rows:
                if (rtype, rid) != key:
                    if len(group) > 1 and key is not None:
                        yield key[0], key[1], group
                    key, group = (rtype, rid), []
                group.append(Copy(None if digest is None else int(digest), bool(study), int(file_idx),
                                  None if line is None else int(line), entry))
        if len(group) > 1 and key is not None:
            yield key[0], key[1], group

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DuplicateIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
