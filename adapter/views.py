"""The study views over OMOP CDM: layered SQL (``sql/staging``, ``sql/intermediate``, ``sql/study``)
composed into one read-only query per output, identical on DuckDB and PostgreSQL.

Each ``.sql`` file is one derivation: a single SELECT whose header states its grain, keys and
``depends_on`` (other relations by name; CDM / vocabulary tables as ``cdm.<table>`` /
``vocab.<table>``, written ``{cdm}.<table>`` / ``{vocab}.<table>`` in the body and replaced by
validated, quoted schema names). Five input relations are generated from the study definition and
the site overlay (never from files): ``study_params`` (one row: every parameter and ``site_id``),
``study_variables``, ``study_codes`` (standard codes and overlay source values), ``study_units`` and
``study_value_sets``. Their values are bound parameters, never pasted into SQL.

:func:`render` composes, per output (``course``, ``patient``, ``lineage``), one ``WITH`` query of the
needed relations in dependency order, plus one combined query of several outputs (each shared
relation computed once) that :func:`build` and :func:`extract` run. Nothing is created, so a role that
may only SELECT can build. :func:`persist` materialises the inputs as tables and the outputs as views
in a results schema; :func:`extract` writes the contract files plus lineage and a JSON sidecar.
Engine differences live in one table, ``_DIALECT``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from blina_study.adapter.db import Database, quote_ident, validate_ident, validate_site_id
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.resources import sql_dir
from blina_study.adapter.study import SiteOverlay, StudyDefinition

__all__ = [
    "COURSE_COLUMNS",
    "INPUT_RELATIONS",
    "LAYERS",
    "LINEAGE_COLUMNS",
    "OUTPUTS",
    "PATIENT_COLUMNS",
    "RenderedSQL",
    "SqlModel",
    "ViewsError",
    "build",
    "build_lineage",
    "creation_order",
    "extract",
    "input_fingerprint",
    "load_models",
    "normalize",
    "persist",
    "render",
    "render_query",
    "require_overlay_fits",
    "site_unit_factors",
    "site_unit_stamp",
]

LAYERS: tuple[str, ...] = ("staging", "intermediate", "study")
OUTPUTS: tuple[str, ...] = ("course", "patient", "lineage")
INPUT_RELATIONS: tuple[str, ...] = (
    "study_params", "study_variables", "study_codes", "study_units", "study_value_sets",
)

# Contract columns and logical types (protocol section 4), in order.
COURSE_COLUMNS: dict[str, str] = {
    "site_id": "text", "person_id": "bigint", "person_source_value": "text", "course_number": "int",
    "course_start": "date", "course_end": "date", "infusion_days": "int", "pre_status": "text",
    "pre_mrd": "double", "pre_blasts_pct": "double", "post_status": "text", "post_mrd": "double",
    "cr": "boolean", "mrd_maintained": "boolean", "high_mrd": "boolean", "cd19_loss": "boolean",
    "cd3_pre": "double", "cd3_post": "double", "cd4_pre": "double", "cd4_post": "double",
    "cd8_pre": "double", "cd8_post": "double", "il6_peak": "double", "il10_peak": "double",
    "ifng_peak": "double", "tnfa_peak": "double", "crs_max_grade": "int", "icans_max_grade": "int",
}
PATIENT_COLUMNS: dict[str, str] = {
    "site_id": "text", "person_id": "bigint", "person_source_value": "text", "sex": "text",
    "age_at_index_years": "double", "index_date": "date", "n_courses": "int", "indication": "text",
    "status_at_referral": "text", "burden_reduction": "boolean", "poor_cytogenetics": "boolean",
    "bcr_abl1": "boolean", "next_therapy": "text", "last_followup": "date", "efs_event": "boolean",
    "efs_event_type": "text", "efs_days": "int", "os_event": "boolean", "os_days": "int",
}
LINEAGE_COLUMNS: dict[str, str] = {
    "site_id": "text", "person_id": "bigint", "course_number": "int", "derived": "text", "source": "text",
}
_CONTRACT = {"course": COURSE_COLUMNS, "patient": PATIENT_COLUMNS, "lineage": LINEAGE_COLUMNS}
_ORDER = {"course": "person_id, course_number", "patient": "person_id",
          "lineage": "person_id, course_number, derived, source"}

# The one place where the engines differ. Staging CTEs are plain renames of big tables: PostgreSQL
# would materialise a CTE read twice (e.g. measurement, for values and for follow-up), so they are
# marked NOT MATERIALIZED (DuckDB accepts the same syntax). ``setup`` statements run in the query's own
# transaction (SET LOCAL: nothing persists, allowed for a SELECT-only role). PostgreSQL: JIT would spend
# seconds compiling the ~1000 expressions of a composed query; its CTE row estimates are guesses (often
# 1 row for 10^5), which makes it pick quadratic nested loops, so nested-loop joins are discouraged (the
# per-person index lookups of follow-up are correlated subqueries, which this does not affect); and the
# hash tables of ~10^6 study rows get the memory they need instead of spilling.
#
# ``in_cohort``: what ``{in_cohort(t.person_id)}`` in a SQL file becomes: "this row is of a study
# patient" (int_cohort_persons). PostgreSQL gets an array, so the fact table is read through its person_id
# index (a bitmap scan of the study patients' rows) rather than joined after a full scan (nested loops
# being off); DuckDB gets a semi-join, which it runs as a hash probe during its column scan.
COHORT_RELATION = "int_cohort_persons"
_DIALECT: dict[str, dict[str, Any]] = {
    "duckdb": {"inline_cte": "as not materialized", "cte": "as", "setup": (),
               "in_cohort": f"{{col}} in (select person_id from {COHORT_RELATION})"},
    "postgresql": {"inline_cte": "as not materialized", "cte": "as",
                   "setup": ("set local jit = off", "set local enable_nestloop = off",
                             "set local work_mem = '256MB'"),
                   "in_cohort": f"{{col}} = any(array(select person_id from {COHORT_RELATION}))"},
}

_HEADER = re.compile(r"^--\s*(grain|keys|depends_on)\s*:\s*(.*)$")
_SOURCE = re.compile(r"\{(cdm|vocab)\}\.([A-Za-z_][A-Za-z0-9_]*)")
_REF = re.compile(r"\b(?:from|join)\s+(?!lateral\b)([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\.)", re.IGNORECASE)
_LOCAL_CTE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s+as\s+(?:not\s+)?(?:materialized\s+)?\(", re.IGNORECASE)
_COMMENT = re.compile(r"--[^\n]*")
_IN_COHORT = re.compile(r"\{in_cohort\(([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*)\)\}")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# ``{v54(alias.column, type)}``: a column that exists only in CDM v5.4 (blina_study.adapter.omop.version); read as
# ``cast(null as type)`` on a v5.3 database.
_V54 = re.compile(r"\{v54\(([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*),\s*([a-z ]+)\)\}")


class ViewsError(BlinaError):
    """A SQL model file is malformed, or the dependency graph is broken."""


@dataclass(frozen=True)
class SqlModel:
    """One SQL file: a relation named after the file, with its declared header."""

    name: str
    layer: str
    path: Path
    grain: str
    keys: tuple[str, ...]
    depends_on: tuple[str, ...]
    body: str

    def referenced(self) -> set[str]:
        """Relations and sources the body actually reads (``cdm.x`` / ``vocab.x`` for CDM tables)."""
        code = _COMMENT.sub("", self.body)
        local = {m.group(1).lower() for m in _LOCAL_CTE.finditer(code)}
        refs = {m.group(1).lower() for m in _REF.finditer(code)} - local
        refs |= {f"{m.group(1)}.{m.group(2).lower()}" for m in _SOURCE.finditer(code)}
        if _IN_COHORT.search(code):
            refs.add(COHORT_RELATION)
        return refs

    def relation_deps(self) -> tuple[str, ...]:
        """Declared dependencies that are relations of the graph (not CDM tables)."""
        return tuple(d for d in self.depends_on if "." not in d)


@dataclass(frozen=True)
class RenderedSQL:
    """Composed queries (one per output) and the bound values they need.

    ``queries[name]`` is a single ``WITH ... SELECT`` statement with ``:name`` binds; ``params[name]``
    holds exactly the values that query uses. ``combined`` computes all the requested outputs in one
    statement (each shared relation once): ``union all`` of the outputs in one wide row type with an
    ``output_name`` column; :func:`build` and :func:`extract` run it and split the rows.
    """

    queries: dict[str, str]
    params: dict[str, dict[str, Any]]
    dialect: str
    relations: tuple[str, ...] = field(default_factory=tuple)
    combined: str = ""
    combined_params: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """A reviewable script: each query, preceded by its bound values as comments."""
        parts = ["-- blina-study rendered SQL: read-only queries (nothing is created).",
                 f"-- dialect: {self.dialect}; relations in creation order: {', '.join(self.relations)}", ""]
        for name, sql in self.queries.items():
            parts.append(f"-- ===== output: {name}")
            parts.append("-- bound values (name = value):")
            for key, value in self.params[name].items():
                parts.append(f"--   {key} = {json.dumps(value)}")
            parts.append(sql.rstrip() + ";")
            parts.append("")
        return "\n".join(parts)


# --------------------------------------------------------------------------- model files
def _parse(path: Path, layer: str) -> SqlModel:
    name = path.stem
    if not _NAME.match(name):
        raise ViewsError(f"{path}: file name {name!r} is not a lower-case SQL identifier",
                         hint="rename the file, e.g. int_my_relation.sql")
    header: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    body_start = 0
    for i, line in enumerate(lines):
        if not line.startswith("--"):
            body_start = i
            break
        m = _HEADER.match(line)
        if m:
            header[m.group(1)] = m.group(2).strip()
    else:
        body_start = len(lines)
    for key in ("grain", "keys", "depends_on"):
        if key not in header:
            raise ViewsError(f"{path}:1: header line '-- {key}: ...' is missing",
                             hint="start the file with -- grain:, -- keys:, -- depends_on: lines")
    deps = tuple(d.strip() for d in header["depends_on"].split(",") if d.strip() and d.strip() != "(none)")
    body = "\n".join(lines).strip().rstrip(";").strip()
    if not body or body_start >= len(lines):
        raise ViewsError(f"{path}: no SELECT after the header", hint="write one SELECT statement")
    return SqlModel(name=name, layer=layer, path=path, grain=header["grain"],
                    keys=tuple(k.strip() for k in header["keys"].split(",") if k.strip()),
                    depends_on=deps, body=body)


def load_models(root: Path | None = None) -> dict[str, SqlModel]:
    """Read every model file under ``sql/{staging,intermediate,study}`` (name -> model)."""
    base = root or sql_dir()
    models: dict[str, SqlModel] = {}
    for layer in LAYERS:
        folder = base / layer
        if not folder.is_dir():
            raise ViewsError(f"SQL folder {folder} not found", hint="reinstall blina-study")
        for path in sorted(folder.glob("*.sql")):
            model = _parse(path, layer)
            if model.name in models or model.name in INPUT_RELATIONS:
                raise ViewsError(f"{path}: relation {model.name!r} is defined twice",
                                 hint="file names must be unique across layers")
            models[model.name] = model
    for model in models.values():
        for dep in model.relation_deps():
            if dep not in models and dep not in INPUT_RELATIONS:
                raise ViewsError(f"{model.path}: depends_on names unknown relation {dep!r}",
                                 hint="add the SQL file or fix the header")
    return models


def creation_order(models: Mapping[str, SqlModel], targets: tuple[str, ...] | None = None) -> list[str]:
    """Topological order (dependencies first; ties alphabetical) of ``targets`` and all they need."""
    wanted: set[str] = set()
    stack = list(targets or models)
    while stack:
        name = stack.pop()
        if name in wanted or name in INPUT_RELATIONS:
            continue
        if name not in models:
            raise ViewsError(f"unknown relation {name!r}", hint=f"one of: {', '.join(sorted(models))}")
        wanted.add(name)
        stack.extend(models[name].relation_deps())
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done or name in INPUT_RELATIONS:
            return
        if name in visiting:
            raise ViewsError(f"dependency cycle: {' -> '.join((*path, name))}", hint="fix the depends_on headers")
        visiting.add(name)
        for dep in sorted(models[name].relation_deps()):
            visit(dep, (*path, name))
        visiting.discard(name)
        done.add(name)
        order.append(name)

    for name in sorted(wanted):
        visit(name, ())
    return order


# --------------------------------------------------------------------------- generated inputs
def _values_sql(columns: list[tuple[str, str]], rows: list[tuple], prefix: str,
                binds: dict[str, Any]) -> str:
    """``select cast(cN as type) as name ... from (values ...)``; strings and numbers are bound,
    booleans and NULL are literals."""
    casts = ", ".join(f"cast(c{j} as {t}) as {n}" for j, (n, t) in enumerate(columns))
    if not rows:
        nulls = ", ".join(f"cast(null as {t}) as {n}" for n, t in columns)
        return f"select {nulls} where 1 = 0"
    lines = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            if value is None:
                cells.append("null")
            elif isinstance(value, bool):
                cells.append("true" if value else "false")
            else:
                key = f"{prefix}_{i}_{j}"
                binds[key] = value
                cells.append(f":{key}")
        lines.append("(" + ", ".join(cells) + ")")
    names = ", ".join(f"c{j}" for j in range(len(columns)))
    return f"select {casts}\n    from (values\n        " + ",\n        ".join(lines) + f"\n    ) as t({names})"


_INPUT_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "study_variables": [("variable", "varchar(40)"), ("domain", "varchar(20)"), ("value_kind", "varchar(20)"),
                        ("unit_family", "varchar(40)")],
    "study_codes": [("variable", "varchar(40)"), ("code_kind", "varchar(20)"), ("vocabulary_id", "varchar(20)"),
                    ("code", "varchar(50)"), ("descendants", "boolean"), ("grade", "integer"),
                    ("unit", "varchar(50)")],
    "study_units": [("unit_family", "varchar(40)"), ("unit_code", "varchar(50)"), ("factor", "double precision")],
    "study_value_sets": [("polarity", "varchar(10)"), ("vocabulary_id", "varchar(20)"), ("code", "varchar(50)")],
}


def _params_columns(study: StudyDefinition) -> list[tuple[str, str]]:
    cols = [("site_id", "varchar(40)")]
    for name, value in study.params.model_dump().items():
        cols.append((name, "integer" if isinstance(value, int) else "double precision"))
    return cols


def _input_rows(study: StudyDefinition, overlay: SiteOverlay | None, site_id: str) -> dict[str, list[tuple]]:
    params = study.params.model_dump()
    rows: dict[str, list[tuple]] = {"study_params": [(site_id, *params.values())]}
    rows["study_variables"] = [(n, v.domain, v.value, v.unit_family) for n, v in study.variables.items()]
    codes: list[tuple] = []
    for name, var in study.variables.items():
        for c in var.codes:
            codes.append((name, "concept", c.vocabulary_id, c.code, c.descendants, c.grade, None))
    if overlay is not None:
        for name, local in overlay.variables.items():
            for c in local:
                if c.source_value is not None:
                    codes.append((name, "source_value", None, c.source_value, False, c.grade, c.unit))
                else:  # a local source concept: resolved through CONCEPT by int_overlay_codes
                    codes.append((name, "source_concept", c.vocabulary_id, c.concept_code, False, c.grade, c.unit))
    rows["study_codes"] = codes
    rows["study_units"] = [(fam, unit, factor) for fam, uf in study.unit_families.items()
                           for unit, factor in uf.factors.items()]
    # The site's own units (unit + unit_factor in the overlay) extend their variable's unit family.
    rows["study_units"] += [(fam, unit, factor) for (fam, unit), factor in site_unit_factors(study, overlay).items()
                            if unit not in study.unit_families[fam].factors]
    rows["study_value_sets"] = [(pol, c.vocabulary_id, c.code) for pol in ("positive", "negative")
                                for c in getattr(study.value_sets, pol)]
    return rows


def site_unit_factors(study: StudyDefinition, overlay: SiteOverlay | None) -> dict[tuple[str, str], float]:
    """(unit_family, unit) -> factor of the units the site overlay states with ``unit_factor``."""
    return {} if overlay is None else overlay.site_units(study)


def site_unit_stamp(study: StudyDefinition, overlay: SiteOverlay | None) -> list[dict[str, Any]]:
    """The site's own unit factors as stamped into every output (sorted; empty without any)."""
    return [{"unit_family": fam, "unit": unit, "factor": factor,
             "canonical": study.unit_families[fam].canonical}
            for (fam, unit), factor in sorted(site_unit_factors(study, overlay).items())]


