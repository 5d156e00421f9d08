"""``blina ingest``: load FHIR R4 Bundles / Bulk Data NDJSON into the OMOP CDM (see blina_study.adapter.fhir.ingest)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blina_study.adapter.commands.common import add_db_arguments, open_db
from blina_study.adapter.errors import BlinaError, DataFindings
from blina_study.adapter.fhir.reader import discover_files
from blina_study.adapter.omop import create_cdm

HELP = "ingest FHIR R4 Bundles and Bulk Data NDJSON (.ndjson, .ndjson.gz, folders) into OMOP CDM v5.4"
EXAMPLES = [
    "blina ingest synth/center1_fhir_bundles --site center1 --db blina.duckdb --cdm-schema center1 "
    "--vocab-schema vocab",
    "blina ingest export/ --site center2 --db postgresql://etl@dbhost/omop "
    "--report ingest-report.json --quarantine rejected.ndjson",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="FHIR files (Bundle or resource .json, .ndjson, .ndjson.gz) or folders of them: the "
                        "site's whole export, which replaces what earlier runs loaded for --site")
    p.add_argument("--site", required=True, metavar="S",
                   help="site identifier (keys the person map and lineage)")
    add_db_arguments(p)
    g = p.add_argument_group("study definition")
    g.add_argument("--study", default=None, metavar="FILE", help="study definition (default: packaged study.yaml)")
    g.add_argument("--overlay", default=None, metavar="FILE", help="site overlay mapping local codes")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that read NDJSON side by side (same result as 1; default: the CPU count, "
                        "at most 4, for 16 MB of NDJSON or more, else 1)")
    p.add_argument("--validate", choices=("fast", "full"), default="fast",
                   help="fast (default): FHIR R4 types, regexes, required elements, required codes and one value[x] "
                        "of the elements the study reads (generated from the R4B models); full: every element of "
                        "every study resource through fhir.resources R4B, 16-24x the validation cost "
                        "(bench/RESULTS.md)")
    g = p.add_argument_group("output")
    g.add_argument("--report", type=Path, default=None, metavar="F", help="write the JSON run report here")
    g.add_argument("--quarantine", type=Path, default=None, metavar="F",
                   help="write every rejected resource (with file, line, reason) as NDJSON here")
    g.add_argument("--quiet", action="store_true", help="print only the one-line summary")


def _print_summary(report, quiet: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    # Not a terminal (a log, a pipe): no wrapping at rich's default 80 columns, tables at their natural width.
    tty = sys.stdout.isatty()
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=None if tty else 100_000)
    line = (f"site {report.site_id}: read {report.read} resources from {len(report.files)} files: "
            f"loaded {report.n_loaded}, skipped {report.n_skipped}, rejected {report.n_rejected} "
            f"({report.seconds:.1f} s)")
    console.print(line)
    for m in report.manifests:
        console.print(f"manifest {m['file']}: transactionTime {m['transactionTime']}, "
                      f"{len(m['output'])} output files, {len(m['error'])} error files")
    for f in report.not_fhir_files:
        console.print(f"ignored {f['file']}: {f['reason']}")
    if report.n_server_errors:
        console.print(f"the server reported {report.n_server_errors} errors of its export (error files of the "
                      "manifest; not input data):")
        for e in report.server_errors[: 20 if not quiet else 3]:
            console.print(f"  {e['file']}:{e['line']}: {e['severity']} {e['code']}: {e['diagnostics']}")
    dup = report.duplicate_ids
    if dup["identical"] or dup["conflicting"]:
        console.print(f"duplicate ids: {dup['identical']} read again with the same content (counted once), "
                      f"{dup['conflicting']} with different content (every copy rejected); locations in --report")
    for finding in report.findings:
        console.print(f"finding: {finding}")
    if quiet:
        return
    t = Table(title="resources", show_edge=False)
    for col in ("type", "loaded", "skipped", "why skipped"):
        t.add_column(col, justify="right" if col in ("loaded", "skipped") else "left")
    types = sorted(set(report.loaded) | {k for c in report.skipped.values() for k in c})
    for rtype in types:
        why = ", ".join(f"{kind} {c[rtype]}" for kind, c in report.skipped.items() if c.get(rtype))
        skipped = sum(c.get(rtype, 0) for c in report.skipped.values())
        t.add_row(rtype, str(report.loaded.get(rtype, 0)), str(skipped), why)
    console.print(t)
    rows = Table(title="OMOP rows written", show_edge=False)
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    rows.add_column("concept 0 (unknown code)", justify="right")
    for table, n in report.rows.items():
        rows.add_row(table, str(n), str(report.unknown_concept_rows.get(table, "")))
    console.print(rows)
    if report.n_rejected:
        rej = Table(title=f"rejected ({report.n_rejected})", show_edge=False)
        rej.add_column("where", overflow="fold")  # a file path is folded, never cut
        rej.add_column("resource")
        rej.add_column("reason")
        for r in report.rejected[:20]:
            rej.add_row(r.where, r.resource_key or "", r.reason)
        console.print(rej)
        if report.n_rejected > 20:
            console.print(f"... {report.n_rejected - 20} more (see --report / --quarantine)")


def _schema_exists(db, schema: str) -> bool:
    rows = db.query("SELECT count(*) FROM information_schema.schemata WHERE schema_name = :s", {"s": schema})
    return bool(rows[0][0])


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.fhir.ingest import ingest_fhir
    from blina_study.adapter.study import load_overlay, load_study

    study = load_study(args.study)
    overlay = load_overlay(args.overlay, study) if args.overlay else None
    # Everything that can be checked before touching the database is (nothing is left behind on failure).
    for out in (args.report, args.quarantine):
        if out is not None and not out.resolve().parent.is_dir():
            raise BlinaError(f"cannot write {out}: its folder does not exist", hint="create the folder first")
    files, _ = discover_files(args.paths)
    if not files:
        raise DataFindings(f"no FHIR file (.json, .ndjson, .ndjson.gz) in {', '.join(map(str, args.paths))}; "
                           "pass the folder of the export")
    if not args.db.startswith(("postgres://", "postgresql://", "postgresql+psycopg://", "duckdb://")) \
            and args.db != ":memory:" and not Path(args.db).is_file():
        raise BlinaError(f"no DuckDB database {args.db}", hint="create it with `blina init-db --db PATH` first")
    quarantine = None
    try:
        if args.quarantine:
            try:
                quarantine = open(args.quarantine, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise BlinaError(f"cannot write {args.quarantine}: {exc.strerror}", hint="check the path") from exc
        with open_db(args) as db:
            new_schemas = [s for s in dict.fromkeys((db.schemas.cdm, db.schemas.vocab)) if not _schema_exists(db, s)]
            try:
                create_cdm(db)
                report = ingest_fhir(db, args.paths, site_id=args.site, study=study, overlay=overlay,
                                     quarantine=quarantine, workers=args.workers, validation=args.validate)
            except BaseException:
                for schema in new_schemas:  # made by this failed run (e.g. a mistyped --cdm-schema): remove
                    db.execute(f"DROP SCHEMA IF EXISTS {db.q(schema)} CASCADE")
                raise
    except BaseException:
        if quarantine is not None:
            quarantine.close()
            quarantine = None
            args.quarantine.unlink(missing_ok=True)  # no partial output from a failed run
        raise
    finally:
        if quarantine is not None:
            quarantine.close()
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    _print_summary(report, args.quiet)
    if not report.balanced():  # never expected: would be a bug in the accounting itself
        raise BlinaError("internal accounting mismatch: read != loaded + skipped + rejected",
                         hint="rerun with --report and file an issue")
    return 1 if report.n_rejected or report.findings else 0
