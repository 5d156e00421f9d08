"""``blina load-omop``: load a folder (or a .zip, as OHDSI ships Eunomia) of OMOP CDM CSV files (a site
export)."""

from __future__ import annotations

import argparse
import json
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from blina_study.adapter.commands.common import add_db_arguments, open_db
from blina_study.adapter.errors import BlinaError, DataFindings
from blina_study.adapter.omop import create_cdm, load_omop_csv

HELP = ("load a folder of OMOP CDM v5.4 CSV files, with the export's own vocabulary tables, into the database "
        "(rows that do not parse are rejected)")
EXAMPLES = [
    "blina load-omop synth/center3_omop_standard --db blina.duckdb --cdm-schema center3 --vocab-schema vocab",
    "blina load-omop export/ --db site.duckdb --report load-report.json",
    "blina load-omop Synthea27Nj_5.4.zip --db eunomia.duckdb   (a .zip of the CSV files is read in place)",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder (or .zip) with <table>.csv or <table>.csv.gz files")
    add_db_arguments(p)
    p.add_argument("--append", action="store_true", help="append rows instead of replacing each table")
    p.add_argument("--report", type=Path, default=None, help="write a JSON load report here")


@contextmanager
def _csv_folder(source: Path) -> Iterator[Path]:
    """``source`` itself when it is a folder; for a .zip, a temporary folder with its CSV members (macOS
    resource forks ``__MACOSX/``, ``._*`` left out), removed afterwards. Messages name ``zip!member``."""
    if source.is_dir():
        yield source
        return
    if not (source.is_file() and zipfile.is_zipfile(source)):
        raise BlinaError(f"{source}: no such folder or .zip", hint="pass the folder (or .zip) of the OMOP CSV export")
    with zipfile.ZipFile(source) as zf, tempfile.TemporaryDirectory(prefix="blina-omop-") as tmp:
        for info in zf.infolist():
            name = Path(info.filename).name
            if (info.is_dir() or info.filename.startswith("__MACOSX/") or name.startswith("._")
                    or not name.lower().endswith((".csv", ".csv.gz"))):
                continue
            if (Path(tmp) / name).exists():
                raise BlinaError(f"{source}: two members named {name}", hint="zip one export per file")
            with zf.open(info) as src, open(Path(tmp) / name, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        try:
            yield Path(tmp)
        except BlinaError as exc:
            raise BlinaError(exc.message.replace(tmp + "/", f"{source}!"), hint=exc.hint) from None


def run(args: argparse.Namespace) -> int:
    if args.report is not None and not args.report.resolve().parent.is_dir():
        raise BlinaError(f"cannot write {args.report}: its folder does not exist", hint="create the folder first")
    with _csv_folder(args.folder) as folder:
        if not any(f.name.lower().endswith((".csv", ".csv.gz")) for f in folder.iterdir()):
            raise DataFindings(f"no OMOP CSV file (<table>.csv or .csv.gz) in {args.folder}; "
                               "pass the folder (or .zip) of the export")
        with open_db(args) as db:
            create_cdm(db)
            report = load_omop_csv(db, folder, mode="append" if args.append else "replace")
        if folder != args.folder:  # rejections name the member of the .zip, not the temporary copy
            report.rejected[:] = [replace(r, file=f"{args.folder}!{Path(r.file).name}") for r in report.rejected]
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    tables = ", ".join(f"{t} {n}" for t, n in report.loaded.items())
    print(f"read {report.rows_read} rows: loaded {report.n_loaded} ({tables}), rejected {len(report.rejected)}")
    for r in report.rejected[:20]:
        print(f"  rejected {r.file}:{r.line}: {r.reason}")
    if len(report.rejected) > 20:
        print(f"  ... {len(report.rejected) - 20} more (see --report)")
    if report.skipped_files:
        print(f"skipped files that are not CDM tables the study reads: {', '.join(report.skipped_files)}")
    from blina_study.adapter.omop.ddl import field_spec

    spec = field_spec()
    if not any(spec[t][0].schema_role == "vocab" for t in report.loaded):
        print("note: the folder has no vocabulary tables (concept.csv ...): the study reads the vocabulary "
              "already in the database (blina init-db loads the study subset; blina load-vocab an Athena download)")
    return 1 if report.rejected else 0
