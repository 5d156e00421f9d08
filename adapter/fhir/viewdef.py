"""SQL-on-FHIR v2 ViewDefinition runner: compile a view once, flatten resources into rows.

Grain of ``ViewDefinition.rows(resource)``: one ``dict`` per output row, keys = ``column_names``
(in that order), values = plain JSON scalars (``str``/``int``/``float``/``bool``/``None``), a
``list`` for ``collection: true`` columns, or a ``dict`` for a column returning a complex element.
Resources of another type than ``view.resource`` produce no rows and are never evaluated.

Semantics follow the SQL-on-FHIR v2 processing model: sibling selects are cross-joined, nested
selects repeat their parent's values, ``forEach`` ~ inner join, ``forEachOrNull`` ~ left join,
``unionAll`` concatenates branches with identical column lists, ``repeat`` walks a tree depth-first
(pre-order), ``%rowIndex`` is the 0-based position in the nearest enclosing iteration.
``getResourceKey()`` returns ``"<ResourceType>/<id>"``; ``getReferenceKey()`` returns the same
form from a reference (see ``blina_study.adapter.fhir.fhirpath``).

Structure problems raise ``ViewDefinitionError`` when the view is built. Data that violates the
view (several values in a non-collection column, a ``where`` path that is not boolean) raises
``ViewEvaluationError`` (a subclass) naming the resource and the column.

``python -m blina_study.adapter.fhir.viewdef --conformance-report docs/sof-conformance.md`` regenerates the
report of the official conformance suite (the runner's own speed: ``bench/viewdef_runner.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from blina_study.adapter.fhir.fhirpath import (
    _TEMPORAL_CLASSES,
    FHIR_COMPLEX_TYPES,
    FHIR_PRIMITIVE_TYPES,
    FHIR_RESOURCE_TYPES,
    NOT_SCALAR,
    CompiledPath,
    Env,
    FhirDate,
    FhirDateTime,
    FhirPathError,
    FhirTime,
    compile_path,
    plain_value,
)

__all__ = [
    "NOT_SUPPORTED",
    "ColumnInfo",
    "ConformanceResult",
    "ViewDefinition",
    "ViewDefinitionError",
    "ViewEvaluationError",
    "load_view",
    "main",
    "run_conformance",
    "run_view",
    "write_conformance_report",
]

# Conformance cases deliberately not supported: "<file stem>::<test title>" -> reason.
NOT_SUPPORTED: dict[str, str] = {}


class ViewDefinitionError(ValueError):
    """The ViewDefinition is invalid (message names the file, the element and the fix)."""


class ViewEvaluationError(ViewDefinitionError):
    """A resource cannot be flattened by a valid view (e.g. several values for a scalar column)."""

    def __init__(self, message: str, *, resource_key: str | None, location: str) -> None:
        super().__init__(message)
        self.resource_key = resource_key
        self.location = location


@dataclass(frozen=True)
class ColumnInfo:
    """One output column: ``type`` is the declared FHIR type (None when not declared)."""

    name: str
    path: str
    type: str | None
    collection: bool
    description: str | None = None
    tags: tuple[tuple[str, str], ...] = field(default=())


_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RESERVED_CONSTANTS = frozenset({"rowIndex", "resource", "rootResource", "context"})
_SELECT_KEYS = frozenset(
    {"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll", "id", "extension", "description"}
)
_COLUMN_KEYS = frozenset({"name", "path", "description", "collection", "type", "tag", "tags", "id", "extension"})
_WHERE_KEYS = frozenset({"path", "description", "id", "extension"})
_KNOWN_TYPES = FHIR_PRIMITIVE_TYPES | FHIR_COMPLEX_TYPES | FHIR_RESOURCE_TYPES

# value[x] of a constant -> (accepted JSON classes, converter).
_STR = (str,)
_CONSTANT_TYPES: dict[str, tuple[tuple[type, ...], Callable[[Any], Any]]] = {
    "valueBase64Binary": (_STR, str),
    "valueBoolean": ((bool,), bool),
    "valueCanonical": (_STR, str),
    "valueCode": (_STR, str),
    "valueDate": (_STR, FhirDate),
    "valueDateTime": (_STR, FhirDateTime),
    "valueDecimal": ((int, float), lambda v: v),
    "valueId": (_STR, str),
    "valueInstant": (_STR, FhirDateTime),
    "valueInteger": ((int,), int),
    "valueInteger64": ((int, str), int),
    "valueOid": (_STR, str),
    "valueString": (_STR, str),
    "valuePositiveInt": ((int,), int),
    "valueTime": (_STR, FhirTime),
    "valueUnsignedInt": ((int,), int),
    "valueUri": (_STR, str),
    "valueUrl": (_STR, str),
    "valueUuid": (_STR, str),
    "valueMarkdown": (_STR, str),
}
_CONSTANT_FORMATS = {
    "valueDate": re.compile(r"\d{4}(-\d{2}(-\d{2})?)?"),
    "valueDateTime": re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"),
    "valueInstant": re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"),
    "valueTime": re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?"),
    "valueInteger64": re.compile(r"[+-]?\d+"),
}


def _calendar_ok(text: str) -> bool:
    """Month, day, hour, minute and second of an ISO date/dateTime/time are in range."""
    m = re.match(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
    if m and m.group(2):
        import calendar

        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            return False
        if m.group(3) and not 1 <= int(m.group(3)) <= calendar.monthrange(year, month)[1]:
            return False
    t = re.search(r"(?:^|T)(\d{2}):(\d{2})(?::(\d{2}))?", text)
    if t and (int(t.group(1)) > 23 or int(t.group(2)) > 59 or int(t.group(3) or 0) > 59):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Compiled select tree.

Row = dict[str, Any]
Runner = Callable[[Any, Env], list[Row]]


@dataclass
class _Column:
    name: str
    fn: CompiledPath
    collection: bool
    location: str


@dataclass
class _Select:
    location: str
    columns: list[_Column]
    children: list[_Select]
    union: list[_Select]
    iterate: str | None  # None | "forEach" | "forEachOrNull" | "repeat"
    iter_fns: list[CompiledPath]
    names: list[str]

    @property
    def is_plain_leaf(self) -> bool:
        return self.iterate is None and not self.union and all(c.is_plain_leaf for c in self.children)


def _resource_key(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _column_runner(columns: list[_Column]) -> Callable[[list, Env], Row]:
    """Evaluate a select's columns on a focus collection into a fresh row dict."""
    # Raw closures (not CompiledPath.__call__) and an inlined temporal check: this is the
    # per-row hot loop.
    cols = [(c.name, c.fn.fn, None if c.collection else c.fn.scalar, c.collection, c) for c in columns]
    temporal = _TEMPORAL_CLASSES
    not_scalar = NOT_SCALAR

    def build(focus: list, env: Env) -> Row:
        row: Row = {}
        for name, fn, scalar, collection, col in cols:
            if scalar is not None and len(focus) == 1:
                v = scalar(focus[0])
                if v is not not_scalar:
                    row[name] = v
                    continue
            try:
                r = fn(focus, env)
            except FhirPathError as exc:
                raise ViewEvaluationError(
                    f"{_resource_key(env.resource)}: column {name!r} ({col.location}, path "
                    f"{col.fn.expression!r}) failed: {exc}",
                    resource_key=_resource_key(env.resource),
                    location=col.location,
                ) from exc
            if collection:
                row[name] = [plain_value(v) for v in r]
            elif not r:
                row[name] = None
            elif len(r) == 1:
                v = r[0]
                row[name] = str.__str__(v) if v.__class__ in temporal else v
            else:
                raise ViewEvaluationError(
                    f"{_resource_key(env.resource)}: column {name!r} ({col.location}, path "
                    f"{col.fn.expression!r}) returned {len(r)} values but is not a collection; "
                    f"fix the view: add .first() or a where() to the path, unnest with forEach, "
                    f'or set "collection": true',
                    resource_key=_resource_key(env.resource),
                    location=col.location,
                )
        return row

    return build


