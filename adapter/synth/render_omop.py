"""Render timelines as OMOP CDM v5.4 CSV rows (one dict per row, every column of the table).

Standard center: concept ids resolved from the vocabulary subset by (vocabulary_id, code) (a
non-standard source code gets its "Maps to" target, else 0, and keeps its own id in
``*_source_concept_id``). Local center: laboratory rows whose code is a site-local one (the
overlay's ``source_value``) get ``measurement_concept_id = 0``, ``measurement_source_value`` = the
local code and a local unit string with ``unit_concept_id = 0``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from blina_study.adapter.omop.ddl import field_spec
from blina_study.adapter.synth.catalog import Catalog
from blina_study.adapter.synth.timeline import PatientTimeline

__all__ = ["OMOP_TABLES", "OmopRenderer"]

OMOP_TABLES: tuple[str, ...] = (
    "person", "observation_period", "visit_occurrence", "drug_exposure", "measurement",
    "condition_occurrence", "procedure_occurrence", "death",
)
# Local unit strings of the site-local LIS (the overlay names the UCUM unit they stand for).
_LOCAL_UNIT = {"/uL": "cells/uL", "%": "%"}


class OmopRenderer:
    """Accumulates rows of the OMOP tables for the patients of one center (ids unique per table)."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in OMOP_TABLES}
        self._next = dict.fromkeys(OMOP_TABLES, 1)
        self.ehr = cat.by_name("Type Concept", "EHR")
        self.ehr_drug = cat.by_name("Type Concept", "EHR administration record")
        self._ops = {op: cat.by_name("Meas Value Operator", op) for op in ("<", "<=", "=", ">=", ">")}

    def _id(self, table: str) -> int:
        n = self._next[table]
        self._next[table] = n + 1
        return n

    def _row(self, table: str, **values: Any) -> None:
        row = {f.column: None for f in field_spec()[table]}
        unknown = set(values) - set(row)
        if unknown:
            raise KeyError(f"{table}: no column(s) {sorted(unknown)}")
        row.update(values)
        self.rows[table].append(row)

    def add(self, tl: PatientTimeline) -> None:
        cat, pid = self.cat, tl.person_id
        b = tl.birth_date
        self._row("person", person_id=pid, gender_concept_id=cat.concept_id("Gender", tl.sex),
                  year_of_birth=b.year, month_of_birth=b.month, day_of_birth=b.day,
                  birth_datetime=f"{b.isoformat()} 00:00:00", race_concept_id=0, ethnicity_concept_id=0,
                  person_source_value=tl.mrn, gender_source_value=tl.sex, gender_source_concept_id=0)
        # A timeline made for a FHIR center has no period: span its records, as an ETL would.
        dates = tl.record_dates() if tl.observation_start is None or tl.observation_end is None else ()
        self._row("observation_period", observation_period_id=self._id("observation_period"), person_id=pid,
                  observation_period_start_date=tl.observation_start or min(dates),
                  observation_period_end_date=tl.observation_end or max(dates), period_type_concept_id=self.ehr)
        for s, e in tl.visits:
            self._row("visit_occurrence", visit_occurrence_id=self._id("visit_occurrence"), person_id=pid,
                      visit_concept_id=0, visit_start_date=s, visit_end_date=e, visit_type_concept_id=self.ehr,
                      visit_source_value="IP" if e > s else "OP", visit_source_concept_id=0)
        for a in tl.administrations:
            self._row("drug_exposure", drug_exposure_id=self._id("drug_exposure"), person_id=pid,
                      drug_concept_id=cat.standard_id("RxNorm", a.code), drug_exposure_start_date=a.start,
                      drug_exposure_end_date=a.end, drug_type_concept_id=self.ehr_drug,
                      drug_source_value=a.code, drug_source_concept_id=cat.concept_id("RxNorm", a.code))
        for m in tl.measurements:
            self._measurement(pid, m)
        for x in tl.conditions:
            self._row("condition_occurrence", condition_occurrence_id=self._id("condition_occurrence"),
                      person_id=pid, condition_concept_id=cat.standard_id(*x.code), condition_start_date=x.day,
                      condition_type_concept_id=self.ehr, condition_source_value=x.code[1],
                      condition_source_concept_id=cat.concept_id(*x.code))
        for p in tl.procedures:
            self._row("procedure_occurrence", procedure_occurrence_id=self._id("procedure_occurrence"),
                      person_id=pid, procedure_concept_id=cat.standard_id(*p.code), procedure_date=p.day,
                      procedure_type_concept_id=self.ehr, procedure_source_value=p.code[1],
                      procedure_source_concept_id=cat.concept_id(*p.code))
        if tl.death_date:
            self._row("death", person_id=pid, death_date=tl.death_date, death_type_concept_id=self.ehr)

    def _measurement(self, pid: int | None, m) -> None:
        cat = self.cat
        value, value_concept = m.value, None
        if m.form == "nd_coded":
            value, value_concept = None, cat.concept_id(*cat.answer(False))
        elif m.value is None and m.detected is not None:
            value_concept = cat.concept_id(*cat.answer(m.detected))
        op = self._ops[m.comparator] if (m.comparator and value is not None) else None
        if m.code[0] == "LOCAL":
            concept = source_concept = unit_concept = 0
            unit_source = _LOCAL_UNIT.get(m.unit or "", m.unit)
        else:
            concept, source_concept = cat.standard_id(*m.code), cat.concept_id(*m.code)
            unit_concept = cat.concept_id("UCUM", m.unit) if m.unit else None
            unit_source = m.unit
        self._row("measurement", measurement_id=self._id("measurement"), person_id=pid,
                  measurement_concept_id=concept, measurement_date=m.day, measurement_type_concept_id=self.ehr,
                  operator_concept_id=op, value_as_number=value, value_as_concept_id=value_concept,
                  unit_concept_id=unit_concept, measurement_source_value=m.code[1],
                  measurement_source_concept_id=source_concept, unit_source_value=unit_source)

    @staticmethod
    def cell(v: Any) -> str:
        """CSV text of one value: empty for NULL, ISO dates, shortest round-trip floats."""
        if v is None:
            return ""
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, float):
            return repr(v)
        return str(v)
