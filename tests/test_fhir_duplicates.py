"""Duplicate ids everywhere (issue 15, point 2): an id read twice within a resource type anywhere in the
input, study-relevant or not, is reported. Same content: counted once and noted. Different content: every
copy is rejected, each naming the other locations (the rule already used among study resources), and a
rejected copy's dates do not count for follow-up. Both engines, one process and worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_fhir_ingest import LOINC, ingest, patient, quantity_obs, write_ndjson

from blina_study.adapter.db import Database


def vital(oid: str, date: str, value: float = 120) -> dict:
    """An Observation the study does not read (body height): not study-relevant; its date counts for
    follow-up."""
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}, "subject": {"reference": "Patient/P"},
            "effectiveDateTime": date, "valueQuantity": {"value": value, "unit": "cm"}}


def practitioner(pid: str, family: str) -> dict:
    return {"resourceType": "Practitioner", "id": pid, "name": [{"family": family}]}


def _period(db: Database) -> list[tuple]:
    return db.query("SELECT CAST(observation_period_start_date AS VARCHAR), "
                    "CAST(observation_period_end_date AS VARCHAR) FROM cdm.observation_period")


@pytest.mark.parametrize("workers", [1, 2])
def test_conflicting_non_study_duplicates_are_findings_naming_both_locations(db: Database, tmp_path: Path,
                                                                             workers: int) -> None:
    a = write_ndjson(tmp_path / "a.ndjson", [patient("P"), quantity_obs("cd3", "P", "8122-4", 950, "/uL",
                                                                         date="2023-06-01"),
                                             vital("v1", "2023-08-01"), practitioner("dr", "Curie")])
    # the same ids again, different content: v1 would move follow-up to 2024-12-31
    b = write_ndjson(tmp_path / "b.ndjson", [vital("v1", "2024-12-31", value=99), practitioner("dr", "Meitner"),
                                             vital("v2", "2023-07-01")])
    rep = ingest(db, a, b, workers=workers)
    assert rep.n_rejected == 4, rep.rejected
    by_key: dict[str, list[str]] = {}
    for r in rep.rejected:
        assert "with different content" in r.reason
        by_key.setdefault(r.resource_key, []).append(r.where)
    assert sorted(by_key) == ["Observation/v1", "Practitioner/dr"]
    assert sorted(by_key["Observation/v1"]) == [f"{a}:3", f"{b}:1"]
    v1 = [r for r in rep.rejected if r.resource_key == "Observation/v1"]
    assert f"{b}:1" in v1[0].reason and f"{a}:3" in v1[1].reason  # each copy names the other
    assert rep.skipped["not_relevant"] == {"Observation": 1}  # v2 only
    assert rep.duplicate_ids["conflicting"] == 2 and rep.duplicate_ids["identical"] == 0
    listed = {d["resource_key"]: d for d in rep.duplicate_ids["listed"]}
    assert listed["Practitioner/dr"]["locations"] == [f"{a}:4", f"{b}:2"]
    # follow-up: the rejected copies' dates do not count (v2 and the loaded measurement do)
    assert _period(db) == [("2023-06-01", "2023-07-01")]


@pytest.mark.parametrize("workers", [1, 2])
def test_identical_non_study_duplicates_count_once_and_are_noted(db: Database, tmp_path: Path,
                                                                 workers: int) -> None:
    a = write_ndjson(tmp_path / "a.ndjson", [patient("P"), vital("v1", "2023-08-01"), practitioner("dr", "Curie")])
    # same content with other key order is the same resource
    b = write_ndjson(tmp_path / "b.ndjson", [dict(reversed(vital("v1", "2023-08-01").items())),
                                             practitioner("dr", "Curie")])
    rep = ingest(db, a, b, workers=workers)
    assert rep.n_rejected == 0
    assert rep.skipped["duplicate"] == {"Observation": 1, "Practitioner": 1}
    assert rep.skipped["not_relevant"] == {"Observation": 1, "Practitioner": 1}
    assert rep.duplicate_ids["identical"] == 2 and rep.duplicate_ids["conflicting"] == 0
    assert {d["resource_key"]: d["locations"] for d in rep.duplicate_ids["listed"]}["Observation/v1"] == [
        f"{a}:2", f"{b}:1"]


def test_study_and_non_study_copies_of_one_id_are_all_rejected(db: Database, tmp_path: Path) -> None:
    a = write_ndjson(tmp_path / "a.ndjson", [patient("P"), quantity_obs("x", "P", "8122-4", 950, "/uL")])
    b = write_ndjson(tmp_path / "b.ndjson", [vital("x", "2023-08-01")])
    rep = ingest(db, a, b)
    assert sorted(r.resource_key for r in rep.rejected) == ["Observation/x", "Observation/x"]
    assert db.query("SELECT COUNT(*) FROM cdm.measurement")[0][0] == 0
    assert rep.duplicate_ids["conflicting"] == 1


def test_duplicates_in_bundles_are_found(db: Database, tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": patient("P")}, {"resource": practitioner("dr", "Curie")}]}
    a = write_ndjson(tmp_path / "a.ndjson", [bundle, practitioner("dr", "Meitner")])
    rep = ingest(db, a)
    assert sorted(r.where for r in rep.rejected) == [f"{a}:1#entry[1]", f"{a}:2"]


@pytest.mark.parametrize("join_max", [1_000_000, 0])
def test_index_groups_by_join_and_by_sorted_stream_agree(monkeypatch: pytest.MonkeyPatch, join_max: int) -> None:
    """Few duplicate ids are joined back to their copies, many are found in one sorted pass: same groups."""
    import blina_study.adapter.fhir.dupes as dupes

    monkeypatch.setattr(dupes, "_JOIN_MAX", join_max)
    monkeypatch.setattr(dupes, "BATCH", 64)  # several batches
    with dupes.DuplicateIndex() as index:
        for i in range(1000):
            index.add("Observation", str(i % 700), 7 if i < 990 else i, i % 2 == 0, i % 3, i, None)
        index.add("Condition", "1", 1, False, 0, 5000, "entry[0]")
        groups = list(index.groups())
        folder = index.dir
    assert not folder.exists()  # the index's temporary folder is removed
    assert len(groups) == 300 and {g[0] for g in groups} == {"Observation"}
    rtype, rid, copies = groups[0]
    assert (rtype, rid) == ("Observation", "0")
    assert [(c.line, c.file_idx, c.study) for c in copies] == [(0, 0, True), (700, 1, True)]
    assert [c.digest for c in dict((g[1], g[2]) for g in groups)["295"]] == [7, 995]