def _product(rows: list[Row], other: list[Row]) -> list[Row]:
    if len(other) == 1:
        extra = other[0]
        for r in rows:
            r.update(extra)
        return rows
    return [{**r, **o} for r in rows for o in other]


def _compile_runner(sel: _Select) -> Runner:
    # Plain leaf children evaluate on the same focus and yield exactly one row: fold their
    # columns into this select (only a leading run, so that row key order stays column order).
    columns = list(sel.columns)
    children = list(sel.children)
    while children and children[0].is_plain_leaf:
        columns.extend(_flatten_plain(children.pop(0)))
    build = _column_runner(columns)
    child_runners = [_compile_runner(c) for c in children]
    union_runners = [_compile_runner(u) for u in sel.union]

    if not child_runners and not union_runners:

        def rows_for(item: Any, env: Env) -> list[Row]:
            return [build([item], env)]

    else:

        def rows_for(item: Any, env: Env) -> list[Row]:
            rows = [build([item], env)]
            for run in child_runners:
                part = run(item, env)
                if not part:
                    return []
                rows = _product(rows, part)
            if union_runners:
                urows: list[Row] = []
                for run in union_runners:
                    urows.extend(run(item, env))
                if not urows:
                    return []
                rows = _product(rows, urows)
            return rows

    if sel.iterate is None:
        return rows_for

    null_row = dict.fromkeys(sel.names)
    or_null = sel.iterate == "forEachOrNull"
    if sel.iterate == "repeat":
        steps = [f.fn for f in sel.iter_fns]

        def items_of(node: Any, env: Env) -> list:
            out: list = []

            def walk(n: Any) -> None:
                for step in steps:
                    for child in step([n], env):
                        out.append(child)
                        walk(child)

            walk(node)
            return out

    else:
        iter_fn = sel.iter_fns[0].fn

        def items_of(node: Any, env: Env) -> list:
            return iter_fn([node], env)

    def iterate(node: Any, env: Env) -> list[Row]:
        try:
            items = items_of(node, env)
        except FhirPathError as exc:
            raise ViewEvaluationError(
                f"{_resource_key(env.resource)}: {sel.iterate} at {sel.location} failed: {exc}",
                resource_key=_resource_key(env.resource),
                location=sel.location,
            ) from exc
        saved = env.row_index
        if not items:
            if not or_null:
                return []
            # The null row is the 0th item of an empty collection: own columns see an empty
            # focus and %rowIndex 0; nested selects and unions stay null.
            row = dict(null_row)
            env.row_index = 0
            row.update(build([], env))
            env.row_index = saved
            return [row]
        out: list[Row] = []
        for i, item in enumerate(items):
            env.row_index = i
            out.extend(rows_for(item, env))
        env.row_index = saved
        return out

    return iterate


