"""``blina site-run``: at a center, build the study tables and write its results package (``--share``)."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

from blina_study.adapter import __version__
from blina_study.adapter.commands.common import add_db_arguments, add_study_arguments, open_db, study_from_args
from blina_study.adapter.db import Database
from blina_study.adapter.errors import BlinaError, DataFindings

# The smallest site a package is written for: the vantage6 node's default (vantage6/v6_blina
# DEFAULT_MIN_PATIENTS, BLINA_MIN_PATIENTS), so both federated routes refuse the same small sites.
MIN_SITE_PATIENTS = 5

HELP = ("run the study at a center and write its results package (--share aggregate, the default: published "
        "aggregates only; --share exact: plus coordinator-only pooling statistics that can single out patients; "
        "see docs/federated.md)")
EXAMPLES = [
    "blina site-run --db site.duckdb --site-id center3 --out center3.zip",
    "blina site-run --db site.duckdb --site-id center3 --out center3.zip --share exact",
    "blina site-run --db postgresql://reader@dbhost/omop --cdm-schema cdm --vocab-schema vocab "
    "--site-id center2 --out center2.zip --min-cell 10",
    "blina site-run --course out/course.parquet --patient out/patient.parquet --site-id center1 --out c1.zip",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    add_study_arguments(p)
    p.add_argument("--site-id", required=True,
                   help="this center's identifier (letters, digits, - and _)")
    p.add_argument("--out", type=Path, required=True, help="package file to write (.zip)")
    p.add_argument("--share", choices=("aggregate", "exact"), default="aggregate",
                   help="sharing level (docs/federated.md): aggregate (default) = only publishable aggregates "
                   "(counts below --min-cell suppressed, no event day, no individual value), pooled by "
                   "meta-analysis; exact = also coordinator-only sufficient statistics that can single out "
                   "patients, so the pooled analysis equals the centralized one (needs a data-use agreement)")
    p.add_argument("--min-cell", type=int, default=5, help="smallest count published in site tables (default 5)")
    p.add_argument("--sign-key", type=Path, default=None, metavar="FILE",
                   help="the site's Ed25519 private key (from blina site-key): the package carries signature.json, "
                   "which the coordinator verifies with blina pool --keys")
    p.add_argument("--min-patients", type=int, default=MIN_SITE_PATIENTS, metavar="N",
                   help=f"refuse to write a package for fewer patients (default {MIN_SITE_PATIENTS}, "
                   "the vantage6 node's BLINA_MIN_PATIENTS default; at least 1)")
    p.add_argument("--course", type=Path, default=None, help="use an extracted course table instead of the database")
    p.add_argument("--patient", type=Path, default=None, help="use an extracted patient table (with --course)")


def vocabulary_version(db: Database) -> str:
    """The OHDSI vocabulary release (VOCABULARY row 'None'), else CDM_SOURCE's, else the first listed."""
    for sql in (
        f"SELECT vocabulary_version FROM {db.qualified('vocab', 'vocabulary')} WHERE vocabulary_id = 'None'",
        f"SELECT vocabulary_version FROM {db.qualified('cdm', 'cdm_source')}",
        f"SELECT vocabulary_version FROM {db.qualified('vocab', 'vocabulary')} ORDER BY vocabulary_id",
    ):
        try:
            rows = db.query(sql)
        except Exception:  # noqa: BLE001 - a missing optional table just means "try the next source"
            continue
        if rows and rows[0][0]:
            return str(rows[0][0])
    return "unknown"


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.views import site_unit_stamp
    from blina_study.analysis.federated.package import build_site_package
    from blina_study.analysis.io import read_course, read_patient

    if args.out.is_dir():  # checked before any work: a folder cannot become the package file
        raise BlinaError(f"--out {args.out} is a folder", hint="name the package file, e.g. --out center1.zip")
    if args.sign_key is not None and not args.sign_key.is_file():  # before any work, not after the build
        raise BlinaError(f"--sign-key {args.sign_key}: no such file", hint="make the key with blina site-key")
    study, overlay = study_from_args(args)
    if (args.course is None) != (args.patient is None):
        raise BlinaError("--course and --patient go together", hint="give both extracted tables, or neither")
    if args.min_patients < 1:
        raise BlinaError(f"--min-patients {args.min_patients}: must be at least 1",
                         hint=f"the default is {MIN_SITE_PATIENTS}")
    if args.course is not None:
        course, patient = read_course(args.course), read_patient(args.patient)
        vocab, fingerprint = "from extracted tables", None
        # what the data are, from the extract.json beside the tables (True / False / None: not recorded)
        beside = args.patient.parent / "extract.json"
        try:
            synthetic = (json.loads(beside.read_text(encoding="utf-8")).get("data_source") or {}).get("synthetic")
        except (OSError, ValueError, AttributeError):
            synthetic = None
    else:
        from blina_study.adapter.cohort import require_one_site_per_person, require_study_patients
        from blina_study.adapter.provenance import read_data_source
        from blina_study.adapter.views import build, input_fingerprint

        with open_db(args, read_only=args.db.endswith(".duckdb")) as db:
            require_one_site_per_person(db)
            course, patient = build(db, study, overlay, site_id=args.site_id)
            require_study_patients(db, study, overlay, patient, site_id=args.site_id)
            vocab = vocabulary_version(db)
            fingerprint = input_fingerprint(db, study, overlay, site_id=args.site_id)["sha256"]
            synthetic = read_data_source(db)["synthetic"]
    if len(patient) < args.min_patients:
        # Aggregates of a handful of patients are (nearly) person-level: no package is written.
        raise DataFindings(
            f"site {args.site_id} has {len(patient)} study patients, fewer than the minimum site size "
            f"{args.min_patients}: no package written (pool this site's patients with a larger center's, "
            "or lower --min-patients only if your governance allows it)")
    for frame in (course, patient):
        frame["site_id"] = args.site_id
    info = {
        "package_version": __version__,
        "study_definition_hash": study.fingerprint(),
        "parameters": study.params.model_dump(),
        "site_unit_factors": site_unit_stamp(study, overlay),
        "vocabulary_version": vocab,
        "study_id": study.study_id,
        "study_version": study.version,
        # a boolean only (no CDM_SOURCE text: it may hold dates): the pooled report says synthetic
        "synthetic_data": synthetic if isinstance(synthetic, bool) else None,
    }
    if fingerprint:
        info["input_fingerprint"] = fingerprint
    path = build_site_package(course, patient, site_id=args.site_id, manifest_info=info, out_path=args.out,
                              min_cell=args.min_cell, share=args.share, sign_key=args.sign_key)
    log = json.loads(zipfile.ZipFile(path).read("disclosure_log.json"))
    elements = log["can_single_out_a_patient"]
    if args.share == "aggregate":
        print(f"wrote {path}: {len(patient)} patients, {len(course)} courses; sharing level 'aggregate': only "
              f"publishable aggregates (results/: counts below {args.min_cell} suppressed with complementary "
              f"cells, {len(log['suppressed'])} cell(s) or estimate(s) hidden or withheld; no event day, no "
              "individual value). The coordinator pools them by meta-analysis, not exactly; use --share exact "
              "only under a data-use agreement (docs/federated.md).")
        return 0
    print(f"wrote {path}: {len(patient)} patients, {len(course)} courses; sharing level "
          f"'{log['sharing_level']}': pooling/statistics.json is for the coordinator only and holds "
          f"{len(elements)} element(s) that can single out a patient (event and censoring days, lab values, "
          f"counts below {args.min_cell}; each listed with its reason in disclosure_log.json); results/ holds "
          f"aggregates with counts below {args.min_cell} suppressed, for publication. Send it to the coordinator "
          "only under your data-use agreement (docs/federated.md).")
    return 0
