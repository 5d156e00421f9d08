"""Degenerate cohorts are findings: why a database yields no study patient, in one sentence.

``build``, ``extract`` and ``site-run`` call :func:`require_study_patients` after building; with no
patient they raise :class:`DataFindings` (exit 1) naming the likely cause, and write nothing. The
cause is found with the same relations the build reads (``int_concept_sets``, ``study_codes``,
``int_cohort_persons``), so it names exactly what the build did not find:

1. no blinatumomab concept resolved (the study codes are not in CONCEPT and the overlay maps no
   local drug code): load the vocabulary or map the local code;
2. CONCEPT_ANCESTOR is empty: clinical-drug products of the ingredient are not found;
3. none of the resolved concepts is used in DRUG_EXPOSURE.

:func:`same_person_under_two_sites` finds the other degenerate input (finding 6 of issue 11): one
export ingested twice with different ``--site`` values doubles the cohort (60 persons from 30 MRNs).
The FHIR ingest keys persons per (site, Patient id) in ``{cdm}.blina_person_map``; an MRN
(``person_source_value``: the overlay's identifier, else the first identifier, else Patient.id) under
two site ids is that mistake. ``check`` reports it and ``build`` / ``extract`` / ``site-run`` refuse
to run on it (exit 1). Counts and site ids only: no MRN is printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from blina_study.adapter.db import Database
from blina_study.adapter.errors import DataFindings
from blina_study.adapter.study import SiteOverlay, StudyDefinition

__all__ = ["SameMrnFinding", "empty_cohort_reason", "require_one_site_per_person", "require_study_patients",
           "same_person_under_two_sites"]

# = blina_study.adapter.fhir.ingest_sql.PERSON_MAP_TABLE (not imported: no FHIR deps)
PERSON_MAP_TABLE = "blina_person_map"

_VOCAB_FIX = ("a database whose vocabulary lacks blinatumomab has no patient treated with it under a standard "
              "code: load the full OHDSI vocabulary (blina load-vocab ATHENA_FOLDER) or map the local drug code "
              "in the site overlay")


def _ancestor_empty(db: Database) -> bool | None:
    """True when CONCEPT_ANCESTOR has no row, None when it cannot be read."""
    try:
        rows = db.query(f"select 1 from {db.qualified('vocab', 'concept_ancestor')} limit 1")
    except Exception:  # noqa: BLE001 - a missing table is reported by blina check, not here
        return None
    return not rows


def empty_cohort_reason(db: Database, study: StudyDefinition, overlay: SiteOverlay | None = None, *,
                        site_id: str | None = None) -> str:
    """One sentence (with the fix) saying why no person has a blinatumomab exposure."""
    from blina_study.adapter.views import render_query

    sql, params = render_query(study, overlay, db, """
select
    (select count(*) from int_concept_sets where variable = 'blinatumomab' and match_on = 'standard') as n_std,
    (select count(*) from int_concept_sets where variable = 'blinatumomab' and match_on = 'source') as n_src,
    (select count(*) from int_overlay_codes where variable = 'blinatumomab') as n_sv,
    (select count(*) from int_cohort_persons) as n_persons""",
        ("int_concept_sets", "int_overlay_codes", "int_cohort_persons"), site_id=site_id or "check")
    n_std, n_src, n_sv, n_persons = (int(v) for v in db.query(sql, params)[0])
    codes = ", ".join(f"{c.vocabulary_id} {c.code}" for c in study.variables["blinatumomab"].codes
                      if c.vocabulary_id)
    ancestor_empty = _ancestor_empty(db)
    if n_std + n_src + n_sv == 0:
        return (f"no study patient: no blinatumomab concept resolved ({codes or 'the study codes'} not in "
                f"CONCEPT of schema {db.schemas.vocab!r}); {_VOCAB_FIX}")
    if ancestor_empty:
        return ("no study patient: CONCEPT_ANCESTOR is empty, so blinatumomab products (clinical drugs) "
                "are not found from the ingredient; load the vocabulary's CONCEPT_ANCESTOR "
                "(Athena download or the export's concept_ancestor.csv)")
    if n_persons == 0:
        return (f"no study patient: none of the {n_std + n_src} resolved blinatumomab concepts"
                + (f" or {n_sv} overlay codes" if n_sv else "")
                + f" is used in DRUG_EXPOSURE of schema {db.schemas.cdm!r}; check --cdm-schema, or map "
                "the local drug code in the site overlay")
    return (f"no study patient: {n_persons} persons have blinatumomab but no course was derived; "
            "run blina check for the study variables with 0 rows")


def require_study_patients(db: Database, study: StudyDefinition, overlay: SiteOverlay | None,
                           patient: pd.DataFrame, *, site_id: str | None = None) -> None:
    """Raise :class:`DataFindings` (exit 1) with the likely cause when ``patient`` is empty."""
    if len(patient):
        return
    raise DataFindings(empty_cohort_reason(db, study, overlay, site_id=site_id))


@dataclass(frozen=True)
class SameMrnFinding:
    """``mrns`` person_source_values each held by persons of more than one site id (``sites``)."""

    mrns: int
    sites: tuple[str, ...]

    def sentence(self) -> str:
        return (f"{self.mrns} MRNs (person_source_value) appear under more than one site id "
                f"({', '.join(self.sites)}) as different persons, which doubles the cohort: the same export "
                "was probably ingested twice with different --site values (fix: ingest each hospital's export "
                "into a fresh database once, with its own --site)")


def same_person_under_two_sites(db: Database) -> SameMrnFinding | None:
    """The MRNs held by persons of two or more site ids in the FHIR person map, or None (also when the
    database has no person map: a hospital's own CDM has no site ids)."""
    if not db.table_exists(db.schemas.cdm, PERSON_MAP_TABLE):
        return None
    person, pmap = db.qualified("cdm", "person"), db.qualified("cdm", PERSON_MAP_TABLE)
    rows = db.query(f"""
with pairs as (
    select distinct p.person_source_value as mrn, m.site_id
    from {person} as p
    inner join {pmap} as m
        on m.person_id = p.person_id
    where p.person_source_value is not null
),
shared as (
    select mrn from pairs group by mrn having count(*) > 1
)
select s.site_id, (select count(*) from shared) as n
from pairs as s
where s.mrn in (select mrn from shared)
group by s.site_id
order by s.site_id""")
    if not rows:
        return None
    return SameMrnFinding(mrns=int(rows[0][1]), sites=tuple(str(r[0]) for r in rows))


def require_one_site_per_person(db: Database) -> None:
    """Raise :class:`DataFindings` (exit 1) when an MRN is held by persons of two site ids."""
    finding = same_person_under_two_sites(db)
    if finding is not None:
        raise DataFindings(finding.sentence())