def _flatten_plain(sel: _Select) -> list[_Column]:
    cols = list(sel.columns)
    for child in sel.children:
        cols.extend(_flatten_plain(child))
    return cols


# --------------------------------------------------------------------------------------------
# Validation and compilation of the definition.


class _Builder:
    def __init__(self, definition: Mapping[str, Any], source: str) -> None:
        self.definition = definition
        self.source = source
        self.constants: dict[str, Any] = {}
        self.columns: list[ColumnInfo] = []

    def error(self, where: str, message: str) -> ViewDefinitionError:
        loc = f"{self.source}: " if self.source else ""
        return ViewDefinitionError(f"{loc}{where}: {message}")

    def compile_path(self, where: str, expression: Any) -> CompiledPath:
        if not isinstance(expression, str) or not expression.strip():
            raise self.error(where, f"must be a non-empty FHIRPath string, got {expression!r}")
        try:
            return compile_path(expression, self.constants)
        except FhirPathError as exc:
            raise self.error(where, str(exc)) from exc

    def check_keys(self, where: str, obj: Mapping[str, Any], allowed: frozenset[str]) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.error(where, f"unknown element(s) {unknown}; allowed: {sorted(allowed)}")

    def build_constants(self) -> None:
        raw = self.definition.get("constant", [])
        if not isinstance(raw, list):
            raise self.error("constant", "must be a list of {name, value[x]} objects")
        for i, const in enumerate(raw):
            where = f"constant[{i}]"
            if not isinstance(const, dict):
                raise self.error(where, "must be an object with 'name' and one 'value[x]'")
            name = const.get("name")
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise self.error(where, f"name {name!r} must match [A-Za-z][A-Za-z0-9_]*")
            if name in _RESERVED_CONSTANTS:
                raise self.error(where, f"name {name!r} is reserved (%{name} is built in)")
            if name in self.constants:
                raise self.error(where, f"constant {name!r} is defined twice")
            values = [k for k in const if k.startswith("value")]
            extra = set(const) - {"name", "id", "extension", *values}
            if extra:
                raise self.error(where, f"unknown element(s) {sorted(extra)}")
            if len(values) != 1:
                raise self.error(
                    where,
                    f"constant {name!r} needs exactly one value[x] (e.g. valueString), found {values or 'none'}",
                )
            key = values[0]
            if key not in _CONSTANT_TYPES:
                raise self.error(where, f"{key} is not an allowed constant type; use one of {sorted(_CONSTANT_TYPES)}")
            classes, convert = _CONSTANT_TYPES[key]
            value = const[key]
            if not isinstance(value, classes) or (value.__class__ is bool and bool not in classes):
                raise self.error(where, f"{key} has the wrong JSON type: {value!r}")
            fmt = _CONSTANT_FORMATS.get(key)
            if fmt is not None and isinstance(value, str) and not (fmt.fullmatch(value) and _calendar_ok(value)):
                raise self.error(where, f"{key} {value!r} is not a valid {key[5:]} literal")
            if key == "valuePositiveInt" and value < 1:
                raise self.error(where, f"valuePositiveInt must be >= 1, got {value}")
            if key == "valueUnsignedInt" and value < 0:
                raise self.error(where, f"valueUnsignedInt must be >= 0, got {value}")
            self.constants[name] = convert(value)

    def build_column(self, where: str, col: Any, seen: dict[str, str]) -> _Column:
        if not isinstance(col, dict):
            raise self.error(where, "must be an object with 'name' and 'path'")
        self.check_keys(where, col, _COLUMN_KEYS)
        name = col.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise self.error(where, f"column name {name!r} must match [A-Za-z][A-Za-z0-9_]* (a SQL name)")
        if name in seen:
            raise self.error(where, f"column {name!r} is already defined at {seen[name]}")
        seen[name] = where
        fn = self.compile_path(f"{where}.path", col.get("path"))
        collection = col.get("collection", False)
        if not isinstance(collection, bool):
            raise self.error(where, f"'collection' must be true or false, got {collection!r}")
        ctype = col.get("type")
        if ctype is not None:
            if not isinstance(ctype, str) or not ctype:
                raise self.error(where, f"'type' must be a FHIR type name, got {ctype!r}")
            if ":" not in ctype and "." not in ctype and ctype not in _KNOWN_TYPES:
                raise self.error(where, f"unknown FHIR type {ctype!r} for column {name!r}")
        desc = col.get("description")
        tags_raw = col.get("tag", col.get("tags", []))
        tags: list[tuple[str, str]] = []
        if not isinstance(tags_raw, list):
            raise self.error(where, "'tag' must be a list of {name, value}")
        for t in tags_raw:
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise self.error(where, f"invalid tag {t!r}: need {{name, value}}")
            tags.append((t["name"], str(t.get("value", ""))))
        self.columns.append(
            ColumnInfo(name, col["path"], ctype, collection, desc if isinstance(desc, str) else None, tuple(tags))
        )
        return _Column(name, fn, collection, where)

    def build_select(self, where: str, sel: Any, seen: dict[str, str]) -> _Select:
        if not isinstance(sel, dict):
            raise self.error(where, "must be an object (a select structure)")
        self.check_keys(where, sel, _SELECT_KEYS)
        iter_keys = [k for k in ("forEach", "forEachOrNull", "repeat") if k in sel]
        if len(iter_keys) > 1:
            raise self.error(where, f"use only one of forEach/forEachOrNull/repeat, got {iter_keys}")
        iterate = iter_keys[0] if iter_keys else None
        iter_fns: list[CompiledPath] = []
        if iterate == "repeat":
            paths = sel["repeat"]
            if not isinstance(paths, list) or not paths:
                raise self.error(where, "'repeat' must be a non-empty list of FHIRPath strings")
            iter_fns = [self.compile_path(f"{where}.repeat[{i}]", p) for i, p in enumerate(paths)]
        elif iterate is not None:
            iter_fns = [self.compile_path(f"{where}.{iterate}", sel[iterate])]
        if not any(k in sel for k in ("column", "select", "unionAll")):
            raise self.error(where, "needs at least one of 'column', 'select' or 'unionAll'")

        columns: list[_Column] = []
        names: list[str] = []
        raw_cols = sel.get("column", [])
        if not isinstance(raw_cols, list) or ("column" in sel and not raw_cols):
            raise self.error(where, "'column' must be a non-empty list")
        for i, col in enumerate(raw_cols):
            c = self.build_column(f"{where}.column[{i}]", col, seen)
            columns.append(c)
            names.append(c.name)

        children: list[_Select] = []
        raw_sel = sel.get("select", [])
        if not isinstance(raw_sel, list) or ("select" in sel and not raw_sel):
            raise self.error(where, "'select' must be a non-empty list")
        for i, child in enumerate(raw_sel):
            s = self.build_select(f"{where}.select[{i}]", child, seen)
            children.append(s)
            names.extend(s.names)

        union: list[_Select] = []
        raw_union = sel.get("unionAll", [])
        if not isinstance(raw_union, list) or ("unionAll" in sel and not raw_union):
            raise self.error(where, "'unionAll' must be a non-empty list of selects")
        if raw_union:
            first_names: list[str] | None = None
            new_seen = seen
            for i, branch in enumerate(raw_union):
                # Each branch declares the same names: check them in a scope of their own.
                branch_seen = dict(seen)
                u = self.build_select(f"{where}.unionAll[{i}]", branch, branch_seen)
                if first_names is None:
                    first_names = u.names
                    new_seen = branch_seen
                elif u.names != first_names:
                    raise self.error(
                        f"{where}.unionAll[{i}]",
                        f"union branches must produce the same columns in the same order: "
                        f"{u.names} vs {first_names} (unionAll[0])",
                    )
                union.append(u)
            seen.update(new_seen)
            # ColumnInfo for union branches after the first repeats names: keep the first.
            names.extend(first_names or [])
        return _Select(where, columns, children, union, iterate, iter_fns, names)


