"""``blina report``: the self-contained HTML study report from the course and patient tables.

The extract step writes a JSON sidecar beside ``course`` / ``patient`` with the study parameters and
fingerprints of the run; ``--run-info`` passes it on so the report states what produced the tables.
Accepted run-info keys: ``params`` (or ``parameters``): the study parameters; ``fingerprint`` (or
``fingerprints``): named fingerprints; any other scalar top-level value (e.g. ``site_id``,
``extracted_at``) is shown with the fingerprints; an embedded ``data_quality`` object is used when
``--data-quality`` is not given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adapter.errors import BlinaError

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "read_json_object", "run_info_parts"]

HELP = "write the self-contained HTML study report (tables, KM plots, published vs this run)"
EXAMPLES = [
    "blina report --course out/course.csv --patient out/patient.csv --out report.html",
    "blina report --course out/course.parquet --patient out/patient.parquet --out report.html "
    "--run-info out/run-info.json --data-quality out/data-quality.json",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--course", required=True, metavar="FILE", help="course table (.csv, .csv.gz, .parquet)")
    p.add_argument("--patient", required=True, metavar="FILE", help="patient table (.csv, .csv.gz, .parquet)")
    p.add_argument("--out", required=True, metavar="FILE", help="HTML file to write, e.g. report.html")
    p.add_argument("--data-quality", default=None, metavar="FILE",
                   help="data-quality summary JSON of the extract (quarantine/reject counts, coverage)")
    p.add_argument("--run-info", default=None, metavar="FILE",
                   help="run-info JSON written by the extract step (parameters and fingerprints)")
    p.add_argument("--no-by-center", action="store_true", help="pooled results only (no per-center breakdown)")


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing file, bad JSON or a non-object is a one-line error."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BlinaError(f"{p}: cannot read the {what} file ({exc.strerror or exc})",
                         hint=f"give the path of the {what} JSON file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BlinaError(f"{p}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})",
                         hint=f"the {what} file must be one JSON object, as the extract step writes it") from None
    if not isinstance(doc, dict):
        raise BlinaError(f"{p}: the {what} file holds a JSON {type(doc).__name__}, not an object",
                         hint='write {"params": {...}, "fingerprint": {...}}' if what == "run-info"
                         else "write one JSON object")
    return doc


def run_info_parts(info: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(params, fingerprint, embedded data quality) from a run-info object.

    Without run-info, the parameters shown are the packaged study definition's, labelled as assumed.
    """
    if info is None:
        from adapter.study import load_study

        study = load_study(None)
        fp = {"study_definition": f"{study.fingerprint()} (assumed: packaged {study.study_id} "
              f"v{study.version}; no --run-info given)"}
        return study.params.model_dump(), fp, None
    params = info.get("params", info.get("parameters")) or {}
    fp = info.get("fingerprint", info.get("fingerprints")) or {}
    if not isinstance(params, dict) or not isinstance(fp, dict):
        raise BlinaError("run-info: 'params' and 'fingerprint' must be JSON objects",
                         hint='write {"params": {...}, "fingerprint": {...}}')
    fp = dict(fp)
    skip = {"params", "parameters", "fingerprint", "fingerprints", "data_quality"}
    for k, v in info.items():
        if k not in skip and not isinstance(v, (dict, list)):
            fp.setdefault(k, v)
    dq = info.get("data_quality")
    return params, fp, dq if isinstance(dq, dict) else None


def run(args: argparse.Namespace) -> int:
    from analysis.io import read_course, read_patient
    from analysis.report import render_report
    from analysis.tables import analyze

    course = read_course(args.course)
    patient = read_patient(args.patient)
    info = read_json_object(args.run_info, "run-info") if args.run_info else None
    params, fingerprint, dq = run_info_parts(info)
    if args.data_quality:
        dq = read_json_object(args.data_quality, "data-quality")
    results = analyze(course, patient, by_center=not args.no_by_center, parameters=params)
    out = render_report(results, course=course, patient=patient, params=params, fingerprint=fingerprint,
                        data_quality=dq, out_path=args.out)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB): {results.pooled.n_patients} patients, "
          f"{results.pooled.n_courses} courses, "
          + (f"{len(results.by_site)} center(s) + pooled" if results.by_site else "pooled only"))
    return 0
