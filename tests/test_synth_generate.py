"""``blina synth``: determinism, the reference cohort's flow (protocol section 1), the files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from blina_study.adapter.cli import main
from blina_study.adapter.synth import build_cohort, generate
from blina_study.adapter.synth.oracle import COURSE_COLUMNS, PATIENT_COLUMNS


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    generate(out)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_same_bytes_other_seed_other_bytes(ref: Path, tmp_path: Path) -> None:
    assert main(["synth", "--out", str(tmp_path / "again")]) == 0
    assert _files(ref) == _files(tmp_path / "again")
    generate(tmp_path / "other", seed=7)
    other = _files(tmp_path / "other")
    assert other.keys() >= {"truth/course.csv", "manifest.json"}
    assert other["truth/patient.csv"] != _files(ref)["truth/patient.csv"]


def test_reference_flow_matches_the_protocol(ref: Path) -> None:
    patients = _rows(ref / "truth" / "patient.csv")
    courses = _rows(ref / "truth" / "course.csv")
    assert len(patients) == 105
    assert Counter(p["indication"] for p in patients) == {"R/R": 30, "CR-MRDpos": 21, "chemo_delay": 54}
    assert Counter(p["status_at_referral"] for p in patients) == {"R/R": 30, "CR-MRDpos": 30, "CR-MRDneg": 45}
    c1 = [c for c in courses if c["course_number"] == "1"]
    assert Counter(c["pre_status"] for c in c1) == {"R/R": 11, "CR-MRDpos": 40, "CR-MRDneg": 54}
    rr = [p for p in patients if p["status_at_referral"] == "R/R"]
    assert Counter(p["burden_reduction"] for p in rr) == {"true": 22, "false": 8}
    pre_of = {(c["site_id"], c["person_source_value"]): c["pre_status"] for c in c1}
    br = Counter(pre_of[(p["site_id"], p["person_source_value"])] for p in rr if p["burden_reduction"] == "true")
    assert br == {"R/R": 3, "CR-MRDpos": 10, "CR-MRDneg": 9}
    pos = [p for p in patients if p["status_at_referral"] == "CR-MRDpos"]
    assert Counter(p["indication"] for p in pos) == {"CR-MRDpos": 21, "chemo_delay": 9}
    # response: 9/11, 33/40 (course 1), 73/74 (all courses)
    for status, n, k in (("R/R", 11, 9), ("CR-MRDpos", 40, 33)):
        sub = [c for c in c1 if c["pre_status"] == status]
        assert (len(sub), sum(c["cr"] == "true" for c in sub)) == (n, k)
    neg = [c for c in courses if c["pre_status"] == "CR-MRDneg"]
    assert (len(neg), sum(c["mrd_maintained"] == "true" for c in neg)) == (74, 73)
    # survival at one year, no censoring before day 365
    for status, n, efs_ev, os_ev in (("CR-MRDneg", 45, 1, 1), ("CR-MRDpos", 30, 4, 0), ("R/R", 30, 8, 2)):
        sub = [p for p in patients if p["status_at_referral"] == status]
        assert len(sub) == n
        assert sum(p["efs_event"] == "true" and int(p["efs_days"]) <= 365 for p in sub) == efs_ev
        assert sum(p["os_event"] == "true" and int(p["os_days"]) <= 365 for p in sub) == os_ev
        assert all(int(p["efs_days"]) > 365 for p in sub if p["efs_event"] == "false")
        assert all(int(p["os_days"]) > 365 for p in sub if p["os_event"] == "false")


def test_truth_columns_and_values(ref: Path) -> None:
    with open(ref / "truth" / "course.csv") as fh:
        assert tuple(next(csv.reader(fh))) == COURSE_COLUMNS
    with open(ref / "truth" / "patient.csv") as fh:
        assert tuple(next(csv.reader(fh))) == PATIENT_COLUMNS
    patients = _rows(ref / "truth" / "patient.csv")
    courses = _rows(ref / "truth" / "course.csv")
    assert {p["site_id"] for p in patients} == {"center1", "center2", "center3", "center4"}
    assert all((p["person_id"] == "") == (p["site_id"] in ("center1", "center2")) for p in patients)
    assert {p["next_therapy"] for p in patients} == {"HSCT", "CAR-T", "protocol", "none"}
    assert {p["efs_event_type"] for p in patients} == {"", "relapse", "non_response", "death"}
    assert Counter(int(p["n_courses"]) for p in patients).keys() == {1, 2, 3, 4}
    assert {c["post_status"] for c in courses} >= {"R/R", "CR-MRDpos", "CR-MRDneg", "unknown", "NE"}
    assert {c["crs_max_grade"] for c in courses} >= {"", "1", "2", "3"}
    assert any(c["icans_max_grade"] for c in courses)
    assert {c["cd19_loss"] for c in courses} == {"true", "false", ""}
    # T cells rise over course 1 (paper: CD3 median 0.96 -> 1.13)
    c1 = [c for c in courses if c["course_number"] == "1" and c["cd3_pre"] and c["cd3_post"]]
    assert sum(float(c["cd3_post"]) > float(c["cd3_pre"]) for c in c1) > 0.6 * len(c1)


def test_noise_and_scaling_keep_the_truth_design() -> None:
    base = build_cohort(patients=40)
    noisy = build_cohort(patients=40, noise=2)
    assert base.courses == noisy.courses and base.patient_rows == noisy.patient_rows
    assert sum(len(t.measurements) for t in noisy.timelines) > 2 * sum(len(t.measurements) for t in base.timelines)
    heavy = build_cohort(patients=12, noise=20)
    for counts in heavy.records.values():
        assert counts["relevant"] / (counts["relevant"] + counts["irrelevant"]) <= 0.10
    big = build_cohort(patients=210)
    counts = Counter(p["status_at_referral"] for p in big.patient_rows)
    assert counts == {"R/R": 60, "CR-MRDpos": 60, "CR-MRDneg": 90}


def test_fhir_files(ref: Path) -> None:
    bundles = sorted((ref / "center1_fhir_bundles").glob("*.json"))
    assert len(bundles) == json.loads((ref / "manifest.json").read_text())["centers"]["center1"]["patients"]
    b = json.loads(bundles[0].read_text())
    assert b["resourceType"] == "Bundle" and b["type"] == "transaction"
    assert all(e["fullUrl"].startswith("urn:uuid:") and e["request"]["method"] == "POST" for e in b["entry"])
    subjects = {e["resource"]["subject"]["reference"] for e in b["entry"] if "subject" in e["resource"]}
    patient = b["entry"][0]
    assert subjects == {patient["fullUrl"]} and patient["resource"]["identifier"][0]["value"]
    text = "\n".join(p.read_text() for p in bundles)
    assert '"comparator":"<"' in text.replace(" ", "") and "medicationReference" in text and "LA11883-8" in text
    nd = ref / "center2_bulk_ndjson"
    assert {p.name for p in nd.glob("*.ndjson")} >= {"Patient.ndjson", "Observation.ndjson", "Encounter.ndjson",
                                                     "MedicationAdministration.ndjson", "Condition.ndjson"}
    lines = [json.loads(x) for p in nd.glob("*.ndjson") for x in p.read_text().splitlines()]
    statuses = Counter(r.get("status") for r in lines)
    assert statuses["entered-in-error"] >= 2 and statuses["not-done"] >= 1
    units = {r["valueQuantity"]["code"] for r in lines if "valueQuantity" in r}
    assert {"/uL", "ng/L", "%"} <= units
    assert any(r.get("category", [{}])[0].get("coding", [{}])[0].get("code") == "vital-signs"
               for r in lines if r["resourceType"] == "Observation")


def test_manifest(ref: Path) -> None:
    m = json.loads((ref / "manifest.json").read_text())
    assert (m["seed"], m["patients"], m["noise_per_relevant_record"]) == (42, 105, 0)
    assert sum(c["patients"] for c in m["centers"].values()) == 105
    assert m["params"]["course_gap_days"] == 7
    listed = {f["path"] for f in m["files"]}
    assert listed == set(_files(ref)) - {"manifest.json"}


def test_bad_arguments_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path), "--patients", "0"])
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path), "--noise", "-1"])
    (tmp_path / "file").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