def _dedupe_columns(columns: list[ColumnInfo]) -> tuple[ColumnInfo, ...]:
    out: dict[str, ColumnInfo] = {}
    for c in columns:
        out.setdefault(c.name, c)
    return tuple(out.values())


class ViewDefinition:
    """A validated, compiled SQL-on-FHIR v2 ViewDefinition.

    Attributes: ``resource`` (FHIR resource type), ``name``, ``column_names`` (output order),
    ``columns`` (``ColumnInfo`` per column, same order), ``column_types`` (name -> declared FHIR
    type or None), ``constants`` (name -> value bound into the paths).
    """

    def __init__(self, definition: Mapping[str, Any], *, source: str | None = None) -> None:
        b = _Builder(definition, source or "") if isinstance(definition, Mapping) else None
        if b is None:
            where = f"{source}: " if source else ""
            raise ViewDefinitionError(f"{where}a ViewDefinition must be a JSON object")
        rtype = definition.get("resourceType", "ViewDefinition")
        if rtype != "ViewDefinition":
            raise b.error("resourceType", f"expected 'ViewDefinition', got {rtype!r}")
        resource = definition.get("resource")
        if not isinstance(resource, str) or not resource:
            raise b.error("resource", 'missing: name the FHIR resource type, e.g. "Patient"')
        if resource not in FHIR_RESOURCE_TYPES:
            raise b.error("resource", f"{resource!r} is not a FHIR R4 resource type")
        name = definition.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME_RE.fullmatch(name)):
            raise b.error("name", f"{name!r} must match [A-Za-z][A-Za-z0-9_]* (a SQL name)")
        b.build_constants()
        selects = definition.get("select")
        if not isinstance(selects, list) or not selects:
            raise b.error("select", "missing: a view needs at least one select with columns")
        seen: dict[str, str] = {}
        root_children = [b.build_select(f"select[{i}]", s, seen) for i, s in enumerate(selects)]
        where_raw = definition.get("where", [])
        if not isinstance(where_raw, list):
            raise b.error("where", "must be a list of {path} objects")
        wheres: list[tuple[str, CompiledPath]] = []
        for i, w in enumerate(where_raw):
            loc = f"where[{i}]"
            if not isinstance(w, dict):
                raise b.error(loc, "must be an object with a 'path'")
            b.check_keys(loc, w, _WHERE_KEYS)
            wheres.append((loc, b.compile_path(f"{loc}.path", w.get("path"))))

        root = _Select("view", [], root_children, [], None, [], [n for s in root_children for n in s.names])
        self.source = source
        self.definition = definition
        self.resource: str = resource
        self.name: str | None = name
        self.columns: tuple[ColumnInfo, ...] = _dedupe_columns(b.columns)
        self.column_names: tuple[str, ...] = tuple(root.names)
        by_name = {c.name: c for c in self.columns}
        self.columns = tuple(by_name[n] for n in self.column_names)
        self.column_types: dict[str, str | None] = {c.name: c.type for c in self.columns}
        self.constants: dict[str, Any] = dict(b.constants)
        self._wheres = wheres
        self._run = _compile_runner(root)

    def __repr__(self) -> str:
        return f"ViewDefinition(resource={self.resource!r}, columns={list(self.column_names)})"

    def accepts(self, resource: Mapping[str, Any]) -> bool:
        """True when ``resource`` has the view's resource type (no other check)."""
        return resource.get("resourceType") == self.resource

    def rows(self, resource: Mapping[str, Any]) -> list[Row]:
        """Flatten one resource; other resource types give ``[]`` without evaluation."""
        if resource.get("resourceType") != self.resource:
            return []
        env = Env(resource, 0)
        if self._wheres:
            focus = [resource]
            for loc, fn in self._wheres:
                if fn.scalar is not None:
                    v = fn.scalar(resource)
                    if v is None or v is False:
                        return []
                    if v is True:
                        continue
                try:
                    r = fn(focus, env)
                except FhirPathError as exc:
                    raise ViewEvaluationError(
                        f"{_resource_key(resource)}: {loc} path {fn.expression!r} failed: {exc}",
                        resource_key=_resource_key(resource),
                        location=loc,
                    ) from exc
                if not r:
                    return []
                if len(r) != 1 or r[0].__class__ is not bool:
                    shown = [plain_value(v) for v in r[:3]]
                    raise ViewEvaluationError(
                        f"{_resource_key(resource)}: {loc} path {fn.expression!r} must return a "
                        f"boolean but returned {shown}{'...' if len(r) > 3 else ''}; fix the "
                        f"view: compare the value (e.g. '= ...') or wrap it in exists()",
                        resource_key=_resource_key(resource),
                        location=loc,
                    )
                if r[0] is False:
                    return []
        return self._run(resource, env)


