"""The study tables ``analyze`` and ``report`` read: one or several sites' extracts, combined by site_id.

Each input is a pair ``--course FILE --patient FILE`` (given in the same order) or an extract folder
(``blina extract --out DIR`` writes ``course``/``patient`` and ``extract.json`` there). The
``extract.json`` beside a patient file is read without being asked for: its study parameters and
fingerprints describe the run and its ``data_source`` says whether the data are synthetic (a report
of generated patients must say so, whatever flags the user remembered).

Combining is a concatenation by site_id, never a silent choice: a site id found in two inputs is
refused (the same site twice would double its patients), tables derived with different study
parameters are refused (their pooled results would mean nothing), an input with no patient is a
finding (exit 1).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from blina_study.adapter.errors import BlinaError

__all__ = ["StudyInputs", "add_input_arguments", "describe", "read_inputs"]


@dataclass
class StudyInputs:
    """The combined tables, the run-info that describes them and each site's data source."""

    course: pd.DataFrame
    patient: pd.DataFrame
    run_info: dict[str, Any] | None
    sources: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    @property
    def source_label(self) -> str:
        return ", ".join(self.labels)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """Extract folders and/or ``--course``/``--patient`` pairs (repeatable, paired in order)."""
    p.add_argument("folders", nargs="*", metavar="DIR",
                   help="extract folder(s) written by 'blina extract --out DIR' (course, patient, extract.json)")
    p.add_argument("--course", action="append", default=[], metavar="FILE",
                   help="course table (.csv, .csv.gz, .parquet); repeat with --patient for several sites")
    p.add_argument("--patient", action="append", default=[], metavar="FILE",
                   help="patient table of the same site as the --course given in the same position")
    p.add_argument("--run-info", default=None, metavar="FILE",
                   help="run-info JSON (default: the extract.json beside each patient table)")


def _table_in(folder: Path, name: str) -> Path:
    for suffix in (".parquet", ".csv", ".csv.gz"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    raise BlinaError(f"{folder}: no {name}.parquet or {name}.csv",
                     hint="give the folder 'blina extract --out' wrote, or --course/--patient files")


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    if len(args.course) != len(args.patient):
        raise BlinaError(f"{len(args.course)} --course but {len(args.patient)} --patient",
                         hint="give one --patient per --course, in the same order (one pair per site)")
    pairs = [(Path(c), Path(p)) for c, p in zip(args.course, args.patient, strict=True)]
    for d in args.folders:
        folder = Path(d)
        if not folder.is_dir():
            raise BlinaError(f"{folder}: not a folder", hint="give an extract folder or --course/--patient files")
        pairs.append((_table_in(folder, "course"), _table_in(folder, "patient")))
    if not pairs:
        raise BlinaError("no study tables given",
                         hint="give extract folder(s), or --course FILE --patient FILE (repeat for several sites)")
    return pairs


def _read_info(path: Path) -> dict[str, Any] | None:
    from blina_study.adapter.commands.report import read_json_object

    return read_json_object(path, "run-info") if path.is_file() else None


def _params(info: dict[str, Any] | None) -> dict[str, Any] | None:
    if info is None:
        return None
    p = info.get("params", info.get("parameters"))
    return p if isinstance(p, dict) else None


def read_inputs(args: argparse.Namespace) -> StudyInputs:
    """Read every input, check it and combine the tables by site_id (see the module doc)."""
    from blina_study.adapter.commands.report import read_json_object, require_patients
    from blina_study.analysis.io import read_course, read_patient

    pairs = _pairs(args)
    courses, patients, infos = [], [], []
    owner: dict[str, Path] = {}
    sources: dict[str, dict[str, Any] | None] = {}
    for course_path, patient_path in pairs:
        course, patient = read_course(course_path), read_patient(patient_path)
        require_patients(course, patient, str(patient_path))
        info = _read_info(patient_path.parent / "extract.json")
        sites = sorted(str(s) for s in patient["site_id"].dropna().unique())
        for s in sites:
            if s in owner:
                raise BlinaError(
                    f"site id {s!r} is in two inputs: {owner[s]} and {patient_path}",
                    hint="give each site's tables once; sites with the same id must be re-extracted with "
                    "distinct --site-id values")
            owner[s] = patient_path
            sources[s] = info.get("data_source") if info else None
        foreign = set(course["site_id"].dropna().astype(str)) - set(sites)
        if foreign:
            raise BlinaError(f"{course_path}: site id(s) {sorted(foreign)} are not in {patient_path}",
                             hint="pair each course table with the patient table of the same extract")
        courses.append(course)
        patients.append(patient)
        infos.append((patient_path, info))
    if args.run_info:
        run_info: dict[str, Any] | None = read_json_object(args.run_info, "run-info")
    elif len(infos) == 1:
        run_info = infos[0][1]
    else:
        run_info = _combined_info(infos)
    course = pd.concat(courses, ignore_index=True) if len(courses) > 1 else courses[0]
    patient = pd.concat(patients, ignore_index=True) if len(patients) > 1 else patients[0]
    return StudyInputs(course, patient, run_info, sources, [str(p) for _, p in pairs])


def _combined_info(infos: list[tuple[Path, dict[str, Any] | None]]) -> dict[str, Any] | None:
    """One run-info for several extracts: their common parameters and study fingerprint, each input's
    fingerprint. Different parameters or study definitions are refused."""
    known = [(p, i) for p, i in infos if i is not None]
    if not known:
        return None
    first_path, first = known[0]
    for path, info in known[1:]:
        for key, what in (("parameters", "study parameters"), ("study_fingerprint", "study definitions")):
            a, b = first.get(key), info.get(key)
            if key == "parameters":
                a, b = _params(first), _params(info)
            if a != b:
                raise BlinaError(
                    f"{first_path.parent / 'extract.json'} and {path.parent / 'extract.json'} come from different "
                    f"{what}",
                    hint="re-extract every site with the same study definition and --param values before "
                    "combining them")
    fp = {f"input {i.get('site_id', p.parent.name)}": (i.get("input_fingerprint") or {}).get("sha256", "")
          for p, i in known}
    out: dict[str, Any] = {
        "parameters": _params(first) or {},
        "fingerprint": fp,
        "study_id": first.get("study_id"),
        "study_version": first.get("study_version"),
        "study_fingerprint": first.get("study_fingerprint"),
        "site_id": ", ".join(str(i.get("site_id", p.parent.name)) for p, i in known),
    }
    missing = [str(p) for p, i in infos if i is None]
    if missing:
        out["run_info_missing"] = "no extract.json beside " + ", ".join(missing)
    return {k: v for k, v in out.items() if v is not None}


def describe(inputs: StudyInputs) -> str:
    """The data-source sentence of :func:`adapter.provenance.describe_sources`."""
    from blina_study.adapter.provenance import describe_sources

    return describe_sources(inputs.sources)

