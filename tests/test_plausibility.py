"""Plausibility rules (issue 16, point 2): one test per finding, on both engines. Each implausible value
rejects its record with the element and the rule (mappings/fhir/plausibility.yaml); nothing is coerced;
awkward-but-valid FHIR (leap second) and NUL characters never abort a run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from test_fhir_ingest import blina_admin, ingest, patient, quantity_obs, write_ndjson

from blina_study.adapter.db import Database
from blina_study.adapter.study import load_study

TODAY = dt.date.today()
GOOD = quantity_obs("good", "P", "8122-4", 2, "10*9/L")


def _obs(value: object, **kw: object) -> dict:
    res = quantity_obs("bad", "P", "8122-4", 1, "10*9/L", **kw)
    res["valueQuantity"]["value"] = value
    return res


def _bool_obs(value: object) -> dict:
    res = quantity_obs("bad", "P", "8122-4", 1, "10*9/L")
    del res["valueQuantity"]
    res["valueBoolean"] = value
    return res


# finding -> (the records besides GOOD (Patient P first), what the rejection reason names)
FINDINGS: dict[str, tuple[list, str]] = {
    "string_1e400_is_not_inf": ([patient("P"), _obs("1e400")], "is a JSON string '1e400', not a JSON number"),
    "string_4_2_is_not_a_number": ([patient("P"), _obs("4.2")], "value.ofType(Quantity).value (value_number)"),
    "string_1e-400_is_not_0": ([patient("P"), _obs("1e-400")], "is a JSON string '1e-400'"),
    "number_1e-400_underflows": ([patient("P"), json.dumps(_obs(7)).replace('"value": 7', '"value": 1e-400')],
                                 "valueQuantity.value: the number 1e-400 underflows a double"),
    "number_1e400_overflows": ([patient("P"), json.dumps(_obs(7)).replace('"value": 7', '"value": 1e400')],
                               "malformed JSON"),
    "boolean_1_is_not_true": ([patient("P"), _bool_obs(1)], "is a JSON number 1, not a JSON true/false"),
    "date_year_1": ([patient("P"), _obs(1, date="0001-01-01")], "implausible date '0001-01-01' in effective_datetime"),
    "date_year_9999": ([patient("P"), _obs(1, date="9999-12-31")], "dates must lie within [1900-01-01,"),
    "birth_in_the_future": ([patient("P", birthDate=(TODAY + dt.timedelta(days=20)).isoformat())],
                            "is after today"),
    "death_before_birth": ([patient("P", deceasedDateTime="2010-01-01")], "is before birthDate '2012-04-03'"),
    "period_start_after_end": ([patient("P"), blina_admin("bad", "P", "2023-05-28", "2023-05-01")],
                               "period start '2023-05-28' is after its end '2023-05-01'"),
    "gender_not_in_value_set": ([patient("P", gender="xyz")], "gender 'xyz' is not in its value set"),
    "value_outside_range": ([patient("P"), _obs(100000)], "of study variable cd3_abs is outside its plausible "
                            "range [0, 1000] 10*9/L"),
    "value_outside_range_after_unit": ([patient("P"), quantity_obs("bad", "P", "8122-4", 2_000_000, "/uL")],
                                       "value 2000000"),
    "event_before_birth": ([patient("P"), _obs(1, date="2011-12-31")], "is before the birth date 2012-04-03"),
    "event_long_after_death": ([patient("P", deceasedDateTime="2023-05-01"), _obs(1, date="2023-07-01")],
                               "more than 30 days after the death date 2023-05-01"),
    "nul_in_a_study_string": ([patient("P", identifier=[{"system": "urn:mrn", "value": "M\u0000X"}])],
                              "NUL character in identifier_value"),
}
# With the default validation (blina_study.adapter.fhir.validate, generated from the R4B models) these are already
# invalid FHIR R4 and rejected as such; the plausibility rule's reason is that of --validate full
# (fhir.resources coerces them).
FAST_REASONS = {
    "string_1e400_is_not_inf": "Observation.valueQuantity.value: type: expected a JSON number (decimal), got '1e400'",
    "string_4_2_is_not_a_number": "Observation.valueQuantity.value: type: expected a JSON number (decimal), got '4.2'",
    "string_1e-400_is_not_0": "Observation.valueQuantity.value: type: expected a JSON number (decimal), got '1e-400'",
    "boolean_1_is_not_true": "Observation.valueBoolean: type: expected true or false (boolean), got 1",
    "gender_not_in_value_set": "Patient.gender: required binding: 'xyz' is not one of male | female | other | unknown",
}


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_each_implausible_value_is_one_rejected_record(db: Database, tmp_path: Path, finding: str) -> None:
    records, reason = FINDINGS[finding]
    good = [GOOD] if records[0]["id"] == "P" and finding not in (
        "birth_in_the_future", "death_before_birth", "gender_not_in_value_set", "nul_in_a_study_string") else []
    path = write_ndjson(tmp_path / "in.ndjson", [*records, *good])
    if finding in FAST_REASONS:
        rep = ingest(db, path, validation="full")  # the run below re-ingests the site: replaces it
        assert [r.reason for r in rep.rejected if reason in r.reason] == [rep.rejected[0].reason], rep.rejected
        reason = FAST_REASONS[finding]
    rep = ingest(db, path)  # asserts read = loaded + skipped + rejected
    assert rep.n_rejected == 1, rep.rejected
    assert reason in rep.rejected[0].reason, rep.rejected[0].reason
    assert rep.n_loaded == len(records) + len(good) - 1
    values = [r[0] for r in db.query("SELECT CAST(value_as_number AS DOUBLE PRECISION) FROM cdm.measurement")]
    assert values == ([2.0] if good else [])


def test_leap_second_loads_as_the_last_second_of_its_day(db: Database, tmp_path: Path) -> None:
    """23:59:60Z is valid FHIR: it aborted a DuckDB run and became the next day on PostgreSQL."""
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), _obs(3, date="2016-12-31T23:59:60Z")])
    rep = ingest(db, path)
    assert rep.n_rejected == 0 and rep.n_loaded == 2
    rows = db.query("SELECT CAST(measurement_date AS VARCHAR), CAST(measurement_datetime AS VARCHAR) "
                    "FROM cdm.measurement")
    assert rows == [("2016-12-31", "2016-12-31 23:59:59")]


def test_nul_in_a_record_that_is_not_loaded_never_aborts(db: Database, tmp_path: Path) -> None:
    """A NUL in any string aborted a PostgreSQL run: in a non-study record it is only counted, and a
    Patient reference with a NUL gives no follow-up row."""
    noise = {"resourceType": "Observation", "id": "n1", "status": "final", "note": [{"text": "a\u0000b"}],
             "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
             "subject": {"reference": "Patient/P\u0000"}, "effectiveDateTime": "2024-01-01"}
    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), GOOD, noise])
    rep = ingest(db, path)
    assert rep.n_rejected == 0 and rep.n_loaded == 2 and rep.skipped["not_relevant"] == {"Observation": 1}


def test_followup_ignores_implausible_dates_of_records_not_loaded(db: Database, tmp_path: Path) -> None:
    """Dates 0001-01-01 and 9999-12-31 gave an observation period from year 1 to 9999."""
    def vital(oid: str, date: str) -> dict:
        return {"resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                "subject": {"reference": "Patient/P"}, "effectiveDateTime": date}

    path = write_ndjson(tmp_path / "in.ndjson", [patient("P"), GOOD, vital("v1", "0001-01-01"),
                                                 vital("v2", "9999-12-31"), vital("v3", "2024-02-02")])
    ingest(db, path)
    rows = db.query("SELECT CAST(observation_period_start_date AS VARCHAR), "
                    "CAST(observation_period_end_date AS VARCHAR) FROM cdm.observation_period")
    assert rows == [("2023-05-14", "2024-02-02")]


def test_rules_file_is_validated(tmp_path: Path) -> None:
    from blina_study.adapter.fhir.plausibility import PlausibilityError, Rules, check_ranges, load_plausibility

    bad = tmp_path / "p.yaml"
    bad.write_text("dates: {earliest: '1900-01-01', latest_after_today_days: 366, death_grace_days: 30}\n"
                   "ranges: {mrd: [1, 0]}\n")
    with pytest.raises(PlausibilityError, match="min 1.0 is above max 0.0"):
        load_plausibility(bad)
    bad.write_text("dates: {earliest: '1900-01-01', latest_after_today_days: 366, death_grace_days: 30, x: 1}\n")
    with pytest.raises(PlausibilityError, match=r"dates\.x"):
        load_plausibility(bad)
    short = tmp_path / "short.yaml"
    short.write_text("dates: {earliest: '1900-01-01', latest_after_today_days: 366, death_grace_days: 30}\n"
                     "ranges: {mrd: [0, 1]}\n")
    with pytest.raises(PlausibilityError, match="no plausible range for the quantity variable"):
        check_ranges(load_study(), Rules.for_today(load_plausibility(short)))
    check_ranges(load_study(), Rules.for_today())  # the packaged file covers the packaged study


def test_period_across_a_daylight_saving_change_is_not_inverted(db: Database, tmp_path: Path) -> None:
    """Synthea's Encounter 2022-11-06T01:52:06-04:00 .. 01:07:06-05:00 lasts 15 minutes (clocks went back):
    it was rejected as 'start after end' (local times compared). The truly inverted period still is."""
    ok = blina_admin("dst", "P", "2022-11-06T01:52:06-04:00", "2022-11-06T01:07:06-05:00")
    bad = blina_admin("inv", "P", "2022-11-06T01:07:06-05:00", "2022-11-06T01:52:06-04:00")
    rep = ingest(db, write_ndjson(tmp_path / "in.ndjson", [patient("P"), ok, bad]))
    assert [r.reason for r in rep.rejected] == [
        "period start '2022-11-06T01:07:06-05:00' is after its end '2022-11-06T01:52:06-04:00' "
        "(start <= end; mappings/fhir/plausibility.yaml periods.medication_administration)"]
    assert rep.n_loaded == 2


def test_unit_texts_read_lines_forward_and_again_after_going_back(tmp_path):
    # The ingest asks for the lines of zero values in input order: one pass per file, not one per line
    # (re-reading a 1e6-line file from its start for each of them halved the ingest rate).
    import gzip as _gzip

    from blina_study.adapter.fhir.plausibility import UnitTexts, underflowing_numbers

    lines = [b'{"resourceType":"Observation","id":"o%d","valueQuantity":{"value":%s}}\n' % (i, v)
             for i, v in enumerate([b"0", b"1e-400", b"0.0", b"2e-999", b"5"], 1)]
    for path in (tmp_path / "a.ndjson", tmp_path / "a.ndjson.gz"):
        opener = _gzip.open if path.suffix == ".gz" else open
        with opener(path, "wb") as fh:
            fh.writelines(lines)
        texts = UnitTexts()
        assert [underflowing_numbers(str(path), n, None, texts) for n in (1, 2, 3, 4)] == [
            [], [("valueQuantity.value", "1e-400")], [], [("valueQuantity.value", "2e-999")]]
        assert texts.raw(str(path), 2) == lines[1]  # going back reopens the file
        assert texts.raw(str(path), 5) == lines[4]
        assert texts.raw(str(path), 6) is None
        texts.close()