def load_view(path: str | Path) -> ViewDefinition:
    """Read and compile a ViewDefinition JSON file; errors name the file."""
    p = Path(path)
    try:
        data = orjson.loads(p.read_bytes())
    except OSError as exc:
        raise ViewDefinitionError(f"{p}: cannot read the view: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise ViewDefinitionError(f"{p}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    return ViewDefinition(data, source=str(p))


def run_view(view: ViewDefinition, resources: Iterable[Mapping[str, Any]]) -> Iterator[Row]:
    """Yield the rows of every resource; resources of other types are skipped unevaluated."""
    wanted = view.resource
    rows = view.rows
    for resource in resources:
        if resource.get("resourceType") == wanted:
            yield from rows(resource)


# --------------------------------------------------------------------------------------------
# Conformance suite runner and report.


@dataclass(frozen=True)
class ConformanceResult:
    """Outcome of one official test case: status is passed / failed / not_supported."""

    file: str
    title: str
    tags: tuple[str, ...]
    status: str
    detail: str = ""

    @property
    def case_id(self) -> str:
        return f"{self.file}::{self.title}"


def _norm(value: Any) -> Any:
    """Canonical, hashable form for comparing rows (bool is not a number; 5 == 5.0)."""
    if value is None:
        return ("null",)
    if value.__class__ is bool:
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    if isinstance(value, str):
        return ("str", str(value))
    if isinstance(value, list):
        return ("list", tuple(_norm(v) for v in value))
    if isinstance(value, dict):
        return ("obj", tuple(sorted((k, _norm(v)) for k, v in value.items())))
    return ("other", repr(value))


def _rows_equal(actual: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]]) -> bool:
    a = sorted(_norm(dict(r)) for r in actual)
    e = sorted(_norm(dict(r)) for r in expected)
    return a == e