def require_overlay_fits(db: Database, overlay: SiteOverlay | None) -> None:
    """Refuse an overlay whose entries carry ``system:`` on a CDM not written by ``blina ingest``.

    ``system`` is a FHIR Coding.system. ``blina ingest`` applies it when it reads the FHIR resources and
    records the code in ``*_source_value`` (its ``blina_person_map`` table marks such a CDM); an OMOP row
    of any other CDM carries no code system, so the key could only be ignored, which is never done.
    """
    if overlay is None:
        return
    paths = overlay.has_system()
    if not paths:
        return
    from blina_study.adapter.cohort import PERSON_MAP_TABLE
    from blina_study.adapter.study import StudyDefinitionError

    if db.table_exists(db.schemas.cdm, PERSON_MAP_TABLE):
        return
    raise StudyDefinitionError(
        f"{overlay.source}: {paths[0]}: a FHIR code system cannot be matched on this OMOP CDM "
        f"(schema {db.schemas.cdm!r} was not written by blina ingest; OMOP rows carry no code system)"
        + (f" ({len(paths)} entries)" if len(paths) > 1 else ""),
        hint="drop system: to match *_source_value, or match the local source concept with "
        "{vocabulary_id: <its vocabulary>, concept_code: <its code>} (mappings/README.md)",
    )


