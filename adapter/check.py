"""``blina check``: a fast pre-flight of an OMOP CDM database before building the study views.

Counts only (no patient-level output): the CDM version (CDM_SOURCE, else the columns present: v5.3 and
v5.4 are read), the vocabulary version, an empty CONCEPT_ANCESTOR, required tables, the study's codes
found in the vocabulary, rows per study variable per year, unmapped (concept 0) source codes by
frequency, persons with blinatumomab, measurement values that cannot be used (no number, no unit, a
unit outside the variable's family), and one clear message per missing variable. A missing required
variable (or table) makes the check fail. Every finding carries its fix. A query the database
refuses becomes a finding naming the step and the database's one-line reason (never the SQL; the
CLI's ``--debug`` shows the traceback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blina_study.adapter.cohort import same_person_under_two_sites
from blina_study.adapter.db import Database
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.omop.version import V54_ONLY_COLUMNS, detect_cdm_version, missing_v54_columns
from blina_study.adapter.study import SiteOverlay, StudyDefinition
from blina_study.adapter.views import render_query, require_overlay_fits

__all__ = ["REQUIRED_TABLES", "REQUIRED_VARIABLES", "CheckReport", "run_check"]

REQUIRED_TABLES: dict[str, tuple[str, ...]] = {
    "cdm": ("person", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
            "procedure_occurrence", "measurement", "observation", "death"),
    "vocab": ("concept", "concept_ancestor"),
}
# Without these no course, status or response can be derived.
REQUIRED_VARIABLES: tuple[str, ...] = ("blinatumomab", "marrow_blasts", "mrd")

_FACT_TABLES = {  # table -> (concept column, source value column, date column)
    "measurement": ("measurement_concept_id", "measurement_source_value", "measurement_date"),
    "drug_exposure": ("drug_concept_id", "drug_source_value", "drug_exposure_start_date"),
    "condition_occurrence": ("condition_concept_id", "condition_source_value", "condition_start_date"),
    "procedure_occurrence": ("procedure_concept_id", "procedure_source_value", "procedure_date"),
}

# Hints per required variable; {codes} is filled from the study definition so the hint names the
# codes this run actually looks for.
_FIX = {
    "mrd": "no MRD rows: add your lab's MRD code to the site overlay "
           "(variables: mrd: [{{source_value: <local code>, unit: '%'}}])",
    "blinatumomab": "no blinatumomab administrations: check that DRUG_EXPOSURE uses {codes} "
                    "(or its products) or map the local drug code in the site overlay",
    "marrow_blasts": "no marrow-blast rows: map {codes} in MEASUREMENT or add the local code to the "
                     "site overlay (variables: marrow_blasts: [{{source_value: <local code>, unit: '%'}}])",
}


@dataclass
class CheckReport:
    """What ``blina check`` found. ``ok`` is False when a required table or variable is missing, or an
    MRN is held by persons of two site ids."""

    cdm_version: str | None = None  # "5.3", "5.4" or None
    cdm_version_text: str = ""
    vocabulary_version: str | None = None
    concept_ancestor_rows: int | None = None
    missing_tables: list[str] = field(default_factory=list)
    codes_found: dict[str, tuple[int, int]] = field(default_factory=dict)  # variable -> (found, listed)
    rows_per_year: dict[str, dict[int, int]] = field(default_factory=dict)
    unmapped: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    persons_with_blinatumomab: int = 0
    unusable_values: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    missing_required: list[str] = field(default_factory=list)
    same_mrn_sites: dict[str, Any] | None = None  # {"mrns": n, "sites": [...]}: one export under two site ids
    unresolved_overlay: list[dict[str, str]] = field(default_factory=list)  # overlay source concepts not in CONCEPT

    @property
    def ok(self) -> bool:
        return not self.missing_tables and not self.missing_required and self.same_mrn_sites is None

    def failures(self) -> list[str]:
        """What makes the check fail, one short phrase each."""
        return (self.missing_tables + [f"variable {v}" for v in self.missing_required]
                + (["same MRN under two site ids"] if self.same_mrn_sites else []))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "cdm_version": self.cdm_version, "vocabulary_version": self.vocabulary_version,
            "concept_ancestor_rows": self.concept_ancestor_rows, "missing_tables": self.missing_tables,
            "codes_found": {k: list(v) for k, v in self.codes_found.items()},
            "rows_per_year": {k: {str(y): n for y, n in v.items()} for k, v in self.rows_per_year.items()},
            "unmapped": {k: [list(x) for x in v] for k, v in self.unmapped.items()},
            "persons_with_blinatumomab": self.persons_with_blinatumomab,
            "unusable_values": self.unusable_values, "messages": self.messages,
            "missing_required": self.missing_required, "same_mrn_sites": self.same_mrn_sites,
            "unresolved_overlay": self.unresolved_overlay,
        }

    def text(self) -> str:
        lines = [f"CDM version: {self.cdm_version_text or self.cdm_version or 'unknown'}"]
        no_version = "unknown (VOCABULARY has no row 'None', where the CDM records it)"
        lines.append(f"vocabulary version: {self.vocabulary_version or no_version}")
        if self.concept_ancestor_rows is not None:
            lines.append(f"CONCEPT_ANCESTOR rows: {self.concept_ancestor_rows}")
        lines.append("required tables: " + ("all present" if not self.missing_tables
                                           else "MISSING " + ", ".join(self.missing_tables)))
        lines.append(f"persons with blinatumomab: {self.persons_with_blinatumomab}")
        if self.rows_per_year:
            lines.append("rows per study variable per year:")
            for var, years in sorted(self.rows_per_year.items()):
                per = ", ".join(f"{y}: {n}" for y, n in sorted(years.items()))
                lines.append(f"  {var}: {sum(years.values())} ({per})")
        short = [f"{v} {f}/{n}" for v, (f, n) in sorted(self.codes_found.items()) if n and f < n]
        if short:
            lines.append("study codes not in CONCEPT (found/listed): " + ", ".join(short))
        for table, rows in self.unmapped.items():
            if rows:
                top = ", ".join(f"{sv!s} x{n}" for sv, n in rows)
                lines.append(f"unmapped (concept 0) source codes in {table}, most frequent first: {top}")
        for u in self.unusable_values:
            lines.append(f"unusable {u['variable']} values: {u['rows']} rows, {u['reason']}"
                         + (f" (unit {u['unit']!r})" if u.get("unit") else ""))
        lines += [f"! {m}" for m in self.messages]
        lines.append("check " + ("passed" if self.ok else "FAILED: " + ", ".join(self.failures())))
        return "\n".join(lines)


def _unit_message(study: StudyDefinition, var: str, status: str, unit: str | None, n: int) -> str:
    """One sentence with the fix for measurement rows of ``var`` whose value cannot be used."""
    family = study.variables[var].unit_family if var in study.variables else None
    if status == "unit_not_convertible" and family:
        fam = study.unit_families[family]
        return (f"{n} {var} rows have unit {unit!r}, which cannot be converted to {fam.canonical!r} "
                f"(fix: map the rows' unit_concept_id to one of {', '.join(fam.factors)}, or state the site's "
                f"factor in the site overlay: variables: {var}: [{{<its code>, unit: {unit!r}, "
                f"unit_factor: <{fam.canonical} per {unit}>}}])")
    if status == "no_unit" and family:
        fam = study.unit_families[family]
        return (f"{n} {var} rows have a number but no unit (unit_concept_id 0 or NULL and no unit_source_value), "
                f"so they are left out (fix: fill unit_concept_id, or name the unit of the site's code in the "
                f"site overlay: variables: {var}: [{{<its code>, unit: <one of {', '.join(fam.factors)}>}}])")
    if status == "no_value":
        return (f"{n} {var} rows have no number and no answer of the study's value sets, so they are left out "
                "(fix: fill value_as_number, or value_as_concept_id with a positive / negative answer concept)")
    return f"{n} {var} rows cannot be used ({status})"


def _tables_present(db: Database) -> list[str]:
    missing = []
    for role, tables in REQUIRED_TABLES.items():
        schema = getattr(db.schemas, role)
        for t in tables:
            if not db.table_exists(schema, t):
                missing.append(f"{schema}.{t}")
    return missing


def _vocabulary_version(db: Database) -> str | None:
    """VOCABULARY's own row (vocabulary_id 'None') carries the release of the whole vocabulary."""
    if not db.table_exists(db.schemas.vocab, "vocabulary"):
        return None
    rows = db.query(f"select max(vocabulary_version) from {db.qualified('vocab', 'vocabulary')} "
                    "where vocabulary_id = 'None'")
    return str(rows[0][0]) if rows and rows[0][0] else None


