"""``blina report``: the self-contained HTML study report from the course and patient tables.

The extract step writes ``extract.json`` beside ``course`` / ``patient`` with the study parameters,
fingerprints and data source of the run; it is read from there (``--run-info`` gives another file), so
the report states what produced the tables and says so when the data are synthetic. Several sites'
extracts are combined by site_id (:mod:`blina_study.adapter.commands.inputs`).
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

from blina_study.adapter.errors import BlinaError

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run", "read_json_object", "run_info_parts", "analyze_tables",
           "require_patients"]

HELP = "write the self-contained HTML study report (tables, KM plots, published vs this run)"
EXAMPLES = [
    "blina report out/center1 out/center2 --out report.html   (extract folders, combined by site_id)",
    "blina report --course out/c1/course.csv --patient out/c1/patient.csv --out report.html "
    "--data-quality c1-ingest.json   (the file 'blina ingest ... --report c1-ingest.json' wrote)",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from blina_study.adapter.commands.inputs import add_input_arguments

    add_input_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE", help="HTML file to write, e.g. report.html")
    p.add_argument("--data-quality", default=None, metavar="FILE",
                   help="a data-quality JSON object shown as tables, e.g. the --report file of blina ingest "
                   "or blina load-omop (records read, loaded, skipped, rejected)")
    p.add_argument("--no-by-center", action="store_true", help="pooled results only (no per-center breakdown)")
    p.add_argument("--cox-strata", choices=("none", "site"), default="none",
                   help="Cox model for EFS over all centers: one baseline hazard (none, default) or a baseline per "
                   "center (site); the report's Table 4 says which")
    add_km_conf_type(p)


def add_km_conf_type(p: argparse.ArgumentParser) -> None:
    p.add_argument("--km-conf-type", choices=("log", "log-log"), default="log",
                   help="transform of the Kaplan-Meier 95%% limits: log (R survfit's default) or log-log")


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
        from blina_study.adapter.study import load_study

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
    units = info.get("site_unit_factors")  # the site's own unit factors (extract.json), shown like a parameter
    if isinstance(units, list) and units and all(isinstance(u, dict) for u in units):
        fp.setdefault("site_unit_factors", "; ".join(
            f"{u.get('unit')} = {u.get('factor')} {u.get('canonical')} ({u.get('unit_family')})" for u in units))
    dq = info.get("data_quality")
    return params, fp, dq if isinstance(dq, dict) else None


def require_patients(course: Any, patient: Any, source: str) -> None:
    """No patient is a data finding (exit 1), never an analysis of n = 0 (a Fisher "P = 1.000" on 0/0,
    a published figure "reproduced" from nothing)."""
    from blina_study.adapter.errors import DataFindings

    if len(patient) == 0:
        raise DataFindings(
            f"nothing to analyse: {source} has 0 patients ({len(course)} courses); no table or report is "
            "written. Fix: run blina extract on a database with study patients (it exits 1 and says why "
            "when there are none) and pass the course/patient files it writes")


def analyze_tables(course: Any, patient: Any, *, by_center: bool, params: dict[str, Any],
                   source: str = "the patient table", km_conf_type: str = "log",
                   cox_strata_by_site: bool = False) -> Any:
    """``blina_study.analysis.tables.analyze`` with the CLI's settings. A Cox fit that diverges is
    reported by ``cox_ph`` itself (R's warnings, "no model"), so no guard is needed here. No patient
    raises :class:`blina_study.adapter.errors.DataFindings` (``source`` names the input in the sentence)."""
    import blina_study.analysis.tables as tables

    require_patients(course, patient, source)
    return tables.analyze(course, patient, by_center=by_center, parameters=params, km_conf_type=km_conf_type,
                          cox_strata_by_site=cox_strata_by_site)


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.commands.inputs import describe, read_inputs
    from blina_study.analysis.report import render_report

    inputs = read_inputs(args)
    course, patient = inputs.course, inputs.patient
    params, fingerprint, dq = run_info_parts(inputs.run_info)
    if args.data_quality:
        dq = read_json_object(args.data_quality, "data-quality")
    results = analyze_tables(course, patient, by_center=not args.no_by_center, params=params,
                             source=inputs.source_label, km_conf_type=args.km_conf_type,
                             cox_strata_by_site=args.cox_strata == "site")
    data_source = describe(inputs)
    out = render_report(results, course=course, patient=patient, params=params, fingerprint=fingerprint,
                        data_quality=dq, out_path=args.out, data_source=data_source)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KiB): {results.pooled.n_patients} patients, "
          f"{results.pooled.n_courses} courses, "
          + (f"{len(results.by_site)} center(s) + pooled" if results.by_site else "pooled only")
          + f"; data: {data_source}")
    return 0