def _default_suite_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "conformance" / "sql-on-fhir-v2"


def run_conformance_case(resources: list[dict], test: Mapping[str, Any], file: str) -> ConformanceResult:
    """Run one test case of the official suite (file = test file stem)."""
    title = str(test.get("title"))
    tags = tuple(test.get("tags") or ())
    case_id = f"{file}::{title}"
    if case_id in NOT_SUPPORTED:
        return ConformanceResult(file, title, tags, "not_supported", NOT_SUPPORTED[case_id])
    try:
        view = ViewDefinition(test["view"], source=case_id)
        rows = list(run_view(view, resources))
    except ViewDefinitionError as exc:
        if test.get("expectError"):
            return ConformanceResult(file, title, tags, "passed", f"rejected: {exc}")
        return ConformanceResult(file, title, tags, "failed", f"unexpected error: {exc}")
    if test.get("expectError"):
        return ConformanceResult(file, title, tags, "failed", "expected an error, got rows")
    problems = []
    if "expectColumns" in test and list(view.column_names) != list(test["expectColumns"]):
        problems.append(f"columns {list(view.column_names)} != {test['expectColumns']}")
    if "expect" in test and not _rows_equal(rows, test["expect"]):
        problems.append(f"rows {rows} != expected {test['expect']}")
    if "expectCount" in test and len(rows) != test["expectCount"]:
        problems.append(f"{len(rows)} rows != expected count {test['expectCount']}")
    if problems:
        return ConformanceResult(file, title, tags, "failed", "; ".join(problems))
    return ConformanceResult(file, title, tags, "passed")


