"""``blina synth``: the synthetic four-center cohort with its ground truth.

Writes ``truth/course.csv`` + ``truth/patient.csv`` (protocol section 4 columns, all centers), one
folder per center (FHIR transaction Bundles, Bulk NDJSON, OMOP CSV standard, OMOP CSV site-local)
and ``manifest.json``. The truth is derived by :mod:`blina_study.adapter.synth.oracle` from the very timelines
that are rendered; the designed categories are asserted (:func:`blina_study.adapter.synth.cohort.check_design`).
Same seed and arguments -> byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.omop.ddl import field_spec
from blina_study.adapter.provenance import SYNTH_ETL_REFERENCE
from blina_study.adapter.study import StudyDefinition, load_study
from blina_study.adapter.synth import oracle
from blina_study.adapter.synth.catalog import Catalog
from blina_study.adapter.synth.cohort import CENTERS, Spec, build_timeline, check_design, specs_for
from blina_study.adapter.synth.render_fhir import bundle, patient_resources
from blina_study.adapter.synth.render_omop import OMOP_TABLES, OmopRenderer
from blina_study.adapter.synth.timeline import (
    Administration,
    ConditionRecord,
    Measurement,
    PatientTimeline,
)

__all__ = ["SynthResult", "build_cohort", "generate", "render_timelines", "write_truth"]

GENERATOR_VERSION = "1"


@dataclass
class SynthResult:
    """The built cohort: timelines (with their specs) and the truth rows, in output order."""

    seed: int
    patients: int
    noise: int
    study: StudyDefinition
    timelines: list[PatientTimeline] = field(default_factory=list)
    specs: list[Spec] = field(default_factory=list)
    courses: list[dict[str, Any]] = field(default_factory=list)
    patient_rows: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, int]] = field(default_factory=dict)  # site -> relevant / irrelevant


def _center_sizes(n: int) -> list[int]:
    """Largest-remainder split of n patients by the centers' weights."""
    total = sum(c.weight for c in CENTERS)
    raw = [n * c.weight / total for c in CENTERS]
    sizes = [int(x) for x in raw]
    order = sorted(range(len(CENTERS)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def _noise(tl: PatientTimeline, count: int, r: random.Random) -> None:
    """Add ``count`` irrelevant records dated inside the patient's follow-up (so the truth, which
    uses the latest record date, does not move): vital signs, supportive drugs, other diagnoses. Each
    is a record the study reads nothing from (visits would not qualify: they extend follow-up)."""
    lo = tl.observation_start or min(tl.record_dates())
    hi = max(tl.record_dates())
    span = (hi - lo).days
    for _ in range(count):
        day = lo + timedelta(days=r.randint(0, span))
        k = r.random()
        if k < 0.55:
            if r.random() < 0.5:
                tl.measurements.append(Measurement("other", day, float(r.randint(60, 160)), "/min", None,
                                                   code=("LOINC", "8867-4")))
            else:
                tl.measurements.append(Measurement("other", day, round(r.uniform(36.0, 39.5), 1), "Cel", None,
                                                   code=("LOINC", "8310-5")))
        elif k < 0.75:
            code, name = r.choice((("26225", "ondansetron"), ("161", "acetaminophen")))
            tl.administrations.append(Administration("other", day, day, code, name))
        elif k < 0.88:
            tl.conditions.append(ConditionRecord("other", day, ("ICD10CM", r.choice(("R50.9", "D70.9", "B37.0")))))
        else:
            # not an outpatient visit: visits are read for follow-up (3b.10), so they are relevant records
            tl.measurements.append(Measurement("other", day, float(r.randint(12, 40)), "/min", None,
                                               code=("LOINC", "9279-1")))


def _errors(tl: PatientTimeline, spec: Spec, cat: Catalog, which: int) -> None:
    """Records that did not happen (3b.3), chosen so that reading them as data would change the
    truth: an MRD of 3 % the day before course 1, a blinatumomab bag 3 days after the last course,
    a relapse diagnosis, chemotherapy in the delay window."""
    idx = min(a.start for a in tl.administrations if a.kind == "blinatumomab")
    last_end = max(a.end for a in tl.administrations if a.kind == "blinatumomab")
    hi = max(tl.record_dates())
    if which == 0:
        tl.errors.append(("entered-in-error", Measurement("mrd", idx - timedelta(days=1), 3.0, "%", 0.03,
                                                          code=cat.code("mrd"))))
        tl.errors.append(("entered-in-error", ConditionRecord("relapse", min(idx + timedelta(days=100), hi),
                                                              cat.code("relapse", "ICD10CM"))))
    elif which == 1:
        d = last_end + timedelta(days=3)
        tl.errors.append(("entered-in-error", Administration(
            "blinatumomab", d, min(d + timedelta(days=6), hi), cat.blinatumomab["ingredient"][1], "blinatumomab")))
    elif which == 2:
        d = idx - timedelta(days=10)
        tl.errors.append(("not-done", Administration("chemotherapy", d, d, cat.chemo("methotrexate")[1],
                                                     "methotrexate")))
        tl.errors.append(("cancelled", Measurement("marrow_blasts", idx, 40.0, "%", 40.0,
                                                   code=cat.code("marrow_blasts"))))


def _readings_agree(tl: PatientTimeline, p) -> bool:
    """Where the protocol allows two readings, the data must not tell them apart, so the truth holds
    under either: "chemotherapy in window W" (rules 4, 6, 12) = an administration starting in W or
    any administration day in W; a CD19-negative blast finding (rule 9) counts on or before the
    course start or only in the count's window."""
    courses = oracle.find_courses(tl, p.course_gap_days)
    for c in courses:
        before = {m.day for m in tl.measurements if m.variable == "cd19_negative_blasts" and m.day <= c.start}
        if any(day < c.start - timedelta(days=p.cd19_window_days) for day in before):
            return False
    idx, last = courses[0].start, courses[-1].end
    windows = [(idx - timedelta(days=p.burden_window_days), idx - timedelta(days=1)),
               (idx - timedelta(days=p.delay_window_days), idx - timedelta(days=1)),
               (last + timedelta(days=1), last + timedelta(days=p.bridge_window_days))]
    for a in tl.administrations:
        if a.kind != "chemotherapy":
            continue
        for lo, hi in windows:
            starts_in = lo <= a.start <= hi
            overlaps = a.start <= hi and a.end >= lo
            if starts_in != overlaps:
                return False
    return True


def build_cohort(*, seed: int = 42, patients: int = 105, noise: int = 0,
                 study: StudyDefinition | None = None) -> SynthResult:
    """Build every timeline and derive the truth (no files written)."""
    if noise < 0:
        raise BlinaError(f"--noise {noise}: must be >= 0")
    study = study or load_study()
    cat = Catalog(study)
    specs = specs_for(patients)
    res = SynthResult(seed, patients, noise, study)
    order = list(range(patients))
    random.Random(f"{seed}:centers").shuffle(order)
    pos = 0
    problems: list[str] = []
    for style, size in zip(CENTERS, _center_sizes(patients), strict=True):
        members = sorted(order[pos: pos + size])
        pos += size
        mrns = random.Random(f"{seed}:{style.site_id}:mrn").sample(range(100000, 1000000), size)
        n_err = 0
        for j, i in enumerate(members):
            r = random.Random(f"{seed}:patient:{i}")
            person_id = 1001 + j if style.kind.startswith("omop") else None
            tl, _ = build_timeline(specs[i], style, cat, r, f"{style.mrn_prefix}{mrns[j]}", person_id)
            nr = random.Random(f"{seed}:noise:{i}")
            relevant = 1 + len(tl.administrations) + len(tl.measurements) + len(tl.conditions) + \
                len(tl.procedures) + len(tl.visits)
            extra = style.base_noise + noise * relevant
            _noise(tl, extra, nr)
            counts = res.records.setdefault(style.site_id, {"relevant": 0, "irrelevant": 0})
            counts["relevant"] += relevant
            counts["irrelevant"] += extra
            if style.errors and n_err < 3:
                _errors(tl, specs[i], cat, n_err)
                n_err += 1
            rows, prow = oracle.derive(tl, study.params)
            if prow is None:
                problems.append(f"{style.site_id} {tl.mrn}: no course")
                continue
            diff = check_design(specs[i], rows, prow, study.params.landmark_days)
            if not _readings_agree(tl, study.params):
                diff.append("the data tells two protocol readings apart")
            problems += [f"{style.site_id} {tl.mrn} (spec {specs[i].group}): {d}" for d in diff]
            res.timelines.append(tl)
            res.specs.append(specs[i])
            res.courses += rows
            res.patient_rows.append(prow)
    if problems:
        raise BlinaError("synthetic cohort does not match its design: " + "; ".join(problems[:10]),
                         hint="generator bug: report it with the seed and arguments")
    return res


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _csv_text(columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]], cell=_cell) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([cell(row[c]) for c in columns])
    return buf.getvalue()


