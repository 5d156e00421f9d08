"""Read OMOP CDM rows back into oracle timelines (a Python re-implementation of the code-set
matching of ``docs/omop-conventions.md``), so the truth can be re-derived from loaded data.

Grain: one :class:`~blina_study.adapter.synth.timeline.PatientTimeline` per ``person`` row. Codes are resolved
through the database's own CONCEPT / CONCEPT_ANCESTOR by (vocabulary_id, code) of the study
definition, plus the site overlay's ``source_value``s; values are converted to canonical units with
the study's unit factors (the overlay's unit for overlay codes, else the UCUM code of
``unit_concept_id``, else ``unit_source_value``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from blina_study.adapter.db import Database
from blina_study.adapter.study import SiteOverlay, StudyDefinition
from blina_study.adapter.synth.timeline import (
    Administration,
    ConditionRecord,
    Measurement,
    PatientTimeline,
    ProcedureRecord,
)

__all__ = ["timelines_from_omop"]


class _Codes:
    def __init__(self, db: Database, study: StudyDefinition, overlay: SiteOverlay | None) -> None:
        concept = db.qualified("vocab", "concept")
        rows = db.query(f"SELECT concept_id, vocabulary_id, concept_code, standard_concept, concept_name, "
                        f"domain_id FROM {concept}")
        self.by_code = {(r[1], r[2]): (int(r[0]), r[3]) for r in rows}
        self.code_of = {int(r[0]): r[2] for r in rows}
        self.ops = {int(r[0]): r[4] for r in rows if r[5] == "Meas Value Operator"}
        anc: dict[int, set[int]] = {}
        for a, d in db.query(f"SELECT ancestor_concept_id, descendant_concept_id "
                             f"FROM {db.qualified('vocab', 'concept_ancestor')}"):
            anc.setdefault(int(a), set()).add(int(d))
        self.std: dict[str, set[int]] = {}
        self.src: dict[str, set[int]] = {}
        self.grade: dict[int, int] = {}
        for name, var in study.variables.items():
            std, src = set(), set()
            for c in var.codes:
                hit = self.by_code.get((c.vocabulary_id, c.code))
                if hit is None:
                    continue
                cid, standard = hit
                src.add(cid)
                if standard == "S":
                    std.add(cid)
                    if c.descendants:
                        std |= anc.get(cid, set())
                if c.grade is not None:
                    self.grade[cid] = c.grade
            self.std[name], self.src[name] = std, src
        self.local: dict[str, tuple[str, str | None]] = {}
        for name, codes in (overlay.variables.items() if overlay else []):
            for oc in codes:  # the synthetic center4 overlay has source values only
                if oc.source_value is not None:
                    self.local[oc.source_value] = (name, oc.unit)
        self.value_sets = {}
        for label, codes in (("positive", study.value_sets.positive), ("negative", study.value_sets.negative)):
            self.value_sets[label] = {self.by_code[(c.vocabulary_id, c.code)][0] for c in codes
                                      if (c.vocabulary_id, c.code) in self.by_code}

    def variable(self, names: list[str], concept_id: Any, source_concept_id: Any,
                 source_value: Any) -> str | None:
        for name in names:
            if concept_id in self.std[name] or source_concept_id in self.src[name]:
                return name
        if source_value in self.local and self.local[source_value][0] in names:
            return self.local[source_value][0]
        return None


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def timelines_from_omop(db: Database, study: StudyDefinition, site_id: str,
                        overlay: SiteOverlay | None = None) -> list[PatientTimeline]:
    """Every person of ``db``'s CDM schema as a timeline (person_id order)."""
    codes = _Codes(db, study, overlay)
    t = lambda name: db.qualified("cdm", name)  # noqa: E731
    gender = {cid: code for (voc, code), (cid, _) in codes.by_code.items() if voc == "Gender"}
    tls: dict[int, PatientTimeline] = {}
    for pid, gc, y, m, d, psv in db.query(
            f"SELECT person_id, gender_concept_id, year_of_birth, month_of_birth, day_of_birth, "
            f"person_source_value FROM {t('person')} ORDER BY person_id"):
        sex = {"M": "M", "F": "F"}.get(gender.get(_int(gc), ""), "unknown")
        tls[int(pid)] = PatientTimeline(site_id, psv, int(pid), sex, date(int(y), int(m or 1), int(d or 1)))
    for pid, s, e in db.query(f"SELECT person_id, observation_period_start_date, observation_period_end_date "
                              f"FROM {t('observation_period')}"):
        tl = tls[int(pid)]
        tl.observation_start = min(s, tl.observation_start) if tl.observation_start else s
        tl.observation_end = max(e, tl.observation_end) if tl.observation_end else e
    for pid, s, e in db.query(f"SELECT person_id, visit_start_date, visit_end_date FROM {t('visit_occurrence')}"):
        tls[int(pid)].visits.append((s, e))
    drug_vars = ["blinatumomab", "chemotherapy"]
    for pid, c, sc, sv, s, e in db.query(
            f"SELECT person_id, drug_concept_id, drug_source_concept_id, drug_source_value, "
            f"drug_exposure_start_date, drug_exposure_end_date FROM {t('drug_exposure')}"):
        kind = codes.variable(drug_vars, _int(c), _int(sc), sv) or "other"
        tls[int(pid)].administrations.append(Administration(kind, s, e or s, sv or ""))
    meas_vars = [n for n, v in study.variables.items() if v.domain == "measurement"]
    for row in db.query(
            f"SELECT person_id, measurement_concept_id, measurement_source_concept_id, measurement_source_value, "
            f"measurement_date, value_as_number, value_as_concept_id, operator_concept_id, unit_concept_id, "
            f"unit_source_value FROM {t('measurement')}"):
        pid, c, sc, sv, day, num, vc, op, uc, usv = row
        var = codes.variable(meas_vars, _int(c), _int(sc), sv)
        value = None if num is None else float(num)
        if var is None:
            tls[int(pid)].measurements.append(Measurement("other", day, value, usv, None))
            continue
        spec = study.variables[var]
        if sv in codes.local and codes.local[sv][0] == var and _int(c) in (0, None):
            unit = codes.local[sv][1]
        elif _int(uc):
            unit = codes.code_of.get(int(uc))
        else:
            unit = usv
        detected = None
        if _int(vc) in codes.value_sets["positive"]:
            detected = True
        elif _int(vc) in codes.value_sets["negative"]:
            detected = False
        canonical = value
        if spec.unit_family and value is not None:
            canonical = value * study.unit_families[spec.unit_family].factors[unit]
        comparator = codes.ops.get(_int(op)) if _int(op) else None
        tls[int(pid)].measurements.append(Measurement(var, day, value, unit, canonical, comparator, detected))
    cond_vars = ["relapse", "crs", "icans"]
    for pid, c, sc, sv, day in db.query(
            f"SELECT person_id, condition_concept_id, condition_source_concept_id, condition_source_value, "
            f"condition_start_date FROM {t('condition_occurrence')}"):
        var = codes.variable(cond_vars, _int(c), _int(sc), sv)
        grade = codes.grade.get(_int(sc) or -1, codes.grade.get(_int(c) or -1))
        tls[int(pid)].conditions.append(ConditionRecord(var or "other", day, ("", sv or ""), grade))
    for pid, c, sc, sv, day in db.query(
            f"SELECT person_id, procedure_concept_id, procedure_source_concept_id, procedure_source_value, "
            f"procedure_date FROM {t('procedure_occurrence')}"):
        var = codes.variable(["hsct", "car_t"], _int(c), _int(sc), sv)
        tls[int(pid)].procedures.append(ProcedureRecord(var or "other", day, ("", sv or "")))
    for pid, day in db.query(f"SELECT person_id, death_date FROM {t('death')}"):
        tl = tls[int(pid)]
        tl.death_date = day if tl.death_date is None else min(day, tl.death_date)
    return [tls[k] for k in sorted(tls)]
