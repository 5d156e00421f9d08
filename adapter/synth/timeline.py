"""The event timeline of one synthetic patient: what the renderers write and what the oracle reads.

Grain: one :class:`PatientTimeline` per patient, holding every record the patient has at its center,
already in the form the center renders (source value + UCUM unit), so that the oracle derives the
truth from exactly the numbers a reader of the rendered files sees. ``canonical`` converts a source
value to the study's canonical unit with the factors of ``mappings/study.yaml`` (the same arithmetic
the SQL views do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

__all__ = [
    "Administration",
    "ConditionRecord",
    "Measurement",
    "PatientTimeline",
    "ProcedureRecord",
]


@dataclass(frozen=True)
class Administration:
    """A drug administration period (both ends are infusion/administration days).

    ``kind``: ``blinatumomab``, ``chemotherapy`` or ``other`` (not a study drug). ``code`` is the
    RxNorm code rendered (ingredient or product); ``form`` is a rendering hint (``ref`` = FHIR
    medicationReference to a Medication resource).
    """

    kind: str
    start: date
    end: date
    code: str
    name: str = ""
    form: str = ""


@dataclass(frozen=True)
class Measurement:
    """One result of a study variable (or ``other`` for irrelevant labs/vitals).

    ``value`` is the source number in ``unit`` (UCUM) or None for a coded answer; ``comparator`` is
    ``<`` etc. or None; ``detected`` is the coded answer (True = detected/positive, False = not
    detected/negative) or None. ``canonical`` is ``value`` times the study's factor for ``unit``.
    ``code`` is the (vocabulary_id, code) rendered; ``form`` a rendering hint.
    """

    variable: str
    day: date
    value: float | None
    unit: str | None
    canonical: float | None
    comparator: str | None = None
    detected: bool | None = None
    code: tuple[str, str] = ("", "")
    form: str = ""


@dataclass(frozen=True)
class ConditionRecord:
    """A condition: ``kind`` relapse / crs / icans / other; ``grade`` from the code (None = ungraded)."""

    kind: str
    day: date
    code: tuple[str, str]
    grade: int | None = None


@dataclass(frozen=True)
class ProcedureRecord:
    """A procedure: ``kind`` hsct / car_t / other."""

    kind: str
    day: date
    code: tuple[str, str]


@dataclass
class PatientTimeline:
    """Everything recorded about one patient at one center.

    ``visits`` are (start, end) encounter periods (follow-up; every record date counts for
    last_followup, protocol 3b.10). ``observation_end`` is the OMOP observation period end (None
    for FHIR centers). ``errors`` are records marked entered-in-error (rendered at FHIR centers,
    never data: protocol 3b.3) as (FHIR status, record).
    """

    site_id: str
    mrn: str
    person_id: int | None
    sex: str  # F / M
    birth_date: date
    death_date: date | None = None
    administrations: list[Administration] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    conditions: list[ConditionRecord] = field(default_factory=list)
    procedures: list[ProcedureRecord] = field(default_factory=list)
    visits: list[tuple[date, date]] = field(default_factory=list)
    observation_start: date | None = None
    observation_end: date | None = None
    errors: list[tuple[str, Measurement | Administration | ConditionRecord]] = field(default_factory=list)

    def record_dates(self) -> list[date]:
        """Every date of every record that is data (entered-in-error records excluded)."""
        out: list[date] = []
        for a in self.administrations:
            out += [a.start, a.end]
        out += [m.day for m in self.measurements]
        out += [c.day for c in self.conditions]
        out += [p.day for p in self.procedures]
        for s, e in self.visits:
            out += [s, e]
        if self.death_date:
            out.append(self.death_date)
        if self.observation_end:
            out.append(self.observation_end)
        return out
