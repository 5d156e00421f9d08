"""SQL-on-FHIR v2 ViewDefinitions compiled to one DuckDB query over NDJSON.

``compile_view(view, source_sql)`` turns a validated ``ViewDefinition`` (the Python runner in
``blina_study.adapter.fhir.viewdef`` stays the reference and the fallback) into one SELECT over a relation with
a single ``JSON`` column ``json`` (e.g. ``read_ndjson_objects('x.ndjson.gz')``), so parsing,
filtering and flattening run inside DuckDB. Unsupported features raise ``CompileDeclined`` naming
the feature; the caller then uses the runner for that view.

How FHIRPath maps to SQL: every path is a ``JSON[]`` list expression (a FHIRPath collection).
A member step flattens arrays and drops JSON nulls, like the runner's ``_member_step``; ``ofType(T)``
after a member reads ``<name><T>``, else keeps the plain ``<name>`` values of JSON type T (the
runner's rule); ``forEach`` is a lateral ``unnest``, ``forEachOrNull`` the same over ``[NULL]``
when the collection is empty; sibling selects are cross-joined laterals. A scalar column with more
than one value fails the query with DuckDB's ``error()`` (the runner raises
``ViewEvaluationError``). Columns with a declared primitive type are typed (VARCHAR, BIGINT,
DOUBLE, BOOLEAN) and a value of the wrong JSON type fails the query instead of being coerced;
undeclared columns stay JSON.

Supported subset (everything else is declined by name): member paths, ``ofType``, ``first()``,
``last()``, ``where(...)``, ``exists()``, ``empty()``, ``not()``, ``getResourceKey()``,
``%rowIndex`` and string/number/boolean constants; ``=``/``!=`` against a string, number or
boolean literal, ``and``/``or``; ``forEach``/``forEachOrNull``, nested ``select``. Declined:
``unionAll``, ``repeat``, ``collection: true``, temporal literals and the rest of FHIRPath.

Why DuckDB's JSON functions and not a hand-written scanner: DuckDB's ``read_ndjson_objects`` and
``->``/``->>`` are maintained, multi-threaded C++ and measured faster than a one-core orjson parse
(bench/RESULTS.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from blina_study.adapter.fhir.fhirpath import (
    _CHOICE_BASES,
    _CHOICE_SUFFIXES,
    _DATETIME_RE,
    _INTEGER_TYPES,
    _STRING_TYPES,
    _TIME_RE,
    FHIR_RESOURCE_TYPES,
    FhirDate,
    FhirDateTime,
    FhirTime,
    _cap,
    _Parser,
)
from blina_study.adapter.fhir.viewdef import ViewDefinition, ViewEvaluationError

__all__ = ["CompileDeclined", "CompiledView", "compile_view", "conformance_lines", "run_compiled"]


class CompileDeclined(ValueError):
    """The view uses a feature the SQL compiler does not support (message names it)."""


@dataclass(frozen=True)
class CompiledView:
    """A compiled view: ``sql`` selects ``columns`` (in the runner's order) from ``source_sql``."""

    sql: str
    columns: tuple[str, ...]
    json_columns: tuple[str, ...]  # columns returned as JSON text (no declared primitive type)


_NUMERIC = "('BIGINT','UBIGINT','DOUBLE')"
_TEMPORAL_STRINGS = frozenset({"date", "dateTime", "instant", "time"})


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key(name: str) -> str:
    return _sql_str('$."' + name.replace('"', '\\"') + '"')


def _json_type_test(var: str, type_name: str) -> str | None:
    """SQL test that JSON ``var`` has FHIR type ``type_name`` (the runner's ``_type_matches``)."""
    jt = f"json_type({var})"
    if type_name == "boolean":
        return f"{jt} = 'BOOLEAN'"
    if type_name in _INTEGER_TYPES:
        return f"{jt} IN ('BIGINT','UBIGINT')"
    if type_name == "decimal":
        return f"{jt} IN {_NUMERIC}"
    if type_name in _STRING_TYPES:
        return f"{jt} = 'VARCHAR'"
    if type_name in _TEMPORAL_STRINGS:
        # The runner's tests: the same regular expressions, fully matched (RE2 accepts them).
        pattern = {
            "date": r"\d{4}(?:-\d{2}(?:-\d{2})?)?",
            "dateTime": _DATETIME_RE.pattern,
            "instant": _DATETIME_RE.pattern,
            "time": _TIME_RE.pattern,
        }[type_name]
        return f"({jt} = 'VARCHAR' AND regexp_full_match({var}->>'$', {_sql_str(pattern)}))"
    if type_name in FHIR_RESOURCE_TYPES:
        return f"({jt} = 'OBJECT' AND ({var}->>'$.resourceType') = {_sql_str(type_name)})"
    return f"({jt} = 'OBJECT' AND ({var}->'$.resourceType') IS NULL)"


class _PathCompiler:
    """Compiles one FHIRPath expression (the runner's parse tree) to a ``JSON[]`` SQL expression."""

    def __init__(self, expression: str, constants: Mapping[str, Any], resource_type: str, names: Iterable[int]):
        self.expression = expression
        self.constants = constants
        self.resource_type = resource_type
        self.names = names  # shared counter for lambda variable names

    def decline(self, what: str) -> CompileDeclined:
        return CompileDeclined(f"{what} in FHIRPath {self.expression!r} is not compiled to SQL")

    def fresh(self) -> str:
        return f"x{next(self.names)}"

    # ---- collections (JSON[]) ----

    def coll(self, node: tuple, focus: str) -> str:
        kind = node[0]
        if kind == "ident":
            if node[1] == self.resource_type and focus == "__root__":
                return "[r.json]"
            return self.member(self.focus(focus), node[1])
        if kind == "member":
            return self.member(self.coll(node[1], focus), node[2])
        if kind == "this":
            return self.focus(focus)
        if kind == "call":
            return self.call(node, focus)
        if kind == "var":
            return self.var(node[1])
        if kind == "lit":
            return self.literal_coll(node[1])
        if kind == "empty":
            return "[]::JSON[]"
        if kind == "index":
            index = node[2]
            if index[0] == "var" and isinstance(self.constants.get(index[1]), int):
                index = ("lit", self.constants[index[1]])
            if index[0] != "lit" or isinstance(index[1], bool) or not isinstance(index[1], int):
                raise self.decline("an indexer that is not an integer literal")
            return f"({self.coll(node[1], focus)})[{index[1] + 1}:{index[1] + 1}]"
        if kind == "bin" and node[1] in ("=", "!=", "and", "or", "<", ">", "<=", ">="):
            return self.bool_coll(node, focus)
        raise self.decline(f"the operator {kind!r}")

    def bool_coll(self, node: tuple, focus: str) -> str:
        b = self.boolean(node, focus)
        return f"(CASE WHEN {b} IS NULL THEN []::JSON[] ELSE [to_json({b})] END)"

    def focus(self, focus: str) -> str:
        return "[r.json]" if focus == "__root__" else focus

    def literal_coll(self, value: Any) -> str:
        if isinstance(value, (FhirDate, FhirDateTime, FhirTime)):
            raise self.decline("a date/time literal")
        if isinstance(value, bool):
            return f"[to_json({str(value).lower()})]"
        if isinstance(value, (int, float)):
            return f"[to_json({value!r})]"
        if isinstance(value, str):
            return f"[to_json({_sql_str(value)}::VARCHAR)]"
        raise self.decline(f"the literal {value!r}")

    def var(self, name: str) -> str:
        if name == "rowIndex":
            raise self.decline("%rowIndex inside an expression")
        if name in ("resource", "rootResource"):
            return "[r.json]"
        if name in self.constants:
            return self.literal_coll(self.constants[name])
        raise self.decline(f"the variable %{name}")

    def arr(self, value: str) -> str:
        """A JSON value as a collection: arrays flattened without nulls, null/absent empty."""
        x = self.fresh()
        return (
            f"(CASE WHEN {value} IS NULL OR json_type({value}) = 'NULL' THEN []::JSON[] "
            f"WHEN json_type({value}) = 'ARRAY' THEN list_filter(from_json({value}, '[\"JSON\"]'), "
            f"lambda {x}: json_type({x}) <> 'NULL') ELSE [{value}] END)"
        )

    def member(self, coll: str, name: str) -> str:
        x = self.fresh()
        value = f"({x}->{_key(name)})"
        if name in _CHOICE_BASES:
            # A bare choice base reads `<name>` or else a `<name><Type>` key (the runner's rule).
            keys = ", ".join(f"{x}->{_key(name + s)}" for s in sorted(_CHOICE_SUFFIXES))
            value = f"COALESCE({x}->{_key(name)}, {keys})"
        return f"flatten(list_transform({coll}, lambda {x}: {self.arr(value)}))"

    def call(self, node: tuple, focus: str) -> str:
        _, base, name, args = node
        if name == "ofType" and base is not None and base[0] in ("member", "ident") and len(args) == 1:
            type_node = args[0]
            if type_node[0] != "ident":
                raise self.decline("ofType() with a qualified type")
            t = type_node[1].removeprefix("FHIR.")
            if t in FHIR_RESOURCE_TYPES:
                raise self.decline("ofType(<resource type>)")
            test = _json_type_test("__v__", t)
            if test is None:
                raise self.decline(f"ofType({t}) on a plain element")
            parent = self.focus(focus) if base[0] == "ident" else self.coll(base[1], focus)
            last = base[1] if base[0] == "ident" else base[2]
            x, y = self.fresh(), self.fresh()
            keyed = f"({x}->{_key(last + _cap(t))})"
            plain = f"({x}->{_key(last)})"
            plain_typed = f"list_filter({self.arr(plain)}, lambda {y}: {test.replace('__v__', y)})"
            return (
                f"flatten(list_transform({parent}, lambda {x}: CASE WHEN {keyed} IS NOT NULL AND json_type({keyed}) "
                f"<> 'NULL' THEN {self.arr(keyed)} ELSE {plain_typed} END))"
            )
        if base is None:
            if name in ("getResourceKey", "where", "exists", "empty", "extension") and focus == "__root__":
                return self.call(("call", ("this",), name, args), focus)
            raise self.decline(f"the function {name}() without a base")
        coll = self.coll(base, focus)
        if name == "first" and not args:
            return f"({coll})[1:1]"
        if name == "last" and not args:
            return f"({coll})[-1:]"
        if name == "where" and len(args) == 1:
            x = self.fresh()
            return f"list_filter({coll}, lambda {x}: COALESCE({self.boolean(args[0], f'[{x}]')}, false))"
        if name == "getResourceKey" and not args:
            x = self.fresh()
            return (
                f"list_transform(list_filter({coll}, lambda {x}: json_type({x}) = 'OBJECT' AND "
                f"({x}->>'$.resourceType') IS NOT NULL), lambda {x}: to_json(({x}->>'$.resourceType') || '/' || "
                f"COALESCE({x}->>'$.id', '')))"
            )
        if name == "extension" and len(args) == 1 and args[0][0] == "lit" and isinstance(args[0][1], str):
            x = self.fresh()
            test = f"(json_type({x}->'$.url') = 'VARCHAR' AND ({x}->>'$.url') = {_sql_str(args[0][1])})"
            return f"list_filter({self.member(coll, 'extension')}, lambda {x}: {test})"
        if name == "join" and len(args) <= 1:
            sep = args[0] if args else ("lit", "")
            if sep[0] != "lit" or not isinstance(sep[1], str):
                raise self.decline("join() with a separator that is not a string literal")
            x = self.fresh()
            msg = _sql_str(f"{self.expression}: join() needs strings")
            text = (
                f"array_to_string(list_transform({coll}, lambda {x}: CASE WHEN json_type({x}) = 'VARCHAR' "
                f"THEN {x}->>'$' ELSE error({msg}) END), {_sql_str(sep[1])})"
            )
            return f"[to_json({text})]"
        if name in ("exists", "empty", "not"):
            return self.bool_coll(node, focus)
        raise self.decline(f"the function {name}()")

    # ---- booleans (SQL BOOLEAN, NULL = empty) ----

    def single(self, coll: str, what: str) -> str:
        msg = _sql_str(f"{what}: expected a single item")
        return f"(CASE WHEN len({coll}) > 1 THEN error({msg}) ELSE ({coll})[1] END)"

    def boolean(self, node: tuple, focus: str) -> str:
        kind = node[0]
        if kind == "bin" and node[1] in ("and", "or"):
            return f"({self.boolean(node[2], focus)} {node[1].upper()} {self.boolean(node[3], focus)})"
        if kind == "bin" and node[1] in ("=", "!="):
            left, right = node[2], node[3]
            if left[0] == "lit" or (left[0] == "var" and left[1] in self.constants):
                left, right = right, left
            lit = right[1] if right[0] == "lit" else self.constants.get(right[1]) if right[0] == "var" else None
            if right[0] not in ("lit", "var") or lit is None or isinstance(lit, (FhirDate, FhirDateTime, FhirTime)):
                raise self.decline(f"the comparison {node[1]!r} with a non-literal operand")
            v = self.single(self.coll(left, focus), self.expression)
            if isinstance(lit, bool):
                test = f"(json_type({v}) = 'BOOLEAN' AND CAST({v} AS BOOLEAN) = {str(lit).lower()})"
            elif isinstance(lit, (int, float)):
                test = f"(json_type({v}) IN {_NUMERIC} AND CAST({v} AS DOUBLE) = {float(lit)!r})"
            elif isinstance(lit, str):
                test = f"(json_type({v}) = 'VARCHAR' AND ({v}->>'$') = {_sql_str(lit)})"
            else:
                raise self.decline(f"the literal {lit!r}")
            test = f"(CASE WHEN {v} IS NULL THEN NULL ELSE {test} END)"
            return test if node[1] == "=" else f"(NOT {test})"
        if kind == "bin" and node[1] in ("<", ">", "<=", ">="):
            left, right = node[2], node[3]
            lit = right[1] if right[0] == "lit" else self.constants.get(right[1]) if right[0] == "var" else None
            if isinstance(lit, bool) or not isinstance(lit, (int, float)):
                raise self.decline(f"the comparison {node[1]!r} with a non-number operand")
            v = self.single(self.coll(left, focus), self.expression)
            msg = _sql_str(f"{self.expression}: {node[1]} compares a number with a non-number")
            return (
                f"(CASE WHEN {v} IS NULL THEN NULL WHEN json_type({v}) IN {_NUMERIC} "
                f"THEN CAST({v} AS DOUBLE) {node[1]} {float(lit)!r} ELSE error({msg}) END)"
            )
        if kind == "call" and node[1] is not None and not node[3]:
            if node[2] == "exists":
                return f"(len({self.coll(node[1], focus)}) > 0)"
            if node[2] == "empty":
                return f"(len({self.coll(node[1], focus)}) = 0)"
            if node[2] == "not":
                return f"(NOT {self.boolean(node[1], focus)})"
        if kind == "lit" and isinstance(node[1], bool):
            return str(node[1]).lower()
        if kind in ("ident", "member", "call"):
            v = self.single(self.coll(node, focus), self.expression)
            msg = _sql_str(f"{self.expression}: expected a boolean")
            return (
                f"(CASE WHEN {v} IS NULL THEN NULL WHEN json_type({v}) = 'BOOLEAN' THEN CAST({v} AS BOOLEAN) "
                f"ELSE error({msg}) END)"
            )
        raise self.decline(f"the boolean operator {node[1] if kind == 'bin' else kind!r}")


_SQL_TYPES: dict[str, tuple[str, str]] = {}  # FHIR type -> (SQL type, JSON type test on __v__)
for _t in _STRING_TYPES | _TEMPORAL_STRINGS:
    _SQL_TYPES[_t] = ("VARCHAR", "json_type(__v__) = 'VARCHAR'")
for _t in _INTEGER_TYPES:
    _SQL_TYPES[_t] = ("BIGINT", "json_type(__v__) IN ('BIGINT','UBIGINT')")
_SQL_TYPES["decimal"] = ("DOUBLE", f"json_type(__v__) IN {_NUMERIC}")
_SQL_TYPES["boolean"] = ("BOOLEAN", "json_type(__v__) = 'BOOLEAN'")


def _walk_paths(view: ViewDefinition) -> None:
    """Decline view-level features before any SQL is generated."""

    def walk(select: Mapping[str, Any], loc: str) -> None:
        for feature in ("unionAll", "repeat"):
            if feature in select:
                raise CompileDeclined(f"{loc}.{feature} is not compiled to SQL")
        for j, column in enumerate(select.get("column", [])):
            if column.get("collection") is True:
                raise CompileDeclined(f"{loc}.column[{j}] 'collection: true' is not compiled to SQL")
        for i, child in enumerate(select.get("select", [])):
            walk(child, f"{loc}.select[{i}]")

    for i, s in enumerate(view.definition.get("select", [])):
        walk(s, f"select[{i}]")


def compile_view(view: ViewDefinition, source_sql: str) -> CompiledView:
    """Compile ``view`` to one DuckDB SELECT over ``source_sql`` (a relation with a JSON column ``json``).

    Raises ``CompileDeclined`` naming the first unsupported feature.
    """
    _walk_paths(view)
    counter = itertools.count()
    constants = dict(view.constants)
    types = dict(view.column_types)
    joins: list[str] = []
    columns: dict[str, str] = {}
    json_columns: list[str] = []

    def parse(expression: str) -> tuple:
        return _Parser(expression).parse()

    def compiler(expression: str) -> _PathCompiler:
        return _PathCompiler(expression, constants, view.resource, counter)

    def emit_select(select: Mapping[str, Any], focus: str, row_index: str) -> None:
        iterate = next((k for k in ("forEach", "forEachOrNull") if k in select), None)
        if iterate is not None:
            expression = select[iterate]
            coll = compiler(expression).coll(parse(expression), focus)
            alias = f"t{len(joins)}"
            if iterate == "forEachOrNull":
                values = "CASE WHEN len(L) = 0 THEN [NULL::JSON] ELSE L END"
                index = "CASE WHEN len(L) = 0 THEN [0] ELSE range(len(L)) END"
            else:
                values, index = "L", "range(len(L))"
            joins.append(
                f"CROSS JOIN LATERAL (SELECT unnest({values}) AS v, unnest({index}) AS i "
                f"FROM (SELECT {coll} AS L)) AS {alias}"
            )
            focus, row_index = f"list_filter([{alias}.v], lambda z: z IS NOT NULL)", f"{alias}.i"
        for column in select.get("column", []):
            name, path = column["name"], column["path"]
            if name in columns:
                continue
            if path.strip() == "%rowIndex":
                columns[name] = row_index
                continue
            pc = compiler(path)
            coll = pc.coll(parse(path), focus)
            msg = _sql_str(f'column {name!r} ({path}) returned several values; declare "collection": true')
            v = f"(CASE WHEN len({coll}) > 1 THEN error({msg}) ELSE ({coll})[1] END)"
            declared = types.get(name)
            if declared in _SQL_TYPES:
                sql_type, test = _SQL_TYPES[declared]
                bad = _sql_str(f"column {name!r} ({path}): value is not a FHIR {declared}")
                getter = "__v__->>'$'" if sql_type == "VARCHAR" else f"CAST(__v__ AS {sql_type})"
                expr = (f"(CASE WHEN __v__ IS NULL THEN NULL WHEN {test} THEN {getter} ELSE error({bad}) END)").replace(
                    "__v__", "cv"
                )
                columns[name] = f"(SELECT {expr} FROM (SELECT {v} AS cv))"
            else:
                json_columns.append(name)
                columns[name] = f"CAST({v} AS VARCHAR)"
        for child in select.get("select", []):
            emit_select(child, focus, row_index)

    for select in view.definition["select"]:
        emit_select(select, "__root__", "0")

    wheres = [f"(r.json->>'$.resourceType') = {_sql_str(view.resource)}"]
    for w in view.definition.get("where", []):
        path = w["path"]
        wheres.append(f"COALESCE({compiler(path).boolean(parse(path), '__root__')}, false)")
    select_list = ",\n  ".join(f'{columns[n]} AS "{n}"' for n in view.column_names)
    sql = (
        f"SELECT\n  {select_list}\nFROM (SELECT json FROM {source_sql}) AS r\n"
        + "".join(f"{j}\n" for j in joins)
        + "WHERE "
        + "\n  AND ".join(wheres)
    )
    return CompiledView(sql, tuple(view.column_names), tuple(json_columns))


def run_compiled(
    view: ViewDefinition, resources: Sequence[Mapping[str, Any]], con: duckdb.DuckDBPyConnection | None = None
) -> list[dict[str, Any]]:
    """Run the compiled view on in-memory resources (tests and the conformance report).

    A data error of the view (several values for a scalar column...) raises ``ViewEvaluationError``.
    """
    con = con or duckdb.connect()
    texts = [orjson.dumps(r).decode() for r in resources]
    compiled = compile_view(view, "(SELECT CAST(unnest($texts::VARCHAR[]) AS JSON) AS json)")
    try:
        result = con.execute(compiled.sql, {"texts": texts}).fetchall() if texts else []
    except duckdb.InvalidInputException as exc:
        raise ViewEvaluationError(str(exc), resource_key=None, location="compiled SQL") from exc
    json_cols = set(compiled.json_columns)
    out = []
    for row in result:
        out.append(
            {
                n: (orjson.loads(v) if n in json_cols and v is not None else v)
                for n, v in zip(compiled.columns, row, strict=True)
            }
        )
    return out


def conformance_lines(suite_dir: Path) -> list[str]:
    """Markdown section: the official suite on the compiled path (passed / failed / declined by name).

    A case passes when its rows (order-insensitive) and counts match and the compiled rows equal the
    runner's; ``expectError`` cases pass when the view or the query is rejected.
    """
    from blina_study.adapter.fhir.viewdef import ViewDefinitionError, run_view

    def canon(value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return (type(value).__name__, value)
        if isinstance(value, (int, float)):
            return ("num", float(value))
        if isinstance(value, list):
            return ("list", tuple(canon(v) for v in value))
        return ("obj", tuple(sorted((k, canon(v)) for k, v in value.items())))

    passed: list[str] = []
    failed: list[str] = []
    declined: list[str] = []
    for path in sorted((suite_dir / "tests").glob("*.json")):
        data = orjson.loads(path.read_bytes())
        for test in data["tests"]:
            case_id = f"{path.stem}::{test['title']}"
            try:
                view = ViewDefinition(test["view"])
                rows = run_compiled(view, data["resources"])
            except CompileDeclined as exc:
                declined.append(f"- `{case_id}`: {exc}")
                continue
            except ViewDefinitionError as exc:
                (passed if test.get("expectError") else failed).append(f"- `{case_id}`: {str(exc)[:200]}")
                continue
            got = sorted(canon(r) for r in rows)
            ok = not test.get("expectError")
            ok = ok and ("expect" not in test or got == sorted(canon(r) for r in test["expect"]))
            ok = ok and ("expectCount" not in test or len(rows) == test["expectCount"])
            ok = ok and got == sorted(canon(r) for r in run_view(view, data["resources"]))
            (passed if ok else failed).append(f"- `{case_id}`")
    return [
        "## Compiled to DuckDB SQL (`blina_study.adapter.fhir.compile_sql`)",
        "",
        "The same cases on the SQL compiler; a view it cannot compile is declined by name and the runner",
        "takes it. Accepted cases must also give the runner's rows (`tests/test_fhir_compile_sql.py`).",
        "",
        "The ingest does not use the compiled path: the DuckDB JSON functions it compiles to took 9x the Python",
        "runner to flatten a 1e6-resource export (`bench/compiled_views.py`, bench/RESULTS.md \"ViewDefinitions",
        "compiled to DuckDB SQL\"), so the runner flattens the ingest's study resources.",
        "",
        f"**{len(passed)} passed, {len(failed)} failed, {len(declined)} declined (the runner takes them).**",
        "",
        "### Declined",
        "",
        *(declined or ["None."]),
        "",
        "### Failed",
        "",
        *(failed or ["None."]),
    ]