def _site_id(site_id: str | None, overlay: SiteOverlay | None) -> str:
    sid = site_id or (overlay.site_id if overlay is not None else None)
    if not sid:
        raise BlinaError("no site id", hint="pass --site-id ID (or use a site overlay that names site_id)")
    return validate_site_id(sid)


def _input_sql(study: StudyDefinition, overlay: SiteOverlay | None, site_id: str,
               binds: dict[str, Any], tables: str | None = None) -> dict[str, str]:
    """SQL of the generated input relations: inline VALUES with binds, or reads of persisted tables
    in schema ``tables``."""
    if tables is not None:
        return {name: f"select * from {quote_ident(tables)}.{quote_ident(name)}" for name in INPUT_RELATIONS}
    rows = _input_rows(study, overlay, site_id)
    out = {"study_params": _values_sql(_params_columns(study), rows["study_params"], "p", binds)}
    for name, cols in _INPUT_COLUMNS.items():
        out[name] = _values_sql(cols, rows[name], name.replace("study_", ""), binds)
    return out


# --------------------------------------------------------------------------- render
def _substitute(body: str, db: Database) -> str:
    """Schema names (``{cdm}``, ``{vocab}``: validated and quoted), the ``{in_cohort(t.col)}`` macro and
    ``{v54(alias.column, type)}`` (the column, or NULL of that type on a CDM v5.3 database)."""
    def repl(m: re.Match[str]) -> str:
        return quote_ident(getattr(db.schemas, m.group(1)), f"{m.group(1)} schema name")
    body = _IN_COHORT.sub(lambda m: _DIALECT[db.dialect]["in_cohort"].format(col=m.group(1)), body)
    if _V54.search(body):
        from blina_study.adapter.omop.version import missing_v54_columns

        absent = {col for _, col in missing_v54_columns(db)}
        body = _V54.sub(lambda m: f"cast(null as {m.group(3)})" if m.group(2).lower() in absent
                        else f"{m.group(1)}.{m.group(2)}", body)
    return re.sub(r"\{(cdm|vocab)\}", repl, body)


