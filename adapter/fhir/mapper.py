"""Per-resource work of the FHIR ingest: status filter, validation, ViewDefinition rows, reference and date checks.

Grain: :meth:`ResourceMapper.map` takes one parsed resource of a study-relevant type and returns either
the flat rows of its ViewDefinition (ready to stage, one tuple per view row) or the reason it is skipped
or rejected. Nothing here touches the database: resolution of codes, persons and cross-resource
references happens later in SQL over the staged rows (``blina_study.adapter.fhir.ingest_sql``).

What is declarative lives in ``mappings/fhir/``: the ViewDefinitions (which elements; one per resource
type; the set of their ``resource`` types *is* the set of study-relevant types) and ``systems.yaml``
(code systems, status rules, OMOP names). The conventions this module relies on are:

* column ``id`` is the resource id; ``subject_ref`` is the Patient reference (required when present);
  every ``*_ref`` column is a reference, normalised to ``Type/id``;
* columns of type ``date``/``dateTime``/``instant`` must carry a full calendar date (see
  :data:`PARTIAL_DATE_RULE`) unless tagged ``partial_date: allowed``;
* a MedicationAdministration ``medication_ref`` of ``#id`` names a contained Medication, flattened by
  the Medication view under the key ``<MedicationAdministration key>#id``;
* a column tagged ``study_filter: code`` marks the coding (its select's ``forEachOrNull`` path) that
  decides study relevance: a resource none of whose codings is a study code is not mapped.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.fhir.fhirpath import _CHOICE_BASES, CompiledPath, Env, compile_path
from blina_study.adapter.fhir.plausibility import RULES_FILE, Rules
from blina_study.adapter.fhir.reader import normalize_reference
from blina_study.adapter.fhir.validate import load_validator
from blina_study.adapter.fhir.viewdef import ViewDefinition, ViewDefinitionError, load_view
from blina_study.adapter.resources import mappings_dir

__all__ = [
    "NOT_CHECKED",
    "VALIDATION_MODES",
    "PARTIAL_DATE_RULE",
    "FhirConfig",
    "MapResult",
    "ResourceMapper",
    "load_config",
    "load_views",
    "valid_day",
]

PARTIAL_DATE_RULE = (
    "a date element the mapping uses must be a full calendar date (YYYY-MM-DD or a dateTime); "
    "a partial date (YYYY or YYYY-MM) rejects the resource, except Patient.birthDate (year/month only)"
)
_DATE_TYPES = frozenset({"date", "dateTime", "instant"})
_NUMBER_TYPES = frozenset({"decimal", "integer", "positiveInt", "unsignedInt", "integer64"})
_FILTER_ENV = Env(None, 0)  # coding paths never read %resource
NOT_CHECKED = object()  # ResourceMapper.map: validation not done yet
VALIDATION_MODES = ("fast", "full")  # see ResourceMapper.validation_problem


@dataclass(frozen=True)
class FhirConfig:
    """``mappings/fhir/systems.yaml``, validated."""

    systems: dict[str, str]
    gender: dict[str, str]
    not_done_status: frozenset[str]
    status_elements: dict[str, str]
    gender_vocabulary: str
    operator_domain: str
    type_concept_vocabulary: str
    type_concepts: dict[str, str]
    observation_categories: tuple[str, ...]
    followup: dict[str, tuple[str, tuple[str, ...]]]  # resource type -> (subject element, date elements)
    source: str
    # Encounter.class code systems, the OMOP vocabulary of visit concepts, and class code -> concept_code
    encounter_class_systems: tuple[str, ...] = ()
    visit_vocabulary: str = "Visit"
    encounter_class: dict[str, str] = field(default_factory=dict)

    def status_element(self, resource_type: str) -> str:
        return self.status_elements.get(resource_type, self.status_elements.get("default", "status"))

    def type_concept_name(self, resource_type: str) -> str:
        return self.type_concepts.get(resource_type, self.type_concepts["default"])


def load_config(path: str | Path | None = None) -> FhirConfig:
    """Read ``systems.yaml`` (default: the packaged one); a wrong shape raises BlinaError naming the key."""
    p = Path(path) if path else mappings_dir() / "fhir" / "systems.yaml"
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BlinaError(f"{p}: cannot read ({exc})", hint="fix or restore mappings/fhir/systems.yaml") from exc

    def need(obj: Any, key: str, kind: type, where: str) -> Any:
        val = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(val, kind):
            raise BlinaError(f"{p}: {where}{key}: expected a {kind.__name__}", hint="see the comments in systems.yaml")
        return val

    omop = need(raw, "omop", dict, "")
    types = need(omop, "type_concepts", dict, "omop.")
    if "default" not in types:
        raise BlinaError(f"{p}: omop.type_concepts.default: missing", hint="name the default Type Concept, e.g. EHR")
    enc = raw.get("encounter_class") or {}
    if not isinstance(enc, dict):
        raise BlinaError(f"{p}: encounter_class: expected a mapping", hint="see the comments in systems.yaml")
    enc_systems = need(enc, "systems", list, "encounter_class.") if enc else []
    enc_codes = need(enc, "codes", dict, "encounter_class.") if enc else {}
    return FhirConfig(
        encounter_class_systems=tuple(str(x) for x in enc_systems),
        visit_vocabulary=str(need(enc, "vocabulary_id", str, "encounter_class.")) if enc else "Visit",
        encounter_class={str(k): str(v) for k, v in enc_codes.items()},
        systems={str(k): str(v) for k, v in need(raw, "systems", dict, "").items()},
        gender={str(k): str(v) for k, v in need(raw, "gender", dict, "").items()},
        not_done_status=frozenset(str(s) for s in need(raw, "not_done_status", list, "")),
        status_elements={str(k): str(v) for k, v in (raw.get("status_elements") or {}).items()},
        gender_vocabulary=str(need(omop, "gender_vocabulary", str, "omop.")),
        operator_domain=str(need(omop, "operator_domain", str, "omop.")),
        type_concept_vocabulary=str(need(omop, "type_concept_vocabulary", str, "omop.")),
        type_concepts={str(k): str(v) for k, v in types.items()},
        observation_categories=tuple(str(c) for c in omop.get("observation_categories") or ()),
        followup={
            str(t): (str(need(spec, "subject", str, f"followup.{t}.")),
                     tuple(str(d) for d in need(spec, "dates", list, f"followup.{t}.")))
            for t, spec in (raw.get("followup") or {}).items()
        },
        source=str(p),
    )


# The staged views the SQL step reads, by name (file mappings/fhir/<name>.json).
VIEW_NAMES: tuple[str, ...] = (
    "patient",
    "encounter",
    "condition",
    "medication",
    "medication_administration",
    "observation",
    "procedure",
)


def load_views(folder: str | Path | None = None) -> dict[str, ViewDefinition]:
    """Compile the ingest's ViewDefinitions, keyed by view name (= file stem)."""
    d = Path(folder) if folder else mappings_dir() / "fhir"
    views = {}
    for name in VIEW_NAMES:
        path = d / f"{name}.json"
        try:
            view = load_view(path)
        except ViewDefinitionError as exc:
            raise BlinaError(str(exc), hint="fix the ViewDefinition in mappings/fhir/") from exc
        if "id" not in view.column_names:
            raise BlinaError(f"{path}: the view needs a column named 'id' (path: id)", hint="add it")
        views[name] = view
    by_type = {}
    for name, view in views.items():
        if view.resource in by_type:
            raise BlinaError(f"{d}: views {by_type[view.resource]} and {name} both map {view.resource}",
                             hint="keep one view per resource type")
        by_type[view.resource] = name
    return views


