"""Every code the generator writes, read from ``mappings/`` at run time (never written in code).

Study codes come from the study definition (``mappings/study.yaml``); concept ids, names and
standard flags from ``mappings/vocabulary/study_concepts.csv`` (+ ``concept_relationship.csv`` for
"Maps to", ``concept_ancestor.csv`` for the blinatumomab products); FHIR system URIs from
``mappings/fhir/systems.yaml``; the site-local codes of center4 from ``mappings/sites/center4.yaml``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.resources import mappings_dir
from blina_study.adapter.study import SiteOverlay, StudyDefinition, load_overlay

__all__ = ["Catalog", "Concept", "OVERLAY_FILE"]

OVERLAY_FILE = Path("sites") / "center4.yaml"


@dataclass(frozen=True)
class Concept:
    concept_id: int
    name: str
    domain_id: str
    vocabulary_id: str
    concept_class_id: str
    standard: bool
    code: str


class Catalog:
    """Codes and concepts for rendering, resolved by (vocabulary_id, code) from the mapping files."""

    def __init__(self, study: StudyDefinition, overlay: SiteOverlay | None = None) -> None:
        self.study = study
        vdir = mappings_dir() / "vocabulary"
        self._by_code: dict[tuple[str, str], Concept] = {}
        self._by_id: dict[int, Concept] = {}
        with open(vdir / "study_concepts.csv", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                c = Concept(int(r["concept_id"]), r["concept_name"], r["domain_id"], r["vocabulary_id"],
                            r["concept_class_id"], r["standard_concept"] == "S", r["concept_code"])
                self._by_code[(c.vocabulary_id, c.code)] = c
                self._by_id[c.concept_id] = c
        self._maps_to: dict[int, int] = {}
        with open(vdir / "concept_relationship.csv", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                if r["relationship_id"] == "Maps to":
                    self._maps_to[int(r["concept_id_1"])] = int(r["concept_id_2"])
        self._descendants: dict[int, list[int]] = {}
        with open(vdir / "concept_ancestor.csv", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                a, d = int(r["ancestor_concept_id"]), int(r["descendant_concept_id"])
                if a != d:
                    self._descendants.setdefault(a, []).append(d)
        systems = yaml.safe_load((mappings_dir() / "fhir" / "systems.yaml").read_text(encoding="utf-8"))
        self.system_uri: dict[str, str] = {v: k for k, v in systems["systems"].items()}
        self.overlay = overlay or load_overlay(mappings_dir() / OVERLAY_FILE, study)

    # -- concepts -------------------------------------------------------------------------------
    def concept(self, vocabulary_id: str, code: str) -> Concept | None:
        return self._by_code.get((vocabulary_id, code))

    def concept_id(self, vocabulary_id: str, code: str) -> int:
        """The concept id of a code, 0 when the vocabulary subset does not have it."""
        c = self.concept(vocabulary_id, code)
        return c.concept_id if c else 0

    def standard_id(self, vocabulary_id: str, code: str) -> int:
        """The standard concept of a code: itself when standard, else its "Maps to" target, else 0."""
        c = self.concept(vocabulary_id, code)
        if c is None:
            return 0
        if c.standard:
            return c.concept_id
        return self._maps_to.get(c.concept_id, 0)

    def by_name(self, domain_id: str, name: str) -> int:
        for c in self._by_id.values():
            if c.domain_id == domain_id and c.name == name:
                return c.concept_id
        raise BlinaError(f"no concept named {name!r} in domain {domain_id!r} in study_concepts.csv",
                         hint="the vocabulary subset under mappings/vocabulary/ is incomplete")

    def name(self, vocabulary_id: str, code: str) -> str:
        c = self.concept(vocabulary_id, code)
        return c.name if c else code

    def uri(self, vocabulary_id: str) -> str:
        return self.system_uri[vocabulary_id]

    # -- study codes ----------------------------------------------------------------------------
    def codes(self, variable: str) -> list[tuple[str, str]]:
        return [(c.vocabulary_id, c.code) for c in self.study.variables[variable].codes]

    def code(self, variable: str, vocabulary_id: str | None = None, index: int = 0) -> tuple[str, str]:
        cs = [c for c in self.codes(variable) if vocabulary_id is None or c[0] == vocabulary_id]
        if not cs:
            raise BlinaError(f"study variable {variable} has no {vocabulary_id} code",
                             hint="check mappings/study.yaml")
        return cs[index % len(cs)]

    def graded(self, variable: str) -> dict[int | None, tuple[str, str]]:
        """grade -> code for crs / icans (None = an ungraded code)."""
        return {c.grade: (c.vocabulary_id, c.code) for c in self.study.variables[variable].codes}

    def answer(self, positive: bool) -> tuple[str, str]:
        """The LOINC answer code for detected / not detected (first LOINC entry of the value set)."""
        vs = self.study.value_sets.positive if positive else self.study.value_sets.negative
        c = next(c for c in vs if c.vocabulary_id == "LOINC")
        return c.vocabulary_id, c.code

    @cached_property
    def blinatumomab(self) -> dict[str, tuple[str, str]]:
        """``ingredient`` and ``product`` (an RxNorm Clinical Drug descendant) codes."""
        vocab, code = self.code("blinatumomab")
        ing = self.concept(vocab, code)
        if ing is None:
            raise BlinaError(f"blinatumomab {vocab} {code} is not in study_concepts.csv")
        products = sorted((self._by_id[d] for d in self._descendants.get(ing.concept_id, [])
                           if self._by_id[d].concept_class_id == "Clinical Drug"), key=lambda c: c.code)
        if not products:
            raise BlinaError("no blinatumomab Clinical Drug descendant in concept_ancestor.csv")
        return {"ingredient": (vocab, code), "product": (products[0].vocabulary_id, products[0].code)}

    @cached_property
    def chemotherapy(self) -> list[tuple[str, str]]:
        return self.codes("chemotherapy")

    def chemo(self, name: str) -> tuple[str, str]:
        """A chemotherapy ingredient by its concept name (e.g. ``cytarabine``)."""
        for vc in self.chemotherapy:
            if self.name(*vc) == name:
                return vc
        raise BlinaError(f"{name} is not in the study's chemotherapy set", hint="check mappings/study.yaml")

    def drug(self, name: str) -> tuple[str, str]:
        """Any RxNorm ingredient of the vocabulary subset by name (decoys: imatinib, tocilizumab)."""
        for c in self._by_id.values():
            if c.vocabulary_id == "RxNorm" and c.concept_class_id == "Ingredient" and c.name == name:
                return c.vocabulary_id, c.code
        raise BlinaError(f"no RxNorm ingredient {name!r} in study_concepts.csv")

    @cached_property
    def _variable_index(self) -> dict[tuple[str, str], set[str]]:
        index: dict[tuple[str, str], set[str]] = {}
        for name, var in self.study.variables.items():
            for c in var.codes:
                index.setdefault((c.vocabulary_id, c.code), set()).add(name)
                concept = self.concept(c.vocabulary_id, c.code)
                if c.descendants and concept is not None:
                    for d in self._descendants.get(concept.concept_id, []):
                        dc = self._by_id[d]
                        index.setdefault((dc.vocabulary_id, dc.code), set()).add(name)
        return index

    def variables_of(self, vocabulary_id: str, code: str) -> set[str]:
        """The study variables a code belongs to (descendants included; C91.02 is both
        b_all_diagnosis and relapse)."""
        return set(self._variable_index.get((vocabulary_id, code), ()))

    def grade_of(self, vocabulary_id: str, code: str) -> int | None:
        for var in self.study.variables.values():
            for c in var.codes:
                if (c.vocabulary_id, c.code) == (vocabulary_id, code):
                    return c.grade
        return None

    def local(self, variable: str) -> tuple[str, str] | None:
        """center4's (source_value, unit) for a variable, from the site overlay."""
        codes = self.overlay.variables.get(variable)
        if not codes:
            return None
        return codes[0].source_value, codes[0].unit or ""

    def factor(self, variable: str, unit: str | None) -> float | None:
        """Factor from ``unit`` to the variable's canonical unit (None: no unit family)."""
        fam = self.study.variables[variable].unit_family
        if fam is None:
            return None
        factors = self.study.unit_families[fam].factors
        if unit not in factors:
            raise BlinaError(f"unit {unit!r} is not convertible for {variable}", hint="generator bug")
        return factors[unit]
