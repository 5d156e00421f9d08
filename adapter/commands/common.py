"""Arguments shared by several commands (database URL, schemas, study definition, overlay)."""

from __future__ import annotations

import argparse

from blina_study.adapter.db import DEFAULT_DB, Database, connect, validate_schema, validate_site_id
from blina_study.adapter.study import SiteOverlay, StudyDefinition, load_overlay, load_study

__all__ = ["add_db_arguments", "add_study_arguments", "add_table_arguments", "check_identifiers", "open_db",
           "study_from_args"]


def check_identifiers(args: argparse.Namespace) -> None:
    """Validate every site id and schema name given on the command line, before any work.

    One pattern each (blina_study.adapter.db.SITE_ID_PATTERN, blina_study.adapter.db.IDENT_PATTERN);
    raises BlinaError (exit 2).
    """
    for attr in ("site", "site_id"):
        if getattr(args, attr, None) is not None:
            validate_site_id(getattr(args, attr), "--" + attr.replace("_", "-"))
    for attr, what in (("cdm_schema", "cdm schema name"), ("vocab_schema", "vocabulary schema name"),
                       ("results_schema", "results schema name")):
        if getattr(args, attr, None) is not None:
            validate_schema(getattr(args, attr), what)


def add_db_arguments(p: argparse.ArgumentParser, *, results: bool = False) -> None:
    g = p.add_argument_group("database")
    g.add_argument("--db", default=DEFAULT_DB, metavar="URL",
                   help=f"DuckDB file or postgresql://user@host:port/db (default: {DEFAULT_DB})")
    g.add_argument("--cdm-schema", default="cdm", metavar="S",
                   help="schema of the CDM tables (default: cdm)")
    g.add_argument("--vocab-schema", default=None, metavar="V",
                   help="schema of CONCEPT and friends (default: the CDM schema)")
    if results:
        g.add_argument("--results-schema", default=None, metavar="R",
                       help="writable schema to persist the study views in (default: create nothing)")


def add_table_arguments(p: argparse.ArgumentParser) -> None:
    """``--course`` / ``--patient``: the extracted study tables an analysis step reads."""
    p.add_argument("--course", required=True, metavar="FILE", help="course table (.csv, .csv.gz, .parquet)")
    p.add_argument("--patient", required=True, metavar="FILE", help="patient table (.csv, .csv.gz, .parquet)")


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("study definition")
    g.add_argument("--study", default=None, metavar="FILE", help="study definition (default: packaged study.yaml)")
    g.add_argument("--overlay", default=None, metavar="FILE", help="site overlay mapping local codes")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a study parameter, e.g. --param course_gap_days=10 (repeatable)")


def study_from_args(args: argparse.Namespace) -> tuple[StudyDefinition, SiteOverlay | None]:
    from blina_study.adapter.errors import BlinaError
    from blina_study.adapter.study import Params

    study = load_study(args.study)
    overrides = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise BlinaError(f"--param {item!r} is not NAME=VALUE", hint="e.g. --param course_gap_days=10")
        if name not in Params.model_fields:
            raise BlinaError(f"--param {name}: unknown parameter",
                             hint=f"one of: {', '.join(Params.model_fields)}")
        try:
            overrides[name] = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise BlinaError(f"--param {name}={value!r} is not a number",
                             hint="e.g. --param course_gap_days=10") from None
    if overrides:
        from pydantic import ValidationError

        try:
            study = study.with_params(**overrides)
        except ValidationError as exc:
            raise BlinaError(f"--param: {exc.errors()[0]['msg']}", hint="see mappings/study.yaml") from None
    overlay = load_overlay(args.overlay, study) if args.overlay else None
    return study, overlay


def open_db(args: argparse.Namespace, *, read_only: bool = False) -> Database:
    return connect(args.db, cdm_schema=args.cdm_schema, vocab_schema=args.vocab_schema,
                   results_schema=getattr(args, "results_schema", None), read_only=read_only)