def _indent(sql: str) -> str:
    return "\n".join("    " + line if line else line for line in sql.splitlines())


def _with_clause(needs: tuple[str, ...], models: Mapping[str, SqlModel], inputs: Mapping[str, str],
                 db: Database) -> str:
    macro = _DIALECT[db.dialect]
    order = creation_order(models, needs)
    ctes = [f"{name} {macro['cte']} (\n{_indent(sql)}\n)" for name, sql in inputs.items()]
    for name in order:
        m = models[name]
        kw = macro["inline_cte"] if m.layer == "staging" else macro["cte"]
        ctes.append(f"-- {m.layer}/{name}: {m.grain}\n{name} {kw} (\n{_indent(_substitute(m.body, db))}\n)")
    return "with\n\n" + ",\n\n".join(ctes)


def _compose(output: str, models: Mapping[str, SqlModel], inputs: Mapping[str, str], db: Database) -> str:
    cols = ", ".join(_CONTRACT[output])
    return _with_clause((output,), models, inputs, db) + f"\n\nselect {cols}\nfrom {output}\norder by {_ORDER[output]}"


_SQL_TYPE = {"text": "varchar", "bigint": "bigint", "int": "integer", "date": "date",
             "double": "double precision", "boolean": "boolean"}


def _envelope(outputs: tuple[str, ...]) -> dict[str, str]:
    cols: dict[str, str] = {}
    for out in outputs:
        for name, kind in _CONTRACT[out].items():
            if cols.setdefault(name, kind) != kind:
                raise ViewsError(f"column {name} has two types in the contract", hint="rename one")
    return cols


