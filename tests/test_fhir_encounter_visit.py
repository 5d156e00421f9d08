"""FHIR Encounter.class -> VISIT_OCCURRENCE.visit_concept_id (issue 11, finding 7): the class code (HL7 v3
ActCode AMB, IMP, ACUTE, NONAC, EMER) names a concept of the OMOP Visit vocabulary by its code
(mappings/fhir/systems.yaml ``encounter_class``), resolved through CONCEPT, never by id. Both engines."""

from __future__ import annotations

import json
from pathlib import Path

from blina_study.adapter.db import Database
from blina_study.adapter.fhir.ingest import ingest_fhir

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_STU3 = "http://hl7.org/fhir/v3/ActCode"


def _visit_input(path: Path) -> Path:
    enc = [("e-amb", ACT, "AMB"), ("e-imp", ACT, "IMP"), ("e-emer", ACT, "EMER"), ("e-acute", ACT, "ACUTE"),
           ("e-old", ACT_STU3, "AMB"), ("e-hh", ACT, "HH"), ("e-other", "urn:local:class", "AMB")]
    lines = [{"resourceType": "Patient", "id": "P", "birthDate": "2010-01-01", "gender": "female"},
             {"resourceType": "MedicationAdministration", "id": "m1", "status": "completed",
              "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                        "code": "1597262"}]},
              "subject": {"reference": "Patient/P"},
              "effectivePeriod": {"start": "2023-05-01", "end": "2023-05-28"}}]
    lines += [{"resourceType": "Encounter", "id": eid, "status": "finished", "class": {"system": sys, "code": code},
               "subject": {"reference": "Patient/P"}, "period": {"start": "2023-05-01", "end": "2023-05-02"}}
              for eid, sys, code in enc]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _visits(db: Database) -> dict[str, int]:
    rows = db.query("SELECT l.source_key, v.visit_concept_id FROM cdm.visit_occurrence v "
                    "JOIN cdm.blina_lineage l ON l.omop_table = 'visit_occurrence' "
                    "AND l.row_id = v.visit_occurrence_id")
    return {k.split("/")[-1]: int(c) for k, c in rows}


def _concept(db: Database, code: str) -> int:
    return int(db.query("SELECT concept_id FROM vocab.concept WHERE vocabulary_id = 'Visit' AND concept_code = :c",
                        {"c": code})[0][0])


def test_encounter_class_is_the_visit_concept_of_its_code(db: Database, tmp_path: Path) -> None:
    rep = ingest_fhir(db, [_visit_input(tmp_path / "in.ndjson")], site_id="s1")
    assert rep.n_rejected == 0, rep.rejected
    op, ip, er = _concept(db, "OP"), _concept(db, "IP"), _concept(db, "ER")
    assert len({op, ip, er, 0}) == 4
    assert _visits(db) == {"e-amb": op, "e-imp": ip, "e-emer": er, "e-acute": ip, "e-old": op,
                           # a class not in the map, and a class code of another system: no Visit concept
                           "e-hh": 0, "e-other": 0}
    assert rep.unknown_concept_rows["visit_occurrence"] == 2


def test_visit_concept_follows_the_vocabulary_not_an_id(db: Database, tmp_path: Path) -> None:
    """Another vocabulary release gives Outpatient Visit another id: the ingest uses that id."""
    db.execute("UPDATE vocab.concept SET concept_id = 2000900002 WHERE vocabulary_id = 'Visit' AND concept_code = 'OP'")
    ingest_fhir(db, [_visit_input(tmp_path / "in.ndjson")], site_id="s1")
    assert _visits(db)["e-amb"] == 2000900002
