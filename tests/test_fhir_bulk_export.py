"""Exports as they arrive (issue 15, point 1): a Bulk Data manifest with its output and error files, an
export log that is not FHIR data, and non-study resources lacking what only study resources need. Both
engines, through the CLI (exit codes) and the library (report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fhir_ingest import ingest, patient, quantity_obs, write_ndjson

from blina_study.adapter.cli import main
from blina_study.adapter.db import Database
from blina_study.adapter.omop import create_cdm, load_study_vocabulary

SYNTHEA = Path("/work/shared/external/synthea-bulk-10")


def encounter(eid: str, pid: str, start: str | None = "2023-05-01T10:00:00Z") -> dict:
    res = {"resourceType": "Encounter", "id": eid, "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
           "subject": {"reference": f"Patient/{pid}"}}
    if start:
        res["period"] = {"start": start}
    return res


OUTCOME = {"resourceType": "OperationOutcome", "issue": [
    {"severity": "error", "code": "processing", "diagnostics": "Unable to export Observation/x9: access denied"},
    {"severity": "warning", "code": "too-costly", "details": {"text": "DocumentReference skipped"}}]}


def bulk_export(root: Path, *, count_patient: int = 2, with_error_file: bool = True) -> Path:
    """A Bulk Data export as a server delivers it: manifest.json, one NDJSON file per type, an error file
    and an export log (not FHIR data)."""
    root.mkdir(parents=True, exist_ok=True)
    write_ndjson(root / "Patient.000.ndjson", [patient("A"), patient("B")])
    write_ndjson(root / "Observation.000.ndjson", [quantity_obs("o1", "A", "8122-4", 2, "10*9/L"),
                                                   quantity_obs("o2", "B", "8122-4", 3, "10*9/L")])
    # a non-study Encounter without a date (partial in one, absent in the other): skipped, not rejected
    write_ndjson(root / "Encounter.000.ndjson", [encounter("e1", "A"), encounter("e2", "A", start=None),
                                                 encounter("e3", "B", start="2023-05")])
    (root / "error").mkdir(exist_ok=True)
    write_ndjson(root / "error" / "OperationOutcome.000.ndjson", [OUTCOME])
    write_ndjson(root / "log.ndjson", [{"exportId": "x", "eventId": "kickoff", "timestamp": "2024-01-01T00:00:00Z"},
                                       {"exportId": "x", "eventId": "export_complete"}])
    base = "https://fhir.example.org/bulkfiles/job1"
    manifest = {
        "transactionTime": "2024-08-06T18:12:57Z", "request": "https://fhir.example.org/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": f"{base}/Patient.000.ndjson", "count": count_patient},
                   {"type": "Observation", "url": f"{base}/Observation.000.ndjson", "count": 2},
                   {"type": "Encounter", "url": f"{base}/Encounter.000.ndjson"}],
        "error": ([{"type": "OperationOutcome", "url": f"{base}/OperationOutcome.000.ndjson"}]
                  if with_error_file else []),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_clean_bulk_export_loads_and_reports_manifest_and_server_errors(db: Database, tmp_path: Path) -> None:
    root = bulk_export(tmp_path / "export")
    rep = ingest(db, root)
    assert rep.n_rejected == 0, rep.rejected
    assert rep.findings == []
    assert [m["file"] for m in rep.manifests] == [str(root / "manifest.json")]
    assert rep.manifests[0]["transactionTime"] == "2024-08-06T18:12:57Z"
    assert all(o["file"] for o in rep.manifests[0]["output"])
    # the server's errors are listed, not read as data
    assert rep.n_server_errors == 2
    assert [(e["severity"], e["code"]) for e in rep.server_errors] == [("error", "processing"),
                                                                      ("warning", "too-costly")]
    assert "access denied" in rep.server_errors[0]["diagnostics"]
    assert rep.server_errors[1]["diagnostics"] == "DocumentReference skipped"
    assert [f["file"] for f in rep.not_fhir_files] == [str(root / "log.ndjson")]
    assert rep.read == 7  # 2 patients, 2 observations, 3 encounters: no manifest, log or error line
    assert rep.skipped["incomplete"] == {"Encounter": 2}
    assert rep.loaded == {"Patient": 2, "Observation": 2, "Encounter": 1}
    assert db.query("SELECT COUNT(*) FROM cdm.visit_occurrence")[0][0] == 1
    assert str(root / "manifest.json") not in rep.files and str(root / "log.ndjson") not in rep.files


def test_study_resources_keep_the_strict_date_checks(db: Database, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), quantity_obs("o1", "P", "8122-4", 2, "10*9/L",
                                                                            date="2023-05")])
    rep = ingest(db, path)
    assert rep.n_rejected == 1 and "partial date" in rep.rejected[0].reason
    assert rep.skipped["incomplete"] == {}


def test_manifest_passed_alone_finds_its_files(db: Database, tmp_path: Path) -> None:
    root = bulk_export(tmp_path / "export")
    rep = ingest(db, root / "manifest.json")
    assert rep.loaded == {"Patient": 2, "Observation": 2, "Encounter": 1}
    assert rep.n_server_errors == 2


def test_manifest_count_and_missing_file_are_findings(db: Database, tmp_path: Path) -> None:
    root = bulk_export(tmp_path / "export", count_patient=3)
    (root / "Observation.000.ndjson").unlink()
    rep = ingest(db, root)
    assert len(rep.findings) == 2, rep.findings
    assert any("states 3 Patient resources" in f and "has 2" in f for f in rep.findings)
    assert any("Observation.000.ndjson" in f and "not in the input" in f for f in rep.findings)


@pytest.fixture
def cli_db(engine_url: str) -> str:
    from blina_study.adapter.db import connect

    database = connect(engine_url, cdm_schema="cdm", vocab_schema="cdm")
    create_cdm(database)
    load_study_vocabulary(database)
    database.close()
    return engine_url


def test_cli_clean_bulk_export_exits_0_and_prints_the_server_errors(cli_db: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    root = bulk_export(tmp_path / "export")
    report = tmp_path / "report.json"
    assert main(["ingest", str(root), "--site", "s1", "--db", cli_db, "--report", str(report), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "manifest.json" in out and "the server reported 2 errors" in out and "access denied" in out
    data = json.loads(report.read_text())
    assert data["server_errors"]["total"] == 2 and len(data["manifests"]) == 1
    # a stated count that does not hold is a finding: exit 1
    bulk_export(root, count_patient=5)
    assert main(["ingest", str(root), "--site", "s1", "--db", cli_db, "--quiet"]) == 1
    assert "states 5 Patient resources" in capsys.readouterr().out


def test_shared_synthea_export_exits_0(cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not SYNTHEA.is_dir():
        pytest.skip(f"{SYNTHEA} not present")
    report = tmp_path / "report.json"
    assert main(["ingest", str(SYNTHEA), "--site", "s1", "--db", cli_db, "--report", str(report), "--quiet"]) == 0
    data = json.loads(report.read_text())
    assert data["rejected"]["total"] == 0 and data["balanced"]
    assert [f["file"] for f in data["not_fhir_files"]] == [str(SYNTHEA / "log.ndjson")]
    assert data["resources_read"] == 7160


def test_encounter_across_a_daylight_saving_change_loads(db: Database, tmp_path: Path) -> None:
    """Synthea's Encounter.000.ndjson line 543: 01:52-04:00 to 01:07-05:00 is 65 minutes, not a period that
    ends before it starts (local clock times go back an hour in the fall)."""
    enc = encounter("e1", "A", start="2022-11-06T01:52:06-04:00")
    enc["period"]["end"] = "2022-11-06T01:07:06-05:00"
    backwards = encounter("e2", "A", start="2022-11-06T03:00:00-04:00")
    backwards["period"]["end"] = "2022-11-06T01:07:06-05:00"
    rep = ingest(db, write_ndjson(tmp_path / "in.ndjson", [patient("A"), enc, backwards]))
    assert rep.loaded == {"Patient": 1, "Encounter": 1}
    assert [r.resource_key for r in rep.rejected] == ["Encounter/e2"]