def _compose_combined(outputs: tuple[str, ...], models: Mapping[str, SqlModel], inputs: Mapping[str, str],
                      db: Database) -> str:
    env = _envelope(outputs)
    parts = []
    for out in outputs:
        cells = [n if n in _CONTRACT[out] else f"cast(null as {_SQL_TYPE[k]}) as {n}" for n, k in env.items()]
        parts.append(f"select '{out}' as output_name, " + ", ".join(cells) + f"\nfrom {out}")
    return _with_clause(outputs, models, inputs, db) + "\n\n" + "\nunion all\n".join(parts)


def render_query(study: StudyDefinition, overlay: SiteOverlay | None, db: Database, select_sql: str,
                 needs: tuple[str, ...], *, site_id: str = "check") -> tuple[str, dict[str, Any]]:
    """One read-only query: the relations ``needs`` (and what they need) as CTEs, then ``select_sql``
    (which may read them by name). Returns (sql, bound values). Used by ``blina check``."""
    models = load_models()
    binds: dict[str, Any] = {}
    inputs = _input_sql(study, overlay, _site_id(site_id, overlay), binds)
    sql = _with_clause(needs, models, inputs, db) + "\n\n" + _substitute(select_sql, db)
    used = {m.group(1) for m in _BIND.finditer(_COMMENT.sub("", sql))}
    return sql, {k: v for k, v in binds.items() if k in used}


