"""Render timelines as FHIR R4: transaction Bundles (one per patient) or Bulk Data NDJSON.

Bundles reference resources by their ``urn:uuid:`` fullUrl; NDJSON by ``Type/id``. Every record of
the timeline becomes one resource; entered-in-error / not-done records (``PatientTimeline.errors``)
are rendered with that status (Condition: ``verificationStatus``). Dates are ``YYYY-MM-DD``; the
NDJSON center writes some as dateTimes with a time and offset (the date part is the date, 3b.1).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from blina_study.adapter.provenance import HTEST_TAG
from blina_study.adapter.synth.catalog import Catalog
from blina_study.adapter.synth.timeline import (
    Administration,
    ConditionRecord,
    Measurement,
    PatientTimeline,
    ProcedureRecord,
)

__all__ = ["bundle", "patient_resources"]

_UCUM = "http://unitsofmeasure.org"
_OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
_COND_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_GENDER = {"F": "female", "M": "male"}
# System of a site-local laboratory code (timeline vocabulary "LOCAL"); the site overlay matches the
# code whatever its system.
_LOCAL_SYSTEM = "urn:blina-synth:local-lab"


def _cc(cat: Catalog, vc: tuple[str, str], display: str | None = None) -> dict[str, Any]:
    vocab, code = vc
    system = _LOCAL_SYSTEM if vocab == "LOCAL" else cat.uri(vocab)
    return {"coding": [{"system": system, "code": code, "display": display or cat.name(vocab, code)}]}


class _Ctx:
    def __init__(self, tl: PatientTimeline, cat: Catalog, r: random.Random, ref: Callable[[str, str], str],
                 with_time: bool) -> None:
        self.tl, self.cat, self.r, self.ref, self.with_time = tl, cat, r, ref, with_time
        self.out: list[dict[str, Any]] = []

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.r.getrandbits(128), version=4))

    def when(self, d: date, end: bool = False) -> str:
        if self.with_time and self.r.random() < 0.5:
            hh = self.r.randint(18, 23) if end else self.r.randint(6, 12)
            return f"{d.isoformat()}T{hh:02d}:{self.r.randint(0, 59):02d}:00+08:00"
        return d.isoformat()

    def add(self, rtype: str, body: dict[str, Any]) -> dict[str, Any]:
        # every resource says it is test data (HL7 HTEST tag; adapter/provenance.py)
        res = {"resourceType": rtype, "id": self.new_id(), "meta": {"tag": [dict(HTEST_TAG)]}, **body}
        self.out.append(res)
        return res


def _observation(c: _Ctx, m: Measurement, status: str, subject: dict) -> None:
    cat = c.cat
    category = "vital-signs" if m.variable == "other" else "laboratory"
    body: dict[str, Any] = {
        "status": status,
        "category": [{"coding": [{"system": _OBS_CAT, "code": category}]}],
        "code": _cc(cat, m.code),
        "subject": subject,
        "effectiveDateTime": c.when(m.day),
    }
    if m.form == "nd_coded" or (m.value is None and m.detected is not None):
        positive = bool(m.detected) if m.form != "nd_coded" else False
        body["valueCodeableConcept"] = _cc(cat, cat.answer(positive))
    else:
        q: dict[str, Any] = {"value": m.value}
        if m.comparator and m.comparator != "=":
            q["comparator"] = m.comparator
        q.update({"unit": m.unit, "system": _UCUM, "code": m.unit})
        body["valueQuantity"] = q
    c.add("Observation", body)


def _med_admin(c: _Ctx, a: Administration, status: str, subject: dict, medication: dict | None) -> None:
    body: dict[str, Any] = {"status": status}
    if a.form == "ref" and medication is not None:
        body["medicationReference"] = {"reference": c.ref("Medication", medication["id"])}
    else:
        body["medicationCodeableConcept"] = _cc(c.cat, ("RxNorm", a.code), a.name or None)
    body["subject"] = subject
    body["effectivePeriod"] = {"start": c.when(a.start), "end": c.when(a.end, end=True)}
    c.add("MedicationAdministration", body)


def _condition(c: _Ctx, x: ConditionRecord, subject: dict, verification: str = "confirmed") -> None:
    c.add("Condition", {
        "clinicalStatus": {"coding": [{"system": _COND_CLIN, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": _COND_VER, "code": verification}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                  "code": "encounter-diagnosis"}]}],
        "code": _cc(c.cat, x.code),
        "subject": subject,
        "onsetDateTime": c.when(x.day),
    })


def _procedure(c: _Ctx, p: ProcedureRecord, subject: dict) -> None:
    c.add("Procedure", {"status": "completed", "code": _cc(c.cat, p.code), "subject": subject,
                        "performedDateTime": c.when(p.day)})


def patient_resources(tl: PatientTimeline, cat: Catalog, r: random.Random,
                      ref: Callable[[str, str], str], *, with_time: bool = False) -> list[dict[str, Any]]:
    """All resources of one patient, Patient first. ``ref(type, id)`` makes a reference string."""
    c = _Ctx(tl, cat, r, ref, with_time)
    pat: dict[str, Any] = {
        "identifier": [
            {"use": "usual", "type": {"text": "Medical record number"},
             "system": f"https://{tl.site_id}.hospital.example/mrn", "value": tl.mrn},
            {"system": f"https://{tl.site_id}.hospital.example/insurance", "value": f"INS{r.randrange(10**8):08d}"},
        ],
        "gender": _GENDER[tl.sex],
        "birthDate": tl.birth_date.isoformat(),
    }
    if tl.death_date:
        pat["deceasedDateTime"] = c.when(tl.death_date)
    patient = c.add("Patient", pat)
    subject = {"reference": ref("Patient", patient["id"])}
    medication = None
    if any(a.form == "ref" for a in tl.administrations):
        medication = c.add("Medication", {"code": _cc(cat, cat.blinatumomab["product"])})
    for a in tl.administrations:
        _med_admin(c, a, "completed", subject, medication)
    for m in tl.measurements:
        _observation(c, m, "final", subject)
    for x in tl.conditions:
        _condition(c, x, subject)
    for p in tl.procedures:
        _procedure(c, p, subject)
    for s, e in tl.visits:
        c.add("Encounter", {"status": "finished",
                            "class": {"system": _ACT, "code": "IMP" if e > s else "AMB"},
                            "subject": subject, "period": {"start": c.when(s), "end": c.when(e, end=True)}})
    for status, rec in tl.errors:
        if isinstance(rec, Measurement):
            _observation(c, rec, status, subject)
        elif isinstance(rec, Administration):
            _med_admin(c, rec, status, subject, medication)
        elif isinstance(rec, ConditionRecord):
            _condition(c, rec, subject, verification=status)
    return c.out


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle of ``resources`` (ids become ``urn:uuid:`` fullUrls)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"fullUrl": f"urn:uuid:{res['id']}", "resource": res,
                   "request": {"method": "POST", "url": res["resourceType"]}} for res in resources],
    }
