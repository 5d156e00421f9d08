"""Fuzz soak of ``blina ingest`` (issue 15.5; not a test: run by hand).

    .venv/bin/python bench/fuzz_ingest.py --inputs 100000 --per-run 2500 --results bench/RESULTS.md

Each run writes one export of ``--per-run`` mutated records (plus the valid Patients they refer to) into a
fresh folder, spread over NDJSON files (plain, ``.gz``, CRLF, BOM) and Bundle files, and ingests it into a
fresh DuckDB database. Every mutated record starts from a valid study-relevant or noise resource and gets
one mutation, chosen in turn from:

truncated JSON, a wrong JSON type (object, array, number, string, boolean, null) in an element the mappers
read (every path of the resource is a candidate), an invalid or partial date, a huge number (1e400, a
30-digit integer, 1e-400), NaN/Infinity literals, deep nesting (300-2000 levels), non-UTF-8 bytes, a BOM
inside the line, duplicate JSON keys, a dangling reference, a duplicate id with other content, and, one
run in ``--gz-every``, a truncated ``.gz`` file.

Per run it checks: no exception other than the documented file-level refusal (``BlinaError``: a truncated
``.gz`` is refused whole, naming the file, nothing stored: counted as "refused", not a crash), and
``read == loaded + skipped + rejected`` with ``read`` equal to the number of resources written (records
lost = the difference, target 0). A crash is recorded with its exception and the seed to replay it
(``--seed``).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

MUTATIONS = ["truncate", "wrong_type", "bad_date", "huge_number", "nan_literal", "deep_nesting", "non_utf8",
             "bom_inside", "duplicate_keys", "dangling_reference", "duplicate_id", "none"]


def _templates(pid: str, i: int) -> list[dict]:
    return [
        {"resourceType": "Observation", "id": f"o{i}", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "8122-4"}]}, "subject": {"reference": f"Patient/{pid}"},
         "effectiveDateTime": "2023-05-14T10:00:00Z",
         "valueQuantity": {"value": 950, "unit": "/uL", "system": UCUM, "code": "/uL", "comparator": "<"}},
        {"resourceType": "Observation", "id": f"v{i}", "status": "final",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                   "code": "vital-signs"}]}],
         "code": {"coding": [{"system": LOINC, "code": "8302-2"}]}, "subject": {"reference": f"Patient/{pid}"},
         "effectivePeriod": {"start": "2023-06-01", "end": "2023-06-02"},
         "valueQuantity": {"value": 120, "unit": "cm"}},
        {"resourceType": "Condition", "id": f"c{i}", "code": {"coding": [{"system": ICD10CM, "code": "C91.02"}]},
         "verificationStatus": {"coding": [{"code": "confirmed"}]}, "subject": {"reference": f"Patient/{pid}"},
         "onsetDateTime": "2022-01-10", "recordedDate": "2022-01-11"},
        {"resourceType": "MedicationAdministration", "id": f"m{i}", "status": "completed",
         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1597262"}]},
         "subject": {"reference": f"Patient/{pid}"},
         "effectivePeriod": {"start": "2023-05-01", "end": "2023-05-28"},
         "dosage": {"dose": {"value": 15, "unit": "ug/m2/d"}}},
        {"resourceType": "Procedure", "id": f"p{i}", "status": "completed",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "234336002"}]},
         "subject": {"reference": f"Patient/{pid}"}, "performedDateTime": "2023-04-01"},
        {"resourceType": "Encounter", "id": f"e{i}", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": f"Patient/{pid}"}, "period": {"start": "2023-05-01T09:00:00+02:00"}},
        {"resourceType": "MedicationRequest", "id": f"r{i}", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "197361"}]},
         "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2023-03-03"},
        {"resourceType": "Practitioner", "id": f"dr{i}", "name": [{"family": "Curie", "given": ["Marie"]}]},
        {"resourceType": "Patient", "id": f"x{i}", "gender": "female", "birthDate": "2011-02-03",
         "identifier": [{"system": "urn:mrn", "value": f"M{i}"}]},
    ]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def _wrong(rng: random.Random) -> Any:
    return rng.choice([{"a": {"b": [1, None]}}, [1, "x", {"y": []}], 42, -1.5e308, "text", True, False, None, [],
                       {}, [[["deep"]]], 2**62])


def _deep_text(depth: int, rng: random.Random) -> str:
    kinds = [rng.random() < 0.5 for _ in range(depth)]
    return "".join("[" if k else '{"k": ' for k in kinds) + '"x"' + "".join("]" if k else "}" for k in reversed(kinds))


DATE_KEYS = ("effectiveDateTime", "onsetDateTime", "recordedDate", "performedDateTime", "authoredOn", "birthDate",
             "start", "end")
BAD_DATES = ["2023", "2023-05", "2023-13-01", "2023-02-30", "", "yesterday", "2023-05-14T25:61:00Z", "0000-00-00",
             "99999-01-01", "2023-05-14T10:00:00+99:00", "2023-5-4", "1600-01-01", "2199-12-31", "2016-12-31T23:59:60Z"]


def mutate(res: dict, kind: str, rng: random.Random, pids: list[str]) -> bytes:
    """One mutated NDJSON line (without the line feed)."""
    res = copy.deepcopy(res)
    if kind == "wrong_type":
        _set(res, rng.choice(_paths(res)), _wrong(rng))
    elif kind == "bad_date":
        dates = [p for p in _paths(res) if p[-1] in DATE_KEYS]
        if dates:
            _set(res, rng.choice(dates), rng.choice(BAD_DATES))
    elif kind == "deep_nesting":
        _set(res, rng.choice(_paths(res)), "__DEEP__")  # spliced in as text: json.dumps would recurse
    elif kind == "dangling_reference":
        refs = [p for p in _paths(res) if p[-1] == "reference"]
        if refs:
            _set(res, rng.choice(refs), rng.choice(["Patient/nobody", "Patient/", "urn:uuid:x", "#m", "Group/1",
                                                     "http://x/fhir/Patient/nobody/_history/2", "Patient"]))
    text = json.dumps(res)
    if kind == "deep_nesting":
        text = text.replace('"__DEEP__"', _deep_text(rng.choice([150, 300, 600, 2000]), rng), 1)
    if kind == "truncate":
        text = text[: rng.randrange(1, len(text))]
    elif kind == "huge_number":
        num = rng.choice(["1e400", "123456789012345678901234567890", "1e-400", "-1e400", "1" * 400])
        text = re.sub(r'(: )(\d+(\.\d+)?)', lambda m: m.group(1) + num, text, count=1) if re.search(
            r': \d', text) else text[:-1] + f', "extra": {num}}}'
    elif kind == "nan_literal":
        lit = rng.choice(["NaN", "Infinity", "-Infinity"])
        text = re.sub(r'(: )(\d+(\.\d+)?)', lambda m: m.group(1) + lit, text, count=1) if re.search(
            r': \d', text) else text[:-1] + f', "extra": {lit}}}'
    elif kind == "duplicate_keys":
        text = '{"id": "first", ' + text[1:]
    data = text.encode("utf-8")
    if kind == "non_utf8":
        at = rng.randrange(1, len(data) - 1)
        data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + data[at:]
    elif kind == "bom_inside":
        at = rng.randrange(1, len(data) - 1)
        data = data[:at] + b"\xef\xbb\xbf" + data[at:]
    return data


def make_run(root: Path, n: int, rng: random.Random, truncated_gz: bool) -> int:
    """Write one export of ``n`` mutated records (+ their Patients); returns the resources written."""
    root.mkdir(parents=True)
    n_pat = max(1, n // 50)
    pids = [f"P{i}" for i in range(n_pat)]
    files: dict[str, list[bytes]] = {"a.ndjson": [], "b.ndjson.gz": [], "c.ndjson": [], "d.ndjson": []}
    files["a.ndjson"] += [json.dumps({"resourceType": "Patient", "id": p, "gender": "male", "birthDate": "2010-01-01"})
                          .encode() for p in pids]
    written = n_pat
    last: dict | None = None
    bundles: list[dict] = []
    for i in range(n):
        pid = rng.choice(pids)
        tpl = rng.choice(_templates(pid, i))
        kind = MUTATIONS[i % len(MUTATIONS)]
        if kind == "duplicate_id" and last is not None:
            other = copy.deepcopy(last)
            if "status" in other:
                other["status"] = "amended" if other.get("status") != "amended" else "final"
            else:
                other["meta"] = {"versionId": "2"}
            line = json.dumps(other).encode()
        else:
            line = mutate(tpl, kind, rng, pids)
        last = tpl
        if i % 97 == 0:  # some records arrive in Bundles (one Bundle per 10 of them)
            try:  # only what orjson reads and writes back goes into a Bundle (else one bad Bundle hides 10)
                obj = orjson.loads(line)
                orjson.dumps(obj)
                bundles.append(obj)
            except (orjson.JSONDecodeError, orjson.JSONEncodeError):
                files["a.ndjson"].append(line)
            written += 1
            continue
        files[rng.choice(list(files))].append(line)
        written += 1
    for name, lines in files.items():
        sep = b"\r\n" if name == "c.ndjson" else b"\n"
        data = sep.join(lines) + sep
        if name == "d.ndjson":
            data = b"\xef\xbb\xbf" + data
        if name.endswith(".gz"):
            data = gzip.compress(data)
            if truncated_gz:
                data = data[: len(data) // 2]
        (root / name).write_bytes(data)
    for j in range(0, len(bundles), 10):
        part = bundles[j: j + 10]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in part]}
        (root / f"bundle{j}.json").write_bytes(orjson.dumps(bundle))
    return written


def one_run(work: Path, n: int, seed: int, truncated_gz: bool) -> dict:
    from blina_study.adapter.db import connect
    from blina_study.adapter.errors import BlinaError
    from blina_study.adapter.fhir.ingest import ingest_fhir
    from blina_study.adapter.omop import create_cdm, load_study_vocabulary

    rng = random.Random(seed)
    root = work / f"run{seed}"
    written = make_run(root / "in", n, rng, truncated_gz)
    db = connect(str(root / "db.duckdb"), cdm_schema="cdm", vocab_schema="cdm")
    try:
        create_cdm(db)
        load_study_vocabulary(db)
        try:
            rep = ingest_fhir(db, [root / "in"], site_id="fuzz", workers=1 if seed % 2 else 2)
        except BlinaError as exc:
            return {"seed": seed, "written": written, "outcome": "refused", "detail": str(exc)[:200]}
        except Exception as exc:  # noqa: BLE001 - a crash is what this soak looks for
            return {"seed": seed, "written": written, "outcome": "crash",
                    "detail": f"{type(exc).__name__}: {exc}"[:300], "trace": traceback.format_exc()[-2000:]}
        lost = rep.read - (rep.n_loaded + rep.n_skipped + rep.n_rejected)
        return {"seed": seed, "written": written, "outcome": "ok", "read": rep.read, "loaded": rep.n_loaded,
                "skipped": rep.n_skipped, "rejected": rep.n_rejected, "lost": lost, "unread": written - rep.read}
    finally:
        db.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=100_000, help="mutated records in all (default 1e5)")
    ap.add_argument("--per-run", type=int, default=2500)
    ap.add_argument("--gz-every", type=int, default=10, help="one run in this many has a truncated .gz")
    ap.add_argument("--seed", type=int, default=None, help="replay one run")
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    work = Path(tempfile.mkdtemp(prefix="blina-fuzz-"))
    seeds = [args.seed] if args.seed is not None else list(range(1, -(-args.inputs // args.per_run) + 1))
    t0 = time.perf_counter()
    runs = []
    try:
        for seed in seeds:
            r = one_run(work, args.per_run, seed, seed % args.gz_every == 0)
            runs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "trace"}), flush=True)
            if r["outcome"] == "crash":
                print(r["trace"], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    secs = time.perf_counter() - t0
    ok = [r for r in runs if r["outcome"] == "ok"]
    crashes = [r for r in runs if r["outcome"] == "crash"]
    refused = [r for r in runs if r["outcome"] == "refused"]
    inputs = sum(r["written"] for r in runs)
    mutated = len(runs) * args.per_run
    lost = sum(abs(r["lost"]) + abs(r["unread"]) for r in ok)
    section = "\n".join([
        "## Fuzz soak of the FHIR ingest (issue 15.5)",
        "",
        f"`bench/fuzz_ingest.py --inputs {args.inputs} --per-run {args.per_run}` on {platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}, DuckDB, {secs:.0f} s. Every mutated "
        "record has one mutation of: " + ", ".join(MUTATIONS[:-1]) + " (and some left valid); files plain, "
        ".gz, CRLF, with BOM, Bundles; odd runs one process, even runs 2 reading workers; one run in "
        f"{args.gz_every} has a truncated .gz file.",
        "",
        "| runs | inputs (resources written) | of them mutated | crashes | runs refused whole (truncated .gz, "
        "BlinaError naming the file) | records lost (read != loaded+skipped+rejected, or read != written) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(runs)} | {inputs:,} | {mutated:,} | {len(crashes)} | {len(refused)} | {lost} |",
        "",
        "Crashes: " + ("none." if not crashes else "; ".join(f"seed {c['seed']}: {c['detail']}" for c in crashes)),
    ]) + "\n"
    print(section)
    if args.results and args.seed is None:
        text = args.results.read_text() if args.results.exists() else "# Benchmark results\n"
        pat = re.compile(r"## Fuzz soak of the FHIR ingest \(issue 15\.5\)\n.*?(?=\n## |\Z)", re.S)
        text = pat.sub(section.rstrip("\n") + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
        args.results.write_text(text)
    sys.exit(1 if crashes or lost else 0)


if __name__ == "__main__":
    main()