_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)\b(?!:)")


def render(study: StudyDefinition, overlay: SiteOverlay | None, db: Database, *,
           site_id: str | None = None, outputs: tuple[str, ...] = OUTPUTS,
           _tables: str | None = None) -> RenderedSQL:
    """Compose one read-only query per output for this database's dialect and schemas."""
    sid = _site_id(site_id, overlay)
    models = load_models()
    binds: dict[str, Any] = {}
    inputs = _input_sql(study, overlay, sid, binds, tables=_tables)
    queries: dict[str, str] = {}
    params: dict[str, dict[str, Any]] = {}
    for out in outputs:
        if out not in _CONTRACT:
            raise BlinaError(f"unknown output {out!r}", hint=f"one of: {', '.join(OUTPUTS)}")
        sql = _compose(out, models, inputs, db)
        used = {m.group(1) for m in _BIND.finditer(_COMMENT.sub("", sql))}
        missing = used - set(binds)
        if missing:
            raise ViewsError(f"query {out} uses unbound parameters {sorted(missing)}",
                             hint="parameters come from study_params; read them from that relation")
        queries[out] = sql
        params[out] = {k: binds[k] for k in binds if k in used}
    combined = _compose_combined(outputs, models, inputs, db)
    used = {m.group(1) for m in _BIND.finditer(_COMMENT.sub("", combined))}
    return RenderedSQL(queries=queries, params=params, dialect=db.dialect,
                       relations=tuple(creation_order(models, outputs)), combined=combined,
                       combined_params={k: binds[k] for k in binds if k in used})


# --------------------------------------------------------------------------- types
def _to_date(v: Any) -> dt.date | None:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, pd.Timestamp | dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return pd.Timestamp(v).date()


