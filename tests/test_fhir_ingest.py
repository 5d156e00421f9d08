"""FHIR ingest: accounting identity, fault handling, OMOP rows, idempotency and atomicity, on both engines."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from blina_study.adapter.db import Database
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.fhir.ingest import IngestReport, ingest_fhir

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
BLINA = "https://blina-study.org/fhir/CodeSystem/study"

TABLES = ("person", "death", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
          "measurement", "observation", "procedure_occurrence", "blina_lineage", "blina_person_map")


# ----------------------------------------------------------------------------------------- builders
def patient(pid: str, **kw: Any) -> dict:
    res = {"resourceType": "Patient", "id": pid, "identifier": [{"system": "urn:mrn", "value": f"MRN-{pid}"}],
           "gender": "female", "birthDate": "2012-04-03"}
    res.update(kw)
    return res


def quantity_obs(oid: str, pid: str, code: str, value: float, unit: str, *, system: str = LOINC,
                 date: str = "2023-05-14", comparator: str | None = None, **kw: Any) -> dict:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        q["comparator"] = comparator
    res = {"resourceType": "Observation", "id": oid, "status": "final",
           "code": {"coding": [{"system": system, "code": code}]},
           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date, "valueQuantity": q}
    res.update(kw)
    return res


def blina_admin(aid: str, pid: str, start: str, end: str, **kw: Any) -> dict:
    res = {"resourceType": "MedicationAdministration", "id": aid, "status": "completed",
           "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1597262"}]},
           "subject": {"reference": f"Patient/{pid}"}, "effectivePeriod": {"start": start, "end": end}}
    res.update(kw)
    return res


def write_ndjson(path: Path, lines: list[Any]) -> Path:
    with (gzip.open(path, "wt") if path.suffix == ".gz" else open(path, "w")) as fh:
        for line in lines:
            fh.write(line if isinstance(line, str) else json.dumps(line))
            fh.write("\n")
    return path


def transaction_bundle(resources: list[dict]) -> dict:
    """A transaction Bundle with urn:uuid fullUrls and no resource ids; references point at the urns."""
    urns = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:00000000-0000-0000-0000-{i:012d}"
            for i, r in enumerate(resources)}
    entries = []
    for r in resources:
        r = json.loads(json.dumps(r))
        urn = urns[f"{r['resourceType']}/{r.pop('id')}"]
        subj = r.get("subject", {}).get("reference")
        if subj in urns:
            r["subject"]["reference"] = urns[subj]
        entries.append({"fullUrl": urn, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def snapshot(db: Database, schema: str = "cdm", tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple]]:
    return {t: sorted(db.query(f"SELECT * FROM {schema}.{t}"), key=repr) for t in tables
            if db.table_exists(schema, t)}


def ingest(db: Database, *paths: Path, **kw: Any) -> IngestReport:
    report = ingest_fhir(db, list(paths), site_id=kw.pop("site_id", "s1"), **kw)
    assert report.balanced(), report.to_dict()
    return report


@pytest.fixture
def clean_input(tmp_path: Path) -> Path:
    """A clean mixed input: a transaction Bundle (patient A), Bulk NDJSON (patient B, gz Observations,
    a Medication referenced from another file), a single-resource file and noise of other types."""
    root = tmp_path / "in"
    (root / "bulk").mkdir(parents=True)
    a = [
        patient("A", deceasedDateTime="2024-02-01"),
        blina_admin("ma-a1", "A", "2023-05-01", "2023-05-28"),
        quantity_obs("mrd-a", "A", "MRD-FCM-BM", 0.01, "%", system=BLINA, comparator="<", date="2023-04-28"),
        {"resourceType": "Condition", "id": "c-a", "code": {"coding": [{"system": ICD10CM, "code": "C91.02"}]},
         "subject": {"reference": "Patient/A"}, "onsetDateTime": "2023-04-20"},
        {"resourceType": "Immunization", "id": "imm-a", "status": "completed", "vaccineCode": {"text": "x"},
         "patient": {"reference": "Patient/A"}, "occurrenceDateTime": "2020-01-01"},
    ]
    (root / "bundle-A.json").write_text(json.dumps(transaction_bundle(a)))
    write_ndjson(root / "bulk" / "Patient.ndjson", [patient("B", gender="male", birthDate="2015-06")])
    write_ndjson(root / "bulk" / "Observation.ndjson.gz", [
        quantity_obs("cd3-b", "B", "8122-4", 950, "/uL", date="2023-06-01T08:30:00+02:00"),
        quantity_obs("il6-b", "B", "26881-3", 0.5, "ng/mL"),
        {"resourceType": "Observation", "id": "bcr-b", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "46434-7"}]}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2023-03-01",
         "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA11882-0"}]}},
        {"resourceType": "Observation", "id": "vital-b", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2024-05-01", "valueQuantity": {"value": 120, "unit": "cm"}},
    ])
    write_ndjson(root / "bulk" / "MedicationAdministration.ndjson", [
        {"resourceType": "MedicationAdministration", "id": "ma-b1", "status": "completed",
         "medicationReference": {"reference": "Medication/blin"}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2023-06-02"},
        {"resourceType": "MedicationAdministration", "id": "ma-b2", "status": "completed",
         "contained": [{"resourceType": "Medication", "id": "m1",
                        "code": {"coding": [{"system": RXNORM, "code": "3264"}]}}],
         "medicationReference": {"reference": "#m1"}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2023-05-20"},
    ])
    write_ndjson(root / "bulk" / "Medication.ndjson", [
        {"resourceType": "Medication", "id": "blin", "code": {"coding": [{"system": RXNORM, "code": "1597267"}]}},
    ])
    write_ndjson(root / "bulk" / "Encounter.ndjson", [
        {"resourceType": "Encounter", "id": "enc-b", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": "Patient/B"}, "period": {"start": "2024-03-01T10:00:00Z"}},
    ])
    write_ndjson(root / "bulk" / "DocumentReference.ndjson", [
        {"resourceType": "DocumentReference", "id": f"doc{i}", "status": "current"} for i in range(3)
    ])
    (root / "proc.json").write_text(json.dumps(
        {"resourceType": "Procedure", "id": "hsct-b", "status": "completed",
         "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "38240"}]},
         "subject": {"reference": "Patient/B"}, "performedDateTime": "2023-09-01"}))
    (root / "README.txt").write_text("not FHIR")
    return root


def concept(db: Database, vocabulary: str, code: str) -> int:
    return db.query("SELECT concept_id FROM vocab.concept WHERE vocabulary_id = :v AND concept_code = :c",
                    {"v": vocabulary, "c": code})[0][0]


def person_id(db: Database, pid: str, site: str = "s1") -> int:
    return db.query("SELECT person_id FROM cdm.blina_person_map WHERE site_id = :s AND patient_key = :k",
                    {"s": site, "k": pid})[0][0]


# ------------------------------------------------------------------------------------------- tests
def test_clean_input_accounting_and_rows(db: Database, clean_input: Path) -> None:
    rep = ingest(db, clean_input)
    assert rep.n_rejected == 0, rep.rejected
    # 5 bundle entries + 1 + 4 + 2 + 1 + 1 + 3 NDJSON lines + 1 single resource
    assert rep.read == 18
    # a type no view maps, and a record of a mapped type whose code is in no study code set (body height)
    assert rep.skipped["not_relevant"] == {"Immunization": 1, "DocumentReference": 3, "Observation": 1}
    assert rep.n_loaded == 13
    assert rep.loaded["Observation"] == 4 and rep.loaded["Medication"] == 1
    assert rep.skipped_files == [str(clean_input / "README.txt")]

    a, b = person_id(db, "00000000-0000-0000-0000-000000000000"), person_id(db, "B")
    people = {r[0]: r[1:] for r in db.query(
        "SELECT person_id, gender_concept_id, year_of_birth, month_of_birth, day_of_birth, person_source_value "
        "FROM cdm.person")}
    assert people[a] == (concept(db, "Gender", "F"), 2012, 4, 3, "MRN-A")
    assert people[b] == (concept(db, "Gender", "M"), 2015, 6, None, "MRN-B")
    assert db.query("SELECT person_id, CAST(death_date AS VARCHAR) FROM cdm.death") == [(a, "2024-02-01")]

    meas = {r[0]: r[1:] for r in db.query(
        "SELECT measurement_source_value, person_id, measurement_concept_id, CAST(measurement_date AS VARCHAR), "
        "CAST(value_as_number AS DOUBLE PRECISION), unit_concept_id, operator_concept_id, value_as_concept_id "
        "FROM cdm.measurement")}
    lt = db.query("SELECT concept_id FROM vocab.concept WHERE domain_id = 'Meas Value Operator' "
                  "AND concept_name = '<'")[0][0]
    assert meas["MRD-FCM-BM"] == (a, concept(db, "BLINA", "MRD-FCM-BM"), "2023-04-28", 0.01,
                                  concept(db, "UCUM", "%"), lt, None)
    # local date as recorded (no time-zone shift), value kept in its source unit
    assert meas["8122-4"] == (b, concept(db, "LOINC", "8122-4"), "2023-06-01", 950.0,
                              concept(db, "UCUM", "/uL"), None, None)
    assert meas["26881-3"][3:5] == (0.5, concept(db, "UCUM", "ng/mL"))
    assert meas["46434-7"][3:] == (None, None, None, concept(db, "LOINC", "LA11882-0"))
    assert "8302-2" not in meas
    assert rep.unknown_concept_rows["visit_occurrence"] == 0  # class code AMB: Visit OP (systems.yaml)

    drugs = sorted(db.query(
        "SELECT person_id, drug_concept_id, drug_source_value, CAST(drug_exposure_start_date AS VARCHAR), "
        "CAST(drug_exposure_end_date AS VARCHAR), drug_type_concept_id FROM cdm.drug_exposure"))
    ehr_admin = db.query("SELECT concept_id FROM vocab.concept WHERE vocabulary_id = 'Type Concept' "
                         "AND concept_name = 'EHR administration record'")[0][0]
    assert sorted(drugs) == sorted([
        (a, concept(db, "RxNorm", "1597262"), "1597262", "2023-05-01", "2023-05-28", ehr_admin),
        (b, concept(db, "RxNorm", "1597267"), "1597267", "2023-06-02", "2023-06-02", ehr_admin),  # Medication/blin
        (b, concept(db, "RxNorm", "3264"), "3264", "2023-05-20", "2023-05-20", ehr_admin),  # contained
    ])
    cond = db.query("SELECT person_id, condition_concept_id, condition_source_concept_id, condition_source_value "
                    "FROM cdm.condition_occurrence")
    # non-standard ICD-10-CM: standard target via 'Maps to', the code itself as source concept
    assert cond == [(a, concept(db, "SNOMED", "91857003"), concept(db, "ICD10CM", "C91.02"), "C91.02")]
    assert db.query("SELECT person_id, procedure_concept_id FROM cdm.procedure_occurrence") == [
        (b, concept(db, "CPT4", "38240"))]
    assert db.query("SELECT person_id, CAST(visit_start_date AS VARCHAR), CAST(visit_end_date AS VARCHAR), "
                    "visit_concept_id FROM cdm.visit_occurrence") == [
        (b, "2024-03-01", "2024-03-01", concept(db, "Visit", "OP"))]
    periods = dict((r[0], r[1:]) for r in db.query(
        "SELECT person_id, CAST(observation_period_start_date AS VARCHAR), "
        "CAST(observation_period_end_date AS VARCHAR) FROM cdm.observation_period"))
    # B's period ends at the body height record: not loaded, but its date counts for follow-up (3b.10)
    assert periods == {a: ("2023-04-20", "2024-02-01"), b: ("2023-03-01", "2024-05-01")}
    # lineage: every OMOP row keeps its source key and file
    lineage = db.query("SELECT omop_table, source_key, source_file FROM cdm.blina_lineage "
                       "WHERE source_key = 'Observation/cd3-b'")
    assert lineage == [("measurement", "Observation/cd3-b", str(clean_input / "bulk" / "Observation.ndjson.gz"))]
    n_rows = db.query("SELECT COUNT(*) FROM cdm.blina_lineage WHERE omop_table <> 'observation_period'")[0][0]
    assert n_rows == sum(n for t, n in rep.rows.items() if t != "observation_period")


FAULTS: dict[str, tuple[list[Any], str]] = {
    "malformed_json": (['{"resourceType": "Observation", "id": '], "malformed JSON"),
    "not_an_object": (["[1, 2, 3]"], "not a FHIR resource"),
    "no_resource_type": ([{"id": "x"}], "no resourceType"),
    "no_id": ([{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}], "has no id"),
    "invalid_fhir": ([{"resourceType": "Observation", "id": "bad", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": "Patient/P"}, "effectiveDateTime": "2023-01-01",
                       "valueQuantity": {"value": "lots"}}], "invalid FHIR R4"),
    "missing_subject": ([quantity_obs("o1", "P", "8122-4", 1, "/uL") | {"subject": None}], "missing subject"),
    "dangling_reference": ([quantity_obs("o1", "nobody", "8122-4", 1, "/uL")], "dangling reference"),
    "partial_date": ([quantity_obs("o1", "P", "8122-4", 1, "/uL", date="2023-05")], "partial date '2023-05'"),
    "invalid_date": ([quantity_obs("o1", "P", "8122-4", 1, "/uL", date="2023-02-30")], "effectiveDateTime"),
    "unconvertible_unit": ([quantity_obs("o1", "P", "8122-4", 1, "mg")], "unit mg of study variable cd3_abs"),
    "missing_unit": ([quantity_obs("o1", "P", "8122-4", 1, "/uL") | {"valueQuantity": {"value": 1}}],
                     "has no unit"),
    "non_numeric": ([quantity_obs("o1", "P", "8122-4", 1, "/uL") | {"valueQuantity": None,
                                                                     "valueString": "pending"}],
                    "no numeric value for study variable cd3_abs (valueString pending)"),
    "no_date": ([quantity_obs("o1", "P", "8122-4", 1, "/uL") | {"effectiveDateTime": None}], "no date"),
    "dangling_medication": ([blina_admin("m1", "P", "2023-01-01", "2023-01-02")
                             | {"medicationCodeableConcept": None,
                                "medicationReference": {"reference": "Medication/none"}}],
                            "does not resolve to a valid Medication"),
    "patient_without_birthdate": ([patient("Q", birthDate=None)], "no birthDate"),
}


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if v is not None}
    return obj


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_rejected_with_location_and_reason(db: Database, tmp_path: Path, fault: str) -> None:
    lines, reason = FAULTS[fault]
    good = quantity_obs("ok", "P", "8122-4", 2, "10*9/L")
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), good, *[_clean(x) for x in lines]])
    quarantine = io.StringIO()
    rep = ingest(db, path, quarantine=quarantine)
    assert rep.n_rejected == 1, rep.rejected
    rej = rep.rejected[0]
    assert reason in rej.reason
    assert (rej.file, rej.line) == (str(path), 3)
    assert rep.n_loaded == 2  # the patient and the good observation still load
    q = [orjson.loads(x) for x in quarantine.getvalue().splitlines()]
    assert len(q) == 1 and q[0]["line"] == 3 and reason in q[0]["reason"] and q[0]["resource"] is not None
    assert db.query("SELECT COUNT(*) FROM cdm.measurement")[0][0] == 1


def test_rejected_patient_rejects_its_records(db: Database, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "in.ndjson", [
        patient("P", birthDate="2012-13-01"),  # invalid month: rejected by validation or the date rule
        quantity_obs("o1", "P", "8122-4", 1, "/uL"),
    ])
    rep = ingest(db, path)
    assert rep.n_rejected == 2
    assert "was rejected" in rep.rejected[1].reason


def test_duplicates_identical_are_skipped_and_conflicting_are_all_rejected(db: Database, tmp_path: Path) -> None:
    o1 = quantity_obs("o1", "P", "8122-4", 1, "/uL")
    o2 = quantity_obs("o2", "P", "8122-4", 2, "/uL")
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), o1, o1, o2, o2 | {"valueQuantity": {
        "value": 3, "unit": "/uL", "system": UCUM, "code": "/uL"}}])
    rep = ingest(db, path)
    assert rep.skipped["duplicate"] == {"Observation": 1}
    assert rep.n_rejected == 2 and all("with different content" in r.reason for r in rep.rejected)
    assert sorted(r.line for r in rep.rejected) == [4, 5]
    assert db.query("SELECT measurement_source_value, CAST(value_as_number AS DOUBLE PRECISION) "
                    "FROM cdm.measurement") == [("8122-4", 1.0)]


def test_not_done_status_is_skipped_and_counted(db: Database, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "in.ndjson", [
        patient("P"),
        quantity_obs("o1", "P", "8122-4", 1, "/uL", status="entered-in-error"),
        quantity_obs("o2", "P", "8122-4", 1, "/uL", status="cancelled"),
        blina_admin("m1", "P", "2023-01-01", "2023-01-02", status="not-done"),
        {"resourceType": "Condition", "id": "c1", "code": {"coding": [{"system": ICD10CM, "code": "C91.02"}]},
         "subject": {"reference": "Patient/P"}, "onsetDateTime": "2023-04-20",
         "verificationStatus": {"coding": [{"code": "entered-in-error"}]}},
    ])
    rep = ingest(db, path)
    assert rep.skipped["status"] == {"Observation": 2, "MedicationAdministration": 1, "Condition": 1}
    assert rep.n_loaded == 1 and rep.n_rejected == 0
    assert db.query("SELECT COUNT(*) FROM cdm.measurement")[0][0] == 0


def test_rerun_changes_nothing_and_person_ids_are_stable(db: Database, clean_input: Path) -> None:
    ingest(db, clean_input)
    first = snapshot(db)
    ingest(db, clean_input)
    assert snapshot(db) == first
    # a later run with a new patient keeps existing person_ids and appends the new one
    before = {r[0]: r[1] for r in db.query("SELECT patient_key, person_id FROM cdm.blina_person_map")}
    extra = write_ndjson(clean_input.parent / "more.ndjson", [patient("C"), quantity_obs("o-c", "B", "8122-4", 3,
                                                                                        "10*9/L")])
    # the next export is the whole export again (it replaces the site's content), with a new patient
    rep = ingest(db, clean_input, extra)
    assert rep.n_rejected == 0
    after = {r[0]: r[1] for r in db.query("SELECT patient_key, person_id FROM cdm.blina_person_map")}
    assert {k: after[k] for k in before} == before and after["C"] > max(before.values())


def test_changed_resource_replaces_its_rows(db: Database, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), quantity_obs("o1", "P", "8122-4", 1, "/uL")])
    ingest(db, path)
    mid = db.query("SELECT measurement_id FROM cdm.measurement")
    write_ndjson(path, [patient("P"), quantity_obs("o1", "P", "8122-4", 7, "/uL", date="2023-06-01")])
    ingest(db, path)
    rows = db.query("SELECT measurement_id, CAST(value_as_number AS DOUBLE PRECISION), "
                    "CAST(measurement_date AS VARCHAR) FROM cdm.measurement")
    assert rows == [(mid[0][0], 7.0, "2023-06-01")]
    # a later entered-in-error version removes the record
    write_ndjson(path, [quantity_obs("o1", "P", "8122-4", 7, "/uL", status="entered-in-error")])
    ingest(db, path)
    assert db.query("SELECT COUNT(*) FROM cdm.measurement")[0][0] == 0
    assert db.query("SELECT COUNT(*) FROM cdm.blina_lineage WHERE source_key = 'Observation/o1'")[0][0] == 0


def test_failure_midway_leaves_database_as_before(db: Database, clean_input: Path, tmp_path: Path) -> None:
    ingest(db, clean_input)
    before = snapshot(db)
    more = write_ndjson(tmp_path / "more.ndjson",
                        [patient(f"X{i}") for i in range(25_000)] + [quantity_obs("ox", "B", "8122-4", 1, "/uL")])

    def boom(n: int) -> None:
        if n >= 20_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_fhir(db, [more], site_id="s1", on_progress=boom)
    assert snapshot(db) == before
    # a truncated .gz file (I/O error after some resources were staged) aborts the run the same way
    blob = gzip.compress(b"".join(orjson.dumps(patient(f"Y{i}")) + b"\n" for i in range(2000)))
    (tmp_path / "cut.ndjson.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BlinaError, match="cannot read the file"):
        ingest_fhir(db, [tmp_path / "cut.ndjson.gz"], site_id="s1")
    assert snapshot(db) == before
    # the same in a worker process (parallel reading): its error reaches the run, which stores nothing
    with pytest.raises(BlinaError, match="cut.ndjson.gz: cannot read the file"):
        ingest_fhir(db, [more, tmp_path / "cut.ndjson.gz"], site_id="s1", workers=2)
    assert snapshot(db) == before
    # and the next good run works on the unchanged database
    assert ingest(db, clean_input, more).n_rejected == 0


def test_searchset_bundle_and_absolute_references(db: Database, tmp_path: Path) -> None:
    base = "https://fhir.example.org/r4"
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": f"{base}/Patient/P", "resource": patient("P"), "search": {"mode": "match"}},
        {"fullUrl": f"{base}/Observation/o1", "search": {"mode": "include"},
         "resource": quantity_obs("o1", "P", "8122-4", 1, "/uL") | {"subject": {"reference": f"{base}/Patient/P"}}},
        {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}},
    ]}
    (tmp_path / "s.json").write_text(json.dumps(bundle))
    rep = ingest(db, tmp_path / "s.json")
    assert (rep.n_loaded, rep.n_rejected, dict(rep.skipped["not_relevant"])) == (2, 0, {"OperationOutcome": 1})


def test_overlay_codes_mrd_not_detected_and_mrn_system(db: Database, tmp_path: Path) -> None:
    overlay_file = tmp_path / "site.yaml"
    overlay_file.write_text(
        "site_id: s1\npatient_identifier_system: urn:hospital:mrn\n"
        "variables:\n  mrd: [{source_value: MRD-LOC, system: 'urn:lab', unit: '%'}]\n"
        "  cd3_abs: [{source_value: CD3L, unit: '/uL'}]\n")
    from blina_study.adapter.study import load_overlay

    overlay = load_overlay(overlay_file)
    nd = {"resourceType": "Observation", "id": "nd", "status": "final",
          "code": {"coding": [{"system": "urn:lab", "code": "MRD-LOC"}]}, "subject": {"reference": "Patient/P"},
          "effectiveDateTime": "2023-05-02",
          "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA11883-8"}]}}
    path = write_ndjson(tmp_path / "in.ndjson", [
        patient("P", identifier=[{"system": "urn:other", "value": "X1"},
                                 {"system": "urn:hospital:mrn", "value": "H-77"}]),
        nd,
        # local code without unit: the overlay's unit applies
        quantity_obs("cd3", "P", "CD3L", 800, "/uL", system="urn:lis") | {"valueQuantity": {"value": 800}},
        # the same local code from another system is not the overlay's MRD code: not study-relevant
        quantity_obs("other", "P", "MRD-LOC", 1, "%", system="urn:elsewhere"),
    ])
    rep = ingest(db, path, overlay=overlay)
    assert rep.n_rejected == 0, rep.rejected
    assert rep.skipped["not_relevant"] == {"Observation": 1}
    assert db.query("SELECT person_source_value FROM cdm.person") == [("H-77",)]
    rows = sorted(db.query("SELECT measurement_source_value, measurement_concept_id, value_as_number, "
                           "value_as_concept_id, unit_source_value FROM cdm.measurement"))
    assert rows == [("CD3L", 0, 800, None, None), ("MRD-LOC", 0, None, concept(db, "LOINC", "LA11883-8"), None)]
    # an overlay is for one site
    with pytest.raises(BlinaError, match="not 's2'"):
        ingest_fhir(db, [path], site_id="s2", overlay=overlay)


def _work_tables(db: Database) -> list[tuple]:
    return db.query("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '\\_bl\\_%' ESCAPE '\\'")


def test_failure_while_writing_the_cdm_leaves_it_unchanged(db: Database, clean_input: Path, tmp_path: Path) -> None:
    ingest(db, clean_input)
    assert _work_tables(db) == []
    # the last write of a run is OBSERVATION_PERIOD: make it fail after every other table was written
    cols = db.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'cdm' "
                    "AND table_name = 'observation_period' ORDER BY ordinal_position")
    rows = db.query("SELECT * FROM cdm.observation_period")
    db.execute("DROP TABLE cdm.observation_period")
    db.execute("CREATE TABLE cdm.observation_period (" + ", ".join(f"{c} {t}" for c, t in cols)
               + ", CHECK (observation_period_start_date > DATE '2100-01-01'))")
    before = snapshot(db)
    assert rows and before["observation_period"] == []
    more = write_ndjson(tmp_path / "more.ndjson", [patient("Z"), quantity_obs("oz", "Z", "8122-4", 1, "/uL")])
    with pytest.raises(Exception, match="(?i)check"):
        ingest_fhir(db, [more], site_id="s1")
    if db.dialect == "postgresql":
        db._sa_conn.rollback()
    assert snapshot(db) == before
    assert _work_tables(db) == []


def test_followup_counts_noise_dates_unless_not_done(db: Database, tmp_path: Path) -> None:
    """Records that are not loaded extend the observation period (3b.10) unless they are not-done (3b.3),
    whatever their order; impossible dates are ignored. (The ingest checks status and date only when a
    record would move the patient's first or last date.)"""
    def vital(oid: str, date: str, status: str = "final") -> dict:
        return {"resourceType": "Observation", "id": oid, "status": status,
                "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}, "subject": {"reference": "Patient/P"},
                "effectiveDateTime": date, "valueQuantity": {"value": 120, "unit": "cm"}}

    path = write_ndjson(tmp_path / "in.ndjson", [
        patient("P"),
        quantity_obs("cd3", "P", "8122-4", 950, "/uL", date="2023-06-01"),
        vital("v1", "2023-08-01"),
        vital("v2", "2024-01-01", status="entered-in-error"),  # later, but not done: ignored
        vital("v3", "2023-09-30"),
        vital("v4", "2023-02-30"),  # impossible: ignored
        vital("v5", "2023-01-15", status="cancelled"),  # earlier, but not done: ignored
        vital("v6", "2023-03-01"),
    ])
    rep = ingest(db, path)
    assert rep.n_rejected == 0 and rep.skipped["not_relevant"] == {"Observation": 6}
    assert db.query("SELECT CAST(observation_period_start_date AS VARCHAR), "
                    "CAST(observation_period_end_date AS VARCHAR) FROM cdm.observation_period") == [
        ("2023-03-01", "2023-09-30")]


SHAPES: list[dict] = [
    {"code": {"coding": [{"system": LOINC, "code": "8122-4"}]}},
    {"code": {"coding": [None, {"code": "a"}, None]}},
    {"code": {"coding": [None, "x", {"code": "a"}]}},
    {"code": [{"coding": [{"code": "b"}]}, None, 5, {"coding": {"code": "c"}}]},
    {"code": {"coding": [[{"code": "z"}]]}},
    {"code": {"text": "no coding"}},
    {"code": None},
    {"code": "a string"},
    {},
    {"codeCodeableConcept": {"coding": [{"code": "choice"}]}},
    {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1597262"}]}},
    {"medicationReference": {"reference": "Medication/x"}},
    {"medicationCodeableConcept": [{"coding": [{"code": "listed"}]}, {"coding": [None]}]},
]


def test_study_filter_key_walk_equals_the_fhirpath_evaluator() -> None:
    """The relevance test's plain key walk (the ingest's hot path) gives what the compiled FHIRPath gives."""
    from blina_study.adapter.fhir.fhirpath import Env
    from blina_study.adapter.fhir.mapper import _filter_path, _member_keys, _walk_keys, load_views

    checked = 0
    for view in load_views().values():
        path = _filter_path(view)
        if path is None:
            continue
        keys = _member_keys(path.expression)
        assert keys is not None, f"{path.expression}: the filter path lost its fast walk"
        for shape in SHAPES:
            res = {"resourceType": view.resource, "id": "x", **shape}
            walked = _walk_keys(res, keys)
            evaluated = [c for c in path.fn([res], Env(None, 0)) if c is not None]
            if walked is None:  # undecided (a choice base is missing): the evaluator decides
                continue
            assert walked == evaluated, (path.expression, shape)
            checked += 1
    assert checked >= 30
    assert _member_keys("code.coding.where(system = 'x')") is None
    assert _member_keys("value.ofType(CodeableConcept).coding") == ("valueCodeableConcept", "coding")
    assert _member_keys("coding.ofType(Coding)") is None  # ofType on a non-choice element


def test_parallel_reading_gives_the_serial_outcome(engine_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes reading NDJSON ranges (faults, noise, duplicates, a Bundle line, a .gz file and a
    Bundle file among them) give exactly what one process gives: report, quarantine and every row."""
    import blina_study.adapter.fhir.ingest as ingest_module
    from blina_study.adapter.db import connect
    from blina_study.adapter.fhir.reader import line_chunks
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    def vital(oid: str, pid: str, date: str, status: str = "final") -> dict:
        return {"resourceType": "Observation", "id": oid, "status": status,
                "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}, "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": date, "valueQuantity": {"value": 120, "unit": "cm"}}

    faults = [_clean(x) for lines, _ in FAULTS.values() for x in lines]
    dup = quantity_obs("dup", "P1", "8122-4", 7, "/uL")
    lines: list[Any] = [patient("P"), *[patient(f"P{i}") for i in range(6)]]
    for i in range(400):
        pid = f"P{i % 6}"
        day = f"2023-{1 + i % 12:02d}-{1 + i % 27:02d}"
        lines.append(vital(f"v{i}", pid, day, status="cancelled" if i % 11 == 0 else "final"))
        if i % 9 == 0:
            lines.append(quantity_obs(f"cd3-{i}", pid, "8122-4", 500 + i, "/uL", date=day))
        if i % 37 == 0:
            lines.append(faults[(i // 37) % len(faults)])
        if i % 53 == 0:
            lines.append({"resourceType": "Immunization", "id": f"imm{i}", "status": "completed",
                          "vaccineCode": {"text": "x"}, "patient": {"reference": f"Patient/{pid}"},
                          "occurrenceDateTime": "2019-01-0" + str(1 + i % 9)})
    lines[50:50] = [dup, dup, quantity_obs("cd3-9", "P3", "8122-4", 1, "/uL"), "", "[1]", "{not json"]
    lines.append({"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": patient("B1")}, {"resource": quantity_obs("b-o", "B1", "8122-4", 3, "/uL")},
                            {"resource": vital("b-v", "B1", "2025-01-01")}]})
    root = tmp_path / "in"
    root.mkdir()
    big = write_ndjson(root / "a.ndjson", lines)
    write_ndjson(root / "b.ndjson.gz", [vital("gz1", "P2", "2026-01-01"),
                                        quantity_obs("gz2", "P2", "8122-4", 9, "/uL")])
    bundle = transaction_bundle([patient("T"), quantity_obs("t1", "T", "8122-4", 4, "/uL")])
    (root / "c.json").write_text(json.dumps(bundle))
    monkeypatch.setattr(ingest_module, "_CHUNK_BYTES", 2000)
    assert len(line_chunks(big, 2000)) > 20

    outcomes = []
    for schema, workers in (("cdm", 1), ("cdm_par", 2)):
        db = connect(engine_url, cdm_schema=schema, vocab_schema="vocab")
        try:
            create_cdm(db)
            if workers == 1:
                load_study_vocabulary(db)
            quarantine = io.StringIO()
            rep = ingest_fhir(db, [root], site_id="s1", workers=workers, quarantine=quarantine)
            assert rep.balanced()
            outcome = rep.to_dict()
            outcome.pop("seconds")
            rows = snapshot(db, schema, (*TABLES, "blina_lineage", "blina_person_map"))
            outcomes.append((outcome, quarantine.getvalue(), rows))
        finally:
            db.close()
    serial, parallel = outcomes
    assert serial[0]["rejected"]["total"] > 10 and serial[0]["skipped"]["duplicate"] == {"Observation": 1}
    assert serial[0]["loaded"]["total"] > 50 and serial[0]["skipped"]["not_relevant"]["Observation"] > 300
    assert serial[2]["observation_period"] and serial[2]["measurement"]
    assert parallel[0] == serial[0]
    assert parallel[1] == serial[1]
    assert parallel[2] == serial[2]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_line_ranges_cover_the_file_without_splitting_a_line(tmp_path: Path, chunk: int) -> None:
    """The byte ranges of parallel reading partition the file at line feeds, whatever the range size
    (a line longer than a range, no line feed at the end, blank lines, CRLF)."""
    from blina_study.adapter.fhir.reader import line_chunks, read_chunk

    data = b'{"a": 1}\n\n' + b'{"long": "' + b"x" * 300 + b'"}\r\n' + b"[1]\n" + b'{"last": true}'
    path = tmp_path / "x.ndjson"
    path.write_bytes(data)
    ranges = line_chunks(path, chunk)
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    assert all(a < b for (a, _), (b, _) in zip(ranges, ranges[1:], strict=False))
    lines = [raw for a, b in ranges for raw in read_chunk(path, a, b)]
    with open(path, "rb") as fh:
        assert lines == list(fh)  # exactly what iterating the file gives, line feeds included
    gz = tmp_path / "x.ndjson.gz"
    gz.write_bytes(gzip.compress(data))
    assert line_chunks(gz, chunk) == [(0, None)] and list(read_chunk(gz, 0, None)) == lines
