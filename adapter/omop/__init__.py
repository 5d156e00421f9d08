"""OMOP CDM v5.4 store: DDL from one field-level source, the study vocabulary subset, a CSV loader."""

from blina_study.adapter.omop.csv_loader import LoadReport, load_omop_csv
from blina_study.adapter.omop.ddl import CDM_TABLES, create_cdm, field_spec, render_ddl
from blina_study.adapter.omop.vocabulary import load_study_vocabulary

__all__ = [
    "CDM_TABLES",
    "LoadReport",
    "create_cdm",
    "field_spec",
    "load_omop_csv",
    "load_study_vocabulary",
    "render_ddl",
]
