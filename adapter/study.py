"""The study definition (``mappings/study.yaml``) and site overlays, validated at load.

A study definition holds every ``param:`` of the protocol (section 3) and every study variable
(section 2) as a code set. A site overlay maps a center's local codes to study variables without
code changes. Both are validated against a strict schema: an unknown key, a missing field or a wrong
type raises :class:`StudyDefinitionError` naming the file, the key path and the expected form.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.resources import mappings_dir

__all__ = [
    "Code",
    "Params",
    "SiteOverlay",
    "StudyDefinition",
    "StudyDefinitionError",
    "Variable",
    "load_overlay",
    "load_study",
]


class StudyDefinitionError(BlinaError):
    """A study definition or site overlay file does not match its schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Code(_Strict):
    """One code of a code set: resolved at run time through CONCEPT (and CONCEPT_ANCESTOR)."""

    vocabulary_id: str = Field(min_length=1, max_length=20)
    code: str = Field(min_length=1, max_length=50)
    descendants: bool = False
    grade: int | None = Field(default=None, ge=1, le=5)


Domain = Literal["drug", "condition", "measurement", "procedure", "death"]
ValueKind = Literal["period", "presence", "quantity", "detected", "grade", "date"]


class Variable(_Strict):
    """A study variable: where it lives in OMOP, what kind of value it has, and its codes."""

    domain: Domain
    value: ValueKind
    unit_family: str | None = None
    codes: list[Code]

    @model_validator(mode="after")
    def _quantity_has_unit(self) -> Variable:
        if self.value == "quantity" and not self.unit_family:
            raise ValueError("a quantity variable needs unit_family")
        return self


class Params(_Strict):
    """The derivation parameters of the protocol's section 3 (names as in the protocol)."""

    course_gap_days: int = Field(ge=0)
    status_lookback_days: int = Field(ge=0)
    blast_cr_threshold_pct: float = Field(gt=0, le=100)
    mrd_positive_threshold: float = Field(gt=0, lt=1)
    burden_window_days: int = Field(ge=0)
    delay_window_days: int = Field(ge=0)
    response_from_day: int = Field(ge=0)
    response_until_days: int = Field(ge=0)
    high_mrd_threshold: float = Field(gt=0, lt=1)
    cd19_loss_threshold: float = Field(ge=0)
    cd19_window_days: int = Field(ge=0)
    tcell_pre_window_days: int = Field(ge=0)
    tcell_post_window_days: int = Field(ge=0)
    cytokine_peak_after_days: int = Field(ge=0)
    bridge_window_days: int = Field(ge=0)
    landmark_days: int = Field(gt=0)
    age_group_cut_years: float = Field(gt=0)

    @field_validator(
        "blast_cr_threshold_pct",
        "mrd_positive_threshold",
        "high_mrd_threshold",
        "cd19_loss_threshold",
        "age_group_cut_years",
        mode="before",
    )
    @classmethod
    def _int_is_a_number(cls, v: Any) -> Any:
        # YAML writes 5 for 5.0; a whole number is a valid float parameter (but a bool is not).
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class UnitFamily(_Strict):
    canonical: str
    factors: dict[str, float]

    @field_validator("factors", mode="before")
    @classmethod
    def _ints_are_numbers(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: float(x) if isinstance(x, int) and not isinstance(x, bool) else x
                for k, x in v.items()
            }
        return v

    @model_validator(mode="after")
    def _canonical_listed(self) -> UnitFamily:
        if self.factors.get(self.canonical) != 1.0:
            raise ValueError(f"factors must map the canonical unit {self.canonical!r} to 1.0")
        return self


class ValueSets(_Strict):
    positive: list[Code]
    negative: list[Code]


