"""Every way ``ingest_fhir`` reads NDJSON gives the outcome of the reference reading (one process), for every
input, on DuckDB and on PostgreSQL: the reader with two processes (``workers=2``, NDJSON ranges of a few kB so
that files are split into several ranges read side by side). It found that a line starting with a UTF-8 BOM
was parsed by the workers without removing it: a non-study record on such a line was loaded as a study
record (issue 14). (Run against a reconstruction of the DuckDB line classifier that was measured and not
adopted, bench/duckdb_line_scan.py, it also found the parser differences that classifier's guards missed.)

Compared, per input and engine, each reading into a CDM of its own (DuckDB: a fresh database file;
PostgreSQL: fresh CDM and vocabulary schemas of the test's fresh database): the whole report (``to_dict()``
without ``seconds``), the quarantine text line for line, and every table of the CDM schema (rows sorted, all
columns; ``blina_lineage``, ``blina_person_map`` and ``blina_followup`` included; CDM_SOURCE without the two
dates that record the day of the run). A failure lists, per reading, the first differing items.

Inputs: the FHIR inputs of the other ingest tests (faults, crash kinds, plausibility findings, duplicates,
the clean mixed input, a Bulk export with manifest, an overlay, the generator's Bulk NDJSON center with
noise, the shared Synthea Bulk export) and NDJSON edge cases aimed at a line scanner (line structure, JSON
that parsers read differently, duplicate keys and escapes, code/status/date/reference/id shapes, duplicate
ids, compressed and long-line files, a 20 MB file), each mixed with study records and noise whose dates move
follow-up. Small cases are grouped: every case is a sub-folder (or, for records of other tests, lines of one
shared file) with ids of its own (``<case>.``), so cases cannot interact; ``BLINA_READER_EQ_SPLIT=1`` runs
every case of a group as a test of its own (to find which case of a group differs).

Not vacuous: each comparison checks that the reference outcome has what the input was built for (study
records loaded, noise counted, rejections, follow-up rows, duplicate groups).
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import re
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _helpers import find_shared
from test_fhir_bulk_export import bulk_export, encounter
from test_fhir_duplicates import practitioner, vital
from test_fhir_ingest import (
    BLINA,
    FAULTS,
    ICD10CM,
    LOINC,
    RXNORM,
    UCUM,
    _clean,
    blina_admin,
    patient,
    quantity_obs,
    transaction_bundle,
)
from test_fhir_malformed import CRASHES
from test_fhir_malformed import GOOD as CRASH_GOOD
from test_plausibility import FINDINGS
from test_plausibility import GOOD as PLAUSIBLE_GOOD
from test_plausibility import _obs as plausibility_obs

import blina_study.adapter.fhir.ingest as ingest_module
from blina_study.adapter.db import connect
from blina_study.adapter.errors import BlinaError
from blina_study.adapter.fhir.ingest import ingest_fhir
from blina_study.adapter.omop import create_cdm, load_study_vocabulary

SITE = "s1"
BOM = b"\xef\xbb\xbf"
SYNTHEA = find_shared() / "external" / "synthea-bulk-10"
SPLIT = os.environ.get("BLINA_READER_EQ_SPLIT") == "1"
REFERENCE_WORKERS = 1  # the reading every other one must give the outcome of
# columns of CDM_SOURCE that record the day of the run (adapter.provenance.record_fhir_ingest)
NOW_COLUMNS = {"cdm_source": {"source_release_date", "cdm_release_date"}}
HEIGHT, HEART = "8302-2", "8867-4"  # LOINC codes the study does not read (noise)


# ============================================================================ record builders
def obs(oid: str, pid: str, code: str = HEIGHT, date: Any = "2019-03-03", *, system: Any = LOINC,
        **kw: Any) -> dict:
    """An Observation; by default a noise record (body height) whose date moves follow-up."""
    res = {"resourceType": "Observation", "id": oid, "status": "final",
           "code": {"coding": [{"system": system, "code": code}]},
           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date,
           "valueQuantity": {"value": 120, "unit": "cm"}}
    if date is None:
        del res["effectiveDateTime"]
    res.update(kw)
    return res


def study_obs(oid: str, pid: str, value: Any = 2, date: str = "2023-05-14", **kw: Any) -> dict:
    return quantity_obs(oid, pid, "8122-4", value, "10*9/L", date=date, **kw)


def cond(cid: str, pid: str, code: str = "R50.9", date: Any = "2019-04-04", **kw: Any) -> dict:
    res = {"resourceType": "Condition", "id": cid, "code": {"coding": [{"system": ICD10CM, "code": code}]},
           "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": date}
    res.update(kw)
    return res


def docref(did: str, pid: str, size: int = 0) -> dict:
    return {"resourceType": "DocumentReference", "id": did, "status": "current",
            "subject": {"reference": f"Patient/{pid}"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "QUJD" * (size // 4)}}]}


def immunization(iid: str, pid: str, date: Any) -> dict:
    return {"resourceType": "Immunization", "id": iid, "status": "completed", "vaccineCode": {"text": "x"},
            "patient": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": date}


def med_request(mid: str, pid: str, date: Any) -> dict:
    return {"resourceType": "MedicationRequest", "id": mid, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "26225"}]},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": date}


def noise_admin(aid: str, pid: str, start: str | None, end: str | None) -> dict:
    """A MedicationAdministration of a drug the study does not read (ondansetron)."""
    period = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    return {"resourceType": "MedicationAdministration", "id": aid, "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "26225"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectivePeriod": period}


def base(ns: str) -> list[Any]:
    """Normal records of one case's patient ``<ns>.P``: study records (a measurement, a diagnosis, a
    blinatumomab bag), noise of mapped types (body height, heart rate, fever) and of other types, an
    Encounter. Noise dates span 2022-01-10 .. 2024-03-01, wider than the study records: follow-up matters."""
    p = f"{ns}.P"
    return [
        patient(p),
        study_obs(f"{ns}.cd3", p),
        obs(f"{ns}.h1", p, date="2022-01-10"),
        practitioner(f"{ns}.dr", "Curie"),
        cond(f"{ns}.c1", p, date="2022-06-01"),
        cond(f"{ns}.dx", p, code="C91.02", date="2023-04-20"),
        blina_admin(f"{ns}.ma", p, "2023-05-01", "2023-05-28"),
        docref(f"{ns}.doc", p),
        obs(f"{ns}.h2", p, code=HEART, date="2024-03-01"),
        immunization(f"{ns}.imm", p, "2023-09-09"),
        med_request(f"{ns}.rx", p, "2023-02-02"),
        noise_admin(f"{ns}.ond", p, "2023-06-01", "2023-06-02"),
        encounter(f"{ns}.enc", p, "2023-05-02T10:00:00Z"),
    ]


def mixed(ns: str, extra: list[Any], at: int = 6) -> list[Any]:
    """``base(ns)`` with ``extra`` lines in the middle."""
    lines = base(ns)
    return [*lines[:at], *extra, *lines[at:]]


# ============================================================================ writing files
def enc(line: Any) -> bytes:
    """One NDJSON line as bytes: bytes as they are, text UTF-8 encoded, anything else as JSON (non-ASCII
    written as UTF-8, not escaped: a backslash sends a line of a code-filtered type to Python)."""
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        return line.encode()
    return json.dumps(line, ensure_ascii=False).encode()


def write(path: Path, lines: list[Any], *, sep: bytes = b"\n", end: bytes | None = None, bom: bool = False) -> Path:
    """Write NDJSON lines (see :func:`enc`) joined by ``sep`` and ended by ``end`` (default ``sep``);
    ``.gz`` names are gzip-compressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (BOM if bom else b"") + sep.join(enc(x) for x in lines) + (sep if end is None else end)
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def raw(template: str, ns: str) -> str:
    """A line written as text (duplicate keys, escapes, literals JSON has not): ``{ns}`` is the case's id
    prefix, ``LOINC``/``ICD`` stand for the code systems."""
    return template.replace("LOINC", LOINC).replace("ICD", ICD10CM).replace("{ns}", ns)


def with_fields(text: str, fields: str) -> str:
    """A JSON object's text with more members at its end."""
    return text[:-1] + ", " + fields + "}"


QUANTITY = '"valueQuantity": {"value": 4, "unit": "10*9/L", "system": "http://unitsofmeasure.org", "code": "10*9/L"}'


_ID = re.compile(r'("id": ")(?=[^"])')
_REF = re.compile(r'("reference": "[A-Z][A-Za-z]*/)')


def namespaced(line: Any, ns: str) -> str:
    """A record of another test as text, its ids and relative references prefixed with ``<ns>.`` (so that
    the cases of a group are independent)."""
    text = line if isinstance(line, str) else json.dumps(line)
    return _REF.sub(r"\g<1>" + ns + ".", _ID.sub(r"\g<1>" + ns + ".", text))


# ============================================================================ inputs
@dataclass
class Expect:
    """What the reference outcome of an input must have (so that its comparison compares something)."""

    loaded: bool = True
    noise: bool = True
    rejected: bool = False
    followup: bool = False
    duplicates: bool = False
    error: str | None = None  # the ingest raises: a text of the message


@dataclass
class Input:
    """An input: ``build(root)`` writes it and returns the paths to ingest (and ingest keywords)."""

    build: Callable[[Path], tuple[list[Path], dict[str, Any]]]
    expect: Expect = field(default_factory=Expect)
    chunk: int | None = 4096  # ingest._CHUNK_BYTES for workers=2: several ranges per file (None: the module's)


@dataclass
class LinesCase:
    """A case that is only NDJSON lines (records of another test): the lines of all such cases of a group go
    to one file (one scan instead of dozens), each case's ids prefixed with its name."""

    lines: list[Any]


Case = Callable[[Path, str], None] | LinesCase  # a writer of one case's files into a folder (ids prefixed)