def run_conformance(suite_dir: Path | None = None) -> list[ConformanceResult]:
    """Run every case of every ``tests/*.json`` file of the suite."""
    tests_dir = (suite_dir or _default_suite_dir()) / "tests"
    results: list[ConformanceResult] = []
    for path in sorted(tests_dir.glob("*.json")):
        data = orjson.loads(path.read_bytes())
        file_tags = tuple(data.get("tags") or ())
        for test in data["tests"]:
            if not test.get("tags") and file_tags:
                test = {**test, "tags": list(file_tags)}
            results.append(run_conformance_case(data["resources"], test, path.stem))
    return results


def _suite_origin(suite_dir: Path) -> str:
    readme = suite_dir / "README.md"
    if readme.is_file():
        m = re.search(r"commit\s+([0-9a-f]{40})", readme.read_text(encoding="utf-8"))
        if m:
            return f"FHIR/sql-on-fhir-v2 `tests/` at commit `{m.group(1)}`"
    return f"`{suite_dir}`"


_IMPLEMENTATION_NOTES = (
    "`getResourceKey()` returns `ResourceType/id`; `getReferenceKey([T])` returns the same form "
    "from relative (`Patient/1`), absolute (`.../Patient/1/_history/2`) and bundle-local "
    "(`urn:uuid:X`, typed by `Reference.type` or by `T`) references; contained (`#x`), "
    "conditional (`Patient?...`) and identifier-only references give empty.",
    "The null row of `forEachOrNull` evaluates the select's own columns on an empty focus with "
    "`%rowIndex` 0 (paths give null, as the processing model says); nested selects and unions "
    "in that row are null.",
    "`repeat` walks depth-first, pre-order, expressions in the order given; `%rowIndex` counts nodes in that order.",
    "`where` paths must yield a single boolean or empty; anything else is a "
    "`ViewEvaluationError`, as is a second value in a column without `collection: true`.",
    "Choice types: `x.ofType(T)` reads `xT`; a bare `x` on a known choice base finds the one "
    "`x<Type>` key present. Complex data types cannot be told apart in plain JSON, so "
    "`ofType(Quantity)` on a value already reached tests only that it is an object.",
    "FHIRPath outside the subset (quantity literals, `$index`, `resolve()`, `memberOf()`, "
    "`today()`...) is rejected when the view is compiled, naming the expression.",
)


