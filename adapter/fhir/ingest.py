"""FHIR R4 ingest: Bundles and Bulk Data NDJSON -> OMOP CDM v5.4, through SQL-on-FHIR v2 ViewDefinitions.

Every input resource ends as exactly one of (the accounting identity, checked by
:meth:`IngestReport.balanced`):

* **loaded**: validated (``fhir.resources`` R4B), flattened by its ViewDefinition, resolved and written;
* **skipped**: ``not_relevant`` (a type no ViewDefinition maps, or a record of a mapped type none of
  whose codings is a study code: only parsed and counted, its dates still extend the patient's
  observation period, protocol 3b.10), ``status`` (``entered-in-error``/``not-done``/``cancelled``,
  protocol 3b.3), ``duplicate`` (an identical copy of a resource already read in this run, study-relevant
  or not; found by a disk-backed index of every type/id, ``blina_study.adapter.fhir.dupes``), ``filtered``
  (dropped by a view's ``where``), ``incomplete`` (a resource mapped only for context, Encounter, without a
  usable date: nothing of the study depends on it);
* **rejected**: with file, line or Bundle entry, resource key and reason (malformed JSON, not an object,
  no resourceType/id, invalid FHIR, missing or dangling subject, duplicate id with different content,
  partial or invalid dates, no date, unconvertible values of study variables, implausible values:
  ``mappings/fhir/plausibility.yaml``, see ``blina_study.adapter.fhir.plausibility``); a duplicate id with
  different content rejects every copy, study-relevant or not, each naming the other locations, and their
  dates do not count for follow-up.

A Bundle is a container, not an input resource; its entries are. A run either stores everything it
reports as loaded or, when it fails midway (I/O error, interrupt, database error), nothing: on
PostgreSQL it is one transaction; on DuckDB the work tables are committed as they fill (so they need
not sit in memory) and dropped whatever happens, and every write to the CDM is one transaction.
The input of one run is the site's whole export: it replaces the site's previous content, so re-ingesting
gives the rows a fresh ingest of the same input gives (rows of resources that are gone, no longer
study-relevant, not done or now rejected are removed with their lineage). Rows are keyed by their source
resource in ``{cdm}.blina_lineage`` and keep their row ids when the resource comes again; ``person_id``
is stable per (site, Patient id) in ``{cdm}.blina_person_map`` (which keeps the ids of Patients gone from
the export, so a returning Patient gets its old id).

Reading: NDJSON input of 16 MB or more is read by worker processes (``workers``; forked, Linux) that
each parse a byte range of a file, take the records that are not study-relevant (counts, follow-up
dates) and validate the relevant ones; this process merges their results in input order and does the
rest, so the outcome (report, quarantine, rows, row ids) is the one a single process gives.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from blina_study.adapter.db import Database, validate_site_id
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.fhir.bulk import count_findings
from blina_study.adapter.fhir.bulk import prepare as prepare_input
from blina_study.adapter.fhir.dupes import DuplicateIndex
from blina_study.adapter.fhir.ingest_sql import (
    FOLLOWUP_TABLE,
    INCOMPLETE,
    LINEAGE_TABLE,
    PERSON_MAP_TABLE,
    WORK_CATALOG,
    SqlContext,
    StageDb,
    apply,
    compute,
    ddl_create_support,
    study_codes,
)
from blina_study.adapter.fhir.mapper import NOT_CHECKED, FhirConfig, ResourceMapper, load_config, load_views, valid_day
from blina_study.adapter.fhir.plausibility import Rules, UnitTexts, check_ranges, underflowing_numbers
from blina_study.adapter.fhir.reader import (
    BOM,
    Item,
    is_ndjson,
    iter_items,
    iter_line_items,
    line_chunks,
    read_chunk,
    read_raw,
)
from blina_study.adapter.fhir.shape import reason_for
from blina_study.adapter.fhir.viewdef import ViewDefinition
from blina_study.adapter.provenance import record_fhir_ingest
from blina_study.adapter.study import SiteOverlay, StudyDefinition, load_study

__all__ = ["IngestReport", "Rejection", "ingest_fhir"]

log = logging.getLogger(__name__)

_FLUSH_ROWS = 20_000
_MAX_LISTED_REJECTS = 10_000  # the report lists this many; the quarantine file has all of them
_PROGRESS_EVERY = 10_000
# Parallel reading (see _Run.read_parallel): NDJSON ranges of this size go to worker processes, when the
# NDJSON input is at least _PARALLEL_MIN_BYTES (below, starting the workers costs more than they save).
_CHUNK_BYTES = 8 << 20
_PARALLEL_MIN_BYTES = 16 << 20


@dataclass(frozen=True)
class Rejection:
    """One rejected input resource. ``location`` is ``line N`` and/or a Bundle entry path."""

    file: str
    line: int | None
    entry: str | None
    resource_key: str | None
    reason: str

    @property
    def where(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(f":{self.line}")
        if self.entry:
            parts.append(f"#{self.entry}")
        return "".join(parts)


@dataclass
class IngestReport:
    """What happened to every input resource, and what was written."""

    site_id: str
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)  # Bulk Data manifests (blina_study.adapter.fhir.bulk)
    not_fhir_files: list[dict[str, str]] = field(default_factory=list)  # ignored: no FHIR resource in them
    n_server_errors: int = 0  # OperationOutcome issues in the export's error files (the server's, not data)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # problems of the export itself (exit 1)
    read_by_file: Counter = field(default_factory=Counter)  # resources read, by file
    # ids read more than once within a type: groups with identical / different content, and the first groups
    duplicate_ids: dict[str, Any] = field(default_factory=lambda: {"identical": 0, "conflicting": 0, "listed": []})
    read: int = 0
    loaded: Counter = field(default_factory=Counter)  # by resource type
    skipped: dict[str, Counter] = field(
        default_factory=lambda: {k: Counter() for k in ("not_relevant", "status", "duplicate", "filtered",
                                                     "incomplete")}
    )
    n_rejected: int = 0
    rejected: list[Rejection] = field(default_factory=list)  # the first _MAX_LISTED_REJECTS
    rejected_by_reason: Counter = field(default_factory=Counter)
    rows: dict[str, int] = field(default_factory=dict)  # OMOP rows written per table
    unknown_concept_rows: dict[str, int] = field(default_factory=dict)
    top_unknown_codes: list[dict[str, Any]] = field(default_factory=list)
    deceased_without_date: int = 0
    seconds: float = 0.0

    @property
    def n_loaded(self) -> int:
        return sum(self.loaded.values())

    @property
    def n_skipped(self) -> int:
        return sum(sum(c.values()) for c in self.skipped.values())

    def balanced(self) -> bool:
        """The accounting identity: read = loaded + skipped + rejected."""
        return self.read == self.n_loaded + self.n_skipped + self.n_rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "files": self.files,
            "skipped_files": self.skipped_files,
            "manifests": self.manifests,
            "not_fhir_files": self.not_fhir_files,
            "server_errors": {"total": self.n_server_errors, "listed": self.server_errors},
            "findings": self.findings,
            "duplicate_ids": self.duplicate_ids,
            "resources_read": self.read,
            "loaded": {"total": self.n_loaded, "by_type": dict(sorted(self.loaded.items()))},
            "skipped": {
                "total": self.n_skipped,
                **{k: dict(sorted(c.items())) for k, c in self.skipped.items()},
            },
            "rejected": {
                "total": self.n_rejected,
                "by_reason": dict(self.rejected_by_reason.most_common()),
                "listed": [r.__dict__ for r in self.rejected],
            },
            "balanced": self.balanced(),
            "omop_rows_written": self.rows,
            "unknown_concept_rows": self.unknown_concept_rows,
            "top_unknown_codes": self.top_unknown_codes,
            "deceased_without_date": self.deceased_without_date,
            "seconds": round(self.seconds, 3),
        }


def _reason_kind(reason: str) -> str:
    """A short category for counting (the text up to the first colon or detail)."""
    for sep in (":", " (", " '"):
        if sep in reason:
            reason = reason.split(sep, 1)[0]
    return reason[:80]


_SQL_TYPES = {
    "duckdb": {"decimal": "DOUBLE", "integer": "BIGINT", "positiveInt": "BIGINT", "unsignedInt": "BIGINT",
               "integer64": "BIGINT", "boolean": "BOOLEAN"},
    "postgresql": {"decimal": "DOUBLE PRECISION", "integer": "BIGINT", "positiveInt": "BIGINT",
                   "unsignedInt": "BIGINT", "integer64": "BIGINT", "boolean": "BOOLEAN"},
}
_PD_TYPES = {"DOUBLE": "Float64", "DOUBLE PRECISION": "Float64", "BIGINT": "Int64", "INTEGER": "Int64",
             "BOOLEAN": "boolean"}


class _Stage:
    """Buffers rows per temporary table and appends them in bulk (COPY / DataFrame append)."""

    def __init__(self, db: StageDb) -> None:
        self.db = db
        self.tables: dict[str, tuple[list[str], list[str]]] = {}
        self.buffers: dict[str, list[tuple]] = {}

    def create(self, name: str, columns: list[tuple[str, str]]) -> None:
        cols = ", ".join(f"{c} {t}" for c, t in columns)
        self.db.execute(f"CREATE TEMP TABLE {name} ({cols})")
        self.tables[name] = ([c for c, _ in columns], [t for _, t in columns])
        self.buffers[name] = []

    def add(self, name: str, rows: Iterable[tuple]) -> None:
        buf = self.buffers[name]
        buf.extend(rows)
        if len(buf) >= _FLUSH_ROWS:
            self.flush(name)

    def flush(self, name: str | None = None) -> None:
        for n in [name] if name else list(self.buffers):
            buf = self.buffers[n]
            if not buf:
                continue
            cols, types = self.tables[n]
            df = pd.DataFrame.from_records(buf, columns=cols)
            for c, t in zip(cols, types, strict=True):
                pd_type = _PD_TYPES.get(t)
                if pd_type:
                    df[c] = df[c].astype(pd_type)
            self.db.bulk_insert(n, df, cols)
            buf.clear()


def _config_tables(
    stage: _Stage, study: StudyDefinition, overlay: SiteOverlay | None, config: FhirConfig, rtypes: Iterable[str],
    rules: Rules,
) -> None:
    v = "VARCHAR"
    tables: dict[str, tuple[list[tuple[str, str]], list[tuple]]] = {
        "_bl_cfg_system": ([("system", v), ("vocabulary_id", v)], list(config.systems.items())),
        "_bl_cfg_var": (
            [("variable", v), ("vocabulary_id", v), ("code", v), ("descendants", "BOOLEAN")],
            [(n, c.vocabulary_id, c.code, c.descendants) for n, var in study.variables.items() for c in var.codes],
        ),
        "_bl_cfg_var_kind": (
            [("variable", v), ("kind", v), ("unit_family", v), ("canonical", v), ("units_text", v)],
            [
                (
                    n,
                    var.value,
                    var.unit_family,
                    study.unit_families[var.unit_family].canonical if var.unit_family else None,
                    ", ".join(study.unit_families[var.unit_family].factors) if var.unit_family else None,
                )
                for n, var in study.variables.items()
            ],
        ),
        "_bl_cfg_overlay": (
            [("variable", v), ("source_value", v), ("system", v), ("unit", v)],
            [(n, c.source_value, c.system, c.unit) for n, codes in (overlay.variables if overlay else {}).items()
             for c in codes if c.source_value is not None],
        ),
        "_bl_cfg_unit": (
            [("unit_family", v), ("unit", v), ("factor", "DOUBLE PRECISION")],
            [(f, u, float(k)) for f, fam in study.unit_families.items() for u, k in fam.factors.items()]
            # the site's own units (overlay unit + unit_factor; the build converts with that factor)
            + [(f, u, float(k)) for (f, u), k in (overlay.site_units(study) if overlay else {}).items()
               if u not in study.unit_families[f].factors],
        ),
        "_bl_cfg_range": (
            [("variable", v), ("lo", "DOUBLE PRECISION"), ("hi", "DOUBLE PRECISION"), ("range_text", v)],
            [(n, float(lo), float(hi), f"[{lo:g}, {hi:g}]") for n, (lo, hi) in rules.file.ranges.items()],
        ),
        "_bl_cfg_value_set": (
            [("polarity", v), ("vocabulary_id", v), ("code", v)],
            [("positive", c.vocabulary_id, c.code) for c in study.value_sets.positive]
            + [("negative", c.vocabulary_id, c.code) for c in study.value_sets.negative],
        ),
        "_bl_cfg_operator": ([("name", v)], [(o,) for o in study.operators]),
        "_bl_cfg_type": (
            [("rtype", v), ("concept_name", v)],
            [(t, config.type_concept_name(t)) for t in sorted({*rtypes, "default"})],
        ),
        "_bl_cfg_gender": ([("gender", v), ("code", v)], list(config.gender.items())),
        "_bl_cfg_visit": (
            [("system", v), ("code", v), ("vocabulary_id", v), ("concept_code", v)],
            [(system, code, config.visit_vocabulary, target) for system in config.encounter_class_systems
             for code, target in config.encounter_class.items()],
        ),
        "_bl_cfg_obs_category": ([("name", v)], [(c,) for c in config.observation_categories]),
    }
    for name, (cols, rows) in tables.items():
        stage.create(name, cols)
        stage.add(name, rows)


def _view_columns(view: ViewDefinition, dialect: str) -> list[tuple[str, str]]:
    types = _SQL_TYPES[dialect]
    return [("sid", "BIGINT"), ("ord", "INTEGER")] + [
        (c.name, types.get(c.type or "", "VARCHAR")) for c in view.columns
    ]


def ingest_fhir(
    db: Database,
    paths: Iterable[str | Path],
    *,
    site_id: str,
    study: StudyDefinition | None = None,
    overlay: SiteOverlay | None = None,
    views: dict[str, ViewDefinition] | None = None,
    config: FhirConfig | None = None,
    quarantine: TextIO | None = None,
    on_progress: Callable[[int], None] | None = None,
    duckdb_memory_limit: str | None = "128MB",
    workers: int | None = None,
    rules: Rules | None = None,
    validation: str = "fast",
) -> IngestReport:
    """Ingest FHIR files/folders into ``db``'s CDM schema for site ``site_id`` (see module doc).

    The CDM tables and a vocabulary must exist (``blina init-db``). ``quarantine``: a text stream that
    receives one JSON line per rejected resource (``file``, ``line``, ``entry``, ``resource_key``,
    ``reason``, ``resource``). ``on_progress(n_read)`` is called every few thousand resources; an
    exception it raises aborts the run and rolls everything back. ``duckdb_memory_limit``: DuckDB's
    buffer pool during the run (it spills to disk beyond; restored afterwards), None to leave it.
    ``workers``: processes that parse NDJSON ranges side by side (Linux; the outcome is the same as with
    one): None takes the CPU count (at most 4) when the NDJSON input is 16 MB or more, else 1.
    ``rules``: the plausibility rules (default: ``mappings/fhir/plausibility.yaml`` with today's date).
    ``validation``: ``fast`` (the generated checks of the elements the study reads, blina_study.adapter.fhir.validate)
    or ``full`` (every element through fhir.resources R4B, 16-24x the cost per study resource).
    """
    t0 = time.perf_counter()
    validate_site_id(site_id)  # before any work: the person map and lineage key on it (VARCHAR(40))
    study = study or load_study()
    config = config or load_config()
    views = views or load_views()
    rules = rules or Rules.for_today()
    check_ranges(study, rules)
    if overlay is not None and overlay.site_id != site_id:
        raise BlinaError(
            f"the overlay {overlay.source} is for site {overlay.site_id!r}, not {site_id!r}",
            hint="pass the overlay of this site, or the matching --site",
        )
    concept_entries = [f"variables.{n}[{i}]" for n, codes in (overlay.variables if overlay else {}).items()
                       for i, c in enumerate(codes) if c.source_value is None]
    if overlay is not None and concept_entries:
        # A source concept entry matches OMOP *_source_concept_id; a FHIR Coding has a system and a code.
        from blina_study.adapter.study import StudyDefinitionError

        raise StudyDefinitionError(
            f"{overlay.source}: {concept_entries[0]}: vocabulary_id + concept_code match an OMOP source "
            "concept and cannot be read from FHIR input",
            hint="for FHIR codings write {source_value: <code>, system: <Coding.system>} (mappings/README.md)",
        )
    if not db.table_exists(db.schemas.cdm, "person"):
        raise BlinaError(f"no OMOP CDM tables in schema {db.schemas.cdm!r} of {db.safe_url}",
                         hint="run `blina init-db` first (same --db/--cdm-schema/--vocab-schema)")
    if not db.query(f"SELECT COUNT(*) FROM {db.qualified('vocab', 'concept')}")[0][0]:
        raise BlinaError(f"the vocabulary schema {db.schemas.vocab!r} has no concepts",
                         hint="run `blina init-db` (loads the study vocabulary) or load the OHDSI vocabulary")
    bulk = prepare_input(paths)
    files = bulk.files
    report = IngestReport(site_id=site_id, files=[str(f) for f in files],
                          skipped_files=[str(f) for f in bulk.skipped_files],
                          manifests=[m.to_dict() for m in bulk.manifests],
                          not_fhir_files=[{"file": str(f), "reason": why} for f, why in bulk.not_fhir],
                          n_server_errors=bulk.n_server_errors,
                          server_errors=[e.__dict__ for e in bulk.server_errors], findings=list(bulk.findings))
    ucum_system = next((s for s, voc in config.systems.items() if voc == "UCUM"), None)
    ctx = SqlContext(
        cdm=db.q(db.schemas.cdm),
        vocab=db.q(db.schemas.vocab),
        site=site_id,
        ucum_system=ucum_system,
        ucum_vocabulary=config.systems.get(ucum_system) if ucum_system else None,
        mrn_system=overlay.patient_identifier_system if overlay else None,
        gender_vocabulary=config.gender_vocabulary,
        operator_domain=config.operator_domain,
        type_vocabulary=config.type_concept_vocabulary,
        death_grace_days=rules.file.dates.death_grace_days,
    )
    # PostgreSQL: everything in one transaction (TEMP work tables live in the server; a killed client's
    # transaction is rolled back). DuckDB would hold a whole run's uncommitted work in this process's
    # memory, so there the work tables are committed as they are filled ("staged"), in a separate work
    # database (StageDb), and only the writes to the CDM run in one transaction, which also creates the
    # support tables when absent: a run that fails or is killed at any point leaves the user's database
    # as it was.
    staged = db.dialect == "duckdb"
    if staged:
        _drop_legacy_work_tables(db)
    missing_support = [t for t in (PERSON_MAP_TABLE, LINEAGE_TABLE, FOLLOWUP_TABLE)
                       if not db.table_exists(db.schemas.cdm, t)]
    restore_limit = None
    if staged and duckdb_memory_limit:
        restore_limit = db.query("SELECT current_setting('memory_limit')")[0][0]
        db.execute(f"SET memory_limit = '{_memory_setting(duckdb_memory_limit)}'")
    sdb = StageDb(db)
    try:
        with contextlib.nullcontext() if staged else db.transaction():
            if staged:  # empty stand-ins for the support tables compute() reads
                work = f"{WORK_CATALOG}.main"
                for stmt in ddl_create_support(db, schema=work):
                    db.execute(stmt)
                ctx.support = {t: f"{work}.{t}" for t in missing_support}
            else:
                _wait_for_other_ingests(db)
                for stmt in ddl_create_support(db):
                    db.execute(stmt)
            sdb.drop_all()
            run = _stage_input(sdb, ctx, files, views, study, overlay, config, report, quarantine, on_progress,
                               _reading_workers(files, workers), rules, validation)
            for sid, key, file_idx, line, entry, reason in compute(sdb, ctx):
                if sid not in run.late_rejected:  # several problems: the first (by step) is reported
                    run.late_rejected.add(sid)
                    if reason.startswith(INCOMPLETE):  # a non-study resource without what only studies need
                        report.skipped["incomplete"][key.split("/", 1)[0]] += 1
                        continue
                    run.reject(report.files[file_idx], line, entry, key, reason, resource=_LATE)
            with db.transaction():
                result = apply(sdb, ctx)
                if result["patients"]:  # what the data say they are (HTEST test data): CDM_SOURCE
                    record_fhir_ingest(db, site_id, result["patients"], result["test_data_patients"])
                if not staged:
                    sdb.drop_all()
    finally:
        if restore_limit is not None:
            db.execute(f"SET memory_limit = '{_memory_setting(restore_limit)}'")
        if staged:
            sdb.close()
    report.findings += count_findings(bulk, {report.files[i]: n for i, n in report.read_by_file.items()})
    report.loaded.update(result["loaded_by_type"])
    report.rows = result["rows"]
    report.unknown_concept_rows = result["unknown_concept_rows"]
    report.top_unknown_codes = result["top_unknown_codes"]
    report.seconds = time.perf_counter() - t0
    log.info("site %s: read %d, loaded %d, skipped %d, rejected %d in %.1f s", site_id, report.read,
              report.n_loaded, report.n_skipped, report.n_rejected, report.seconds)
    return report


def _wait_for_other_ingests(db: Database) -> None:
    """PostgreSQL: ingests into one CDM schema run one after the other (a transaction-level advisory lock,
    released by commit, rollback or a lost connection). Without it two runs at once raced on the support
    tables' DDL ("already exists") and on the id ranges; with it the second waits and then runs on what
    the first committed, so both succeed with the results of two runs in a row."""
    key = {"k": f"blina ingest {db.schemas.cdm}"}
    if not db.query("SELECT pg_try_advisory_xact_lock(hashtext(:k))", key)[0][0]:
        log.warning("another ingest into schema %s of this database is running: waiting for it to finish",
                    db.schemas.cdm)
        db.query("SELECT pg_advisory_xact_lock(hashtext(:k))", key)


def _drop_legacy_work_tables(db: Database) -> None:
    """Work tables ``_bl_*`` in the CDM schema were left there by a killed run of an earlier version
    (work tables now live in a separate database): removed, with a note."""
    rows = db.query("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                    "AND table_schema = :s AND table_name LIKE '\\_bl\\_%' ESCAPE '\\'", {"s": db.schemas.cdm})
    for (name,) in rows:
        db.execute(f"DROP TABLE IF EXISTS {db.qualified('cdm', name)}")
    if rows:
        log.warning("removed %d work tables (_bl_*) that an interrupted ingest left in schema %s",
                    len(rows), db.schemas.cdm)


def _reading_workers(files: list[Path], workers: int | None) -> int:
    """How many processes read the input (see ``ingest_fhir``)."""
    if workers is not None and workers < 1:
        raise BlinaError(f"workers must be 1 or more, not {workers}", hint="pass --workers 1 to read in one process")
    # the workers are forked (they inherit the run's mapper; spawning would re-import ~0.5 s of modules),
    # which is safe here: they only parse files and never touch the database connection
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if workers is not None:
        return workers
    try:
        size = sum(p.stat().st_size for p in files if is_ndjson(p))
    except OSError:
        return 1  # the reader reports the file
    return min(os.cpu_count() or 1, 4) if size >= _PARALLEL_MIN_BYTES else 1


def _memory_setting(text: str) -> str:
    """A DuckDB memory size (``192MB``, ``1.5 GiB``), checked because SET takes no bind parameter."""
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]?i?B\s*", text, re.I):
        raise BlinaError(f"invalid DuckDB memory limit {text!r}", hint="use a size such as 192MB or 2GB")
    return text.strip()


_LATE = object()  # marker: re-read the resource from its file for the quarantine


def _digest(res: dict) -> int | None:
    """The content digest of a resource for the duplicate check (None: nested deeper than orjson writes)."""
    try:
        return hash(orjson.dumps(res, option=orjson.OPT_SORT_KEYS))
    except TypeError:
        return None


def _line_digests(files: list[Path]) -> Callable[[Iterator[tuple[int, int]]], Iterator[int | None]]:
    """The content digests (:func:`_digest`) of NDJSON lines given as (file, line) in file order, read forward
    in one pass per file by :class:`UnitTexts` (for :meth:`DuplicateIndex.fill_lazy_digests`)."""

    def digests(places: Iterator[tuple[int, int]]) -> Iterator[int | None]:
        texts = UnitTexts()
        try:
            for file_idx, line in places:
                raw = texts.raw(str(files[file_idx]), line) or b""
                try:
                    yield _digest(orjson.loads(raw[3:] if raw.startswith(BOM) else raw))
                except orjson.JSONDecodeError:  # cannot happen for a line a worker parsed: never identical
                    yield None
        finally:
            texts.close()

    return digests


def _where(file: str, line: int | None, entry: str | None) -> str:
    return Rejection(file, line, entry, None, "").where
_STAGED, _SKIPPED, _REJECTED = 0, 1, 2  # outcome of the first copy of a key (low bits of _Run.seen)


def _stage_input(sdb: StageDb, ctx: SqlContext, files: list[Path], views: dict[str, ViewDefinition],
                 study: StudyDefinition, overlay: SiteOverlay | None, config: FhirConfig, report: IngestReport,
                 quarantine: TextIO | None, on_progress: Callable[[int], None] | None, workers: int,
                 rules: Rules, validation: str = "fast") -> _Run:
    """Read every file into the work tables (configuration, view rows, resources, run-level lists)."""
    stage = _Stage(sdb)
    _config_tables(stage, study, overlay, config, {v.resource for v in views.values()}, rules)
    stage.flush()
    mapper = _study_mapper(sdb, ctx, views, config, overlay, rules, validation)
    index = DuplicateIndex()
    try:
        run = _Run(mapper, report, quarantine, on_progress, stage, index)
        try:
            _read_input(run, stage, views, sdb.dialect, files, workers)
        finally:
            run.unit_texts.close()
        log.debug("duplicate index: %d resources with a type and id", index.n)
        run.resolve_duplicates(files)
    finally:
        index.close()
    if on_progress:
        on_progress(report.read)
    lists: dict[str, tuple[list[tuple[str, str]], list[tuple]]] = {
        "_bl_cfg_file": ([("file_idx", "INTEGER"), ("path", "VARCHAR")], list(enumerate(report.files))),
        "_bl_cfg_conflict": ([("source_key", "VARCHAR")],
                             [(k,) for k in run.conflicts if run.seen[k] & 3 == _STAGED]),
        "_bl_cfg_rejected_patient": ([("patient_key", "VARCHAR")], [(k,) for k in run.rejected_patients]),
        "_bl_cfg_followup": ([("patient_key", "VARCHAR"), ("first_date", "VARCHAR"), ("last_date", "VARCHAR")],
                             run.sink.rows()),
    }
    for name, (cols, rows) in lists.items():
        stage.create(name, cols)
        stage.add(name, rows)
    stage.flush()
    return run


def _read_input(run: _Run, stage: _Stage, views: dict[str, ViewDefinition], dialect: str, files: list[Path],
                workers: int) -> None:
    for name, view in views.items():
        stage.create(f"_bl_s_{name}", _view_columns(view, dialect))
    stage.create("_bl_res", [("sid", "BIGINT"), ("rtype", "VARCHAR"), ("source_key", "VARCHAR"),
                             ("subject_key", "VARCHAR"), ("file_idx", "INTEGER"), ("line", "INTEGER"),
                             ("entry", "VARCHAR")])
    if workers > 1:
        run.read_parallel(files, workers)
    else:
        for file_idx, path in enumerate(files):
            run.read_file(path, file_idx)


def _study_mapper(db: StageDb, ctx: SqlContext, views: dict[str, ViewDefinition], config: FhirConfig,
                  overlay: SiteOverlay | None, rules: Rules | None = None,
                  validation: str = "fast") -> ResourceMapper:
    """A mapper that knows the study's codes as (system URI, code) pairs, resolved through this
    database's vocabulary (so descendants and 'Maps to' sources count), plus the overlay's codes."""
    systems_of: dict[str, list[str]] = {}
    for system, vocab in config.systems.items():
        systems_of.setdefault(vocab, []).append(system)
    codes: set[tuple[str | None, str]] = set()
    for vocab, code in study_codes(db, ctx):
        for system in systems_of.get(vocab, ()):
            codes.add((system, code))
    anys: set[str] = set()
    for entries in (overlay.variables.values() if overlay else ()):
        for e in entries:
            if e.source_value is None:  # a source concept entry: refused for FHIR input (ingest_fhir)
                continue
            if e.system:
                codes.add((e.system, e.source_value))
            else:
                anys.add(e.source_value)
    return ResourceMapper(views, config, study_codes=frozenset(codes), any_system_codes=frozenset(anys),
                          rules=rules, validation=validation)


class _NoiseSink:
    """Takes the resources that are not study-relevant: counts them by type and keeps the first and last
    date of each patient's records (they count for follow-up, protocol 3b.10, unless not done, 3b.3).

    Called as ``sink(resource, type)`` -> True when it took the resource (the reader's ``consume``). The
    result does not depend on the order of the records, so ranges read in parallel merge exactly: a
    patient's first date is the least valid first date of its records that are not not-done (an
    impossible date is ignored), the last likewise."""

    __slots__ = ("candidate", "error", "followup", "is_study", "n", "not_relevant", "relevant", "status_skip")

    def __init__(self, mapper: ResourceMapper, not_relevant: Counter) -> None:
        self.relevant, self.is_study = mapper.relevant, mapper.is_study
        self.candidate, self.status_skip = mapper.followup_dates, mapper.status_skip
        self.not_relevant = not_relevant
        self.n = 0
        self.followup: dict[str, list[str | None]] = {}  # patient id -> [first, last], either may be None
        # the reason the last resource could not be classified (a malformed element): the resource is
        # then handed on (returns False) and whoever takes it rejects it with this reason
        self.error: str | None = None

    def __call__(self, res: dict, rtype: str) -> bool:
        try:
            return self._take(res, rtype)
        except _RECORD_ERRORS as exc:
            self.error = reason_for(res, exc)
            return False

    def _take(self, res: dict, rtype: str) -> bool:
        if rtype in self.relevant and self.is_study(res):
            return False
        found = self.candidate(res)
        # the status of every dated record: checked only when the dates moved an extreme, a malformed status
        # (a coding code that is a list) rejected the record or not depending on the records read before it
        if found is not None and not self.status_skip(res):
            patient, first, last = found
            cur = self.followup.get(patient)
            if cur is None:
                cur = self.followup[patient] = [None, None]
            # the calendar checks only when the dates would move an extreme (most noise does not)
            if (cur[0] is None or first < cur[0]) and valid_day(first):
                cur[0] = first
            if (cur[1] is None or last > cur[1]) and valid_day(last):
                cur[1] = last
        # counted once taken: a record whose classification raised is rejected, not also counted here
        self.not_relevant[rtype] += 1
        self.n += 1
        return True

    def merge(self, followup: dict[str, list[str | None]]) -> None:
        for patient, (lo, hi) in followup.items():
            cur = self.followup.setdefault(patient, [None, None])
            if lo is not None and (cur[0] is None or lo < cur[0]):
                cur[0] = lo
            if hi is not None and (cur[1] is None or hi > cur[1]):
                cur[1] = hi

    def rows(self) -> list[tuple[str, str | None, str | None]]:
        """(patient id, first, last); a patient with one valid side gets it for both."""
        return [(k, lo or hi, hi or lo) for k, (lo, hi) in self.followup.items() if lo or hi]


# What a malformed record raises in the (pure) reading, classifying and mapping code: caught per record,
# which is then rejected with its element and reason (blina_study.adapter.fhir.shape). orjson's JSONEncodeError (too
# deep to serialise) is a TypeError.
_RECORD_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)


@dataclass
class _RangeScan:
    """What a worker found in one NDJSON range: counts, follow-up dates, and the lines the main process
    reads (study-relevant, unreadable, Bundles) as (line number within the range, byte offset, raw line)."""

    n_lines: int
    not_relevant: Counter  # by type: the noise and the types no view maps and follow-up does not read
    followup: dict[str, list[str | None]]
    kept: list[tuple[int, int, bytes]]
    noted: str | None  # a Parquet file of (rtype, rid, line within the range) of the resources taken here
    checked: dict[int, str | None]  # line -> validation problem (None: valid) of the study-relevant lines
    errors: dict[int, str]  # line -> why the line's resource could not be read (a malformed element)
    digests: dict[int, int]  # line -> content digest of the study-relevant lines (see _digest)


_worker_mapper: ResourceMapper | None = None
_worker_folder: Path | None = None  # where a worker writes its ranges' duplicate-check rows (the index's folder)
_worker_files = itertools.count()


def _worker_init(mapper: ResourceMapper, folder: Path) -> None:
    global _worker_mapper, _worker_folder
    _worker_mapper, _worker_folder = mapper, folder
    # Ctrl-C is the main process's to handle (it cancels the run); workers finish their range quietly
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _scan_range(path: str, start: int, end: int | None) -> _RangeScan:
    """A worker's part of :meth:`_Run.read_parallel`: parse every line of the range and take the noise
    (as ``iter_items`` with the sink does); everything else goes back to the main process as it is."""
    mapper = _worker_mapper
    if mapper is None:
        raise RuntimeError("_scan_range runs in a worker started by _Run.read_parallel")
    not_relevant: Counter = Counter()
    sink = _NoiseSink(mapper, not_relevant)
    wanted, loads, decode_error = mapper.wanted, orjson.loads, orjson.JSONDecodeError
    kept: list[tuple[int, int, bytes]] = []
    # the duplicate check's rows, a column each; the digest is taken later, only for ids read twice
    noted_types: list[str] = []
    noted_ids: list[str] = []
    noted_lines: list[int] = []
    checked: dict[int, str | None] = {}
    errors: dict[int, str] = {}
    digests: dict[int, int] = {}
    validation_problem = mapper.validation_problem
    n_lines = 0
    next_offset = start
    for raw in read_chunk(Path(path), start, end):
        n_lines += 1
        offset, next_offset = next_offset, next_offset + len(raw)
        try:  # without a leading BOM, as the one-process reader parses (a non-study line with one was loaded)
            res = loads(raw[3:] if raw.startswith(BOM) else raw)
        except decode_error:
            if raw.strip():
                kept.append((n_lines, offset, raw))
            continue
        if res.__class__ is dict:
            rtype = res.get("resourceType")
            if rtype.__class__ is str and rtype != "Bundle":
                if rtype not in wanted:
                    not_relevant[rtype] += 1
                    rid = res.get("id")
                    if rid.__class__ is str and rid:
                        noted_types.append(rtype)
                        noted_ids.append(rid)
                        noted_lines.append(n_lines)
                    continue
                if sink(res, rtype):
                    rid = res.get("id")
                    if rid.__class__ is str and rid:
                        noted_types.append(rtype)
                        noted_ids.append(rid)
                        noted_lines.append(n_lines)
                    continue
                if sink.error is not None:
                    errors[n_lines], sink.error = sink.error, None
                else:
                    # the content digest and validation are pure and costly: done here, used by the main
                    # process (a duplicate or not-done resource is not validated there: the result goes unused)
                    digest = _digest(res)
                    if digest is not None:  # None: nested deeper than orjson writes (the main process rejects it)
                        digests[n_lines] = digest
                    try:
                        checked[n_lines] = validation_problem(res)
                    except _RECORD_ERRORS as exc:
                        errors[n_lines] = reason_for(res, exc)
        kept.append((n_lines, offset, raw))
    # the duplicate check's rows go to the index as a Parquet file written here, in parallel, and loaded by
    # DuckDB at the end: the main process never handles them (appending them took 0.8-1.4 s of it at 1e6)
    noted = None
    if noted_types:
        out = _worker_folder / f"noted-{os.getpid()}-{next(_worker_files)}.parquet"
        pq.write_table(pa.table([pa.array(noted_types, pa.string()), pa.array(noted_ids, pa.string()),
                                 pa.array(noted_lines, pa.int64())], names=["rtype", "rid", "line"]), out)
        noted = str(out)
    return _RangeScan(n_lines, not_relevant, sink.followup, kept, noted, checked, errors, digests)


class _Run:
    """Mutable state of one ingest run (the per-resource hot path lives in :meth:`read_file`)."""

    def __init__(self, mapper: ResourceMapper, report: IngestReport, quarantine: TextIO | None,
                 on_progress: Callable[[int], None] | None, stage: _Stage, index: DuplicateIndex) -> None:
        self.mapper = mapper
        self.report = report
        self.quarantine = quarantine
        self.on_progress = on_progress
        self.stage = stage
        self.late_rejected: set[int] = set()
        self.sid = 0
        # key -> content hash * 4 + outcome, for study-relevant resources only: one int per key keeps
        # this (the only per-resource state of a run) small
        self.seen: dict[str, int] = {}
        self.conflicts: set[str] = set()
        self.rejected_patients: set[str] = set()
        self.not_relevant = report.skipped["not_relevant"]
        self.sink = _NoiseSink(mapper, self.not_relevant)
        self.checked: dict[int, str | None] = {}  # line -> validation problem, found by a worker (this range)
        self.errors: dict[int, str] = {}  # line -> malformed element, found by a worker (this range)
        self.digests: dict[int, int] = {}  # line -> content digest, by a worker (this range)
        self.index = index
        self.file_idx = 0  # the file being read (for note)
        self.unit_texts = UnitTexts()  # raw lines read again (rare: a zero that may have underflowed)

    def reject(self, file: str, line: int | None, entry: str | None, key: str | None, reason: str,
               resource: Any = None) -> None:
        rep = self.report
        rep.n_rejected += 1
        rep.rejected_by_reason[_reason_kind(reason)] += 1
        rej = Rejection(file, line, entry, key, reason)
        if len(rep.rejected) < _MAX_LISTED_REJECTS:
            rep.rejected.append(rej)
        if self.quarantine is not None:
            if resource is _LATE:
                resource = read_raw(file, line, entry)
            rec = {**rej.__dict__, "resource": resource}
            try:
                text = orjson.dumps(rec).decode()
            except TypeError:  # nested deeper than orjson writes: the record's text as it was read
                rec["resource"] = _raw_text(file, line)
                text = orjson.dumps(rec).decode()
            self.quarantine.write(text + "\n")

    def note(self, res: dict, rtype: str, rid: Any, line: int | None, entry: str | None, study: bool = False) -> None:
        """Record one resource the reader, the noise sink or this run took, for the duplicate check."""
        if rid.__class__ is str and rid:
            self.index.add(rtype, rid, _digest(res), study, self.file_idx, line, entry)

    def resolve_duplicates(self, files: list[Path]) -> None:
        """Act on the ids read more than once within a type (see the module doc): every group is listed in
        the report; identical copies of a non-study resource count once (the later ones are skipped as
        ``duplicate``); copies with different content where one is not a study resource are all rejected
        (the study copies through ``_bl_cfg_conflict``, as among study resources), and when such a record's
        dates count for follow-up, follow-up is computed again without them. Groups of study copies only
        were handled while reading (``_repeat``)."""
        report = self.report
        dup = report.duplicate_ids
        noise_conflicts: set[str] = set()
        self.index.fill_lazy_digests(_line_digests(files))
        for rtype, rid, copies in self.index.groups():
            key = f"{rtype}/{rid}"
            same = copies[0].digest is not None and all(c.digest == copies[0].digest for c in copies)
            dup["identical" if same else "conflicting"] += 1
            places = [_where(report.files[c.file_idx], c.line, c.entry) for c in copies]
            if len(dup["listed"]) < _MAX_LISTED_REJECTS:
                dup["listed"].append({"resource_key": key, "same_content": same, "copies": len(copies),
                                      "locations": places[:10]})
            if all(c.study for c in copies):
                continue
            if same:
                for c in copies[1:]:
                    if not c.study:
                        self.not_relevant[rtype] -= 1
                        report.skipped["duplicate"][rtype] += 1
                continue
            for c, here in zip(copies, places, strict=True):
                if c.study:
                    self.conflicts.add(key)
                    continue
                self.not_relevant[rtype] -= 1
                others = ", ".join(p for p in places if p != here)
                self.reject(report.files[c.file_idx], c.line, c.entry, key,
                            f"duplicate id {key} with different content (also at {others}): all copies rejected",
                            _LATE)
            noise_conflicts.add(key)
        for c in (self.not_relevant, report.skipped["duplicate"]):
            for k in [k for k, n in c.items() if n == 0]:
                del c[k]
        if any(k.split("/", 1)[0] in self.mapper.config.followup for k in noise_conflicts):
            self._followup_without(files, noise_conflicts)

    def _followup_without(self, files: list[Path], drop: set[str]) -> None:
        """Follow-up dates again, from a second reading of the input that leaves out the records ``drop``
        (rejected conflicting duplicates): only needed when there are some, which is rare."""
        sink = _NoiseSink(self.mapper, Counter())

        def take(res: dict, rtype: str) -> bool:
            return f"{rtype}/{res.get('id')}" in drop or sink(res, rtype)

        for path in files:
            for item in iter_items(path, self.mapper.wanted, {}, take):
                res = item.resource
                if res is None or (item.line is not None and item.entry is None):
                    continue  # an NDJSON line not taken: a study resource (its dates come from its rows)
                rtype = res.get("resourceType")
                if isinstance(rtype, str) and f"{rtype}/{res.get('id') or item.fallback_id}" not in drop:
                    sink(res, rtype)
        self.sink.followup = sink.followup

    def read_file(self, path: Path, file_idx: int) -> None:
        skipped_counts: dict[str, int] = {}
        self.file_idx = file_idx
        self._read_items(iter_items(path, self.mapper.wanted, skipped_counts, self.sink, self.note), file_idx,
                         skipped_counts)

    def read_parallel(self, files: list[Path], workers: int) -> None:
        """Read ``files`` with ``workers`` processes scanning NDJSON ranges (see :func:`_scan_range`); this
        process merges their results in input order, so the outcome is that of :meth:`read_file`."""
        tasks: list[tuple[int, Path, int | None, int | None]] = []
        for file_idx, path in enumerate(files):
            if is_ndjson(path):
                tasks += [(file_idx, path, a, b) for a, b in line_chunks(path, _CHUNK_BYTES)]
            else:
                tasks.append((file_idx, path, None, None))  # a JSON file (Bundle): read here
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_worker_init, initargs=(self.mapper, self.index.dir))
        pending: deque[tuple[tuple[int, Path, int | None, int | None], Future | None]] = deque()
        todo = iter(tasks)
        lines_before: dict[int, int] = {}
        ok = False
        try:
            while True:
                while len(pending) < workers + 2:  # a bounded window keeps memory flat
                    task = next(todo, None)
                    if task is None:
                        break
                    _, path, start, end = task
                    fut = None if start is None else pool.submit(_scan_range, str(path), start, end)
                    pending.append((task, fut))
                if not pending:
                    break
                (file_idx, path, _, _), fut = pending.popleft()
                if fut is None:
                    self.read_file(path, file_idx)
                    continue
                scan = fut.result()
                first = lines_before.get(file_idx, 0)
                lines_before[file_idx] = first + scan.n_lines
                self.report.read += sum(scan.not_relevant.values())
                self.report.read_by_file[file_idx] += sum(scan.not_relevant.values())
                self.not_relevant.update(scan.not_relevant)
                self.sink.merge(scan.followup)
                if scan.noted is not None:
                    self.index.add_lazy(scan.noted, scan.n_lines, file_idx, first)
                self.file_idx = file_idx
                skipped_counts: dict[str, int] = {}
                lines = [(first + n, offset, raw) for n, offset, raw in scan.kept]
                self.checked = {first + n: problem for n, problem in scan.checked.items()}
                self.errors = {first + n: why for n, why in scan.errors.items()}
                self.digests = {first + n: d for n, d in scan.digests.items()}
                self._read_items(iter_line_items(str(path), lines, self.mapper.wanted, skipped_counts, self.note),
                                 file_idx, skipped_counts)
                self.checked, self.errors, self.digests = {}, {}, {}
            ok = True
        finally:
            pool.shutdown(wait=ok, cancel_futures=not ok)

    def _read_items(self, items: Iterable[Item], file_idx: int, skipped_counts: dict[str, int]) -> None:
        report, seen, sink = self.report, self.seen, self.sink
        progress_at = (report.read // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY
        base_read = report.read
        n_items = 0
        dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
        noise_before = sink.n
        for item in items:
            n_items += 1
            res = item.resource
            if res is None:
                self.reject(item.file, item.line, item.entry, None, item.error or "unreadable", item.raw)
                continue
            rtype = res.get("resourceType")
            if not isinstance(rtype, str):
                self.reject(item.file, item.line, item.entry, None, "not a FHIR resource: no resourceType", res)
                continue
            # an NDJSON line was classified already (by the reader's sink, or by a worker): only Bundle
            # entries and resources of JSON files are tested here
            if (item.line is None or item.entry is not None) and sink(res, rtype):
                n_items -= 1  # counted by the sink
                self.note(res, rtype, res.get("id") or item.fallback_id, item.line, item.entry)
                continue
            malformed = sink.error or (self.errors.get(item.line) if item.entry is None else None)
            if malformed is not None:
                sink.error = None
                self.reject(item.file, item.line, item.entry, None, malformed, res)
                continue
            rid = res.get("id") or item.fallback_id
            if not isinstance(rid, str) or not rid:
                self.reject(item.file, item.line, item.entry, None, f"{rtype} has no id", res)
                continue
            res["id"] = rid
            key = f"{rtype}/{rid}"
            digest = self.digests.get(item.line) if item.entry is None else None  # a worker's, of this line
            if digest is None:
                try:
                    digest = hash(dumps(res, option=sort_keys))
                except TypeError as exc:  # nested deeper than orjson serialises
                    self.reject(item.file, item.line, item.entry, key, reason_for(res, exc), res)
                    continue
            self.index.add(rtype, rid, digest, True, file_idx, item.line, item.entry)
            prev = seen.get(key)
            if prev is not None:
                self._repeat(item, key, digest, prev, res)
            else:
                self._one(item, res, rtype, key, digest, file_idx)
            n_read = base_read + n_items + sink.n - noise_before + sum(skipped_counts.values())
            if n_read >= progress_at and self.on_progress:
                self.on_progress(n_read)
                progress_at += _PROGRESS_EVERY
        self.not_relevant.update(skipped_counts)
        n_file = n_items + sink.n - noise_before + sum(skipped_counts.values())
        report.read += n_file
        report.read_by_file[file_idx] += n_file

    def _repeat(self, item: Item, key: str, digest: int, prev: int, res: dict) -> None:
        if prev >> 2 == digest:
            if prev & 3 == _REJECTED:
                self.reject(item.file, item.line, item.entry, key,
                            f"identical copy of {key}, which was rejected (see its first copy)", res)
            else:
                self.report.skipped["duplicate"][res["resourceType"]] += 1
            return
        self.conflicts.add(key)
        self.reject(item.file, item.line, item.entry, key,
                    f"duplicate id {key} with different content in this input: all copies rejected", res)

    def _one(self, item: Item, res: dict, rtype: str, key: str, digest: int, file_idx: int) -> None:
        report = self.report
        try:
            status = self.mapper.status_skip(res)
            if status is None:
                problem = self.checked.get(item.line, NOT_CHECKED) if item.entry is None else NOT_CHECKED
                result = self.mapper.map(res, key, item.refs, problem)
        except _RECORD_ERRORS as exc:
            self.seen[key] = digest << 2 | _REJECTED
            if rtype == "Patient":
                self.rejected_patients.add(res["id"])
            self.reject(item.file, item.line, item.entry, key, reason_for(res, exc), res)
            return
        if status is not None:
            report.skipped["status"][rtype] += 1
            self.seen[key] = digest << 2 | _SKIPPED
            return
        if result.status == "rejected":
            self.seen[key] = digest << 2 | _REJECTED
            if rtype == "Patient":
                self.rejected_patients.add(res["id"])
            self.reject(item.file, item.line, item.entry, key, result.reason or "rejected", res)
            return
        if result.status == "skipped":
            self.seen[key] = digest << 2 | _SKIPPED
            report.skipped[result.kind or "filtered"][rtype] += 1
            return
        if result.zero_float:  # rare: was the 0 read from a literal that underflowed (1e-400)?
            bad = underflowing_numbers(item.file, item.line, item.entry, self.unit_texts, item.source)
            if bad:
                self.seen[key] = digest << 2 | _REJECTED
                if rtype == "Patient":
                    self.rejected_patients.add(res["id"])
                path, literal = bad[0]
                self.reject(item.file, item.line, item.entry, key,
                            f"{path}: the number {literal} underflows a double (it would be read as 0): "
                            "numbers must be representable", res)
                return
        self.seen[key] = digest << 2 | _STAGED
        self.sid += 1
        sid = self.sid
        stage = self.stage
        for name, rows in (result.rows or {}).items():
            stage.add(f"_bl_s_{name}", [(sid, i, *row) for i, row in enumerate(rows)])
        if rtype == "Patient" and "deceasedBoolean" in res and res.get("deceasedBoolean") is True:
            report.deceased_without_date += 1
        stage.add("_bl_res", [(sid, rtype, key, result.subject, file_idx, item.line, item.entry)])


__all__ += ["LINEAGE_TABLE", "PERSON_MAP_TABLE"]


def _raw_text(file: str, line: int | None) -> str | None:
    """The text of NDJSON line ``line`` of ``file`` (for a quarantine record that cannot be written as JSON)."""
    if line is None:
        return None
    try:
        with (gzip.open(file, "rb") if file.lower().endswith(".gz") else open(file, "rb")) as fh:
            for i, raw in enumerate(fh, 1):
                if i == line:
                    return raw.decode("utf-8", "replace").rstrip("\r\n")
    except (OSError, EOFError, zlib.error):
        return None
    return None