def normalize(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """Exact contract columns in order, with engine-independent types: dates as ``datetime.date``
    (object), ints as ``Int64``, booleans as nullable ``boolean``, floats as ``float64``, text as
    object with ``None`` for missing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ViewsError(f"result lacks contract columns {missing}", hint="the study SQL is out of date")
    out = pd.DataFrame(index=range(len(df)))
    for name, kind in columns.items():
        s = df[name].reset_index(drop=True)
        if kind == "date":
            out[name] = pd.Series([_to_date(v) for v in s], dtype=object)
        elif kind in ("int", "bigint"):
            out[name] = pd.array([None if pd.isna(v) else int(v) for v in s], dtype="Int64")
        elif kind == "double":
            out[name] = pd.Series([float("nan") if v is None or pd.isna(v) else float(v) for v in s],
                                  dtype="float64")
        elif kind == "boolean":
            out[name] = pd.array([None if v is None or pd.isna(v) else bool(v) for v in s], dtype="boolean")
        else:
            out[name] = pd.Series([None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)
                                   for v in s], dtype=object)
    return out


# --------------------------------------------------------------------------- run
def _query(db: Database, sql: str, params: Mapping[str, Any], what: str) -> pd.DataFrame:
    try:
        with db.transaction():
            for stmt in _DIALECT[db.dialect]["setup"]:
                db.execute(stmt)
            return db.query_df(sql, params)
    except Exception as exc:  # the database names the missing table / column / permission
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise BlinaError(
            f"building {what} failed on {db.safe_url}: {reason}",
            hint="check --cdm-schema / --vocab-schema and that the role may SELECT from them "
            "(blina check lists what is missing)",
        ) from exc


def _run(db: Database, rendered: RenderedSQL) -> dict[str, pd.DataFrame]:
    """Run the combined query once and split it into one contract frame per output (sorted by key)."""
    df = _query(db, rendered.combined, rendered.combined_params, " and ".join(rendered.queries))
    frames = {}
    for out in rendered.queries:
        part = df[df["output_name"] == out]
        keys = [k.strip() for k in _ORDER[out].split(",")]
        part = part.sort_values(keys, na_position="last", kind="mergesort")
        frames[out] = normalize(part, _CONTRACT[out])
    return frames


def build(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None, *,
          site_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the inline query and return ``(course, patient)`` with contract columns and types.

    Read-only: creates no object (not even a temporary table), so a SELECT-only role can run it.
    """
    require_overlay_fits(db, overlay)
    frames = _run(db, render(study, overlay, db, site_id=site_id, outputs=("course", "patient")))
    return frames["course"], frames["patient"]


def build_lineage(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None, *,
                  site_id: str | None = None) -> pd.DataFrame:
    """Lineage rows: (site_id, person_id, course_number, derived, source ``table:row_id``)."""
    require_overlay_fits(db, overlay)
    return _run(db, render(study, overlay, db, site_id=site_id, outputs=("lineage",)))["lineage"]


def persist(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None, *,
            site_id: str | None = None, results_schema: str | None = None) -> list[str]:
    """Create the input tables and the ``course`` / ``patient`` / ``lineage`` views in the results
    schema (replacing earlier ones). Returns the qualified names created."""
    schema = validate_ident(results_schema or db.schemas.results or "", "results schema name")
    if db.dialect == "duckdb" and db.query("select current_database()")[0][0] == schema:
        # DuckDB names a file's catalog after the file: blina.duckdb + schema blina is an ambiguous reference
        raise BlinaError(f"results schema {schema!r} has the name of the DuckDB file {db.safe_url} (its catalog "
                         f"is {schema!r}), so DuckDB cannot tell the two apart",
                         hint="choose another --results-schema (e.g. results) or rename the .duckdb file")
    require_overlay_fits(db, overlay)
    sid = _site_id(site_id, overlay)
    q = quote_ident(schema)
    binds: dict[str, Any] = {}
    inline = _input_sql(study, overlay, sid, binds)
    columns = {"study_params": _params_columns(study), **_INPUT_COLUMNS}
    rendered = render(study, overlay, db, site_id=sid, _tables=schema)
    created: list[str] = []
    try:
        _persist(db, q, schema, inline, binds, columns, rendered, created)
    except BlinaError:
        raise
    except Exception as exc:  # permission denied, read-only database, ...: say where and why
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise BlinaError(f"cannot create the study views in schema {schema!r} on {db.safe_url}: {reason}",
                         hint="--results-schema needs a schema the role may CREATE in; "
                         "without it, blina build creates nothing") from exc
    return created


def _persist(db: Database, q: str, schema: str, inline: dict[str, str], binds: dict[str, Any],
             columns: dict[str, list[tuple[str, str]]], rendered: RenderedSQL, created: list[str]) -> None:
    with db.transaction():
        db.execute(f"create schema if not exists {q}")
        for out in OUTPUTS:
            db.execute(f"drop view if exists {q}.{quote_ident(out)}")
        for name in INPUT_RELATIONS:
            table = f"{q}.{quote_ident(name)}"
            db.execute(f"drop table if exists {table}")
            db.execute(f"create table {table} (" + ", ".join(f"{c} {t}" for c, t in columns[name]) + ")")
            used = {m.group(1) for m in _BIND.finditer(inline[name])}
            db.execute(f"insert into {table} {inline[name]}", {k: binds[k] for k in used})
            created.append(f"{schema}.{name}")
        for out in OUTPUTS:
            db.execute(f"create view {q}.{quote_ident(out)} as\n{rendered.queries[out]}")
            created.append(f"{schema}.{out}")


_FINGERPRINT_TABLES: dict[str, str | None] = {
    "person": "person_id", "observation_period": "observation_period_id", "visit_occurrence": "visit_occurrence_id",
    "condition_occurrence": "condition_occurrence_id", "drug_exposure": "drug_exposure_id",
    "procedure_occurrence": "procedure_occurrence_id", "measurement": "measurement_id",
    "observation": "observation_id", "death": None,
}


def input_fingerprint(db: Database, study: StudyDefinition | None = None, overlay: SiteOverlay | None = None, *,
                      site_id: str | None = None) -> dict[str, Any]:
    """Row count and max id (death: max date) per CDM table read, plus what was read of the vocabulary.

    With ``study``: only the rows of the study patients (``int_cohort_persons``), i.e. exactly the
    records ``course`` and ``patient`` are computed from. Records of other persons do not move it, and a
    hospital's whole CDM is not counted (20 million MEASUREMENT rows cost a full scan on PostgreSQL).
    The vocabulary is fingerprinted the same way: the resolved concept sets (an md5 of every
    variable, match, concept and grade) and the VOCABULARY table's versions, not a count of CONCEPT
    (a full scan of millions of rows in an OHDSI vocabulary). Without ``study``: whole tables and the
    CONCEPT row count.
    """
    tables: dict[str, Any] = {}
    parts = []
    for table, key in _FINGERPRINT_TABLES.items():
        col = quote_ident(key) if key else "death_date"
        where = " as t where {in_cohort(t.person_id)}" if study is not None else ""
        parts.append(f"select '{table}' as table_name, count(*) as n, cast(max({col}) as varchar(40)) as mx "
                     f"from {db.qualified('cdm', table)}{where}")
    if study is None:
        parts.append("select 'vocab.concept', count(*), cast(null as varchar(40)) "
                     f"from {db.qualified('vocab', 'concept')}")
    else:
        parts += [
            "select 'vocab.concept_sets', count(*), md5(string_agg(variable || ':' || match_on || ':' || "
            "cast(concept_id as varchar(20)) || ':' || coalesce(cast(grade as varchar(10)), ''), ',' "
            "order by variable, match_on, concept_id)) from int_concept_sets",
            "select 'vocab.vocabulary', count(*), md5(string_agg(vocabulary_id || '=' || "
            "coalesce(vocabulary_version, ''), ',' order by vocabulary_id)) "
            f"from {db.qualified('vocab', 'vocabulary')}",
        ]
    sql, params = "\nunion all\n".join(parts), None
    if study is not None:
        sql, params = render_query(study, overlay, db, sql, (COHORT_RELATION, "int_concept_sets"),
                                   site_id=site_id or "fingerprint")
    for table, n, mx in db.query(sql, params):
        if table.startswith("vocab."):
            tables[table] = {"rows": int(n)} if mx is None else {"rows": int(n), "md5": str(mx)}
        else:
            tables[table] = {"rows": int(n), "max": None if mx is None else str(mx)}
    tables = {t: tables[t] for t in (*_FINGERPRINT_TABLES, *(t for t in tables if t.startswith("vocab.")))}
    if study is not None:
        tables["scope"] = "study patients"
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "tables": tables}


