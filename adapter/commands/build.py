"""``blina build``: derive the study's ``course`` and ``patient`` tables from an OMOP CDM database.

Read-only by default: one composed SELECT per table, nothing created (a SELECT-only role suffices).
``--results-schema`` also persists them as views; ``--sql-only`` writes the SQL for review and runs
nothing.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from blina_study.adapter.commands.common import add_db_arguments, add_study_arguments, open_db, study_from_args
from blina_study.adapter.db import Database, Schemas
from blina_study.adapter.errors import BlinaError

HELP = "build the course and patient tables from OMOP CDM (read-only unless --results-schema)"
EXAMPLES = [
    "blina build --db site.duckdb --site-id center3",
    "blina build --db postgresql://reader@dbhost/omop --cdm-schema cdm --vocab-schema vocab "
    "--overlay mappings/sites/center4.yaml",
    "blina build --db postgresql://reader@dbhost/omop --site-id c1 --sql-only review.sql",
    "blina build --db site.duckdb --site-id c1 --results-schema blina --param course_gap_days=10",
]


def add_common(p: argparse.ArgumentParser, *, results: bool) -> None:
    add_db_arguments(p, results=results)
    add_study_arguments(p)
    p.add_argument("--site-id", default=None, metavar="ID",
                   help="center identifier written to every row (default: the overlay's site_id)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, results=True)
    p.add_argument("--sql-only", type=Path, default=None, metavar="FILE",
                   help="write the rendered SQL (with its bound values as comments) to FILE and run nothing")


def offline_db(args: argparse.Namespace) -> Database:
    """A Database that only names the dialect and schemas (no connection): for --sql-only."""
    url = args.db or ""
    dialect = "postgresql" if re.match(r"^postgres(ql)?(\+psycopg)?://", url) else "duckdb"
    schemas = Schemas(cdm=args.cdm_schema, vocab=args.vocab_schema or args.cdm_schema,
                      results=getattr(args, "results_schema", None))
    return Database(url=url, dialect=dialect, schemas=schemas)


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.cohort import require_one_site_per_person, require_study_patients
    from blina_study.adapter.views import build, persist, render

    study, overlay = study_from_args(args)
    if args.sql_only:
        rendered = render(study, overlay, offline_db(args), site_id=args.site_id)
        try:
            args.sql_only.write_text(rendered.text(), encoding="utf-8")
        except OSError as exc:
            raise BlinaError(f"cannot write {args.sql_only}: {exc.strerror}", hint="check the path") from None
        print(f"wrote the {rendered.dialect} SQL of {', '.join(rendered.queries)} to {args.sql_only} "
              "(nothing was run)")
        return 0
    with open_db(args, read_only=not args.results_schema) as db:
        require_one_site_per_person(db)  # one export under two --site values: a finding, not a cohort
        course, patient = build(db, study, overlay, site_id=args.site_id)
        require_study_patients(db, study, overlay, patient, site_id=args.site_id)  # exit 1, nothing persisted
        created = persist(db, study, overlay, site_id=args.site_id) if args.results_schema else []
    pre = course.pre_status.value_counts().to_dict() if len(course) else {}
    print(f"built {len(course)} courses of {len(patient)} patients "
          f"(pre-course status: {', '.join(f'{k} {v}' for k, v in sorted(pre.items())) or 'none'})")
    from blina_study.adapter.views import site_unit_stamp

    for u in site_unit_stamp(study, overlay):  # the site's own factors, stated beside the result
        print(f"site unit: {u['unit']} = {u['factor']:g} {u['canonical']} ({u['unit_family']}, from the overlay)")
    if created:
        print(f"persisted in schema {args.results_schema}: {', '.join(c.split('.')[1] for c in created)}")
    return 0