class _StepFailed(BlinaError):
    pass


def _guarded(db: Database, step: str, sql: str, params: dict | None = None) -> list[tuple]:
    """Run one check query; a database error becomes a one-line finding (never the SQL)."""
    try:
        return db.query(sql, params)
    except Exception as exc:  # the database's own reason, first line only
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise _StepFailed(f"{step}: the database refused the query: {reason}",
                          hint="check that the role may SELECT from the CDM and vocabulary schemas; "
                               "rerun with --debug for the details") from exc


def run_check(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None, *,
              top: int = 10) -> CheckReport:
    """Run the pre-flight counts. Never raises for data problems: they are in the report."""
    require_overlay_fits(db, overlay)  # a usage error (exit 2), before any count
    version = detect_cdm_version(db)
    rep = CheckReport(cdm_version=version.version, cdm_version_text=version.text(),
                      missing_tables=_tables_present(db))
    if rep.missing_tables:
        rep.messages.append("required CDM / vocabulary tables are missing: check --cdm-schema and "
                            "--vocab-schema (the views read " + ", ".join(rep.missing_tables) + ")")
        rep.missing_required = [v for v in REQUIRED_VARIABLES]
        return rep
    try:
        _run_steps(db, study, overlay, top, rep)
    except _StepFailed as exc:
        rep.messages.append(f"{exc} (fix: {exc.hint})")
        rep.missing_required = rep.missing_required or ["(check incomplete)"]
    return rep


