"""``blina init-db``: create the OMOP CDM v5.4 tables and load the study vocabulary subset."""

from __future__ import annotations

import argparse

from blina_study.adapter.commands.common import add_db_arguments, open_db
from blina_study.adapter.omop import create_cdm, load_study_vocabulary
from blina_study.adapter.omop.vocabulary import foreign_concept_count

HELP = "create OMOP CDM v5.4 tables (and load the study vocabulary subset) in a new database"
EXAMPLES = [
    "blina init-db --db site.duckdb",
    "blina init-db --db postgresql://postgres@127.0.0.1:5432/blina --cdm-schema cdm --vocab-schema vocab",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("--no-vocabulary", action="store_true",
                   help="do not load the study vocabulary subset (the database has the OHDSI vocabulary)")


def run(args: argparse.Namespace) -> int:
    with open_db(args) as db:
        create_cdm(db)
        where = (f"schema {db.schemas.cdm}" if db.schemas.cdm == db.schemas.vocab
                 else f"schemas {db.schemas.cdm}, vocabulary {db.schemas.vocab}")
        msg = f"created OMOP CDM v5.4 tables in {db.safe_url} ({where})"
        own = foreign_concept_count(db)
        if own:  # the study subset is only for a database without a vocabulary
            msg += (f"; the database has its own vocabulary ({own} concepts): the study subset is not loaded "
                    "(blina check reports study codes it lacks)")
        elif not args.no_vocabulary:
            counts = load_study_vocabulary(db)
            msg += f"; loaded {counts['concept']} study concepts"
    print(msg)
    return 0
