"""Where a CDM's data come from, as the data say it: the CDM_SOURCE table (OMOP's own record of the
source), so a report built from synthetic data says so without a flag the user must remember.

* ``blina synth`` writes a CDM_SOURCE row into each OMOP export (``cdm_etl_reference`` ``blina synth``,
  a description starting "SYNTHETIC DATA") and tags every FHIR resource it writes with the HL7 tag for
  test data (``meta.tag``: v3 ActReason ``HTEST``, the code FHIR uses for "test health data").
* ``blina ingest`` records the Patients it loaded with that tag in a CDM_SOURCE row of its own
  (:func:`record_fhir_ingest`).
* :func:`read_data_source` reads CDM_SOURCE: the data are synthetic when a row's name, abbreviation or
  description says "synthetic" (OHDSI's Eunomia/Synthea CDMs do: "synthetic, realistic (but not real),
  patient data") or names HTEST test data; ``blina extract`` stores the result in extract.json, and
  ``analyze`` / ``report`` read it from there.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from blina_study.adapter.db import Database

__all__ = [
    "HTEST_TAG",
    "INGEST_ETL_REFERENCE",
    "SYNTH_ETL_REFERENCE",
    "read_data_source",
    "record_fhir_ingest",
    "describe_sources",
]

# HL7 v3 ActReason HTEST "test health data": the FHIR security/meta tag for data that are not real.
HTEST_TAG: dict[str, str] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                             "display": "test health data"}
SYNTH_ETL_REFERENCE = "blina synth"
INGEST_ETL_REFERENCE = "blina ingest (FHIR R4)"
_SYNTHETIC = re.compile(r"\bsynthetic\b|\bHTEST\b", re.IGNORECASE)
_COLUMNS = ("cdm_source_name", "cdm_source_abbreviation", "cdm_holder", "source_description",
            "cdm_etl_reference", "source_release_date", "cdm_version")


def read_data_source(db: Database) -> dict[str, Any]:
    """``{"synthetic": bool | None, "evidence": str, "cdm_source": [rows]}`` from CDM_SOURCE.

    ``synthetic`` is None when the CDM has no CDM_SOURCE row (nothing is known either way)."""
    if not db.table_exists(db.schemas.cdm, "cdm_source"):
        return {"synthetic": None, "evidence": "no CDM_SOURCE table", "cdm_source": []}
    present = {c.lower() for c in db.table_columns(db.schemas.cdm, "cdm_source")}
    cols = [c for c in _COLUMNS if c in present]
    if not cols:
        return {"synthetic": None, "evidence": "CDM_SOURCE has none of the usual columns", "cdm_source": []}
    rows = [
        {c: (None if v is None else str(v)) for c, v in zip(cols, r, strict=True)}
        for r in db.query(f"select {', '.join(cols)} from {db.qualified('cdm', 'cdm_source')}")
    ]
    if not rows:
        return {"synthetic": None, "evidence": "CDM_SOURCE is empty", "cdm_source": []}
    hits = [r for r in rows if any(_SYNTHETIC.search(r.get(c) or "") for c in
                                   ("cdm_source_name", "cdm_source_abbreviation", "source_description"))]
    if hits:
        r = hits[0]
        text = r.get("source_description") or r.get("cdm_source_name") or ""
        return {"synthetic": True, "evidence": f"CDM_SOURCE {r.get('cdm_source_name')!r}: {text[:200]}",
                "cdm_source": rows}
    names = ", ".join(repr(r.get("cdm_source_name")) for r in rows)
    return {"synthetic": False, "evidence": f"CDM_SOURCE {names} does not say synthetic", "cdm_source": rows}


def record_fhir_ingest(db: Database, site_id: str, patients: int, tagged: int) -> None:
    """Keep one CDM_SOURCE row per FHIR-ingested site saying how many of its loaded Patients carry the
    HTEST tag; only the ingest's own rows are replaced, never a hospital's. Nothing is written when the
    CDM has no CDM_SOURCE table."""
    if not db.table_exists(db.schemas.cdm, "cdm_source"):
        return
    table = db.qualified("cdm", "cdm_source")
    name = f"FHIR ingest of site {site_id}"
    if tagged:
        what = (f"{tagged} of {patients} Patients loaded by the last ingest are tagged as test data "
                "(meta.tag v3-ActReason HTEST)")
    else:
        what = f"{patients} Patients loaded by the last ingest; none tagged as test data (HTEST)"
    today = dt.date.today()
    db.execute(f"delete from {table} where cdm_etl_reference = :ref and cdm_source_name = :name",
               {"ref": INGEST_ETL_REFERENCE, "name": name})
    db.execute(
        f"insert into {table} (cdm_source_name, cdm_source_abbreviation, cdm_holder, source_description, "
        "cdm_etl_reference, source_release_date, cdm_release_date, cdm_version, cdm_version_concept_id, "
        "vocabulary_version) values (:name, :abbr, :holder, :what, :ref, :d, :d, 'v5.4', 0, :vv)",
        {"name": name, "abbr": site_id[:25], "holder": "blina-study", "what": what, "ref": INGEST_ETL_REFERENCE,
         "d": today, "vv": "as loaded"},
    )


def describe_sources(sources: dict[str, dict[str, Any] | None]) -> str:
    """One sentence on what the analysed data are, for a report's title block and "At a glance".

    ``sources``: site (or input) -> the ``data_source`` object of its extract.json, or None when not
    recorded. Starts with "SYNTHETIC DATA" when any site's data are synthetic."""
    synth = sorted(s for s, d in sources.items() if d and d.get("synthetic"))
    if synth:
        first = sources[synth[0]] or {}
        return (f"SYNTHETIC DATA: {', '.join(synth)} {'holds' if len(synth) == 1 else 'hold'} generated "
                f"patients, not real ones ({synth[0]}: {first.get('evidence', 'CDM_SOURCE')}). Agreement with "
                "the published figures shows that the pipeline runs, not that the study is replicated.")
    unknown = sorted(s for s, d in sources.items() if not d or d.get("synthetic") is None)
    if unknown:
        return f"not recorded for {', '.join(unknown)} (no CDM_SOURCE row in extract.json)"
    return "as the CDM states it (CDM_SOURCE): " + "; ".join(
        f"{s}: {(d or {}).get('evidence', '')}" for s, d in sorted(sources.items()))