def group(cases: dict[str, Case], expect: Expect) -> dict[str, Input]:
    """One input holding every case in a sub-folder of its own; with BLINA_READER_EQ_SPLIT=1, one input
    per case (its expectations are then not checked: a single case need not have all of them)."""
    def build_all(names: list[str]) -> Callable[[Path], tuple[list[Path], dict[str, Any]]]:
        def build(root: Path) -> tuple[list[Path], dict[str, Any]]:
            merged: list[str] = []
            for name in names:
                case, ns = cases[name], name.replace("_", "-")  # ids: [A-Za-z0-9.-]
                if isinstance(case, LinesCase):
                    merged += [namespaced(x, ns) for x in case.lines]
                else:
                    (root / name).mkdir(parents=True)
                    case(root / name, ns)
            if merged:
                write(root / "lines-cases.ndjson", merged)
            return [root], {}
        return build

    if SPLIT:
        return {name: Input(build_all([name]), Expect(loaded=False, noise=False)) for name in cases}
    return {"": Input(build_all(sorted(cases)), expect)}


# ---------------------------------------------------------------- 1. the inputs of the other ingest tests
def _existing_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}

    lines_case = LinesCase
    good = quantity_obs("ok", "P", "8122-4", 2, "10*9/L")
    for name, (lines, _) in FAULTS.items():  # test_fhir_ingest.test_each_fault_is_rejected_with_location_and_reason
        cases[f"fault-{name}"] = lines_case([patient("P"), good, *[_clean(x) for x in lines]])
    for name, (bad, _) in CRASHES.items():  # test_fhir_malformed
        cases[f"crash-{name}"] = lines_case([patient("P"), CRASH_GOOD, bad,
                                             quantity_obs("ok2", "P", "8122-4", 3, "10*9/L")])
    for name, (records, _) in FINDINGS.items():  # test_plausibility
        extra = [] if name in ("birth_in_the_future", "death_before_birth", "gender_not_in_value_set",
                               "nul_in_a_study_string") else [PLAUSIBLE_GOOD]
        cases[f"finding-{name}"] = lines_case([*records, *extra])
    o1, o2 = quantity_obs("o1", "P", "8122-4", 1, "/uL"), quantity_obs("o2", "P", "8122-4", 2, "/uL")
    o2b = o2 | {"valueQuantity": {"value": 3, "unit": "/uL", "system": UCUM, "code": "/uL"}}
    cases["ingest-duplicates"] = lines_case([patient("P"), o1, o1, o2, o2b])
    cases["ingest-rejected-patient"] = lines_case([patient("P", birthDate="2012-13-01"),
                                                   quantity_obs("o1", "P", "8122-4", 1, "/uL")])
    cases["ingest-not-done"] = lines_case([
        patient("P"), quantity_obs("o1", "P", "8122-4", 1, "/uL", status="entered-in-error"),
        quantity_obs("o2", "P", "8122-4", 1, "/uL", status="cancelled"),
        blina_admin("m1", "P", "2023-01-01", "2023-01-02", status="not-done"),
        cond("c1", "P", code="C91.02", date="2023-04-20",
             verificationStatus={"coding": [{"code": "entered-in-error"}]}),
    ])
    cases["ingest-followup-not-done"] = lines_case([
        patient("P"), quantity_obs("cd3", "P", "8122-4", 950, "/uL", date="2023-06-01"),
        vital("v1", "2023-08-01"), vital("v2", "2024-01-01") | {"status": "entered-in-error"},
        vital("v3", "2023-09-30"), vital("v4", "2023-02-30"), vital("v5", "2023-01-15") | {"status": "cancelled"},
        vital("v6", "2023-03-01"),
    ])
    cases["plausibility-leap-second"] = lines_case([patient("P"), plausibility_obs(3, date="2016-12-31T23:59:60Z")])
    cases["plausibility-nul-noise"] = lines_case([
        patient("P"), PLAUSIBLE_GOOD,
        {"resourceType": "Observation", "id": "n1", "status": "final", "note": [{"text": "a\u0000b"}],
         "code": {"coding": [{"system": LOINC, "code": HEIGHT}]}, "subject": {"reference": "Patient/P\u0000"},
         "effectiveDateTime": "2024-01-01"}])
    cases["plausibility-followup-window"] = lines_case([
        patient("P"), PLAUSIBLE_GOOD, obs("v1", "P", date="0001-01-01"), obs("v2", "P", date="9999-12-31"),
        obs("v3", "P", date="2024-02-02")])
    cases["plausibility-dst"] = lines_case([
        patient("P"), blina_admin("dst", "P", "2022-11-06T01:52:06-04:00", "2022-11-06T01:07:06-05:00"),
        blina_admin("inv", "P", "2022-11-06T01:07:06-05:00", "2022-11-06T01:52:06-04:00")])
    enc1 = encounter("e1", "A", start="2022-11-06T01:52:06-04:00")
    enc1["period"]["end"] = "2022-11-06T01:07:06-05:00"
    enc2 = encounter("e2", "A", start="2022-11-06T03:00:00-04:00")
    enc2["period"]["end"] = "2022-11-06T01:07:06-05:00"
    cases["bulk-encounter-dst"] = lines_case([patient("A"), enc1, enc2])

    def bom_crlf(d: Path, ns: str) -> None:  # test_fhir_malformed.test_byte_order_mark_does_not_reject_the_first_record
        write(d / "bom.ndjson", [namespaced(patient("P"), ns), namespaced(CRASH_GOOD, ns)], sep=b"\r\n", bom=True)
        write(d / "bom.json", [namespaced(quantity_obs("o2", "P", "8122-4", 3, "10*9/L"), ns)], end=b"", bom=True)

    cases["malformed-bom-crlf"] = bom_crlf

    def files_case(files: dict[str, list[Any]]) -> Case:
        def write_case(d: Path, ns: str) -> None:
            for fname, lines in files.items():
                write(d / fname, [namespaced(x, ns) for x in lines])
        return write_case

    cases["dupes-conflicting-noise"] = files_case({  # test_fhir_duplicates
        "a.ndjson": [patient("P"), quantity_obs("cd3", "P", "8122-4", 950, "/uL", date="2023-06-01"),
                     vital("v1", "2023-08-01"), practitioner("dr", "Curie")],
        "b.ndjson": [vital("v1", "2024-12-31", value=99), practitioner("dr", "Meitner"), vital("v2", "2023-07-01")]})
    cases["dupes-identical-noise"] = files_case({
        "a.ndjson": [patient("P"), vital("v1", "2023-08-01"), practitioner("dr", "Curie")],
        "b.ndjson": [dict(reversed(vital("v1", "2023-08-01").items())), practitioner("dr", "Curie")]})
    cases["dupes-study-and-noise"] = files_case({
        "a.ndjson": [patient("P"), quantity_obs("x", "P", "8122-4", 950, "/uL")],
        "b.ndjson": [vital("x", "2023-08-01")]})
    cases["dupes-in-bundles"] = files_case({
        "a.ndjson": [{"resourceType": "Bundle", "type": "collection",
                      "entry": [{"resource": patient("P")}, {"resource": practitioner("dr", "Curie")}]},
                     practitioner("dr", "Meitner")]})
    return cases


def _build_clean_input(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """test_fhir_ingest's ``clean_input``: a transaction Bundle, Bulk NDJSON (a .gz among them), a single
    resource file, noise of other types and a file that is not FHIR."""
    (root / "bulk").mkdir(parents=True)
    a = [patient("A", deceasedDateTime="2024-02-01"), blina_admin("ma-a1", "A", "2023-05-01", "2023-05-28"),
         quantity_obs("mrd-a", "A", "MRD-FCM-BM", 0.01, "%", system=BLINA, comparator="<", date="2023-04-28"),
         cond("c-a", "A", code="C91.02", date="2023-04-20"), immunization("imm-a", "A", "2020-01-01")]
    (root / "bundle-A.json").write_text(json.dumps(transaction_bundle(a)))
    write(root / "bulk" / "Patient.ndjson", [patient("B", gender="male", birthDate="2015-06")])
    write(root / "bulk" / "Observation.ndjson.gz", [
        quantity_obs("cd3-b", "B", "8122-4", 950, "/uL", date="2023-06-01T08:30:00+02:00"),
        quantity_obs("il6-b", "B", "26881-3", 0.5, "ng/mL"),
        {"resourceType": "Observation", "id": "bcr-b", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "46434-7"}]}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2023-03-01",
         "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA11882-0"}]}},
        obs("vital-b", "B", date="2024-05-01")])
    write(root / "bulk" / "MedicationAdministration.ndjson", [
        {"resourceType": "MedicationAdministration", "id": "ma-b1", "status": "completed",
         "medicationReference": {"reference": "Medication/blin"}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2023-06-02"},
        {"resourceType": "MedicationAdministration", "id": "ma-b2", "status": "completed",
         "contained": [{"resourceType": "Medication", "id": "m1",
                        "code": {"coding": [{"system": RXNORM, "code": "3264"}]}}],
         "medicationReference": {"reference": "#m1"}, "subject": {"reference": "Patient/B"},
         "effectiveDateTime": "2023-05-20"}])
    write(root / "bulk" / "Medication.ndjson", [
        {"resourceType": "Medication", "id": "blin", "code": {"coding": [{"system": RXNORM, "code": "1597267"}]}}])
    write(root / "bulk" / "Encounter.ndjson", [encounter("enc-b", "B", "2024-03-01T10:00:00Z")])
    write(root / "bulk" / "DocumentReference.ndjson", [docref(f"doc{i}", "B") for i in range(3)])
    (root / "proc.json").write_text(json.dumps(
        {"resourceType": "Procedure", "id": "hsct-b", "status": "completed",
         "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "38240"}]},
         "subject": {"reference": "Patient/B"}, "performedDateTime": "2023-09-01"}))
    (root / "README.txt").write_text("not FHIR")
    return [root], {}


def _build_bulk_export(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """test_fhir_bulk_export's export (manifest, error file, log), one stated count wrong (a finding), plus
    noise of mapped and other types."""
    bulk_export(root, count_patient=3)
    write(root / "Practitioner.000.ndjson", [practitioner(f"dr{i}", "Curie") for i in range(3)])
    write(root / "Observation.001.ndjson", [obs("h1", "A", date="2021-01-01"), obs("h2", "B", date="2025-01-01")])
    return [root], {}


def _build_overlay(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """test_fhir_ingest's overlay case: local codes with a system and one that matches any system (the
    scanner's textual code test must know them)."""
    from blina_study.adapter.study import load_overlay

    overlay_file = root.parent / "site.yaml"
    root.mkdir(parents=True)
    overlay_file.write_text(
        "site_id: s1\npatient_identifier_system: urn:hospital:mrn\n"
        "variables:\n  mrd: [{source_value: MRD-LOC, system: 'urn:lab', unit: '%'}]\n"
        "  cd3_abs: [{source_value: CD3L, unit: '/uL'}]\n")
    nd = {"resourceType": "Observation", "id": "nd", "status": "final",
          "code": {"coding": [{"system": "urn:lab", "code": "MRD-LOC"}]}, "subject": {"reference": "Patient/P"},
          "effectiveDateTime": "2023-05-02",
          "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA11883-8"}]}}
    write(root / "in.ndjson", [
        patient("P", identifier=[{"system": "urn:other", "value": "X1"},
                                 {"system": "urn:hospital:mrn", "value": "H-77"}]),
        nd,
        quantity_obs("cd3", "P", "CD3L", 800, "/uL", system="urn:lis") | {"valueQuantity": {"value": 800}},
        quantity_obs("other", "P", "MRD-LOC", 1, "%", system="urn:elsewhere", date="2025-02-02"),
        # the any-system code under yet another system: study-relevant; a code that only contains it: noise
        quantity_obs("cd3b", "P", "CD3L", 700, "/uL", system="urn:x", date="2023-06-01"),
        obs("h1", "P", code="CD3LX", date="2019-01-01"), obs("h2", "P", date="2025-03-03"),
        practitioner("dr", "Curie"),
    ])
    return [root], {"overlay": load_overlay(overlay_file)}