def extract(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None, *,
            site_id: str | None = None, out_dir: str | Path) -> dict[str, Path]:
    """Build and write ``course`` / ``patient`` (CSV + Parquet, contract columns), ``lineage.csv``
    and ``extract.json`` (parameters, study and input fingerprints, package version, the data source
    as CDM_SOURCE states it: ``data_source.synthetic``).

    Raises ``DataFindings`` (and writes nothing) when no person is a study patient."""
    from blina_study.adapter import __version__
    from blina_study.adapter.cohort import require_study_patients
    from blina_study.adapter.provenance import read_data_source

    sid = _site_id(site_id, overlay)
    out = Path(out_dir)
    require_overlay_fits(db, overlay)
    frames = _run(db, render(study, overlay, db, site_id=sid))
    # No study patient is a finding (exit 1), never an empty "successful" extract: nothing is written.
    require_study_patients(db, study, overlay, frames["patient"], site_id=sid)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlinaError(f"cannot create output folder {out}: {exc.strerror}", hint="check the path") from None
    paths: dict[str, Path] = {}
    for name in ("course", "patient"):
        df = frames[name]
        paths[f"{name}.csv"] = out / f"{name}.csv"
        df.to_csv(paths[f"{name}.csv"], index=False)
        paths[f"{name}.parquet"] = out / f"{name}.parquet"
        df.to_parquet(paths[f"{name}.parquet"], index=False)
    paths["lineage.csv"] = out / "lineage.csv"
    frames["lineage"].to_csv(paths["lineage.csv"], index=False)
    sidecar = {
        "package": "blina-study",
        "version": __version__,
        "site_id": sid,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "engine": db.dialect,
        "schemas": {"cdm": db.schemas.cdm, "vocab": db.schemas.vocab},
        "study_id": study.study_id,
        "study_version": study.version,
        "study_fingerprint": study.fingerprint(),
        "overlay": None if overlay is None else {"site_id": overlay.site_id, "source": overlay.source},
        "parameters": study.params.model_dump(),
        "site_unit_factors": site_unit_stamp(study, overlay),
        "input_fingerprint": input_fingerprint(db, study, overlay, site_id=sid),
        # what the data say they are (CDM_SOURCE): a report of synthetic data says so
        "data_source": read_data_source(db),
        "rows": {name: len(df) for name, df in frames.items()},
        "columns": {name: list(_CONTRACT[name]) for name in ("course", "patient")},
        "lineage_note": "lineage.csv links derived values to source rows; it stays at the site",
    }
    paths["extract.json"] = out / "extract.json"
    paths["extract.json"].write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return paths
