"""The SQL half of the FHIR ingest: staged view rows -> OMOP CDM rows.

:func:`compute` (steps 1-4) writes work tables only; :func:`apply` (step 5) writes the CDM and must run
in one transaction.

Input (temporary tables, filled by ``blina_study.adapter.fhir.ingest``): ``_bl_s_<view>`` (one per ViewDefinition:
``sid``, ``ord`` + the view's columns), ``_bl_res`` (one row per staged resource: ``sid``, ``rtype``,
``source_key``, ``subject_key``, file and location) and small configuration tables ``_bl_cfg_*``.

Steps (each a statement below, same SQL on DuckDB and PostgreSQL):

1. resolve every distinct (system, code) to a source concept (systems.yaml -> vocabulary_id + code in
   CONCEPT), a standard concept (itself if standard, else its ``Maps to``), its domain, and whether it
   belongs to a study variable (standard set incl. CONCEPT_ANCESTOR descendants, source set, or the
   site overlay's source values);
2. per resource keep one coding: a study-variable coding first, then standard, then any known, then
   the first (f2o-036);
3. late rejects: duplicate ids with different content, subjects that are not in the input (or were
   rejected), unresolved Medication references, missing dates, and values of study
   variables that cannot be converted (no number, unit outside the variable's family, unknown comparator);
4. person map (stable ``person_id`` per site and Patient id), then the OMOP rows of every table, ids
   reused from ``blina_lineage`` so a rerun rewrites identical rows;
5. delete the site's rows (found through ``blina_lineage``: the run's input replaces the site's
   content), insert the new rows and their lineage; recompute OBSERVATION_PERIOD for the site's persons.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from blina_study.adapter.db import Database

__all__ = ["FOLLOWUP_TABLE", "INCOMPLETE", "LINEAGE_TABLE", "OMOP_TARGETS", "PERSON_MAP_TABLE", "WORK_CATALOG",
           "SqlContext", "StageDb",
           "apply", "compute", "study_codes"]

log = logging.getLogger(__name__)

LINEAGE_TABLE = "blina_lineage"
# Reason prefix of a late "reject" that is a skip: a resource of a type the study does not read for a variable
# (Encounter) lacking what only study resources need (a date). Counted as skipped "incomplete", not rejected.
INCOMPLETE = "incomplete (not needed by the study): "
PERSON_MAP_TABLE = "blina_person_map"
FOLLOWUP_TABLE = "blina_followup"

# OMOP table -> id column (DEATH has none: its lineage row_id is the person_id).
OMOP_TARGETS: dict[str, str] = {
    "person": "person_id",
    "death": "person_id",
    "visit_occurrence": "visit_occurrence_id",
    "condition_occurrence": "condition_occurrence_id",
    "drug_exposure": "drug_exposure_id",
    "measurement": "measurement_id",
    "observation": "observation_id",
    "procedure_occurrence": "procedure_occurrence_id",
    "observation_period": "observation_period_id",
}

# Views whose rows carry a coding in (code_system, code_code).
_CODED_VIEWS = ("encounter", "condition", "medication", "medication_administration", "observation", "procedure")


_STAGE_NAME = re.compile(r'(?<![\w."])(_bl_\w+)')


WORK_CATALOG = "blina_work"
# work tables made inside the CDM-write transaction: DuckDB lets one transaction write one database, plus
# its in-memory TEMP catalog, so these (one row per person) stay TEMP there
_IN_TRANSACTION = frozenset({"_bl_o_observation_period", "_bl_i_observation_period"})
_WORK_DIR_PREFIX = ".blina-work-"


class StageDb:
    """The database as the ingest's SQL sees it: work tables are written ``_bl_*``.

    PostgreSQL keeps them as session TEMP tables (spilled to disk by the server; a killed client's
    transaction is rolled back, TEMP tables included). DuckDB keeps TEMP tables in this process's
    memory, so there they live in a separate DuckDB file, attached as ``blina_work`` from a private
    folder ``.blina-work-<pid>-*`` beside the database file and deleted at the end (:meth:`close`):
    committed as they fill, so they need not sit in memory, yet never in the user's database, so a run
    killed at any point (SIGKILL) leaves the user's file as it was (the CDM writes are one transaction).
    A folder left by a killed run is removed by the next run (its process is gone).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.dialect
        self.prefix = ""
        self.work_dir: str | None = None
        if db.dialect == "duckdb":
            # beside the database file (same disk as before, when the work tables were in it; the system
            # temp folder may be memory), else (an in-memory database) in the system temp folder
            parent = (os.path.dirname(os.path.abspath(db.url)) if db.url != ":memory:" and os.path.isfile(db.url)
                      else tempfile.gettempdir())
            _remove_stale_work_dirs(parent)
            self.work_dir = tempfile.mkdtemp(prefix=f"{_WORK_DIR_PREFIX}{os.getpid()}-", dir=parent)
            path = os.path.join(self.work_dir, "work.duckdb").replace("'", "''")
            db.execute(f"ATTACH '{path}' AS {WORK_CATALOG}")
            self.prefix = f"{WORK_CATALOG}.main."

    def sql(self, text: str) -> str:
        if not self.prefix:
            return text

        def qualify(m: re.Match[str]) -> str:
            name = m.group(1)
            return name if name in _IN_TRANSACTION else self.prefix + name

        text = re.sub(r"CREATE TEMP TABLE (_bl_\w+)",
                      lambda m: m.group(0) if m.group(1) in _IN_TRANSACTION else f"CREATE TABLE {m.group(1)}", text)
        return _STAGE_NAME.sub(qualify, text)

    def execute(self, text: str, params: Mapping[str, Any] | None = None) -> None:
        self.db.execute(self.sql(text), params)

    def query(self, text: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        return self.db.query(self.sql(text), params)

    def query_df(self, text: str) -> pd.DataFrame:
        return self.db.query_df(self.sql(text))

    def bulk_insert(self, name: str, df: pd.DataFrame, columns: Sequence[str]) -> int:
        return self.db.bulk_insert(self.sql(name), df, columns)

    def tables(self) -> list[str]:
        """The ``_bl_*`` work tables that exist now (unqualified names)."""
        like = "LIKE '\\_bl\\_%' ESCAPE '\\'"
        if self.dialect == "duckdb":
            rows = self.db.query(f"SELECT table_name FROM information_schema.tables WHERE table_catalog = :c "
                                 f"AND table_name {like} UNION SELECT table_name FROM duckdb_tables() "
                                 f"WHERE temporary AND table_name {like}", {"c": WORK_CATALOG})
        else:
            rows = self.db.query(f"SELECT table_name FROM information_schema.tables "
                                 f"WHERE table_type = 'LOCAL TEMPORARY' AND table_name {like}")
        return [r[0] for r in rows]

    def drop_all(self) -> None:
        for name in self.tables():
            self.execute(f"DROP TABLE IF EXISTS {name}")

    def close(self) -> None:
        """Drop the work tables; on DuckDB detach and delete the work database."""
        if self.work_dir is None:
            self.drop_all()
            return
        for name in _IN_TRANSACTION:
            self.db.execute(f"DROP TABLE IF EXISTS temp.main.{name}")
        try:
            self.db.execute(f"DETACH {WORK_CATALOG}")
        finally:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None


def _remove_stale_work_dirs(parent: str) -> None:
    """Delete the work folders in ``parent`` of DuckDB runs whose process is gone (killed)."""
    for path in Path(parent).glob(f"{_WORK_DIR_PREFIX}*"):
        try:
            pid = int(path.name[len(_WORK_DIR_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, the work folder of an interrupted ingest", path)
        except PermissionError:  # another user's live process
            continue


@dataclass
class SqlContext:
    """Names and parameters for one run."""

    cdm: str  # quoted schema
    vocab: str  # quoted schema
    site: str
    ucum_system: str | None
    ucum_vocabulary: str | None
    mrn_system: str | None
    gender_vocabulary: str
    operator_domain: str
    type_vocabulary: str
    death_grace_days: int = 30  # plausibility: events may follow the death date by this many days
    # support table -> where compute() reads it when it is not (yet) in the CDM schema (DuckDB: an empty
    # stand-in in the work database; apply() creates the real one inside the CDM-write transaction)
    support: dict[str, str] = field(default_factory=dict)

    def read(self, table: str) -> str:
        return self.support.get(table) or f"{self.cdm}.{table}"


def _ts(expr: str) -> str:
    """A FHIR dateTime string -> local TIMESTAMP (no time-zone shift, protocol 3b.1); NULL for a date only."""
    return f"CASE WHEN LENGTH({expr}) >= 19 THEN CAST(REPLACE(SUBSTR({expr}, 1, 19), 'T', ' ') AS TIMESTAMP) END"


def _d(expr: str) -> str:
    return f"CAST(SUBSTR({expr}, 1, 10) AS DATE)"


def _v50(expr: str, n: int = 50) -> str:
    # varchar(50) in the OMOP DDL: source values are cut, never rejected (they are for humans).
    return f"SUBSTR({expr}, 1, {n})"


def ddl_create_support(db: Database, schema: str | None = None) -> list[str]:
    """Persistent support tables in the CDM schema (created when absent), or in ``schema`` (qualified,
    quoted: the DuckDB work database's empty stand-ins while the run computes, see ``ingest_fhir``)."""
    cdm = schema or db.qualified("cdm", LINEAGE_TABLE).split(".")[0]
    stmts = [
        f"CREATE TABLE IF NOT EXISTS {cdm}.{PERSON_MAP_TABLE} (site_id VARCHAR(40) NOT NULL, "
        "patient_key VARCHAR(255) NOT NULL, person_id BIGINT NOT NULL, PRIMARY KEY (site_id, patient_key))",
        f"CREATE TABLE IF NOT EXISTS {cdm}.{LINEAGE_TABLE} (omop_table VARCHAR(40) NOT NULL, row_id BIGINT NOT NULL, "
        "site_id VARCHAR(40) NOT NULL, source_key VARCHAR(300) NOT NULL, source_file TEXT)",
        # dates of records that were not loaded (not study-relevant), for follow-up only (3b.10)
        f"CREATE TABLE IF NOT EXISTS {cdm}.{FOLLOWUP_TABLE} (site_id VARCHAR(40) NOT NULL, "
        "patient_key VARCHAR(255) NOT NULL, first_date DATE NOT NULL, last_date DATE NOT NULL, "
        "PRIMARY KEY (site_id, patient_key))",
    ]
    if db.dialect == "postgresql" and schema is None:
        stmts.append(f"CREATE INDEX IF NOT EXISTS idx_blina_lineage_key ON {cdm}.{LINEAGE_TABLE} (site_id, source_key)")
    return stmts


def study_codes(db: StageDb, c: SqlContext) -> list[tuple[str, str]]:
    """Create ``_bl_var_concept`` (variable, concept_id, how) and return the (vocabulary_id, code) pairs
    that make a record study-relevant: every concept of the code sets, the standard ones' descendants,
    and the source concepts that 'Maps to' one of those (e.g. ICD-10-CM C91.00 -> ALL)."""
    db.execute(_var_concept_sql(c))
    return db.query(f"""SELECT c.vocabulary_id, c.concept_code FROM _bl_var_concept v
                          JOIN {c.vocab}.concept c ON c.concept_id = v.concept_id
                        UNION
                        SELECT c.vocabulary_id, c.concept_code FROM _bl_var_concept v
                          JOIN {c.vocab}.concept_relationship r ON r.concept_id_2 = v.concept_id
                           AND r.relationship_id = 'Maps to' AND v.how = 'std'
                          JOIN {c.vocab}.concept c ON c.concept_id = r.concept_id_1""")


def _var_concept_sql(c: SqlContext) -> str:
    # study variable concept sets: 'src' = every concept of the code set, 'std' = standard ones + descendants
    return f"""CREATE TEMP TABLE _bl_var_concept AS
        SELECT v.variable, c.concept_id, 'src' AS how
          FROM _bl_cfg_var v JOIN {c.vocab}.concept c ON c.vocabulary_id = v.vocabulary_id AND c.concept_code = v.code
        UNION
        SELECT v.variable, c.concept_id, 'std'
          FROM _bl_cfg_var v JOIN {c.vocab}.concept c ON c.vocabulary_id = v.vocabulary_id AND c.concept_code = v.code
         WHERE c.standard_concept = 'S'
        UNION
        SELECT v.variable, a.descendant_concept_id, 'std'
          FROM _bl_cfg_var v JOIN {c.vocab}.concept c ON c.vocabulary_id = v.vocabulary_id AND c.concept_code = v.code
          JOIN {c.vocab}.concept_ancestor a ON a.ancestor_concept_id = c.concept_id
         WHERE v.descendants AND c.standard_concept = 'S'"""


def _steps_resolve(c: SqlContext) -> list[str]:
    codes = " UNION ALL ".join(f"SELECT code_system, code_code FROM _bl_s_{v}" for v in _CODED_VIEWS)
    return [
        f"""CREATE TEMP TABLE _bl_codes AS
        SELECT DISTINCT code_system, code_code FROM ({codes}
          UNION ALL SELECT value_system, value_code FROM _bl_s_observation) u
         WHERE code_code IS NOT NULL""",
        f"""CREATE TEMP TABLE _bl_code_map AS
        WITH src AS (
          SELECT k.code_system, k.code_code, c.concept_id, c.standard_concept, c.invalid_reason,
                 ROW_NUMBER() OVER (PARTITION BY k.code_system, k.code_code ORDER BY c.concept_id) AS rn
            FROM _bl_codes k
            LEFT JOIN _bl_cfg_system y ON y.system = k.code_system
            LEFT JOIN {c.vocab}.concept c ON c.vocabulary_id = y.vocabulary_id AND c.concept_code = k.code_code
        ), mapped AS (
          SELECT r.concept_id_1, MIN(t.concept_id) AS concept_id
            FROM {c.vocab}.concept_relationship r
            JOIN {c.vocab}.concept t ON t.concept_id = r.concept_id_2
           WHERE r.relationship_id = 'Maps to' AND r.invalid_reason IS NULL
             AND t.standard_concept = 'S' AND t.invalid_reason IS NULL
             AND r.concept_id_1 IN (SELECT concept_id FROM src WHERE concept_id IS NOT NULL)
           GROUP BY r.concept_id_1
        ), res AS (
          SELECT s.code_system, s.code_code,
                 COALESCE(s.concept_id, 0) AS source_concept_id,
                 COALESCE(CASE WHEN s.standard_concept = 'S' AND s.invalid_reason IS NULL THEN s.concept_id END,
                          m.concept_id, 0) AS concept_id
            FROM src s LEFT JOIN mapped m ON m.concept_id_1 = s.concept_id
           WHERE s.rn = 1
        )
        SELECT res.*, t.domain_id
          FROM res LEFT JOIN {c.vocab}.concept t ON t.concept_id = res.concept_id AND res.concept_id <> 0""",
        """CREATE TEMP TABLE _bl_code_var AS
        SELECT m.code_system, m.code_code, vc.variable, CAST(NULL AS VARCHAR) AS overlay_unit
          FROM _bl_code_map m JOIN _bl_var_concept vc
            ON (vc.how = 'std' AND m.concept_id <> 0 AND vc.concept_id = m.concept_id)
            OR (vc.how = 'src' AND m.source_concept_id <> 0 AND vc.concept_id = m.source_concept_id)
        UNION
        SELECT m.code_system, m.code_code, o.variable, o.unit
          FROM _bl_code_map m JOIN _bl_cfg_overlay o
            ON o.source_value = m.code_code AND (o.system IS NULL OR o.system = m.code_system)""",
        """CREATE TEMP TABLE _bl_code_rank AS
        SELECT m.code_system, m.code_code, m.concept_id, m.source_concept_id, m.domain_id,
               CASE WHEN EXISTS (SELECT 1 FROM _bl_code_var v WHERE v.code_code = m.code_code
                                 AND v.code_system IS NOT DISTINCT FROM m.code_system) THEN 0
                    WHEN m.concept_id <> 0 THEN 1 WHEN m.source_concept_id <> 0 THEN 2 ELSE 3 END AS rank
          FROM _bl_code_map m""",
    ]


def _pick(view: str, extra_order: str = "", extra_join: str = "", extra_cols: str = "") -> str:
    return f"""CREATE TEMP TABLE _bl_p_{view} AS
    SELECT * FROM (
      SELECT s.*, COALESCE(m.concept_id, 0) AS concept_id, COALESCE(m.source_concept_id, 0) AS source_concept_id,
             m.domain_id, m.rank AS code_rank{extra_cols},
             ROW_NUMBER() OVER (PARTITION BY s.sid ORDER BY COALESCE(m.rank, CASE WHEN s.code_code IS NULL
                                THEN 5 ELSE 4 END){extra_order}, s.ord) AS rn
        FROM _bl_s_{view} s
        LEFT JOIN _bl_code_rank m ON m.code_system IS NOT DISTINCT FROM s.code_system AND m.code_code = s.code_code
        {extra_join}
    ) x WHERE rn = 1"""


def _steps_pick() -> list[str]:
    stmts = [_pick(v) for v in ("encounter", "condition", "medication", "medication_administration", "procedure")]
    stmts.append(
        _pick(
            "observation",
            extra_order=", COALESCE(v.rank, CASE WHEN s.value_code IS NULL THEN 5 ELSE 4 END)",
            extra_join="LEFT JOIN _bl_code_rank v ON v.code_system IS NOT DISTINCT FROM s.value_system "
            "AND v.code_code = s.value_code",
            extra_cols=", COALESCE(v.concept_id, 0) AS value_concept_id",
        )
    )
    stmts.append(
        """CREATE TEMP TABLE _bl_p_patient AS
        SELECT * FROM (
          SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.sid ORDER BY
                 CASE WHEN s.identifier_system = CAST(:mrn AS VARCHAR) AND s.identifier_value IS NOT NULL THEN 0
                      WHEN s.identifier_value IS NOT NULL THEN 1 ELSE 2 END, s.ord) AS rn
            FROM _bl_s_patient s) x WHERE rn = 1"""
    )
    return stmts


def _steps_reject(c: SqlContext) -> list[str]:
    not_yet = "r.sid NOT IN (SELECT sid FROM _bl_rej)"
    obs_date = "COALESCE(p.effective_datetime, p.effective_instant, p.effective_period_start)"
    checks = [
        ("condition", "COALESCE(p.onset_datetime, p.onset_period_start, p.recorded_date)",
         "no date: a Condition needs onsetDateTime, onsetPeriod.start or recordedDate"),
        ("observation", obs_date,
         "no date: an Observation needs effectiveDateTime, effectiveInstant or effectivePeriod.start"),
        ("medication_administration", "COALESCE(p.effective_datetime, p.effective_period_start)",
         "no date: a MedicationAdministration needs effectiveDateTime or effectivePeriod.start"),
        ("procedure", "COALESCE(p.performed_datetime, p.performed_period_start)",
         "no date: a Procedure needs performedDateTime or performedPeriod.start"),
        ("encounter", "p.period_start", INCOMPLETE + "no date: an Encounter needs period.start"),
    ]
    stmts = [
        "CREATE TEMP TABLE _bl_rej (sid BIGINT, step INTEGER, reason VARCHAR)",
        """INSERT INTO _bl_rej SELECT r.sid, 1, 'duplicate id ' || r.source_key
             || ' with different content in this input: all copies rejected (keep one version)'
             FROM _bl_res r JOIN _bl_cfg_conflict k ON k.source_key = r.source_key""",
        "INSERT INTO _bl_rej SELECT r.sid, 2, 'Patient has no birthDate (OMOP PERSON.year_of_birth is required)' "
        f"FROM _bl_res r JOIN _bl_p_patient p ON p.sid = r.sid WHERE p.birth_date IS NULL AND {not_yet}",
    ]
    for view, expr, why in checks:
        stmts.append(
            f"INSERT INTO _bl_rej SELECT r.sid, 3, '{why}' FROM _bl_res r JOIN _bl_p_{view} p ON p.sid = r.sid "
            f"WHERE {expr} IS NULL AND {not_yet}"
        )
    stmts += [
        # the run's input is the site's whole export (README, "Re-ingesting a site"): a subject must be
        # in it, a Patient loaded by an earlier run does not count (its rows are replaced by this run)
        """CREATE TEMP TABLE _bl_pat_ok AS
        SELECT p.id AS patient_key FROM _bl_p_patient p WHERE p.sid NOT IN (SELECT sid FROM _bl_rej)""",
        f"""INSERT INTO _bl_rej SELECT r.sid, 4,
             CASE WHEN EXISTS (SELECT 1 FROM _bl_cfg_rejected_patient x
                               WHERE 'Patient/' || x.patient_key = r.subject_key)
                    OR EXISTS (SELECT 1 FROM _bl_rej j JOIN _bl_res rp ON rp.sid = j.sid
                               WHERE rp.source_key = r.subject_key)
                  THEN 'its subject ' || r.subject_key || ' was rejected'
                  ELSE 'dangling reference: subject ' || r.subject_key
                       || ' is not in the input (the input of a run is the whole export of the site)' END
             FROM _bl_res r
            WHERE r.subject_key IS NOT NULL AND {not_yet}
              AND NOT EXISTS (SELECT 1 FROM _bl_pat_ok k WHERE 'Patient/' || k.patient_key = r.subject_key)""",
        f"""INSERT INTO _bl_rej SELECT r.sid, 5, 'medicationReference ' || p.medication_ref
             || ' does not resolve to a valid Medication in the input'
             FROM _bl_res r JOIN _bl_p_medication_administration p ON p.sid = r.sid
            WHERE p.medication_ref IS NOT NULL AND {not_yet}
              AND NOT EXISTS (SELECT 1 FROM _bl_p_medication m WHERE 'Medication/' || m.id = p.medication_ref
                              AND m.sid NOT IN (SELECT sid FROM _bl_rej))""",
        # values of study variables (protocol section 2: never stored as NULL or 0 when unusable)
        f"""CREATE TEMP TABLE _bl_obs_value AS
        SELECT p.sid, v.variable, k.kind, k.unit_family, k.canonical, k.units_text,
               COALESCE(p.value_number, CAST(p.value_integer AS DOUBLE PRECISION)) AS num,
               COALESCE(CASE WHEN p.value_unit_code IS NOT NULL
                              AND (p.value_unit_system IS NULL OR p.value_unit_system = CAST(:ucum AS VARCHAR))
                             THEN p.value_unit_code ELSE p.value_unit END, v.overlay_unit) AS unit,
               p.value_comparator, p.value_string, p.value_boolean, p.value_code,
               EXISTS (SELECT 1 FROM _bl_cfg_system y JOIN _bl_cfg_value_set s ON s.vocabulary_id = y.vocabulary_id
                        WHERE y.system = p.value_system AND s.code = p.value_code) AS value_in_set
          FROM _bl_p_observation p
          JOIN _bl_code_var v ON v.code_code = p.code_code AND v.code_system IS NOT DISTINCT FROM p.code_system
          JOIN _bl_cfg_var_kind k ON k.variable = v.variable
         WHERE {obs_date} IS NOT NULL AND k.kind IN ('quantity', 'detected')""",
        f"""INSERT INTO _bl_rej SELECT r.sid, 6, CASE
              WHEN q.num IS NULL AND q.kind = 'quantity' THEN 'no numeric value for study variable ' || q.variable
                   || COALESCE(' (valueString ' || q.value_string || ')', '')
                   || COALESCE(' (valueCodeableConcept ' || q.value_code
                               || ' is not in the positive/negative value sets)', '')
                   || COALESCE(' (valueBoolean ' || CAST(q.value_boolean AS VARCHAR) || ')', '')
              WHEN q.num IS NULL THEN 'result of study variable ' || q.variable
                   || ' is neither a number nor a code of the positive/negative value sets'
                   || COALESCE(' (got ' || COALESCE(q.value_code, q.value_string,
                                                    CAST(q.value_boolean AS VARCHAR)) || ')', '')
              WHEN q.unit IS NULL THEN 'value of study variable ' || q.variable || ' has no unit (expected one of '
                   || q.units_text || ')'
              WHEN q.value_comparator IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM _bl_op o WHERE o.name = q.value_comparator)
                   THEN 'comparator ' || q.value_comparator || ' of study variable ' || q.variable
                        || ' is not supported'
              ELSE 'unit ' || q.unit || ' of study variable ' || q.variable || ' cannot be converted to '
                   || q.canonical || ' (accepted: ' || q.units_text || ')' END
             FROM _bl_obs_value q JOIN _bl_res r ON r.sid = q.sid
            WHERE {not_yet} AND (
                  (q.num IS NULL AND NOT q.value_in_set)
               OR (q.num IS NOT NULL AND q.kind = 'quantity' AND (q.unit IS NULL
                   OR NOT EXISTS (SELECT 1 FROM _bl_cfg_unit u WHERE u.unit_family = q.unit_family AND u.unit = q.unit)
                   OR (q.value_comparator IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM _bl_op o WHERE o.name = q.value_comparator)))))""",
        # plausibility (mappings/fhir/plausibility.yaml ranges): the value in the variable's canonical unit
        f"""INSERT INTO _bl_rej SELECT r.sid, 7, 'value ' || CAST(q.num AS VARCHAR) || ' ' || q.unit
             || ' of study variable ' || q.variable || ' is outside its plausible range ' || g.range_text
             || ' ' || q.canonical || ' (mappings/fhir/plausibility.yaml ranges)'
             FROM _bl_obs_value q JOIN _bl_res r ON r.sid = q.sid
             JOIN _bl_cfg_unit u ON u.unit_family = q.unit_family AND u.unit = q.unit
             JOIN _bl_cfg_range g ON g.variable = q.variable
            WHERE {not_yet} AND q.num IS NOT NULL AND q.kind = 'quantity'
              AND (q.num * u.factor < g.lo OR q.num * u.factor > g.hi)""",
        _events_in_life(c, checks, not_yet),
        "CREATE TEMP TABLE _bl_ok AS SELECT r.* FROM _bl_res r WHERE r.sid NOT IN (SELECT sid FROM _bl_rej)",
    ]
    return stmts


def _events_in_life(c: SqlContext, checks: list[tuple[str, str, str]], not_yet: str) -> str:
    """Plausibility: an event starts neither before its patient's birth (at the birth date's precision:
    year, month or day) nor more than ``death_grace_days`` after the death date (patients of this run)."""
    events = " UNION ALL ".join(f"SELECT p.sid, '{view}' AS view_name, SUBSTR({expr}, 1, 10) AS d "
                                f"FROM _bl_p_{view} p" for view, expr, _ in checks)
    birth = "SUBSTR(p.birth_date, 1, 10)"
    grace = int(c.death_grace_days)
    after_death = (f"(p.deceased_datetime IS NOT NULL AND CAST(e.d AS DATE) > "
                   f"CAST(SUBSTR(p.deceased_datetime, 1, 10) AS DATE) + {grace})")
    return f"""INSERT INTO _bl_rej SELECT r.sid, 8, CASE
              WHEN SUBSTR(e.d, 1, LENGTH({birth})) < {birth}
                THEN 'date ' || e.d || ' is before the birth date ' || {birth} || ' of ' || r.subject_key
                     || ' (birth <= events; mappings/fhir/plausibility.yaml)'
              ELSE 'date ' || e.d || ' is more than {grace} days after the death date '
                   || SUBSTR(p.deceased_datetime, 1, 10) || ' of ' || r.subject_key
                   || ' (events <= death + death_grace_days; mappings/fhir/plausibility.yaml)' END
             FROM ({events}) e JOIN _bl_res r ON r.sid = e.sid
             JOIN _bl_p_patient p ON 'Patient/' || p.id = r.subject_key
            WHERE {not_yet} AND e.d IS NOT NULL AND p.birth_date IS NOT NULL
              AND (SUBSTR(e.d, 1, LENGTH({birth})) < {birth} OR {after_death})"""


def _steps_lookups(c: SqlContext) -> list[str]:
    return [
        f"""CREATE TEMP TABLE _bl_op AS SELECT c.concept_name AS name, MIN(c.concept_id) AS concept_id
              FROM {c.vocab}.concept c JOIN _bl_cfg_operator o ON o.name = c.concept_name
             WHERE c.domain_id = CAST(:opdomain AS VARCHAR) AND c.standard_concept = 'S'
             GROUP BY c.concept_name""",
        f"""CREATE TEMP TABLE _bl_type AS SELECT t.rtype, COALESCE(MIN(c.concept_id), 0) AS concept_id
              FROM _bl_cfg_type t LEFT JOIN {c.vocab}.concept c
                ON c.concept_name = t.concept_name AND c.vocabulary_id = CAST(:typevocab AS VARCHAR)
             GROUP BY t.rtype""",
        # Encounter.class (v3 ActCode AMB, IMP, EMER ...) -> a Visit concept by its code (systems.yaml
        # encounter_class), resolved here through CONCEPT: never an id
        f"""CREATE TEMP TABLE _bl_visit AS SELECT v.system, v.code, COALESCE(MIN(c.concept_id), 0) AS concept_id
              FROM _bl_cfg_visit v LEFT JOIN {c.vocab}.concept c
                ON c.vocabulary_id = v.vocabulary_id AND c.concept_code = v.concept_code
             GROUP BY v.system, v.code""",
        f"""CREATE TEMP TABLE _bl_gender AS SELECT g.gender, COALESCE(MIN(c.concept_id), 0) AS concept_id
              FROM _bl_cfg_gender g LEFT JOIN {c.vocab}.concept c
                ON c.concept_code = g.code AND c.vocabulary_id = CAST(:gendervocab AS VARCHAR)
             GROUP BY g.gender""",
    ]


def _person_map_new(c: SqlContext) -> str:
    """``_bl_pm``: the site's person map as it will be (existing ids kept, new Patients numbered after the
    largest person_id in PERSON and in the map)."""
    pm = c.read(PERSON_MAP_TABLE)
    return f"""CREATE TEMP TABLE _bl_pm AS
    SELECT patient_key, person_id, FALSE AS is_new FROM {pm} WHERE site_id = :site
    UNION ALL
    SELECT n.patient_key, b.base + ROW_NUMBER() OVER (ORDER BY n.patient_key), TRUE
      FROM (SELECT DISTINCT p.id AS patient_key FROM _bl_p_patient p JOIN _bl_ok k ON k.sid = p.sid
             WHERE NOT EXISTS (SELECT 1 FROM {pm} m WHERE m.site_id = :site AND m.patient_key = p.id)) n
     CROSS JOIN (SELECT GREATEST(COALESCE((SELECT MAX(person_id) FROM {c.cdm}.person), 0),
                                 COALESCE((SELECT MAX(person_id) FROM {pm}), 0)) AS base) b"""


def _outs(c: SqlContext) -> dict[str, str]:
    """OMOP table -> SELECT producing (source_key, source_file[, row_id], <table columns except the id>)."""
    base = (
        "JOIN _bl_ok r ON r.sid = p.sid JOIN _bl_cfg_file f ON f.file_idx = r.file_idx "
        "JOIN _bl_pm pm ON 'Patient/' || pm.patient_key = r.subject_key "
    )

    def typ(rtype: str) -> str:
        return f"COALESCE((SELECT concept_id FROM _bl_type WHERE rtype = '{rtype}'), 0)"

    obs_dt = "COALESCE(p.effective_datetime, p.effective_instant, p.effective_period_start)"
    unit = ("CASE WHEN p.value_unit_code IS NOT NULL AND (p.value_unit_system IS NULL "
            "OR p.value_unit_system = CAST(:ucum AS VARCHAR)) THEN p.value_unit_code ELSE p.value_unit END")
    cats = "(SELECT name FROM _bl_cfg_obs_category)"
    # f2o-037: the concept's domain decides; unresolved codes follow the IG's category filter. Study
    # variables always stay in MEASUREMENT (where the SQL views read them).
    to_obs = (f"(COALESCE(p.code_rank, 5) <> 0 AND ((p.concept_id <> 0 AND p.domain_id = 'Observation') OR "
              f"(p.concept_id = 0 AND COALESCE(p.category_code IN {cats}, FALSE))))")
    meas_like = f"""r.source_key, f.path AS source_file, pm.person_id,
        p.concept_id, {_d(obs_dt)} AS dt, {_ts(obs_dt)} AS dtt, {typ('Observation')} AS type_id,
        COALESCE(p.value_number, CAST(p.value_integer AS DOUBLE PRECISION)) AS num,
        CASE WHEN p.value_code IS NOT NULL THEN p.value_concept_id END AS value_concept_id,
        CASE WHEN u.unit IS NOT NULL THEN COALESCE(uc.concept_id, 0) END AS unit_concept_id,
        {_v50('p.code_code')} AS source_value, p.source_concept_id, {_v50('u.unit')} AS unit_source_value,
        {_v50("COALESCE(p.value_code, p.value_string, CAST(p.value_boolean AS VARCHAR))")} AS value_source_value,
        p.value_comparator, p.value_string"""
    obs_src = f"""(SELECT {meas_like}, {to_obs} AS to_obs FROM _bl_p_observation p {base}
        CROSS JOIN LATERAL (SELECT {unit} AS unit) u
        LEFT JOIN {c.vocab}.concept uc ON uc.vocabulary_id = CAST(:ucumvocab AS VARCHAR) AND uc.concept_code = u.unit
             AND uc.standard_concept = 'S') o"""
    ma_code = "CASE WHEN p.medication_ref IS NULL THEN p.{col} ELSE md.{col} END"
    return {
        "person": f"""SELECT r.source_key, f.path AS source_file, pm.person_id AS row_id,
            pm.person_id, COALESCE(g.concept_id, 0) AS gender_concept_id,
            CAST(SUBSTR(p.birth_date, 1, 4) AS INTEGER) AS year_of_birth,
            CASE WHEN LENGTH(p.birth_date) >= 7 THEN CAST(SUBSTR(p.birth_date, 6, 2) AS INTEGER) END AS month_of_birth,
            CASE WHEN LENGTH(p.birth_date) >= 10 THEN CAST(SUBSTR(p.birth_date, 9, 2) AS INTEGER) END AS day_of_birth,
            CASE WHEN LENGTH(p.birth_date) >= 10 THEN CAST(SUBSTR(p.birth_date, 1, 10) AS TIMESTAMP) END
                AS birth_datetime,
            0 AS race_concept_id, 0 AS ethnicity_concept_id,
            {_v50('COALESCE(p.identifier_value, p.id)')} AS person_source_value,
            {_v50('p.gender')} AS gender_source_value
          FROM _bl_p_patient p JOIN _bl_ok r ON r.sid = p.sid JOIN _bl_cfg_file f ON f.file_idx = r.file_idx
          JOIN _bl_pm pm ON pm.patient_key = p.id
          LEFT JOIN _bl_gender g ON g.gender = p.gender""",
        "death": f"""SELECT r.source_key, f.path AS source_file, pm.person_id AS row_id,
            pm.person_id, {_d('p.deceased_datetime')} AS death_date, {_ts('p.deceased_datetime')} AS death_datetime,
            {typ('Patient')} AS death_type_concept_id
          FROM _bl_p_patient p JOIN _bl_ok r ON r.sid = p.sid JOIN _bl_cfg_file f ON f.file_idx = r.file_idx
          JOIN _bl_pm pm ON pm.patient_key = p.id
         WHERE p.deceased_datetime IS NOT NULL""",
        "visit_occurrence": f"""SELECT r.source_key, f.path AS source_file, pm.person_id,
            COALESCE(NULLIF(vc.concept_id, 0), p.concept_id) AS visit_concept_id,
            {_d('p.period_start')} AS visit_start_date,
            {_ts('p.period_start')} AS visit_start_datetime,
            {_d('COALESCE(p.period_end, p.period_start)')} AS visit_end_date,
            {_ts('p.period_end')} AS visit_end_datetime, {typ('Encounter')} AS visit_type_concept_id,
            {_v50('p.code_code')} AS visit_source_value, p.source_concept_id AS visit_source_concept_id
          FROM _bl_p_encounter p {base}
          LEFT JOIN _bl_visit vc ON vc.system = p.code_system AND vc.code = p.code_code""",
        "condition_occurrence": f"""SELECT r.source_key, f.path AS source_file, pm.person_id,
            p.concept_id AS condition_concept_id,
            {_d('COALESCE(p.onset_datetime, p.onset_period_start, p.recorded_date)')} AS condition_start_date,
            {_ts('COALESCE(p.onset_datetime, p.onset_period_start, p.recorded_date)')} AS condition_start_datetime,
            {_d('COALESCE(p.abatement_datetime, p.abatement_period_end)')} AS condition_end_date,
            {_ts('COALESCE(p.abatement_datetime, p.abatement_period_end)')} AS condition_end_datetime,
            {typ('Condition')} AS condition_type_concept_id,
            {_v50('p.code_code')} AS condition_source_value, p.source_concept_id AS condition_source_concept_id,
            {_v50('p.clinical_status')} AS condition_status_source_value
          FROM _bl_p_condition p {base}""",
        "drug_exposure": f"""SELECT r.source_key, f.path AS source_file, pm.person_id,
            COALESCE({ma_code.format(col='concept_id')}, 0) AS drug_concept_id,
            {_d('COALESCE(p.effective_datetime, p.effective_period_start)')} AS drug_exposure_start_date,
            {_ts('COALESCE(p.effective_datetime, p.effective_period_start)')} AS drug_exposure_start_datetime,
            {_d('COALESCE(p.effective_period_end, p.effective_datetime, p.effective_period_start)')}
                AS drug_exposure_end_date,
            {_ts('p.effective_period_end')} AS drug_exposure_end_datetime,
            {_d('p.effective_period_end')} AS verbatim_end_date,
            {typ('MedicationAdministration')} AS drug_type_concept_id,
            p.dose_value AS quantity, {_v50('p.route_code')} AS route_source_value,
            {_v50(ma_code.format(col='code_code'))} AS drug_source_value,
            COALESCE({ma_code.format(col='source_concept_id')}, 0) AS drug_source_concept_id,
            {_v50('p.dose_unit')} AS dose_unit_source_value
          FROM _bl_p_medication_administration p {base}
          LEFT JOIN _bl_p_medication md ON 'Medication/' || md.id = p.medication_ref""",
        "measurement": f"""SELECT source_key, source_file, person_id, concept_id AS measurement_concept_id,
            dt AS measurement_date, dtt AS measurement_datetime, type_id AS measurement_type_concept_id,
            (SELECT concept_id FROM _bl_op WHERE name = o.value_comparator) AS operator_concept_id,
            num AS value_as_number, value_concept_id AS value_as_concept_id, unit_concept_id,
            source_value AS measurement_source_value, source_concept_id AS measurement_source_concept_id,
            unit_source_value, value_source_value
          FROM {obs_src} WHERE NOT to_obs""",
        "observation": f"""SELECT source_key, source_file, person_id, concept_id AS observation_concept_id,
            dt AS observation_date, dtt AS observation_datetime, type_id AS observation_type_concept_id,
            num AS value_as_number, {_v50('value_string', 60)} AS value_as_string,
            value_concept_id AS value_as_concept_id, unit_concept_id,
            source_value AS observation_source_value, source_concept_id AS observation_source_concept_id,
            unit_source_value, value_source_value
          FROM {obs_src} WHERE to_obs""",
        "procedure_occurrence": f"""SELECT r.source_key, f.path AS source_file, pm.person_id,
            p.concept_id AS procedure_concept_id,
            {_d('COALESCE(p.performed_datetime, p.performed_period_start)')} AS procedure_date,
            {_ts('COALESCE(p.performed_datetime, p.performed_period_start)')} AS procedure_datetime,
            {_d('p.performed_period_end')} AS procedure_end_date,
            {_ts('p.performed_period_end')} AS procedure_end_datetime,
            {typ('Procedure')} AS procedure_type_concept_id,
            {_v50('p.code_code')} AS procedure_source_value, p.source_concept_id AS procedure_source_concept_id
          FROM _bl_p_procedure p {base}""",
    }


def _observation_period_out(c: SqlContext) -> str:
    cdm, pm = c.cdm, f"{c.cdm}.{PERSON_MAP_TABLE}"
    facts = " UNION ALL ".join(
        [
            f"SELECT person_id, condition_start_date AS s, COALESCE(condition_end_date, condition_start_date) AS e "
            f"FROM {cdm}.condition_occurrence",
            f"SELECT person_id, drug_exposure_start_date, drug_exposure_end_date FROM {cdm}.drug_exposure",
            f"SELECT person_id, measurement_date, measurement_date FROM {cdm}.measurement",
            f"SELECT person_id, observation_date, observation_date FROM {cdm}.observation",
            f"SELECT person_id, procedure_date, COALESCE(procedure_end_date, procedure_date) "
            f"FROM {cdm}.procedure_occurrence",
            f"SELECT person_id, visit_start_date, visit_end_date FROM {cdm}.visit_occurrence",
            f"SELECT person_id, death_date, death_date FROM {cdm}.death",
            f"SELECT m.person_id, u.first_date, u.last_date FROM {c.cdm}.{FOLLOWUP_TABLE} u "
            f"JOIN {pm} m ON m.site_id = u.site_id AND m.patient_key = u.patient_key WHERE u.site_id = :site",
        ]
    )
    return f"""SELECT 'Patient/' || pm.patient_key AS source_key, CAST(NULL AS VARCHAR) AS source_file, pm.person_id,
        MIN(d.s) AS observation_period_start_date, MAX(GREATEST(d.s, d.e)) AS observation_period_end_date,
        {"COALESCE((SELECT concept_id FROM _bl_type WHERE rtype = 'default'), 0)"} AS period_type_concept_id
      FROM ({facts}) d JOIN {pm} pm ON pm.person_id = d.person_id AND pm.site_id = :site
     WHERE pm.person_id IN (SELECT person_id FROM {cdm}.person)  -- not a Patient of an earlier export
     GROUP BY pm.patient_key, pm.person_id"""


def _id_assign(c: SqlContext, table: str, has_row_id: bool, in_apply: bool = False) -> str:
    lin = f"{c.cdm}.{LINEAGE_TABLE}" if in_apply else c.read(LINEAGE_TABLE)
    id_col = OMOP_TARGETS[table]
    if has_row_id:
        return f"CREATE TEMP TABLE _bl_i_{table} AS SELECT * FROM _bl_o_{table}"
    return f"""CREATE TEMP TABLE _bl_i_{table} AS
    SELECT o.*, COALESCE(l.row_id, b.base + ROW_NUMBER() OVER (PARTITION BY l.row_id IS NULL ORDER BY o.source_key))
           AS row_id
      FROM _bl_o_{table} o
      LEFT JOIN {lin} l ON l.site_id = :site AND l.omop_table = '{table}' AND l.source_key = o.source_key
     CROSS JOIN (SELECT GREATEST(COALESCE((SELECT MAX({id_col}) FROM {c.cdm}.{table}), 0),
                                 COALESCE((SELECT MAX(row_id) FROM {lin} WHERE omop_table = '{table}'), 0))
                   AS base) b"""


_CREATED = re.compile(r"\s*CREATE TEMP TABLE (_bl_\w+)")


def _runner(db: StageDb, c: SqlContext):
    params = {
        "site": c.site,
        "mrn": c.mrn_system,
        "ucum": c.ucum_system,
        "ucumvocab": c.ucum_vocabulary,
        "opdomain": c.operator_domain,
        "typevocab": c.type_vocabulary,
        "gendervocab": c.gender_vocabulary,
    }

    def run(sql: str) -> None:
        db.execute(sql, {k: v for k, v in params.items() if f":{k}" in sql})
        if db.dialect == "postgresql":
            made = _CREATED.match(sql)
            if made:  # TEMP tables get no statistics from autovacuum; without them the planner guesses
                db.execute(f"ANALYZE {made.group(1)}")

    return run


def compute(db: StageDb, c: SqlContext) -> list[tuple]:
    """Steps 1-4 into work tables only (nothing the study reads changes). Returns the late rejects
    as (sid, source_key, file_idx, line, entry, reason), several per sid possible (first = main one)."""
    run = _runner(db, c)
    if db.dialect == "postgresql":  # the staged work tables, as above
        for table in db.tables():
            db.execute(f"ANALYZE {table}")
    for stmt in _steps_resolve(c) + _steps_lookups(c) + _steps_pick() + _steps_reject(c):
        run(stmt)
    late = db.query(
        "SELECT r.sid, r.source_key, r.file_idx, r.line, r.entry, j.reason FROM _bl_rej j "
        "JOIN _bl_res r ON r.sid = j.sid ORDER BY r.sid, j.step, j.reason"
    )
    run(_person_map_new(c))
    for table, sql in _outs(c).items():
        run(f"CREATE TEMP TABLE _bl_o_{table} AS {sql}")
        run(_id_assign(c, table, has_row_id=table in ("person", "death")))
    # follow-up dates of records not loaded: merged (never narrowed) per patient, so reruns are idempotent
    run("""CREATE TEMP TABLE _bl_fu AS SELECT patient_key, MIN(CAST(first_date AS DATE)) AS first_date,
                  MAX(CAST(last_date AS DATE)) AS last_date FROM _bl_cfg_followup GROUP BY patient_key""")
    return late


def apply(db: StageDb, c: SqlContext) -> dict[str, object]:
    """Step 5: write what :func:`compute` prepared (run it in one transaction). Returns row counts,
    unknown-code counts and loaded resources by type."""
    run = _runner(db, c)
    pm, lin, fu = (f"{c.cdm}.{t}" for t in (PERSON_MAP_TABLE, LINEAGE_TABLE, FOLLOWUP_TABLE))
    for stmt in ddl_create_support(db.db):  # in the transaction: a killed first run leaves none behind
        run(stmt)
    run(f"INSERT INTO {pm} (site_id, patient_key, person_id) SELECT :site, patient_key, person_id "
        "FROM _bl_pm WHERE is_new")
    tables = list(_outs(c))
    for table in tables:
        # the site's rows are replaced as a whole (incremental = fresh): rows of resources that are gone from
        # the export, no longer study-relevant, not done or now rejected go; the others come back with
        # their ids (from the lineage, _id_assign)
        run(f"""DELETE FROM {c.cdm}.{table} WHERE {OMOP_TARGETS[table]} IN (
                SELECT l.row_id FROM {lin} l WHERE l.site_id = :site AND l.omop_table = '{table}')""")
    run(f"DELETE FROM {lin} WHERE site_id = :site AND omop_table <> 'observation_period'")
    counts: dict[str, int] = {}
    for table in tables:
        counts[table] = _insert(db, c, table, run)
    run(f"DELETE FROM {fu} WHERE site_id = :site")
    run(f"INSERT INTO {fu} (site_id, patient_key, first_date, last_date) "
        "SELECT :site, patient_key, first_date, last_date FROM _bl_fu")
    # OBSERVATION_PERIOD: one per person of the site, spanning every fact date (protocol 3b.10), so it
    # is computed from the tables as they are now.
    run(f"CREATE TEMP TABLE _bl_o_observation_period AS {_observation_period_out(c)}")
    run(_id_assign(c, "observation_period", has_row_id=False, in_apply=True))
    run(f"""DELETE FROM {c.cdm}.observation_period WHERE observation_period_id IN (
            SELECT row_id FROM {lin} WHERE site_id = :site AND omop_table = 'observation_period')""")
    run(f"DELETE FROM {lin} WHERE site_id = :site AND omop_table = 'observation_period'")
    counts["observation_period"] = _insert(db, c, "observation_period", run)

    unknown = {}
    concept_cols = {
        "visit_occurrence": "visit_concept_id", "condition_occurrence": "condition_concept_id",
        "drug_exposure": "drug_concept_id", "measurement": "measurement_concept_id",
        "observation": "observation_concept_id", "procedure_occurrence": "procedure_concept_id",
    }
    for table, col in concept_cols.items():
        unknown[table] = int(db.query(f"SELECT COUNT(*) FROM _bl_i_{table} WHERE {col} = 0")[0][0])
    top_unknown = db.query(
        "SELECT code_system, code_code, n FROM (SELECT s.code_system, s.code_code, COUNT(*) AS n FROM ("
        + " UNION ALL ".join(f"SELECT sid, code_system, code_code FROM _bl_p_{v}" for v in _CODED_VIEWS)
        + ") s JOIN _bl_ok k ON k.sid = s.sid JOIN _bl_code_map m ON m.code_code = s.code_code "
        "AND m.code_system IS NOT DISTINCT FROM s.code_system WHERE m.concept_id = 0 "
        "GROUP BY s.code_system, s.code_code) t ORDER BY n DESC, code_code LIMIT 20"
    )
    loaded = db.query("SELECT rtype, COUNT(*) FROM _bl_ok GROUP BY rtype")
    patients, tagged = db.query(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN p.test_data THEN 1 ELSE 0 END), 0) "
        "FROM _bl_p_patient p JOIN _bl_ok k ON k.sid = p.sid")[0]
    return {
        "patients": int(patients),
        "test_data_patients": int(tagged),
        "rows": counts,
        "unknown_concept_rows": unknown,
        "top_unknown_codes": [{"system": s, "code": k, "rows": int(n)} for s, k, n in top_unknown],
        "loaded_by_type": {t: int(n) for t, n in loaded},
    }


def _insert(db: StageDb, c: SqlContext, table: str, run) -> int:
    cols = [
        col for col in db.query_df(f"SELECT * FROM _bl_i_{table} LIMIT 0").columns
        if col not in ("source_key", "source_file", "row_id")
    ]
    id_col = OMOP_TARGETS[table]
    target_cols = ([id_col] if id_col not in cols else []) + cols
    select_cols = (["row_id"] if id_col not in cols else []) + cols
    run(f"INSERT INTO {c.cdm}.{table} ({', '.join(target_cols)}) SELECT {', '.join(select_cols)} FROM _bl_i_{table}")
    run(f"""INSERT INTO {c.cdm}.{LINEAGE_TABLE} (omop_table, row_id, site_id, source_key, source_file)
            SELECT '{table}', row_id, :site, source_key, source_file FROM _bl_i_{table}""")
    return int(db.query(f"SELECT COUNT(*) FROM _bl_i_{table}")[0][0])