def _build_synth(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """The generator's center2 (Bulk NDJSON), with 3 noise records per study record."""
    from blina_study.adapter.synth import generate

    generate(root, patients=40, noise=3)
    return [root / "center2_bulk_ndjson"], {}


def _build_synthea(root: Path) -> tuple[list[Path], dict[str, Any]]:
    if not SYNTHEA.is_dir():
        pytest.skip(f"{SYNTHEA} not present")
    return [SYNTHEA], {}


# ---------------------------------------------------------------- 2. NDJSON edge cases for the scanner
def _line_cases() -> dict[str, Case]:
    """Line structure: blank and whitespace lines, line ends, BOMs, CR, bytes that are not UTF-8."""
    c: dict[str, Case] = {}

    def blank_lines(d: Path, ns: str) -> None:
        lines = base(ns)
        write(d / "x.ndjson", ["", *lines[:3], "", "", *lines[3:7], obs(f"{ns}.h9", f"{ns}.P", date="2019-01-05"),
                               "", study_obs(f"{ns}.cd3b", f"{ns}.P", 3), *lines[7:], ""])

    def whitespace_lines(d: Path, ns: str) -> None:
        write(d / "x.ndjson", mixed(ns, [" ", "\t", " \t  ", b"\x0b", b"\x0c", b" \x0c ",
                                         obs(f"{ns}.h9", f"{ns}.P", date="2019-01-05"),
                                         b"\xc2\xa0", "\u3000", b"\x1c",
                                         "   " + json.dumps(practitioner(f"{ns}.d2", "X")),
                                         "\t" + json.dumps(obs(f"{ns}.h8", f"{ns}.P", date="2025-01-05")) + "  \t",
                                         "# a comment", '"quoted", "csv"', "a,b,c"]))

    def no_trailing_newline(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        write(d / "a.ndjson", [*base(ns), obs(f"{ns}.h9", p, date="2019-01-05")], end=b"")
        write(d / "b.ndjson", [practitioner(f"{ns}.d2", "X"), study_obs(f"{ns}.cd3b", p, 3)], end=b"")
        write(d / "c.ndjson", [obs(f"{ns}.h8", p, date="2025-02-02"), '{"resourceType": "Observation", "id": '],
              end=b"")
        write(d / "d.ndjson", [obs(f"{ns}.h7", p, date="2025-02-03")], end=b"")

    def trailing_newlines(d: Path, ns: str) -> None:
        write(d / "x.ndjson", [*base(ns), obs(f"{ns}.h9", f"{ns}.P", date="2019-01-05")], end=b"\n\n\n\n")
        write(d / "y.ndjson", [practitioner(f"{ns}.d2", "X")], end=b"\n \n\t\n")

    def bom_start(d: Path, ns: str) -> None:
        write(d / "x.ndjson", [*base(ns), obs(f"{ns}.h9", f"{ns}.P", date="2019-01-05")], bom=True)
        write(d / "y.ndjson", [obs(f"{ns}.h8", f"{ns}.P", date="2025-01-05"), practitioner(f"{ns}.d2", "X")], bom=True)

    def bom_later(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        write(d / "x.ndjson", mixed(ns, [
            BOM + enc(obs(f"{ns}.h9", p, date="2019-01-05")), BOM + enc(study_obs(f"{ns}.cd3b", p, 3)), BOM,
            BOM + BOM + enc(obs(f"{ns}.h8", p, date="2019-01-04")), b"  " + BOM + enc(practitioner(f"{ns}.d2", "X")),
            BOM + b"   ", BOM + enc(practitioner(f"{ns}.d3", "Y")), enc(practitioner(f"{ns}.d4", "Z")) + BOM]))

    def crlf(d: Path, ns: str) -> None:
        write(d / "x.ndjson", [*base(ns), obs(f"{ns}.h9", f"{ns}.P", date="2019-01-05"), "",
                               '{"resourceType": "Observation", "id": ', practitioner(f"{ns}.d2", "X")], sep=b"\r\n")

    def mixed_crlf(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        write(d / "x.ndjson", mixed(ns, [enc(obs(f"{ns}.h9", p, date="2019-01-05")) + b"\r",
                                         b'{"resourceType": "Observation", "id": \r',
                                         enc(study_obs(f"{ns}.cd3b", p, 3)) + b"\r", b"\r",
                                         enc(practitioner(f"{ns}.d2", "X")) + b"\r\r"]))

    def bare_cr(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        write(d / "x.ndjson", mixed(ns, [
            f'{{"resourceType": "Practitioner",\r"id": "{ns}.cr1"}}',
            json.dumps(obs(f"{ns}.h9", p, date="2019-01-05")).replace(', "status"', ',\r"status"'),
            "\r", "\r\r", f'{{"resourceType": "Practitioner", "id": "{ns}.cr2", "name": [{{"text": "a\rb"}}]}}']))

    bad_utf8 = {"byte-ff": b"\xff", "encoded-surrogate": b"\xed\xa0\x80", "beyond-unicode": b"\xf4\x90\x80\x80",
                "overlong": b"\xc0\xaf", "cut-sequence": b"\xe2\x82", "latin1": b"caf\xe9"}
    for kind, blob in bad_utf8.items():
        def invalid_utf8(d: Path, ns: str, blob: bytes = blob) -> None:
            p = f"{ns}.P"
            name = enc(practitioner(f"{ns}.bad", "NAME")).replace(b"NAME", blob)
            note = enc(obs(f"{ns}.h9", p, date="2019-01-05", note=[{"text": "NOTE"}])).replace(b"NOTE", blob)
            write(d / "x.ndjson", mixed(ns, [name, note]))
        c[f"utf8-{kind}"] = invalid_utf8

    def nul_byte(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        write(d / "x.ndjson", mixed(ns, [enc(practitioner(f"{ns}.nul", "NAME")).replace(b"NAME", b"a\x00b"),
                                         enc(obs(f"{ns}.h9", p, date="2019-01-05")) + b"\x00", b"\x00"]))

    def unicode_separators(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        text = "a\u2028b\u2029c\u0085d\u00a0e"
        write(d / "x.ndjson", mixed(ns, [obs(f"{ns}.h9", p, date="2019-01-05", note=[{"text": text}]),
                                         study_obs(f"{ns}.cd3b", p, 3, note=[{"text": text}]),
                                         practitioner(f"{ns}.d2", text)]))

    def control_chars(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        lines = [enc(practitioner(f"{ns}.t{i}", "NAME")).replace(b"NAME", b"a" + bytes([ch]) + b"b")
                 for i, ch in enumerate((0x09, 0x01, 0x1F, 0x7F))]
        lines.append(enc(obs(f"{ns}.h9", p, date="2019-01-05", note=[{"text": "NOTE"}])).replace(b"NOTE", b"a\tb"))
        write(d / "x.ndjson", mixed(ns, lines))

    def empty_files(d: Path, ns: str) -> None:
        (d / "empty.ndjson").write_bytes(b"")
        (d / "blank.ndjson").write_bytes(b"\n\n  \n")
        (d / "bom_only.ndjson").write_bytes(BOM)
        (d / "bom_newline.ndjson").write_bytes(BOM + b"\n")
        write(d / "x.ndjson", base(ns))

    c.update(blank_lines=blank_lines, whitespace_lines=whitespace_lines, no_trailing_newline=no_trailing_newline,
             trailing_newlines=trailing_newlines, bom_start=bom_start, bom_later=bom_later, crlf=crlf,
             mixed_crlf=mixed_crlf, bare_cr=bare_cr, nul_byte=nul_byte, unicode_separators=unicode_separators,
             control_chars=control_chars, empty_files=empty_files)
    return c


# JSON texts the two parsers may read differently (orjson is the reference: what it rejects is malformed)
NUMBERS = {
    "nan": ["NaN", "-NaN", "nan", "NAN", "-nan"],
    "infinity": ["Infinity", "-Infinity", "inf", "-inf", "INF", "Inf", "infinity", "+Infinity"],
    "overflow": ["1e400", "-1e400", "1E+400", "1.8e308", "1" + "0" * 400, "-" + "1" * 400,
                 "1" + "0" * 250 + "e60", "-1" + "0" * 250 + "e60", "1" + "0" * 299 + ".5e9"],
    "in-range": ["1e-400", "0." + "0" * 400 + "1", "1.5e308", "18446744073709551616", "-9223372036854775809",
                 "123456789012345678901234567890", "1" + "0" * 299, "4.9e-324", "1E5", "-0"],
    "bad-number": ["01", "0x10", "+1", ".5", "1.", "1e", "--1", "1_000"],
}
SYNTAX = {
    "trailing-comma-object": '{"resourceType": "RT", "id": "ID", }',
    "trailing-comma-array": '{"resourceType": "RT", "id": "ID", "name": [{"family": "a"}, ]}',
    "trailing-comma-newline-ws": '{"resourceType": "RT", "id": "ID",\t\f }',
    "comment-block": '{"resourceType": "RT", /* c */ "id": "ID"}',
    "comment-line": '{"resourceType": "RT", "id": "ID"} // c',
    "single-quotes": "{'resourceType': 'RT', 'id': 'ID'}",
    "unquoted-key": '{resourceType: "RT", "id": "ID"}',
    "trailing-garbage": '{"resourceType": "RT", "id": "ID"} x',
    "two-objects": '{"resourceType": "RT", "id": "ID"}{"resourceType": "RT", "id": "ID2"}',
    "object-then-comma": '{"resourceType": "RT", "id": "ID"},',
    "missing-colon": '{"resourceType" "RT", "id": "ID"}',
    "unclosed": '{"resourceType": "RT", "id": "ID"',
    "true-caps": '{"resourceType": "RT", "id": "ID", "active": True}',
    "undefined": '{"resourceType": "RT", "id": "ID", "active": undefined}',
}
ESCAPES = {
    "lone-high-surrogate": "\\ud800", "lone-low-surrogate": "\\udfff", "reversed-pair": "\\ude00\\ud83d",
    "valid-pair": "\\ud83d\\ude00", "nul": "\\u0000", "bad-x": "\\x41", "bad-quote": "\\'", "bad-U": "\\U0041",
    "short-u": "\\u12", "slash": "\\/", "high-then-text": "\\ud800abc",
}


def _json_cases() -> dict[str, Case]:
    """Numbers, literals, syntax, escapes and nesting, each in records of every kind the scan handles
    differently: a type nothing maps (Practitioner), a follow-up type without code filter (MedicationRequest,
    Immunization), a code-filtered noise record (body height), a study record."""
    c: dict[str, Case] = {}

    def number_lines(ns: str, p: str, tag: str, token: str, i: int) -> list[str]:
        return [
            f'{{"resourceType": "Practitioner", "id": "{ns}.{tag}{i}p", '
            f'"extension": [{{"url": "u", "valueDecimal": {token}}}]}}',
            f'{{"resourceType": "MedicationRequest", "id": "{ns}.{tag}{i}r", "status": "active", "intent": "order", '
            f'"subject": {{"reference": "Patient/{p}"}}, "authoredOn": "2019-0{1 + i % 9}-11", '
            f'"dosageInstruction": [{{"doseAndRate": [{{"doseQuantity": {{"value": {token}}}}}]}}]}}',
            json.dumps(obs(f"{ns}.{tag}{i}h", p, date=f"2025-0{1 + i % 9}-12"))
            .replace('"value": 120', f'"value": {token}'),
            json.dumps(study_obs(f"{ns}.{tag}{i}s", p, date="2023-05-15")).replace('"value": 2', f'"value": {token}'),
        ]

    for family, tokens in NUMBERS.items():
        def numbers(d: Path, ns: str, tokens: list[str] = tokens, family: str = family) -> None:
            extra = [line for i, t in enumerate(tokens) for line in number_lines(ns, f"{ns}.P", "n", t, i)]
            write(d / "x.ndjson", mixed(ns, extra))
        c[f"number-{family}"] = numbers

    def syntax(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        extra = []
        for i, (_, text) in enumerate(sorted(SYNTAX.items())):
            extra.append(text.replace("RT", "Practitioner").replace("ID2", f"{ns}.sx{i}b").replace("ID", f"{ns}.sx{i}"))
            noise = json.dumps(obs(f"{ns}.so{i}", p, date=f"2019-0{1 + i % 9}-13"))
            extra.append(text.replace('{"resourceType": "RT", "id": "ID"', noise[:-1]).replace("RT", "Observation")
                         .replace("ID2", f"{ns}.so{i}b").replace("ID", f"{ns}.so{i}x"))
        write(d / "x.ndjson", mixed(ns, extra))

    def escapes(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        extra = []
        for i, (_, esc) in enumerate(sorted(ESCAPES.items())):
            extra += [
                f'{{"resourceType": "Practitioner", "id": "{ns}.e{i}p", "name": [{{"family": "a{esc}b"}}]}}',
                f'{{"resourceType": "Immunization", "id": "{ns}.e{i}i", "status": "completed", "vaccineCode": '
                f'{{"text": "x{esc}"}}, "patient": {{"reference": "Patient/{p}"}}, '
                f'"occurrenceDateTime": "2019-02-0{1 + i % 9}"}}',
                json.dumps(obs(f"{ns}.e{i}h", p, date=f"2025-03-0{1 + i % 9}", note=[{"text": "NOTE"}]))
                .replace("NOTE", f"n{esc}"),
            ]
        write(d / "x.ndjson", mixed(ns, extra))

    def nesting(d: Path, ns: str) -> None:
        p = f"{ns}.P"

        def deep(n: int, arrays: bool) -> str:
            return ("[" * n + "1" + "]" * n) if arrays else ('{"a": ' * n + "1" + "}" * n)

        extra = []
        for i, (n, arrays) in enumerate([(1025, True), (1025, False), (1100, True), (1023, True), (1020, False),
                                         (600, True), (300, False), (254, True), (256, False)]):
            extra += [
                f'{{"resourceType": "Practitioner", "id": "{ns}.d{i}p", "extension": [{deep(n, arrays)}]}}',
                json.dumps(obs(f"{ns}.d{i}h", p, date=f"2019-0{1 + i % 9}-14", extension=["X"]))
                .replace('"X"', deep(n, arrays)),
                json.dumps(med_request(f"{ns}.d{i}r", p, f"2025-0{1 + i % 9}-14") | {"extension": ["X"]})
                .replace('"X"', deep(n, arrays)),
            ]
        extra.append(json.dumps(study_obs(f"{ns}.dS", p, extension=["X"])).replace('"X"', deep(300, False)))
        # many brackets inside a string (not nesting) and a deep record without a long text
        extra.append(json.dumps(practitioner(f"{ns}.br", "[" * 1500 + "{" * 600)))
        write(d / "x.ndjson", mixed(ns, extra))

    c.update(syntax=syntax, escapes=escapes, nesting=nesting)
    return c


def _key_cases() -> dict[str, Case]:
    """Duplicate JSON keys (orjson keeps the last), escapes that spell a study code or a key, codes and
    statuses of every JSON type, coding shapes."""
    c: dict[str, Case] = {}
    obs_tail = ('"status": "final", "code": {"coding": [{"system": "LOINC", "code": "CODE"}]}, '
                '"subject": {"reference": "Patient/{ns}.P"}, "effectiveDateTime": "DATE", ' + QUANTITY)

    def o(oid: str, code: str = HEIGHT, date: str = "2019-05-05", tail: str = obs_tail) -> str:
        return ('{"resourceType": "Observation", "id": "{ns}.' + oid + '", '
                + tail.replace("CODE", code).replace("DATE", date) + "}")

    dup_keys = [
        '{"resourceType": "Practitioner", "resourceType": "Observation", "id": "{ns}.k1", ' + obs_tail.replace(
            "CODE", "8122-4").replace("DATE", "2023-05-16") + "}",
        '{"resourceType": "Observation", "resourceType": "Practitioner", "id": "{ns}.k2", '
        + obs_tail.replace("CODE", HEIGHT).replace("DATE", "2019-05-06") + "}",
        '{"resourceType": "Practitioner", "resourceType": "Observation", "id": "{ns}.k3", '
        + obs_tail.replace("CODE", HEIGHT).replace("DATE", "2019-05-07") + "}",
        o("k4a", date="2019-05-08").replace('"id": "{ns}.k4a"', '"id": "{ns}.k4a", "id": "{ns}.k4b"'),
        o("k4b", date="2025-05-08"),  # the id the line above has for orjson, other content
        o("k5", date="2019-05-09").replace('"subject": {"reference": "Patient/{ns}.P"}',
                                           '"subject": {"reference": "Patient/{ns}.P"}, '
                                           '"subject": {"reference": "Patient/{ns}.Q"}'),
        o("k6", date="2019-05-10").replace('"effectiveDateTime": "2019-05-10"',
                                           '"effectiveDateTime": "2019-05-10", "effectiveDateTime": "2023-01-01"'),
        o("k7", date="2023-01-02").replace('"effectiveDateTime": "2023-01-02"',
                                           '"effectiveDateTime": "2023-01-02", "effectiveDateTime": "2025-05-10"'),
        o("k8", date="2019-05-11").replace('"status": "final"', '"status": "final", "status": "entered-in-error"'),
        o("k9", date="2025-05-11").replace('"status": "final"', '"status": "entered-in-error", "status": "final"'),
        o("k10", date="2019-05-12").replace('"reference": "Patient/{ns}.P"',
                                            '"reference": "Patient/{ns}.Q", "reference": "Patient/{ns}.P"'),
        o("k11", date="2025-05-12").replace('"reference": "Patient/{ns}.P"',
                                            '"reference": "Patient/{ns}.P", "reference": "Patient/{ns}.Q"'),
        o("k12", code=HEIGHT, date="2023-05-17").replace(f'"code": "{HEIGHT}"',
                                                          f'"code": "{HEIGHT}", "code": "8122-4"'),
        o("k13", code="8122-4", date="2019-05-13").replace('"code": "8122-4"',
                                                           f'"code": "8122-4", "code": "{HEIGHT}"'),
        o("k14", date="2019-05-14").replace('"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}]',
                                            '"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}, '
                                            '{"system": "LOINC", "code": "' + HEART + '", "code": "8122-4"}]'),
        o("k15", date="2019-05-15").replace('"code": {"coding"', '"code": {"coding": [], "coding"'),
        o("k16", date="2019-05-16").replace('"code": {"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}]}',
                                            '"code": {"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}]}, '
                                            '"code": {"coding": [{"system": "LOINC", "code": "' + HEART + '"}]}'),
        o("k17", tail=obs_tail.replace('"effectiveDateTime": "DATE"', '"effectivePeriod": '
                                       '{"start": "2019-05-17", "start": "2023-01-05", "end": "2023-01-06"}')),
        o("k18", tail=obs_tail.replace('"effectiveDateTime": "DATE"', '"effectivePeriod": '
                                       '{"start": "2023-01-05", "end": "2025-05-18", "end": "2023-01-06"}')),
        '{"resourceType": "Condition", "id": "{ns}.k19", "code": {"coding": [{"system": "ICD", "code": "R50.9"}]}, '
        '"subject": {"reference": "Patient/{ns}.P"}, "onsetDateTime": "2019-05-19", "verificationStatus": '
        '{"coding": [{"code": "entered-in-error"}], "coding": [{"code": "confirmed"}]}}',
        '{"resourceType": "Condition", "id": "{ns}.k20", "code": {"coding": [{"system": "ICD", "code": "R50.9"}]}, '
        '"subject": {"reference": "Patient/{ns}.P"}, "onsetDateTime": "2025-05-20", "verificationStatus": '
        '{"coding": [{"code": "confirmed"}], "coding": [{"code": "entered-in-error"}]}}',
        '{"resourceType": "Condition", "id": "{ns}.k21", "code": {"coding": [{"system": "ICD", "code": "R50.9"}]}, '
        '"subject": {"reference": "Patient/{ns}.P"}, "onsetDateTime": "2019-05-21", "verificationStatus": '
        '{"coding": [{"code": "entered-in-error", "code": "confirmed"}]}}',
        '{"resourceType": "Immunization", "id": "{ns}.k22", "status": "completed", "vaccineCode": {"text": "x"}, '
        '"patient": {"reference": "Patient/{ns}.Q", "reference": "Patient/{ns}.P"}, '
        '"occurrenceDateTime": "2019-05-22"}',
        '{"resourceType": "Practitioner", "id": "{ns}.k23", "extension": [{"url": "a", "url": "b"}]}',
        o("k24", date="2019-05-24").replace('"status": "final"', '"status": "final", "status": "final"'),
        '{"resourceType": "Practitioner", "id": "{ns}.k25", "id": "{ns}.k25"}',
    ]
    escapes = [
        o("x1", code="812\\u0032-4", date="2023-05-18"),
        o("x2", code="8122-4", date="2023-05-19").replace('"system": "LOINC"', '"system": "http:\\/\\/loinc.org"'),
        o("x3", code=HEIGHT, date="2019-06-03").replace('"system": "LOINC"', '"system": "http:\\/\\/loinc.org"'),
        o("x4", code="830\\u0032-2", date="2025-06-04"),
        o("x5", date="2019-06-05").replace('"resourceType": "Observation"', '"resourceType": "Observ\\u0061tion"'),
        o("x6", code="8122-4", date="2023-05-20").replace('"resourceType": "Observation"',
                                                          '"resourceType": "Observ\\u0061tion"'),
        '{"resourceType": "Practiti\\u006fner", "id": "{ns}.x7"}',
        o("x8", date="2019-06-08").replace('"resourceType"', '"resourc\\u0065Type"'),
        o("x9", code="8122-4", date="2023-05-21").replace('"code": {', '"\\u0063ode": {'),
        o("x10", date="2019-06-10").replace('"Patient/{ns}.P"', '"Patient\\/{ns}.P"'),
        o("x11", date="2019\\u002d06\\u002d11"),
        o("x12", date="2019-06-12").replace('"code": "' + HEIGHT + '"',
                                            '"code": "' + HEIGHT + '", "display": "8122-4"'),
        o("x13", code="8122-45", date="2019-06-13"),
        o("x14", code="C91.02x", date="2019-06-14"),
        o("x15", code="8122-4", date="2019-06-15").replace('"system": "LOINC"', '"system": "http://snomed.info/sct"'),
        '{"resourceType": "Bundl\\u0065", "type": "collection", "entry": [{"resource": '
        + json.dumps(obs("{ns}.x16", "{ns}.P", date="2019-06-16")) + "}]}",
        o("x17", code="8122-4", date="2023-05-22").replace('"code": "8122-4"', '"code": "8122\\u002d4"'),
    ]
    codes = []
    for i, code in enumerate(['["8302-2"]', '{"x": 1}', "8302", "true", "null", "1.5", '["8122-4"]', "[]", "{}"]):
        codes.append(o(f"c{i}", date=f"2019-07-{10 + i}").replace(f'"code": "{HEIGHT}"', f'"code": {code}'))
    for i, system in enumerate(['["x"]', '{"a": 1}', "7", "null", "false"]):
        codes.append(o(f"s{i}", date=f"2025-07-{10 + i}").replace('"system": "LOINC"', f'"system": {system}'))
    for i, (rtype, key) in enumerate([("Condition", "code"), ("Procedure", "code"),
                                      ("MedicationAdministration", "medicationCodeableConcept")]):
        dates = {"Condition": '"onsetDateTime": "2019-08-0D"', "Procedure": '"performedDateTime": "2019-08-0D"',
                 "MedicationAdministration": '"effectiveDateTime": "2019-08-0D"'}[rtype]
        for j, code in enumerate(['["x"]', '{"x": 1}', "5", '"R50.9"']):
            codes.append(f'{{"resourceType": "{rtype}", "id": "{{ns}}.t{i}{j}", "status": "completed", '
                         f'"{key}": {{"coding": [{{"system": "urn:x", "code": {code}}}]}}, '
                         f'"subject": {{"reference": "Patient/{{ns}}.P"}}, {dates.replace("D", str(j + 1))}}}')
    shapes = [
        o("sh1", date="2019-09-01").replace('"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}]',
                                            '"coding": {"system": "LOINC", "code": "' + HEIGHT + '"}'),
        o("sh2", code="8122-4", date="2023-05-23").replace('"coding": [{"system": "LOINC", "code": "8122-4"}]',
                                                           '"coding": {"system": "LOINC", "code": "8122-4"}'),
        o("sh3", date="2019-09-03").replace('"coding": [{', '"coding": [null, {'),
        o("sh4", code="8122-4", date="2023-05-24").replace('"coding": [{', '"coding": [null, {'),
        o("sh5", date="2019-09-05").replace('"coding": [{', '"coding": ["x", {'),
        o("sh6", code="8122-4", date="2019-09-06").replace('"coding": [{', '"coding": [[{').replace('}]}', '}]]}', 1),
        o("sh7", code="8122-4", date="2023-05-25").replace(
            '"code": {"coding": [{"system": "LOINC", "code": "8122-4"}]}',
            '"code": [{"coding": [{"system": "LOINC", "code": "8122-4"}]}]'),
        o("sh8", date="2019-09-08").replace('"code": {', '"codeCodeableConcept": {'),
        o("sh9", code="8122-4", date="2023-05-26").replace('"code": {', '"codeCodeableConcept": {'),
        o("sh10", date="2019-09-10").replace('"code": {"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}]}',
                                             '"code": {"text": "height"}'),
        o("sh11", date="2019-09-11").replace(
            '"code": {"coding": [{"system": "LOINC", "code": "' + HEIGHT + '"}]}, ', ""),
        o("sh12", date="2019-09-12").replace('"coding": [{', '"coding": [{"system": "LOINC", "code": "' + HEART
                                             + '"}, {'),
        o("sh13", date="2019-09-13").replace('"code": {"coding"', '"code": {"text": "t", "coding"'),
        '{"resourceType": "MedicationAdministration", "id": "{ns}.sh14", "status": "completed", '
        '"medicationReference": {"reference": "Medication/{ns}.none"}, "subject": {"reference": "Patient/{ns}.P"}, '
        '"effectiveDateTime": "2019-09-14"}',
        '{"resourceType": "MedicationAdministration", "id": "{ns}.sh15", "status": "completed", '
        '"medicationCodeableConcept": [{"coding": [{"system": "' + RXNORM + '", "code": "26225"}]}], '
        '"subject": {"reference": "Patient/{ns}.P"}, "effectiveDateTime": "2019-09-15"}',
    ]
    statuses = []
    for i, status in enumerate([
        "5", '["final"]', '{"coding": [{"code": "entered-in-error"}]}', '{"coding": 5}',
        '{"coding": "entered-in-error"}', '{"coding": {"code": "entered-in-error"}}', '{"coding": true}',
        '{"coding": false}', '{"coding": [{"code": ["x"]}]}',
        '{"coding": [{"code": {"a": 1}}]}', '{"coding": [{"code": 5}]}', '{"coding": [5, "x", null]}', '"cancelled"',
        '"not-done"', '"ENTERED-IN-ERROR"', "null", '{"coding": null}', '{"text": "entered-in-error"}', '""',
        '{"coding": [{"code": "entered-in-error", "code": "final"}]}', '{"coding": [{"code": "final"}], "coding": 5}',
    ]):
        side = "2019-10" if i % 2 else "2025-10"
        statuses.append(o(f"st{i}", date=f"{side}-{10 + i}").replace('"status": "final"', f'"status": {status}'))
        # a second record whose dates are inside the range: a malformed status must not depend on the order
        statuses.append(o(f"su{i}", date="2023-01-15").replace('"status": "final"', f'"status": {status}'))
    statuses.append(json.dumps(cond("{ns}.vs1", "{ns}.P", date="2019-11-01",
                                    verificationStatus={"coding": [{"code": "entered-in-error"}]})))
    statuses.append(json.dumps(cond("{ns}.vs2", "{ns}.P", date="2025-11-02",
                                    verificationStatus={"coding": [{"system": "x", "code": "entered-in-error"}]},
                                    clinicalStatus={"coding": [{"code": "active"}]})))
    statuses.append(json.dumps(cond("{ns}.vs3", "{ns}.P", date="2019-11-03", verificationStatus="entered-in-error")))
    statuses.append(json.dumps(cond("{ns}.vs4", "{ns}.P", date="2025-11-04", status="entered-in-error")))
    statuses.append(json.dumps(cond("{ns}.vs5", "{ns}.P", date="2019-11-05", verificationStatus={"coding": 5})))
    for i, status in enumerate(['"not-done"', '{"coding": 5}', '"entered-in-error"', "7"]):
        statuses.append(json.dumps(immunization(f"{{ns}}.im{i}", "{ns}.P", f"2019-12-0{i + 1}"))
                        .replace('"status": "completed"', f'"status": {status}'))
        statuses.append(json.dumps(med_request(f"{{ns}}.mr{i}", "{ns}.P", f"2025-12-0{i + 1}"))
                        .replace('"status": "active"', f'"status": {status}'))

    for name, lines in (("duplicate-keys", dup_keys), ("escapes", escapes), ("codes", codes), ("coding-shapes", shapes),
                        ("statuses", statuses)):
        def case(d: Path, ns: str, lines: list[str] = lines) -> None:
            write(d / "x.ndjson", mixed(ns, [raw(x, ns) for x in lines] + [patient(f"{ns}.Q")]))
        c[name] = case
    return c


def _date_ref_id_cases() -> dict[str, Case]:
    """Dates (partial, impossible, outside the window, non-ASCII digits, other types), Periods, subject
    references, ids and resourceTypes of every shape, and lines that are no object."""
    c: dict[str, Case] = {}

    def dates(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        values: list[Any] = [
            "2019", "2019-05", "2019-05-1", "2021-02-30", "2021-13-01", "2021-00-10", "2020-02-29", "2021-02-29",
            "1800-01-01", "9999-12-31", "0000-01-01", "1899-12-31", "1900-01-01", "2027-12-05", "2027-12-06",
            "２０１９-05-01", "٢٠١٩-٠٥-٠١", "2019-05-0１", "2019/05/01", " 2019-05-01", "2019-05-01garbage",
            "2019-05-01T25:99:00Z", "2019-05-01T10:00:00-05:00", "2025-05-01T23:30:00+14:00", "2019-5-1",
            "20190501", "2019-05-01 ", "", 20190501, {"start": "2019-01-01"}, ["2019-01-01"], True,
            "2019-W05-1", "+2019-05-01", "-2019-05-01", "2019-05-01T10:00", "2019-05-01Z", "1900-01-0", "2O19-05-01",
        ]
        extra: list[Any] = [obs(f"{ns}.d{i}", p, date=v) for i, v in enumerate(values)]
        extra += [
            # the latest of a record's dates is impossible, its earliest is not: no date of it counts on that side
            obs(f"{ns}.m1", p, date="2025-02-10", issued="2025-02-31T10:00:00Z"),
            obs(f"{ns}.m2", p, date="2019-03-01", issued="2019-02-31T10:00:00Z"),
            obs(f"{ns}.m3", p, date="2019-03-02", issued="1800-01-01T00:00:00Z"),
            obs(f"{ns}.m4", p, date=None, effectivePeriod={"end": "2025-04-04"}),
            obs(f"{ns}.m5", p, date=None, effectivePeriod={"start": "2019-04-05"}),
            obs(f"{ns}.m6", p, date=None, effectivePeriod={"start": "2025-04-06", "end": "2019-04-06"}),
            obs(f"{ns}.m7", p, date=None, effectivePeriod="2019-04-07"),
            obs(f"{ns}.m8", p, date=None, effectivePeriod={"start": 5, "end": ["2025-04-08"]}),
            obs(f"{ns}.m9", p, date=None, effectiveInstant="2019-04-09T00:00:00Z"),
            obs(f"{ns}.m10", p, date="2019-04-10", effectivePeriod={"start": "2019-04-01", "end": "2025-04-10"}),
            noise_admin(f"{ns}.m11", p, None, "2025-04-11"),
            noise_admin(f"{ns}.m12", p, "2019-04-12", None),
            {"resourceType": "Procedure", "id": f"{ns}.m13", "status": "completed",
             "code": {"coding": [{"system": "urn:x", "code": "x"}]}, "subject": {"reference": f"Patient/{p}"},
             "performedPeriod": {"start": "2019-04-13"}},
            cond(f"{ns}.m14", p, date=None, onsetPeriod={"start": "2019-04-14", "end": "2019-04-15"},
                 abatementDateTime="2025-04-14", recordedDate="2021-02-30"),
            {"resourceType": "AllergyIntolerance", "id": f"{ns}.m15", "patient": {"reference": f"Patient/{p}"},
             "recordedDate": "2019-04-16"},
            {"resourceType": "DiagnosticReport", "id": f"{ns}.m16", "status": "final", "code": {"text": "x"},
             "subject": {"reference": f"Patient/{p}"}, "effectivePeriod": {"start": "2019-04-17", "end": "2025-04-17"}},
            immunization(f"{ns}.m17", p, "2019-04-18T10:00:00Z"),
            med_request(f"{ns}.m18", p, "2025-04-19"),
        ]
        write(d / "x.ndjson", mixed(ns, extra))

    def references(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        refs: list[Any] = ["Group/x", f"https://h.example/fhir/Patient/{p}", f"Patient/{p}\u0000",
                           f"Patient/{p}/_history/2",
                           "Patient/", "Patient//x", f"patient/{p}", f"Patient/{ns}.Q", f"Patient/{ns}.nobody",
                           "urn:uuid:0000", f" Patient/{p}", f"Patient/{p} ", 5, None, f"#{p}", "Patient/ü"]
        extra: list[Any] = [obs(f"{ns}.r{i}", p, date=f"2019-0{1 + i % 9}-2{i % 10}", subject={"reference": r})
                            for i, r in enumerate(refs)]
        extra += [obs(f"{ns}.s1", p, date="2019-06-01", subject=f"Patient/{p}"),
                  obs(f"{ns}.s2", p, date="2019-06-02", subject=[{"reference": f"Patient/{p}"}]),
                  obs(f"{ns}.s3", p, date="2019-06-03", subject={"display": "x"}),
                  obs(f"{ns}.s4", p, date="2019-06-04", subject=None),
                  obs(f"{ns}.s5", p, date="2025-06-05", subject={"reference": f"Patient/{ns}.Q", "display": "q"}),
                  immunization(f"{ns}.s6", p, "2019-06-06") | {"patient": f"Patient/{p}"},
                  immunization(f"{ns}.s7", p, "2025-06-07") | {"subject": {"reference": f"Patient/{ns}.Q"}}]
        write(d / "x.ndjson", mixed(ns, [*extra, patient(f"{ns}.Q")]))

    def ids(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        values: list[Any] = ["", 5, None, "  ", f"{ns}." + "x" * 300, f"{ns}.ü", f"{ns}.a/b", f"{ns}.a\u0000b",
                             [f"{ns}.l"], {"a": 1}, True]
        extra: list[Any] = []
        for i, v in enumerate(values):
            extra += [obs(f"{ns}.i{i}", p, date=f"2019-0{1 + i % 9}-05") | {"id": v},
                      practitioner(f"{ns}.j{i}", "X") | {"id": v},
                      study_obs(f"{ns}.k{i}", p, 3, date="2023-05-27") | {"id": v}]
        extra += [{k: v for k, v in obs(f"{ns}.n1", p, date="2019-01-06").items() if k != "id"},
                  {"resourceType": "Practitioner", "name": [{"family": "no id"}]}]
        write(d / "x.ndjson", mixed(ns, extra))

    def resource_types(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        values: list[Any] = [None, 5, "", "observation", "Observation ", " Observation", {"a": 1}, ["Observation"],
                             "Unknownthing", "OBSERVATION", "Bundle"]
        extra: list[Any] = [obs(f"{ns}.t{i}", p, date=f"2019-0{1 + i % 9}-07") | {"resourceType": v}
                            for i, v in enumerate(values)]
        extra.append({k: v for k, v in obs(f"{ns}.t99", p, date="2019-01-08").items() if k != "resourceType"})
        extra.append({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": obs(f"{ns}.b1", p, date="2019-01-09")}, {"resource": study_obs(f"{ns}.b2", p, 4)},
            {"resource": practitioner(f"{ns}.b3", "B")}, {"resource": obs(f"{ns}.h1", p, date="2022-01-10")},
            {"request": {"method": "DELETE", "url": "Observation/x"}}, {"resource": {"resourceType": 5}}]})
        extra.append({"resourceType": "Bundle", "type": "collection", "entry": {"resource": patient(f"{ns}.Z")}})
        extra.append({"resourceType": "Bundle", "type": "collection"})
        write(d / "x.ndjson", mixed(ns, extra))

    def not_objects(d: Path, ns: str) -> None:
        write(d / "x.ndjson", mixed(ns, ["[1]", "[]", '"x"', "42", "null", "true", "{}", '{"":1}',
                                         "[" + json.dumps(obs(f"{ns}.a1", f"{ns}.P")) + "]", '"{}"', "-1", "1e5"]))

    c.update(dates=dates, references=references, ids=ids, resource_types=resource_types, not_objects=not_objects)
    return c


def _duplicate_cases() -> dict[str, Case]:
    """Ids read more than once: identical noise in other notations, conflicting noise across files and file
    kinds, noise against a study copy, copies the scan takes against copies Python takes."""
    c: dict[str, Case] = {}

    def notations(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        a: list[Any] = [*base(ns)]
        b: list[Any] = []
        pairs = [
            (obs(f"{ns}.i1", p, date="2019-01-11"), obs(f"{ns}.i1", p, date="2019-01-11")),
            (obs(f"{ns}.i2", p, date="2025-01-12"), dict(reversed(obs(f"{ns}.i2", p, date="2025-01-12").items()))),
            (json.dumps(practitioner(f"{ns}.i3", "A")),
             json.dumps(practitioner(f"{ns}.i3", "A"), separators=(",", ":"))),
            (json.dumps(practitioner(f"{ns}.i4", "A")),
             json.dumps(practitioner(f"{ns}.i4", "A")).replace('"A"', '"\\u0041"')),
            (practitioner(f"{ns}.i5", "é"), json.dumps(practitioner(f"{ns}.i5", "é"))),  # raw vs escaped
            (json.dumps(obs(f"{ns}.n1", p, date="2019-01-13")).replace('"value": 120', '"value": 100.0'),
             json.dumps(obs(f"{ns}.n1", p, date="2019-01-13")).replace('"value": 120', '"value": 1e2')),
            (json.dumps(obs(f"{ns}.n2", p, date="2019-01-14")).replace('"value": 120', '"value": 1'),
             json.dumps(obs(f"{ns}.n2", p, date="2019-01-14")).replace('"value": 120', '"value": 1.0')),
            (json.dumps(obs(f"{ns}.n3", p, date="2019-01-15")).replace('"value": 120', '"value": 1.50'),
             json.dumps(obs(f"{ns}.n3", p, date="2019-01-15")).replace('"value": 120', '"value": 1.5')),
            (json.dumps(obs(f"{ns}.n4", p, date="2019-01-16")).replace('"value": 120', '"value": -0.0'),
             json.dumps(obs(f"{ns}.n4", p, date="2019-01-16")).replace('"value": 120', '"value": 0.0')),
            (json.dumps(obs(f"{ns}.n5", p, date="2019-01-17")).replace('"value": 120', '"value": 18446744073709551616'),
             json.dumps(obs(f"{ns}.n5", p, date="2019-01-17"))
             .replace('"value": 120', '"value": 1.8446744073709552e19')),
            (json.dumps(practitioner(f"{ns}.n6", "A")).replace('"name"', '"x": 1, "x": 2, "name"'),
             json.dumps(practitioner(f"{ns}.n6", "A")).replace('"name"', '"x": 2, "name"')),
            (practitioner(f"{ns}.u1", "é"), practitioner(f"{ns}.u1", "e\u0301")),  # not the same text: different
            (practitioner(f"{ns}.a\u0000b", "A"), practitioner(f"{ns}.a\u0000b", "A")),
            (practitioner(f"{ns}.ü", "A"), practitioner(f"{ns}.ü", "B")),
            (practitioner(f"{ns}.sp", "A"), practitioner(f"{ns}.sp ", "A")),  # other ids
            (practitioner(f"{ns}.ty", "A"), obs(f"{ns}.ty", p, date="2019-01-18")),  # other types
            (obs(f"{ns}.bm", p, date="2019-01-19"), BOM + enc(obs(f"{ns}.bm", p, date="2019-01-19"))),
        ]
        for x, y in pairs:
            a.append(x)
            b.append(y)
        write(d / "a.ndjson", a)
        write(d / "b.ndjson", b)

    def conflicts(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        write(d / "a.ndjson", mixed(ns, [
            obs(f"{ns}.v1", p, date="2019-02-01"), obs(f"{ns}.v2", p, date="2023-02-02"),
            practitioner(f"{ns}.dr2", "A"),
            obs(f"{ns}.x", p, date="2019-02-03"),  # a noise copy of a study record's id
            obs(f"{ns}.t1", p, date="2019-02-04"), obs(f"{ns}.t1", p, date="2019-02-04"),
            study_obs(f"{ns}.s1", p, 5), study_obs(f"{ns}.s1", p, 5), study_obs(f"{ns}.s2", p, 5),
            # a copy the scan takes and a copy Python takes (an escape in its code), same content
            obs(f"{ns}.e1", p, date="2025-02-05"),
        ]))
        write(d / "b.ndjson", [
            obs(f"{ns}.v1", p, date="2025-12-31"), obs(f"{ns}.v2", p, date="2025-12-30"),
            practitioner(f"{ns}.dr2", "B"),
            study_obs(f"{ns}.x", p, 3), obs(f"{ns}.t1", p, date="2019-02-04") | {"valueQuantity": {"value": 1}},
            study_obs(f"{ns}.s2", p, 6),
            json.dumps(obs(f"{ns}.e1", p, date="2025-02-05")).replace(f'"{HEIGHT}"', '"830\\u0032-2"'),
        ])

    def deep_copies(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        deep = '{"a": ' * 300 + "1" + "}" * 300
        line = json.dumps(practitioner(f"{ns}.deep", "A") | {"extension": ["X"]}).replace('"X"', deep)
        noisy = json.dumps(obs(f"{ns}.deep2", p, date="2019-02-06", extension=["X"])).replace('"X"', deep)
        write(d / "a.ndjson", mixed(ns, [line, noisy]))
        write(d / "b.ndjson", [line, noisy])

    def across_file_kinds(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        same = [obs(f"{ns}.g1", p, date="2019-02-07"), practitioner(f"{ns}.g2", "A")]
        other = [obs(f"{ns}.g3", p, date="2025-02-08"), practitioner(f"{ns}.g4", "A")]
        write(d / "a.ndjson", mixed(ns, [*same, *other]))
        write(d / "b.ndjson.gz", [*same, obs(f"{ns}.g3", p, date="2019-02-08"), practitioner(f"{ns}.g5", "C")])
        write(d / "c.ndjson", [*same, practitioner(f"{ns}.g4", "B")], sep=b"\r\n")  # read by Python (CRLF)
        (d / "d.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                              "entry": [{"resource": r} for r in same]}))
        write(d / "e.ndjson", [{"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": practitioner(f"{ns}.g5", "D")}]}, *same])

    c.update(notations=notations, conflicts=conflicts, deep_copies=deep_copies, across_file_kinds=across_file_kinds)
    return c


def _file_cases() -> dict[str, Case]:
    """Compressed files, other suffixes, lines longer than DuckDB's default line size."""
    c: dict[str, Case] = {}

    def compressed(d: Path, ns: str) -> None:
        lines = base(ns)
        write(d / "a.ndjson.gz", lines[:7])
        write(d / "b.jsonl", lines[7:])
        write(d / "c.jsonl.gz", [obs(f"{ns}.h9", f"{ns}.P", date="2019-01-05")])
        write(d / "d.NDJSON", [obs(f"{ns}.h8", f"{ns}.P", date="2025-01-05")])
        write(d / "e.NDJSON.GZ", [obs(f"{ns}.h7", f"{ns}.P", date="2019-01-04"), practitioner(f"{ns}.d2", "X")])
        two = gzip.compress(enc(obs(f"{ns}.h6", f"{ns}.P", date="2019-01-03")) + b"\n", mtime=0) + gzip.compress(
            enc(obs(f"{ns}.h5", f"{ns}.P", date="2025-01-06")) + b"\n" + enc(practitioner(f"{ns}.d3", "Y")) + b"\n",
            mtime=0)
        (d / "f.ndjson.gz").write_bytes(two)  # two gzip members: one stream
        # gzip content under a plain name; a .json file holding two lines
        (d / "g.ndjson").write_bytes(gzip.compress(enc(practitioner(f"{ns}.d4", "Z")) + b"\n", mtime=0))
        (d / "h.json").write_text(json.dumps(practitioner(f"{ns}.d5", "W")) + "\n"
                                  + json.dumps(practitioner(f"{ns}.d6", "V")))
        (d / "i.json").write_bytes(BOM + enc(obs(f"{ns}.h4", f"{ns}.P", date="2025-01-07")))
        (d / "README.txt").write_text("not FHIR")

    def long_lines(d: Path, ns: str) -> None:
        p = f"{ns}.P"
        big = 3_300_000
        write(d / "a.ndjson", mixed(ns, [docref(f"{ns}.bigdoc", p, big),
                                         obs(f"{ns}.bigh", p, date="2019-01-05", note=[{"text": "n" * big}]),
                                         study_obs(f"{ns}.bigs", p, 3, note=[{"text": "s" * big}])]))
        near = 1_900_000  # below DuckDB's default line size (2 MB)
        write(d / "b.ndjson", mixed(f"{ns}b", [docref(f"{ns}.doc19", p, near),
                                               obs(f"{ns}.h19", p, date="2025-01-05", note=[{"text": "n" * near}])]))

    c.update(compressed=compressed, long_lines=long_lines)
    return c


def _build_explicit_txt(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """A file named explicitly with a suffix the folder walk skips (read as NDJSON) besides a folder."""
    write(root / "in" / "x.ndjson", base("tx"))
    extra = write(root / "data.txt", [obs("tx.h9", "tx.P", date="2019-01-05"), practitioner("tx.d2", "X"),
                                      study_obs("tx.cd3b", "tx.P", 3), "{bad"])
    return [root / "in", extra], {}


def _build_same_file_twice(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """One file named twice (the input is deduplicated: it is read once)."""
    path = write(root / "x.ndjson", mixed("tw", [obs("tw.h9", "tw.P", date="2019-01-05"), "{bad"]))
    return [path, path], {}


def _gz_fault(kind: str) -> Callable[[Path], tuple[list[Path], dict[str, Any]]]:
    def build(root: Path) -> tuple[list[Path], dict[str, Any]]:
        write(root / "a.ndjson", base("gz"))
        blob = gzip.compress(b"".join(enc(obs(f"gz.c{i}", "gz.P", date="2019-01-05")) + b"\n" for i in range(3000)),
                             mtime=0)
        data = {"truncated": blob[: len(blob) // 2], "trailing-garbage": blob + b"garbage\n",
                "trailing-zeros": blob + b"\0" * 64, "not-gzip": enc(practitioner("gz.d", "X")) + b"\n"}[kind]
        (root / "b.ndjson.gz").write_bytes(data)
        return [root], {}
    return build


def _build_big(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """~20 MB of NDJSON (more than DuckDB reads in one piece, more than the parallel threshold): noise of
    many patients with study records, faults and duplicate ids spread over the whole file."""
    root.mkdir(parents=True)
    patients = [f"bg.P{i}" for i in range(50)]
    out = bytearray()
    lines = 0

    def add(line: Any) -> None:
        nonlocal lines
        out.extend(enc(line))
        out.extend(b"\n")
        lines += 1

    for p in patients:
        add(patient(p))
    i = 0
    while len(out) < 20_500_000:
        p = patients[i % len(patients)]
        day = f"20{19 + i % 7}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        add(obs(f"bg.h{i}", p, code=HEIGHT if i % 2 else HEART, date=day, note=[{"text": "x" * (i % 1600)}]))
        if i % 3 == 0:
            add(practitioner(f"bg.d{i}", "Curie"))
        if i % 5 == 0:
            add(cond(f"bg.c{i}", p, date=day))
        if i % 101 == 0:
            add(study_obs(f"bg.s{i}", p, 1 + i % 5, date=f"2023-{1 + i % 12:02d}-15"))
        if i % 997 == 0:
            add('{"resourceType": "Observation", "id": ')  # malformed
            add(obs(f"bg.h{i}", p, date="2019-01-01"))  # a conflicting copy of a noise id
            add(obs(f"bg.h{i // 2}", p, code=HEIGHT if (i // 2) % 2 else HEART, date=day))
            add("")
        if i % 1499 == 0:
            add(obs(f"bg.st{i}", p, date="2018-01-01", status={"coding": 5}))
        i += 1
    (root / "big.ndjson").write_bytes(bytes(out))
    return [root], {}


def _inputs() -> dict[str, Input]:
    inputs: dict[str, Input] = {}

    def add(prefix: str, found: dict[str, Input]) -> None:
        for name, inp in found.items():
            inputs[f"{prefix}-{name}" if name else prefix] = inp

    dupes = Expect(rejected=True, followup=True, duplicates=True)
    add("existing", group(_existing_cases(), dupes))
    clean = Expect(followup=True)
    inputs["clean-input"] = Input(_build_clean_input, clean)
    inputs["bulk-export"] = Input(_build_bulk_export, clean)
    inputs["overlay"] = Input(_build_overlay, clean)
    inputs["synth-center2"] = Input(_build_synth, clean)
    inputs["synthea-bulk-10"] = Input(_build_synthea, clean)
    full = Expect(rejected=True, followup=True)
    add("lines", group(_line_cases(), full))
    add("json", group(_json_cases(), full))
    add("keys", group(_key_cases(), full))
    add("dates", group(_date_ref_id_cases(), full))
    add("dupes", group(_duplicate_cases(), dupes))
    add("files", group(_file_cases(), full))
    inputs["explicit-txt"] = Input(_build_explicit_txt, full)
    # a .gz file Python's gzip cannot read fails the run (nothing stored); trailing zeros it reads
    for kind, error in (("truncated", "cannot read the file"), ("trailing-garbage", "cannot read the file"),
                        ("not-gzip", "cannot read the file"), ("trailing-zeros", None)):
        inputs[f"gz-{kind}"] = Input(_gz_fault(kind), Expect(error=error, followup=True))
    inputs["big-20mb"] = Input(_build_big, Expect(rejected=True, followup=True, duplicates=True), chunk=None)
    inputs["same-file-twice"] = Input(_build_same_file_twice, Expect(rejected=True, followup=True))
    return inputs


INPUTS = _inputs()


# ============================================================================ running and comparing
@dataclass
class Outcome:
    label: str
    error: str | None = None
    report: dict[str, Any] | None = None
    quarantine: list[str] = field(default_factory=list)
    tables: dict[str, list[tuple]] = field(default_factory=dict)


def _tables(db: Any, schema: str) -> dict[str, list[tuple]]:
    """Every table of ``schema``: its rows sorted (CDM_SOURCE without the dates of the day of the run)."""
    names = [r[0] for r in db.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = :s AND table_catalog = "
        "current_database() ORDER BY table_name", {"s": schema})]
    out = {}
    for name in names:
        cols = [r[0] for r in db.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t AND "
            "table_catalog = current_database() ORDER BY ordinal_position", {"s": schema, "t": name})]
        cols = [c for c in cols if c not in NOW_COLUMNS.get(name, ())]
        rows = db.query(f"SELECT {', '.join(db.q(c) for c in cols)} FROM {db.q(schema)}.{db.q(name)}")
        out[name] = sorted(rows, key=repr)
    return out


def _run(engine_url: str, tmp_path: Path, label: str, paths: list[Path], kw: dict[str, Any], workers: int
         ) -> Outcome:
    duck = not engine_url.startswith("postgresql")
    url = str(tmp_path / f"{label}.duckdb") if duck else engine_url
    cdm, vocab = ("cdm", "vocab") if duck else (f"cdm_{label}", f"vocab_{label}")
    db = connect(url, cdm_schema=cdm, vocab_schema=vocab)
    out = Outcome(label)
    try:
        create_cdm(db)
        load_study_vocabulary(db)
        quarantine = io.StringIO()
        try:
            rep = ingest_fhir(db, paths, site_id=SITE, quarantine=quarantine, workers=workers, **kw)
        except Exception as exc:  # noqa: BLE001 - an error is an outcome too, compared between the readings
            out.error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, BlinaError):
                out.error += "\n" + "".join(traceback.format_exception(exc)[-3:])
            if not duck:
                db._sa_conn.rollback()
        else:
            assert rep.balanced(), f"{label}: read != loaded + skipped + rejected: {rep.to_dict()}"
            out.report = rep.to_dict()
            out.report.pop("seconds")
        # records end with a line feed; split on it only (U+2028 or U+0085 inside a record are not line ends)
        out.quarantine = quarantine.getvalue().split("\n")[:-1]
        out.tables = _tables(db, cdm)
    finally:
        db.close()
    return out


def _short(value: Any, n: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def _diff_values(a: Any, b: Any, path: str, out: list[str], limit: int = 12) -> None:
    """Append the paths where ``a`` (python) and ``b`` (duckdb) differ, first ones first."""
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *[k for k in b if k not in a]]:
            if k not in b:
                out.append(f"{path}[{k!r}]: python {_short(a[k])}, duckdb: (missing)")
            elif k not in a:
                out.append(f"{path}[{k!r}]: python (missing), duckdb {_short(b[k])}")
            else:
                _diff_values(a[k], b[k], f"{path}[{k!r}]", out, limit)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff_values(x, y, f"{path}[{i}]", out, limit)
        if len(a) != len(b):
            out.append(f"{path}: python has {len(a)} items, duckdb {len(b)}; extra: "
                       f"{_short(a[len(b):len(b) + 2] if len(a) > len(b) else b[len(a):len(a) + 2])}")
        return
    if a != b or type(a) is not type(b):
        out.append(f"{path}: python {_short(a)}, duckdb {_short(b)}")


def _differences(ref: Outcome, other: Outcome) -> list[str]:
    diffs: list[str] = []
    if ref.error != other.error:
        diffs.append(f"error: {ref.label} {_short(ref.error, 2000)}, {other.label} {_short(other.error, 2000)}")
    if ref.report is not None and other.report is not None:
        _diff_values(ref.report, other.report, "report", diffs)
    for i, (x, y) in enumerate(zip(ref.quarantine, other.quarantine, strict=False)):
        if x != y:
            diffs.append(f"quarantine line {i + 1}: python {_short(x)}, duckdb {_short(y)}")
            break
    if len(ref.quarantine) != len(other.quarantine):
        diffs.append(f"quarantine: python {len(ref.quarantine)} lines, duckdb {len(other.quarantine)}")
    for name in sorted(set(ref.tables) | set(other.tables)):
        a, b = ref.tables.get(name), other.tables.get(name)
        if a == b:
            continue
        if a is None or b is None:
            diffs.append(f"table {name}: only in {'duckdb' if a is None else 'python'}")
            continue
        only_a, only_b = Counter(a) - Counter(b), Counter(b) - Counter(a)
        diffs.append(f"table {name}: python {len(a)} rows, duckdb {len(b)}; only python: "
                     f"{_short(sorted(only_a.elements(), key=repr)[:3])}; only duckdb: "
                     f"{_short(sorted(only_b.elements(), key=repr)[:3])}")
    return [d.replace("python", ref.label).replace("duckdb", other.label) for d in diffs]


def _check_reference(name: str, ref: Outcome, expect: Expect) -> None:
    """The reference outcome has what the input was built for: the comparison compares something."""
    if expect.error is not None or ref.error is not None:
        assert expect.error is not None and ref.error is not None and expect.error in ref.error, (
            f"{name}: expected an error with {expect.error!r}, the one-process reading gave {ref.error!r}")
        return
    rep = ref.report
    assert rep is not None and rep["resources_read"] > 0, f"{name}: nothing read"
    assert len(ref.quarantine) == rep["rejected"]["total"], f"{name}: quarantine lines != rejections"
    assert any(ref.tables.values()), f"{name}: every table is empty"
    if expect.loaded:
        assert rep["loaded"]["total"] > 0 and ref.tables["person"] and ref.tables["blina_lineage"], (
            f"{name}: no study record loaded")
    if expect.noise:
        assert sum(rep["skipped"]["not_relevant"].values()) > 0, f"{name}: no noise counted"
    if expect.rejected:
        assert rep["rejected"]["total"] > 0, f"{name}: nothing rejected"
    if expect.followup:
        assert ref.tables.get("blina_followup"), f"{name}: no follow-up row from noise"
    if expect.duplicates:
        assert rep["duplicate_ids"]["listed"], f"{name}: no duplicate id"


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_reading_gives_the_reference_outcome(engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   name: str) -> None:
    inp = INPUTS[name]
    paths, kw = inp.build(tmp_path / "input")
    if inp.chunk is not None:  # workers=2: ranges of a few kB, every file is read in several parallel parts
        monkeypatch.setattr(ingest_module, "_CHUNK_BYTES", inp.chunk)
    engine = "duckdb" if not engine_url.startswith("postgresql") else "postgresql"
    out = {w: _run(engine_url, tmp_path, f"python_w{w}", paths, copy.deepcopy(kw), w)
           for w in (REFERENCE_WORKERS, 2)}

    ref = out[REFERENCE_WORKERS]
    _check_reference(name, ref, inp.expect)
    problems = []
    for workers, got in out.items():
        if workers == REFERENCE_WORKERS:
            continue
        where = f"workers={workers} vs workers={REFERENCE_WORKERS}"
        diffs = _differences(ref, got)
        if diffs:
            problems.append(f"{where}:\n  " + "\n  ".join(diffs))
    assert not problems, f"input {name} on {engine}:\n" + "\n".join(problems)


def test_every_input_kind_is_covered() -> None:
    """The parametrisation holds the inputs the module doc promises (a refactoring cannot drop them)."""
    if SPLIT:
        pytest.skip("split into cases")
    assert {"existing", "clean-input", "bulk-export", "overlay", "synth-center2", "synthea-bulk-10", "lines",
            "json", "keys", "dates", "dupes", "files", "explicit-txt", "gz-truncated", "big-20mb"} <= set(INPUTS)
    assert len(_existing_cases()) >= len(FAULTS) + len(CRASHES) + len(FINDINGS) + 10