@cache
def _model(resource_type: str) -> Any:
    # R4B models explicitly (fhir.resources' default package is R5).
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def _validation_message(exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__") or "(resource)"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"invalid FHIR R4: {loc}: {first.get('msg', 'invalid')}{more}"


@dataclass(slots=True)
class MapResult:
    """Outcome of one resource: ``status`` is ``staged``, ``skipped`` or ``rejected``.

    ``rows``: for ``staged``, view name -> list of row tuples (in the view's column order);
    ``reason``: why skipped/rejected; ``subject``: the ``Patient/id`` the resource belongs to.
    """

    status: str
    reason: str | None = None
    rows: dict[str, list[tuple]] | None = None
    subject: str | None = None
    kind: str | None = None  # for ``skipped``: the report's skip kind (None: ``filtered``)
    # a numeric element holds a float 0.0: the caller checks the record's text for a literal that
    # underflowed (blina_study.adapter.fhir.plausibility.underflowing_numbers)
    zero_float: bool = False


def _filter_path(view: ViewDefinition) -> CompiledPath | None:
    """The coding path of the select whose column is tagged ``study_filter: code`` (None: no filter)."""
    tagged = {c.name for c in view.columns if ("study_filter", "code") in c.tags}

    def walk(selects: list[Any]) -> str | None:
        for sel in selects:
            names = {c.get("name") for c in sel.get("column", [])}
            path = sel.get("forEachOrNull") or sel.get("forEach")
            if names & tagged and path:
                return path
            found = walk(sel.get("select", []))
            if found:
                return found
        return None

    path = walk(view.definition.get("select", [])) if tagged else None
    return compile_path(path) if path else None


_OF_TYPE = re.compile(r"ofType\(([A-Z][A-Za-z]*)\)")


def _member_keys(expression: str) -> tuple[str, ...] | None:
    """The JSON keys of a plain member path (``code.coding``, ``medication.ofType(CodeableConcept).coding``),
    or None when the expression is anything else (the FHIRPath evaluator then decides)."""
    keys: list[str] = []
    for part in expression.split("."):
        of_type = _OF_TYPE.fullmatch(part)
        if of_type:
            if not keys or keys[-1] not in _CHOICE_BASES:
                return None
            keys[-1] += of_type.group(1)
        elif re.fullmatch(r"[a-z][A-Za-z0-9]*", part):
            keys.append(part)
        else:
            return None  # a function, a type name
    return tuple(keys) or None


def _walk_keys(resource: dict[str, Any], keys: tuple[str, ...]) -> list[Any] | None:
    """FHIRPath member navigation over plain JSON keys (lists flattened one level, nulls dropped), or None
    when a missing key is the base of a choice element (``code`` -> ``codeCodeableConcept``), which only the
    evaluator resolves."""
    nodes: list[Any] = [resource]
    for key in keys:
        found: list[Any] = []
        for node in nodes:
            if node.__class__ is dict:
                value = node.get(key)
                if value.__class__ is list:
                    found.extend(v for v in value if v is not None)
                elif value is not None:
                    found.append(value)
                elif key in _CHOICE_BASES:
                    return None
        nodes = found
    return nodes


class ResourceMapper:
    """Maps one resource at a time (see module doc). Build once per run; ``map`` is the hot path.

    ``study_codes``: the (system URI, code) pairs of the study's code sets (with descendants and the
    source codes that map to them), ``any_system_codes``: overlay codes that match whatever the system.
    With ``study_codes`` None every resource of a mapped type is study-relevant.
    """

    def __init__(self, views: dict[str, ViewDefinition], config: FhirConfig, *, validate: bool = True,
                 study_codes: frozenset[tuple[str | None, str]] | None = None,
                 any_system_codes: frozenset[str] = frozenset(), rules: Rules | None = None,
                 validation: str = "fast") -> None:
        if validation not in VALIDATION_MODES:
            raise BlinaError(f"unknown validation {validation!r}", hint=f"use one of {', '.join(VALIDATION_MODES)}")
        self.views = views
        self.config = config
        self.rules = rules or Rules.for_today()
        self.validate = validate
        self.validation = validation
        # fast: the compiled checks of the elements the views read (blina_study.adapter.fhir.validate); full: the whole
        # resource through fhir.resources R4B (16-24x slower per resource, bench/RESULTS.md)
        self._fast = load_validator(views, config) if validation == "fast" else None
        self.view_of_type: dict[str, str] = {v.resource: n for n, v in views.items()}
        self.relevant: frozenset[str] = frozenset(self.view_of_type)
        # types the reader must hand over: mapped ones, and others whose dates count for follow-up
        self.wanted: frozenset[str] = self.relevant | frozenset(config.followup)
        self._plans = {name: self._plan(view, self.rules) for name, view in views.items()}
        self._window = (self.rules.earliest[:10], self.rules.latest[:10])  # see followup_dates
        self._status_elements: dict[str, str] = {}  # resource type -> its status element (cache)
        self.study_codes = study_codes
        self.any_system_codes = any_system_codes
        self._value_sets: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for key, codes in self.rules.file.value_sets.items():
            view_name, col = key.split(".", 1)
            self._value_sets.setdefault(view_name, []).append((col, tuple(codes)))
        self._filters: dict[str, Any] = {}
        self._filter_keys: dict[str, tuple[str, ...]] = {}
        # Types mapped for context only (Encounter -> visits for follow-up): no study filter, not the person
        # and not what study drugs reference. Lacking a date such a resource is skipped ("incomplete"), not
        # rejected: nothing of the study depends on it (study resources keep the strict checks).
        self.context_types: frozenset[str] = frozenset(
            v.resource for v in views.values() if _filter_path(v) is None) - {"Patient", "Medication"}
        if study_codes is not None:
            for view in views.values():
                path = _filter_path(view)
                if path is not None:
                    self._filters[view.resource] = path.fn
                    keys = _member_keys(path.expression)
                    if keys is not None:  # the hot path of noise: a plain key walk, same result
                        self._filter_keys[view.resource] = keys

    def is_study(self, resource: dict[str, Any]) -> bool:
        """True unless the resource's type is code-filtered and none of its codings is a study code
        (a resource with no coding at all is kept: it cannot be judged, e.g. a medicationReference)."""
        rtype = resource["resourceType"]
        keys = self._filter_keys.get(rtype)
        if keys is not None and len(keys) == 2:  # the common shape (code.coding), written out
            parent = resource.get(keys[0])
            codings = parent.get(keys[1]) if parent.__class__ is dict else None
            if codings.__class__ is list and codings and codings[0].__class__ is dict:
                return self._has_study_coding(codings)
        codings = _walk_keys(resource, keys) if keys is not None else None
        if codings is None:
            fn = self._filters.get(rtype)
            if fn is None:
                return True
            codings = fn([resource], _FILTER_ENV)
        return not codings or self._has_study_coding(codings)

    def _has_study_coding(self, codings: list[Any]) -> bool:
        codes, anys = self.study_codes, self.any_system_codes
        for c in codings:
            if c.__class__ is dict:
                code = c.get("code")
                if (c.get("system"), code) in codes or code in anys:
                    return True
        return False

    def followup_dates(self, resource: dict[str, Any]) -> tuple[str, str, str] | None:
        """(patient id, first date, last date) of a record that is not loaded, for follow-up (3b.10).

        The dates are ``YYYY-MM-DD`` prefixes, not yet checked: see :func:`valid_day`. Whether the record
        was done (3b.3, :meth:`status_skip`) is the caller's check: the ingest makes it for every dated
        record."""
        spec = self.config.followup.get(resource["resourceType"])
        if spec is None:
            return None
        ref = resource.get(spec[0])
        ref = ref.get("reference") if ref.__class__ is dict else None
        if ref.__class__ is not str or not ref.startswith("Patient/") or "\x00" in ref:
            return None  # Bundle-internal urn references are resolved only for loaded records
        first = last = None
        earliest, latest = self._window  # Rules.outside_window of a YYYY-MM-DD prefix, inlined (once per record)
        for el in spec[1]:
            v = resource.get(el)
            if v is None:
                continue
            for d in (v,) if v.__class__ is str else (v.get("start"), v.get("end")) if v.__class__ is dict else ():
                if d.__class__ is str and len(d) >= 10:  # a partial date says too little: ignored
                    d = d[:10]
                    if d < earliest or d > latest:  # implausible (year 1, 9999): ignored
                        continue
                    if first is None:
                        first = last = d
                    elif d < first:
                        first = d
                    elif d > last:
                        last = d
        if first is None:
            return None
        return ref[8:].split("/")[0], first, last

    @staticmethod
    def _plan(view: ViewDefinition, rules: Rules) -> dict[str, Any]:
        cols = view.column_names
        dates = [
            c.name
            for c in view.columns
            if c.type in _DATE_TYPES and ("partial_date", "allowed") not in c.tags
        ]
        return {
            "cols": cols,
            "refs": [c for c in cols if c.endswith("_ref")],
            "dates": dates,
            "birth": [c.name for c in view.columns if ("partial_date", "allowed") in c.tags],
            "subject": "subject_ref" in cols,
            "numbers": [(c.name, c.path) for c in view.columns if c.type in _NUMBER_TYPES],
            "booleans": [(c.name, c.path) for c in view.columns if c.type == "boolean"],
            "times": [c.name for c in view.columns if c.type in ("dateTime", "instant")],
        }

    def _implausible(self, name: str, plan: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
        """Why the flattened ``rows`` of view ``name`` break a plausibility rule (see
        ``mappings/fhir/plausibility.yaml``), or None. Leap seconds are rewritten in place (hh:mm:59)."""
        rules = self.rules
        for row in rows:
            for col, value in row.items():
                if value.__class__ is str and "\x00" in value:
                    return f"NUL character in {col}: strings must not contain U+0000 (it cannot be stored)"
            for col, path in plan["numbers"]:
                v = row[col]
                if v is None:
                    continue
                if v.__class__ is bool or not isinstance(v, int | float):
                    return (f"{path} ({col}) is {_json_kind(v)} {v!r}, not a JSON number: never converted "
                            "(send the number without quotes)")
                if v != v or v in (float("inf"), float("-inf")):
                    return f"{path} ({col}) is not a finite number ({v!r})"
            for col, path in plan["booleans"]:
                v = row[col]
                if v is not None and v.__class__ is not bool:
                    return f"{path} ({col}) is {_json_kind(v)} {v!r}, not a JSON true/false: never converted"
            for col in plan["times"]:
                v = row[col]
                if v.__class__ is str and len(v) >= 19 and v[16:19] == ":60":
                    row[col] = v[:17] + "59" + v[19:]  # a leap second stays in its day (read as hh:mm:59)
            for col in plan["dates"] + plan["birth"]:
                v = row[col]
                if v.__class__ is str and len(v) >= 4 and rules.outside_window(v[:10]):
                    return f"implausible date {v!r} in {col}: {rules.window_text()}"
        first = rows[0]
        for col, allowed in self._value_sets.get(name, ()):
            v = first[col]
            if v is not None and v not in allowed:
                return (f"{col} {v!r} is not in its value set ({', '.join(allowed)}; "
                        f"{RULES_FILE} value_sets.{name}.{col})")
        if name == "patient":
            birth, death = first.get("birth_date"), first.get("deceased_datetime")
            if birth.__class__ is str and birth[:10] > rules.today.isoformat()[: len(birth[:10])]:
                return f"birth date {birth!r} is after today: a birth date cannot lie in the future"
            if birth.__class__ is str and death.__class__ is str and death[: len(birth[:10])] < birth[:10]:
                return f"deceasedDateTime {death!r} is before birthDate {birth!r}"
        period = rules.file.periods.get(name)
        if period is not None:
            for row in rows:
                start = next((row[c] for c in period.start if row.get(c) is not None), None)
                end = next((row[c] for c in period.end if row.get(c) is not None), None)
                if start.__class__ is str and end.__class__ is str and _later(start, end):
                    return (f"period start {start!r} is after its end {end!r} (start <= end; "
                            f"{RULES_FILE} periods.{name})")
        return None

    def status_skip(self, resource: dict[str, Any]) -> str | None:
        """The not-done status of a resource (protocol 3b.3), or None."""
        rtype = resource["resourceType"]
        element = self._status_elements.get(rtype)
        if element is None:
            element = self._status_elements[rtype] = self.config.status_element(rtype)
        value = resource.get(element)
        if isinstance(value, str):
            return value if value in self.config.not_done_status else None
        if isinstance(value, dict):
            for coding in value.get("coding") or ():
                code = coding.get("code") if isinstance(coding, dict) else None
                if code in self.config.not_done_status:
                    return code
        return None

    def validation_problem(self, resource: dict[str, Any]) -> str | None:
        """Why ``resource`` is not valid FHIR R4, or None when it is (or when this mapper does not validate):
        ``fast``, the generated checks of the elements the study reads (:mod:`blina_study.adapter.fhir.validate`), for a
        type they cover; ``full`` (or a type they do not cover), the ``fhir.resources`` R4B model."""
        if not self.validate:
            return None
        if self._fast is not None and resource["resourceType"] in self._fast.types:
            return self._fast.problem(resource)
        try:
            _model(resource["resourceType"]).model_validate(resource)
        except ValidationError as exc:
            return _validation_message(exc)
        except (TypeError, ValueError) as exc:  # fhir_core raises plain ValueErrors for some checks
            return f"invalid FHIR R4: {exc}"
        return None

    def map(self, resource: dict[str, Any], key: str, refs: dict[str, str] | None,
            problem: str | None | object = NOT_CHECKED) -> MapResult:
        """Validate and flatten one resource of a relevant type (``key`` = ``Type/id``). ``problem``: the
        result of :meth:`validation_problem` for this very resource when it was already computed (by a
        worker process of the ingest)."""
        rtype = resource["resourceType"]
        if problem is NOT_CHECKED:
            problem = self.validation_problem(resource)
        if problem is not None:
            return MapResult("rejected", problem)
        name = self.view_of_type[rtype]
        view = self.views[name]
        plan = self._plans[name]
        try:
            rows = view.rows(resource)
        except ViewDefinitionError as exc:
            return MapResult("rejected", f"cannot flatten with mappings/fhir/{name}.json: {exc}")
        if not rows:
            return MapResult("skipped", f"filtered out by the where clause of mappings/fhir/{name}.json")
        first = rows[0]
        for col in plan["dates"]:
            for row in rows:
                why = _date_problem(row[col])
                if why and rtype in self.context_types:
                    return MapResult("skipped", f"{why} {row[col]!r} in {col} (not needed by the study)",
                                     kind="incomplete")
                if why:
                    return MapResult("rejected", f"{why} {row[col]!r} in {col}: {PARTIAL_DATE_RULE}")
        for col in plan["birth"]:
            why = _date_problem(first[col], partial_ok=True)
            if why:
                return MapResult("rejected", f"{why} {first[col]!r} in {col}")
        why = self._implausible(name, plan, rows)
        if why:
            return MapResult("rejected", why)
        subject = None
        if plan["subject"]:
            raw = first["subject_ref"]
            if raw is None:
                return MapResult("rejected", "missing subject: no subject.reference to a Patient")
            subject = normalize_reference(raw, refs)
            if subject is None:
                return MapResult("rejected", f"subject reference {raw!r} cannot be resolved"
                                             + (" in its Bundle" if raw.startswith("urn:") else ""))
            if not subject.startswith("Patient/"):
                return MapResult("rejected", f"subject {subject} is not a Patient")
        staged: dict[str, list[tuple]] = {}
        for col in plan["refs"]:
            raw = first[col]
            if raw is None or col == "subject_ref":
                continue
            norm = normalize_reference(raw, refs)
            if norm is None:
                return MapResult("rejected", f"{col} {raw!r} cannot be resolved")
            if norm.startswith("#"):
                if col != "medication_ref":
                    norm = None  # contained targets other than Medication are not used
                else:
                    norm = self._contained_medication(resource, key, norm[1:], staged)
                    if norm is None:
                        return MapResult(
                            "rejected", f"medicationReference {raw!r}: no contained Medication with that id"
                        )
            for row in rows:
                row[col] = norm
        if plan["subject"]:
            for row in rows:
                row["subject_ref"] = subject
        cols = plan["cols"]
        staged[name] = [tuple(row[c] for c in cols) for row in rows]
        zero = any(row[c].__class__ is float and row[c] == 0.0 for row in rows for c, _ in plan["numbers"])
        return MapResult("staged", rows=staged, subject=subject, zero_float=zero)

    def _contained_medication(
        self, resource: dict[str, Any], key: str, cid: str, staged: dict[str, list[tuple]]
    ) -> str | None:
        for c in resource.get("contained") or ():
            if isinstance(c, dict) and c.get("resourceType") == "Medication" and c.get("id") == cid:
                name = self.view_of_type.get("Medication")
                if name is None:
                    return None
                ckey = f"{key}#{cid}"
                rows = self.views[name].rows({**c, "id": ckey})
                cols = self._plans[name]["cols"]
                staged.setdefault(name, []).extend(tuple(r[k] for k in cols) for r in rows)
                return f"Medication/{ckey}"
        return None


def valid_day(text: str) -> bool:
    """True when ``text`` (``YYYY-MM-DD``) is a real calendar date."""
    return _date_problem(text) is None


def _date_problem(value: Any, *, partial_ok: bool = False) -> str | None:
    """Why a FHIR date/dateTime string cannot give a calendar date (None when it can, or is absent)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return "not a date"
    if len(value) < 10:
        if partial_ok and len(value) in (4, 7):
            try:
                dt.date(int(value[:4]), int(value[5:7]) if len(value) == 7 else 1, 1)
                return None
            except ValueError:
                return "not a valid date"
        return "partial date"
    try:
        dt.date.fromisoformat(value[:10])
    except ValueError:
        return "not a valid calendar date"
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, int | float):
        return "a JSON number"
    return "a JSON " + ("array" if isinstance(value, list) else "object" if isinstance(value, dict) else "value")


def _instant(value: str) -> dt.datetime | None:
    """``value`` as an aware datetime when it is a dateTime with a time zone (FHIR requires one with a
    time), else None."""
    if len(value) < 20 or value[10] != "T":
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    head, sep, frac = text[:19], text[19:20], text[19:]
    if sep == ".":  # fromisoformat of Python 3.10 reads 3 or 6 fraction digits only: drop them
        frac = frac.lstrip(".0123456789")
    try:
        moment = dt.datetime.fromisoformat(head + frac)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _later(start: str, end: str) -> bool:
    """``start`` lies after ``end``. Two dateTimes with time zones are compared as instants: a period
    across a daylight-saving change (01:52-04:00 to 01:07-05:00, Synthea) is 15 minutes long, not
    negative. Otherwise by calendar day, and by local time when both carry one (protocol 3b.1)."""
    a, b = _instant(start), _instant(end)
    if a is not None and b is not None:
        return a > b
    if start[:10] != end[:10]:
        return start[:10] > end[:10]
    return len(start) >= 19 and len(end) >= 19 and start[11:19] > end[11:19]