def _run_steps(db: Database, study: StudyDefinition, overlay: SiteOverlay | None, top: int,
               rep: CheckReport) -> None:
    if rep.cdm_version is None:
        rep.messages.append("CDM version unknown: fill CDM_SOURCE.cdm_version (5.3 or 5.4)")
    for table, column in sorted(missing_v54_columns(db)):
        rep.messages.append(f"CDM v5.3: {table}.{column} is absent (v5.4 only), read as NULL: "
                            f"{V54_ONLY_COLUMNS[(table, column)]} (fix: none needed; see docs/omop-conventions.md)")
    rep.vocabulary_version = _vocabulary_version(db)
    rep.concept_ancestor_rows = int(_guarded(
        db, "counting CONCEPT_ANCESTOR",
        f"select count(*) from (select 1 from {db.qualified('vocab', 'concept_ancestor')} limit 1) as x")[0][0])
    if rep.concept_ancestor_rows == 0:
        rep.messages.append(
            "CONCEPT_ANCESTOR is empty: codes matched with their descendants (blinatumomab clinical drugs "
            "under the RxNorm ingredient, and every other 'descendants: true' code) cannot be found, only "
            "the listed concepts themselves (fix: load the full vocabulary, e.g. blina load-vocab "
            "ATHENA_FOLDER, or the export's concept_ancestor.csv with blina load-omop)")

    # Study codes present in this database's vocabulary.
    sql, params = render_query(study, overlay, db, """
select k.variable, count(distinct k.code) as listed, count(distinct c.concept_code) as found
from study_codes as k
left join stg_concept as c
    on c.vocabulary_id = k.vocabulary_id and c.concept_code = k.code
where k.code_kind = 'concept'
group by k.variable""", ("stg_concept",), site_id="check")
    for var, listed, found in _guarded(db, "resolving the study codes in CONCEPT", sql, params):
        rep.codes_found[var] = (int(found), int(listed))

    # Rows per variable per year, persons with blinatumomab, unusable values: one query each over the
    # same matching relations the build uses.
    sql, params = render_query(study, overlay, db, """
select variable, cast(extract(year from d) as integer) as yr, count(*) as n
from (
    select variable, measurement_date as d from int_study_measurements
    union all select variable, start_date from int_drug_exposures
    union all select variable, condition_date from int_study_conditions
    union all select variable, procedure_date from int_study_procedures
) as x
group by variable, cast(extract(year from d) as integer)""",
        ("int_study_measurements", "int_drug_exposures", "int_study_conditions", "int_study_procedures"),
        site_id="check")
    for var, year, n in _guarded(db, "counting rows per study variable", sql, params):
        rep.rows_per_year.setdefault(var, {})[int(year) if year is not None else 0] = int(n)

    sql, params = render_query(study, overlay, db, """
select count(distinct person_id) from int_drug_exposures where variable = 'blinatumomab'""",
        ("int_drug_exposures",), site_id="check")
    rep.persons_with_blinatumomab = int(_guarded(db, "counting persons with blinatumomab", sql, params)[0][0])

    sql, params = render_query(study, overlay, db, """
select variable, value_status, unit_code, count(*) as n
from int_measurement_values
where value_status <> 'ok'
group by variable, value_status, unit_code
order by count(*) desc""", ("int_measurement_values",), site_id="check")
    for var, status, unit, n in _guarded(db, "checking measurement units", sql, params):
        reason = {"no_value": "no number and no usable answer", "no_unit": "no unit",
                  "unit_not_convertible": "unit not convertible to the canonical unit"}.get(status, status)
        rep.unusable_values.append({"variable": var, "reason": reason, "unit": unit, "rows": int(n)})
        rep.messages.append(_unit_message(study, var, status, unit, int(n)))

    # Overlay entries naming a local source concept that this database's CONCEPT does not have.
    sql, params = render_query(study, overlay, db, """
select k.variable, k.vocabulary_id, k.code
from study_codes as k
where k.code_kind = 'source_concept'
    and not exists (select 1 from stg_concept as c where c.vocabulary_id = k.vocabulary_id and c.concept_code = k.code)
order by k.variable, k.vocabulary_id, k.code""", ("stg_concept",), site_id="check")
    for var, vocab, code in _guarded(db, "resolving the overlay's source concepts", sql, params):
        rep.unresolved_overlay.append({"variable": var, "vocabulary_id": vocab, "concept_code": code})
        rep.messages.append(
            f"overlay entry {var}: {{vocabulary_id: {vocab}, concept_code: {code}}} is not in CONCEPT of schema "
            f"{db.schemas.vocab!r}, so it matches no row (fix: load the hospital's vocabulary with its local "
            "concepts, e.g. blina load-omop with the export's concept.csv, or correct the pair in the overlay)")

    # Site identity: one export ingested under two --site values doubles the cohort (adapter/cohort.py).
    try:
        same_mrn = same_person_under_two_sites(db)
    except Exception as exc:  # noqa: BLE001 - a refused query is a finding, as in _guarded
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise _StepFailed(f"checking MRNs across site ids: the database refused the query: {reason}",
                          hint="check that the role may SELECT from the CDM schema") from exc
    if same_mrn is not None:
        rep.same_mrn_sites = {"mrns": same_mrn.mrns, "sites": list(same_mrn.sites)}
        rep.messages.append(same_mrn.sentence())

    # Unmapped source codes (concept 0) by frequency, excluding the overlay's own codes.
    local = {c.source_value for codes in (overlay.variables.values() if overlay else []) for c in codes
             if c.source_value is not None}
    for table, (concept_col, sv_col, _) in _FACT_TABLES.items():
        rows = _guarded(
            db, f"counting unmapped source codes in {table}",
            f"select {sv_col}, count(*) from {db.qualified('cdm', table)} "
            f"where {concept_col} = 0 group by {sv_col} order by count(*) desc, {sv_col} limit {int(top) + len(local)}")
        rep.unmapped[table] = [(sv, int(n)) for sv, n in rows if sv not in local][:top]

    for var in study.variables:
        if var == "death" or var in rep.rows_per_year:
            continue
        found, listed = rep.codes_found.get(var, (0, 0))
        codes = ", ".join(f"{c.vocabulary_id} {c.code}" for c in study.variables[var].codes)
        msg = _FIX[var].format(codes=codes) if var in _FIX else (
            f"no {var} rows: " + ("none of its study codes is in CONCEPT; " if listed and not found else "")
            + f"map the local code in the site overlay (variables: {var}: [{{source_value: <local code>}}])")
        if var in _FIX and listed and not found:  # the concept set resolves to nothing
            msg = (f"{var}: none of its study codes ({codes}) is in CONCEPT, so its concept set is empty "
                   "(fix: load the full OHDSI vocabulary with blina load-vocab, or map the local code in the "
                   "site overlay)" + ("" if var == "blinatumomab" else "; " + msg))
            # blinatumomab's own hint ("check that DRUG_EXPOSURE uses <codes>") repeats it: left out
        if var in REQUIRED_VARIABLES:
            rep.missing_required.append(var)
            rep.messages.append(msg)
        else:
            rep.messages.append(msg + " (optional: the dependent columns will be NULL)")
    return rep