def write_truth(res: SynthResult, folder: Path) -> list[Path]:
    """Write ``course.csv`` and ``patient.csv`` (contract columns; booleans true/false, NULL empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = lambda r: (r["site_id"], r["person_source_value"], r.get("course_number", 0))  # noqa: E731
    out = []
    for name, cols, rows in (("course.csv", oracle.COURSE_COLUMNS, res.courses),
                             ("patient.csv", oracle.PATIENT_COLUMNS, res.patient_rows)):
        path = folder / name
        path.write_text(_csv_text(cols, sorted(rows, key=key)), encoding="utf-8")
        out.append(path)
    return out


def _dumps(obj: Any, *, indent: int | None = None) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=indent, separators=(",", ":") if indent is None else None)


def render_timelines(timelines: list[PatientTimeline], kind: str, folder: Path, cat: Catalog,
                     r: random.Random) -> list[Path]:
    """Write ``timelines`` into ``folder`` in one route: ``fhir_bundle`` (one transaction Bundle per
    patient), ``fhir_ndjson`` (Bulk Data, one file per resource type) or ``omop_standard`` /
    ``omop_local`` (OMOP CSV; the codes are whatever the timelines carry). The same timelines rendered
    in two routes must give the same study tables (the FHIR/OMOP equivalence test)."""
    written: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "fhir_bundle":
        for k, tl in enumerate(timelines, start=1):
            resources = patient_resources(tl, cat, r, lambda t, i: f"urn:uuid:{i}")
            path = folder / f"patient-{k:04d}.json"
            path.write_text(_dumps(bundle(resources), indent=1) + "\n", encoding="utf-8")
            written.append(path)
    elif kind == "fhir_ndjson":
        by_type: dict[str, list[str]] = {}
        for tl in timelines:
            for resource in patient_resources(tl, cat, r, lambda t, i: f"{t}/{i}", with_time=True):
                by_type.setdefault(resource["resourceType"], []).append(_dumps(resource))
        for rtype in sorted(by_type):
            path = folder / f"{rtype}.ndjson"
            path.write_text("\n".join(by_type[rtype]) + "\n", encoding="utf-8")
            written.append(path)
    elif kind in ("omop_standard", "omop_local"):
        rend = OmopRenderer(cat)
        for tl in timelines:
            rend.add(tl)
        for table in OMOP_TABLES:
            cols = [f.column for f in field_spec()[table]]
            path = folder / f"{table}.csv"
            path.write_text(_csv_text(cols, rend.rows[table], OmopRenderer.cell), encoding="utf-8")
            written.append(path)
        # The export says what it is (adapter/provenance.py): extract.json and the report carry it on.
        path = folder / "cdm_source.csv"
        path.write_text(_csv_text([f.column for f in field_spec()["cdm_source"]], [_cdm_source(timelines, folder)],
                                  OmopRenderer.cell), encoding="utf-8")
        written.append(path)
    else:
        raise BlinaError(f"unknown route {kind!r}", hint="fhir_bundle, fhir_ndjson, omop_standard or omop_local")
    return written


def _cdm_source(timelines: list[PatientTimeline], folder: Path) -> dict[str, Any]:
    """The CDM_SOURCE row of a synthetic OMOP export: it names the data synthetic (and is dated by
    the data, so the same seed gives the same bytes)."""
    last = max((d for tl in timelines for d in tl.record_dates()), default=date(2000, 1, 1))
    return {
        "cdm_source_name": f"blina-study synthetic cohort ({folder.name})",
        "cdm_source_abbreviation": "blina-synth",
        "cdm_holder": "blina-study generator",
        "source_description": f"SYNTHETIC DATA generated by blina synth (generator {GENERATOR_VERSION}); "
        "no real patient",
        "source_documentation_reference": None,
        "cdm_etl_reference": SYNTH_ETL_REFERENCE,
        "source_release_date": last,
        "cdm_release_date": last,
        "cdm_version": "v5.4",
        "cdm_version_concept_id": 0,
        "vocabulary_version": "blina study subset",
    }


def _render(res: SynthResult, out: Path, cat: Catalog) -> list[Path]:
    written: list[Path] = []
    for style in CENTERS:
        tls = [tl for tl in res.timelines if tl.site_id == style.site_id]
        r = random.Random(f"{res.seed}:{style.site_id}:render")
        written += render_timelines(tls, style.kind, out / style.folder, cat, r)
    return written


def _flow(res: SynthResult) -> dict[str, dict[str, int]]:
    def count(rows, col):
        out: dict[str, int] = {}
        for r in rows:
            out[str(r[col])] = out.get(str(r[col]), 0) + 1
        return dict(sorted(out.items()))

    c1 = [c for c in res.courses if c["course_number"] == 1]
    return {
        "indication": count(res.patient_rows, "indication"),
        "status_at_referral": count(res.patient_rows, "status_at_referral"),
        "pre_status_course1": count(c1, "pre_status"),
        "pre_status_all_courses": count(res.courses, "pre_status"),
        "next_therapy": count(res.patient_rows, "next_therapy"),
        "efs_event_type": count(res.patient_rows, "efs_event_type"),
    }


def generate(out: str | Path, *, seed: int = 42, patients: int = 105, noise: int = 0,
             study: StudyDefinition | None = None) -> dict[str, Any]:
    """Generate the cohort into ``out`` (replacing the generator's own sub-folders) and return the
    manifest (also written as ``out/manifest.json``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BlinaError(f"{out}: exists and is not a folder", hint="choose another --out")
    res = build_cohort(seed=seed, patients=patients, noise=noise, study=study)
    cat = Catalog(res.study)
    for sub in ["truth", *(c.folder for c in CENTERS)]:
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    written = write_truth(res, out / "truth") + _render(res, out, cat)
    centers = {}
    for style in CENTERS:
        prows = [p for p in res.patient_rows if p["site_id"] == style.site_id]
        centers[style.site_id] = {
            "format": style.kind,
            "folder": style.folder,
            "patients": len(prows),
            "courses": sum(p["n_courses"] for p in prows),
            "cd_count_units": list(style.cd_units if not style.local else ("/uL",)),
            "cytokine_unit": style.cytokine_unit,
            "overlay": "mappings/sites/center4.yaml" if style.local else None,
            "records": res.records.get(style.site_id, {}),
        }
    manifest = {
        "generator": f"blina synth v{GENERATOR_VERSION}",
        "seed": seed,
        "patients": patients,
        "noise_per_relevant_record": noise,
        "study_id": res.study.study_id,
        "study_fingerprint": res.study.fingerprint(),
        "params": res.study.params.model_dump(),
        "centers": centers,
        "sizes": {"patients": len(res.patient_rows), "courses": len(res.courses)},
        "flow": _flow(res),
        "files": [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size,
                   "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in sorted(written)],
    }
    (out / "manifest.json").write_text(_dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