def write_conformance_report(results: Sequence[ConformanceResult], out: Path, suite_dir: Path | None = None) -> str:
    """Write the markdown report (per file counts, per tag counts, not-supported list)."""
    suite_dir = suite_dir or _default_suite_dir()
    files: dict[str, list[ConformanceResult]] = {}
    for r in results:
        files.setdefault(r.file, []).append(r)

    def counts(rs: Sequence[ConformanceResult]) -> tuple[int, int, int]:
        return (
            sum(r.status == "passed" for r in rs),
            sum(r.status == "failed" for r in rs),
            sum(r.status == "not_supported" for r in rs),
        )

    lines = [
        "# SQL-on-FHIR v2 conformance report",
        "",
        "Runner: `blina_study.adapter.fhir.viewdef` (pure Python). Suite: " + _suite_origin(suite_dir) + ".",
        "Regenerate with `python -m blina_study.adapter.fhir.viewdef --conformance-report "
        "docs/sof-conformance.md`; the same cases run as `tests/test_sof_conformance.py`.",
        "Rows are compared order-insensitively, `expectColumns` in order; `expectError` cases pass",
        "only when the view is rejected with `ViewDefinitionError`.",
        "",
    ]
    p, f, n = counts(results)
    lines += [f"**Total: {len(results)} cases: {p} passed, {f} failed, {n} not supported.**", ""]
    tags = sorted({t for r in results for t in r.tags})
    lines += ["| tag | cases | passed | failed | not supported |", "|---|---|---|---|---|"]
    for tag in tags:
        rs = [r for r in results if tag in r.tags]
        lines.append(f"| {tag} | {len(rs)} | " + " | ".join(map(str, counts(rs))) + " |")
    lines += ["", "## Per file", "", "| file | cases | passed | failed | not supported |", "|---|---|---|---|---|"]
    for name, rs in files.items():
        lines.append(f"| {name}.json | {len(rs)} | " + " | ".join(map(str, counts(rs))) + " |")
    lines += ["", "## Implementation notes", ""] + [f"- {note}" for note in _IMPLEMENTATION_NOTES]
    lines += ["", "## Not supported", ""]
    ns = [r for r in results if r.status == "not_supported"]
    lines += [f"- `{r.case_id}`: {r.detail}" for r in ns] or ["None."]
    lines += ["", "## Failed", ""]
    failed = [r for r in results if r.status == "failed"]
    lines += [f"- `{r.case_id}`: {r.detail[:300]}" for r in failed] or ["None."]
    from blina_study.adapter.fhir.compile_sql import conformance_lines  # late: compile_sql builds on this module

    lines += ["", *conformance_lines(suite_dir)]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------------------------
# Command line.

def _iter_resources(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".ndjson":
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield orjson.loads(line)
        return
    data = orjson.loads(path.read_bytes())
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and item.get("resourceType") == "Bundle":
            for entry in item.get("entry", []):
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    yield entry["resource"]
        elif isinstance(item, dict):
            yield item


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: conformance report, or run a view over JSON/NDJSON files."""
    parser = argparse.ArgumentParser(
        prog="python -m blina_study.adapter.fhir.viewdef", description=__doc__ and __doc__.splitlines()[0]
    )
    parser.add_argument(
        "--conformance-report", type=Path, metavar="OUT.md", help="run the official suite and write the markdown report"
    )
    parser.add_argument(
        "--suite", type=Path, default=None, help="suite folder (default: ../shared/conformance/sql-on-fhir-v2)"
    )
    parser.add_argument("--view", type=Path, help="ViewDefinition JSON to run over FILES")
    parser.add_argument("files", nargs="*", type=Path, help="resources: .json/.ndjson/Bundle")
    args = parser.parse_args(argv)
    if args.conformance_report:
        suite = args.suite or _default_suite_dir()
        if not (suite / "tests").is_dir():
            print(f"error: conformance suite not found at {suite}/tests", file=sys.stderr)
            return 2
        results = run_conformance(suite)
        write_conformance_report(results, args.conformance_report, suite)
        failed = sum(r.status == "failed" for r in results)
        print(f"{len(results)} cases, {failed} failed -> {args.conformance_report}")
        return 1 if failed else 0
    if args.view:
        try:
            view = load_view(args.view)
            out = sys.stdout.buffer
            for f in args.files:
                for row in run_view(view, _iter_resources(f)):
                    out.write(orjson.dumps(row) + b"\n")
        except ViewDefinitionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