class StudyDefinition(_Strict):
    """The whole study definition. ``source`` is the file it was read from."""

    study_id: str
    version: str
    params: Params
    value_sets: ValueSets
    operators: list[Literal["<", "<=", "=", ">=", ">"]]
    unit_families: dict[str, UnitFamily]
    variables: dict[str, Variable]
    source: str = ""

    @model_validator(mode="after")
    def _unit_families_exist(self) -> StudyDefinition:
        for name, var in self.variables.items():
            if var.unit_family and var.unit_family not in self.unit_families:
                raise ValueError(
                    f"variables.{name}.unit_family {var.unit_family!r} is not one of "
                    f"unit_families ({', '.join(sorted(self.unit_families))})"
                )
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the definition's content (parameters, codes), independent of YAML layout."""
        payload = self.model_dump(exclude={"source"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def with_params(self, **overrides: Any) -> StudyDefinition:
        """A copy with some parameters changed (validated like the file)."""
        params = Params.model_validate({**self.params.model_dump(), **overrides})
        return self.model_copy(update={"params": params})


class OverlayCode(_Strict):
    """One site-local code of a study variable. Exactly one kind of match:

    - ``source_value`` (optionally with ``system``): the OMOP ``*_source_value`` column; for FHIR input
      the Coding's ``code`` (and ``system`` when given). ``system`` is a FHIR Coding.system: it is
      applied by ``blina ingest``; on an OMOP CDM not written by ``blina ingest`` it is refused
      (:func:`blina_study.adapter.views.require_overlay_fits`), because OMOP rows carry no code system.
    - ``vocabulary_id`` + ``concept_code``: a local source concept, matched on the row's
      ``*_source_concept_id`` after resolving the pair through CONCEPT at run time (OMOP input only).

    ``unit`` names the unit the site reports the value in; ``unit_factor`` is the site's own factor
    from that unit to the variable's canonical unit (positive, finite), for a unit the study does not
    list.
    """

    source_value: str | None = Field(default=None, min_length=1, max_length=50)
    system: str | None = Field(default=None, min_length=1, max_length=255)
    vocabulary_id: str | None = Field(default=None, min_length=1, max_length=20)
    concept_code: str | None = Field(default=None, min_length=1, max_length=50)
    unit: str | None = Field(default=None, min_length=1, max_length=50)
    unit_factor: float | None = None
    grade: int | None = Field(default=None, ge=1, le=5)

    @field_validator("unit_factor", mode="before")
    @classmethod
    def _int_factor_is_a_number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _one_kind_of_match(self) -> OverlayCode:
        concept = (self.vocabulary_id is not None, self.concept_code is not None)
        if concept[0] != concept[1]:
            raise ValueError("vocabulary_id and concept_code go together (a local source concept)")
        if self.source_value is None and not concept[0]:
            raise ValueError("give source_value, or vocabulary_id + concept_code")
        if self.source_value is not None and concept[0]:
            raise ValueError("give either source_value or vocabulary_id + concept_code, not both")
        if self.system is not None and self.source_value is None:
            raise ValueError("system qualifies a source_value (a FHIR Coding.system); a source concept's "
                             "vocabulary is its vocabulary_id")
        if self.unit_factor is not None:
            if self.unit is None:
                raise ValueError("unit_factor needs the unit it converts")
            if not math.isfinite(self.unit_factor) or self.unit_factor <= 0:
                raise ValueError(f"unit_factor must be a positive finite number (got {self.unit_factor!r})")
        return self

    @property
    def kind(self) -> Literal["source_value", "source_concept"]:
        return "source_value" if self.source_value is not None else "source_concept"

    def label(self) -> str:
        """The entry as a site would write it (for messages)."""
        if self.source_value is not None:
            return self.source_value + (f" ({self.system})" if self.system else "")
        return f"{self.vocabulary_id} {self.concept_code}"


class SiteOverlay(_Strict):
    """A center's mapping of local codes to study variables, with their source units."""

    site_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    description: str = ""
    patient_identifier_system: str | None = None
    variables: dict[str, list[OverlayCode]] = Field(default_factory=dict)
    source: str = ""

    def site_units(self, study: StudyDefinition) -> dict[tuple[str, str], float]:
        """(unit_family, unit) -> factor of the units this site states with its own ``unit_factor``."""
        out: dict[tuple[str, str], float] = {}
        for name, codes in self.variables.items():
            family = study.variables[name].unit_family if name in study.variables else None
            for c in codes:
                if family and c.unit is not None and c.unit_factor is not None:
                    out[(family, c.unit)] = c.unit_factor
        return out

    def has_system(self) -> list[str]:
        """Key paths of the entries that carry ``system:`` (FHIR codings)."""
        return [f"variables.{n}[{i}].system" for n, codes in self.variables.items()
                for i, c in enumerate(codes) if c.system is not None]


def _format_errors(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "missing required field"
        elif e["type"] == "value_error":  # a rule of the model: its own sentence says what is wrong
            msg = str(e["msg"]).removeprefix("Value error, ")
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            msg = f"{e['msg']} (got {shown})"
        parts.append(f"{loc}: {msg}")
    return f"{path}: " + "; ".join(parts)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyDefinitionError(f"{path}: cannot read ({exc.strerror})", hint="check the path") from exc
    except UnicodeDecodeError as exc:
        raise StudyDefinitionError(f"{path}: byte {exc.start} is not UTF-8 text",
                                   hint="save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise StudyDefinitionError(
            f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})",
            hint="fix the YAML syntax",
        ) from exc


def load_study(path: str | Path | None = None) -> StudyDefinition:
    """Load and validate a study definition (default: the packaged ``mappings/study.yaml``)."""
    p = Path(path) if path else mappings_dir() / "study.yaml"
    raw = _read_yaml(p)
    if not isinstance(raw, dict):
        raise StudyDefinitionError(f"{p}: expected a mapping at the top level", hint="see mappings/README.md")
    for name, var in (raw.get("variables") or {}).items():
        if isinstance(var, dict) and var.get("codes") is None and "codes" in var:
            raise StudyDefinitionError(f"{p}: variables.{name}.codes: expected a list (use [] for none)")
    try:
        return StudyDefinition.model_validate({**raw, "source": str(p)})
    except ValidationError as exc:
        raise StudyDefinitionError(
            _format_errors(p, exc), hint="compare with mappings/study.yaml and mappings/README.md"
        ) from exc


def load_overlay(path: str | Path, study: StudyDefinition | None = None) -> SiteOverlay:
    """Load a site overlay; every variable it names must exist in the study definition."""
    p = Path(path)
    raw = _read_yaml(p)
    if not isinstance(raw, dict):
        raise StudyDefinitionError(f"{p}: expected a mapping at the top level", hint="see mappings/README.md")
    try:
        overlay = SiteOverlay.model_validate({**raw, "source": str(p)})
    except ValidationError as exc:
        raise StudyDefinitionError(
            _format_errors(p, exc), hint="see the overlay example in mappings/README.md"
        ) from exc
    study = study or load_study()
    for name in overlay.variables:
        if name not in study.variables:
            raise StudyDefinitionError(
                f"{p}: variables.{name}: unknown study variable",
                hint=f"use one of: {', '.join(sorted(study.variables))}",
            )
    # A site unit is stated per unit family: two variables of one family must agree on its factor.
    by_family: dict[tuple[str, str], tuple[float, str]] = {}
    for name, codes in overlay.variables.items():
        fam = study.variables[name].unit_family
        for i, code in enumerate(codes):
            if fam and code.unit is not None and code.unit_factor is not None:
                seen = by_family.setdefault((fam, code.unit), (code.unit_factor, f"variables.{name}[{i}]"))
                if seen[0] != code.unit_factor:
                    raise StudyDefinitionError(
                        f"{p}: variables.{name}[{i}].unit_factor: {code.unit!r} has factor {code.unit_factor!r} "
                        f"here and {seen[0]!r} at {seen[1]} (same unit family {fam})",
                        hint="one unit has one factor to the canonical unit",
                    )
    for name, codes in overlay.variables.items():
        var = study.variables[name]
        for i, code in enumerate(codes):
            where = f"{p}: variables.{name}[{i}]"
            if var.unit_family:
                family = study.unit_families[var.unit_family]
                factors = family.factors
                if code.unit is None:
                    raise StudyDefinitionError(
                        f"{where}.unit: missing; {name} is a quantity",
                        hint=f"give the source unit, one of: {', '.join(factors)} "
                        f"(or your own unit with unit_factor: its factor to {family.canonical!r})",
                    )
                if code.unit not in factors and (var.unit_family, code.unit) not in by_family:
                    raise StudyDefinitionError(
                        f"{where}.unit: {code.unit!r} cannot be converted to {family.canonical!r}",
                        hint=f"use one of: {', '.join(factors)}, or state the site's factor: "
                        f"{{unit: {code.unit!r}, unit_factor: <{family.canonical} per {code.unit}>}}",
                    )
                if code.unit_factor is not None and code.unit in factors \
                        and code.unit_factor != factors[code.unit]:
                    raise StudyDefinitionError(
                        f"{where}.unit_factor: {code.unit_factor!r} contradicts the study's factor "
                        f"{factors[code.unit]!r} for {code.unit!r} ({var.unit_family})",
                        hint="drop unit_factor (the study's factor applies) or name the unit differently",
                    )
            elif code.unit_factor is not None:
                raise StudyDefinitionError(
                    f"{where}.unit_factor: {name} is not a quantity (it has no unit family)",
                    hint="drop unit and unit_factor",
                )
    return overlay
