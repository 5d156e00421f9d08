"""FHIR side of the adapter: a FHIRPath subset compiler and a SQL-on-FHIR v2 view runner.

Exports are resolved lazily so that ``python -m blina_study.adapter.fhir.viewdef`` does not import the
module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ColumnInfo",
    "CompiledPath",
    "FhirPathError",
    "FhirPathEvaluationError",
    "ViewDefinition",
    "ViewDefinitionError",
    "ViewEvaluationError",
    "compile_path",
    "load_view",
    "run_view",
]

_HOME = {
    "CompiledPath": "fhirpath",
    "FhirPathError": "fhirpath",
    "FhirPathEvaluationError": "fhirpath",
    "compile_path": "fhirpath",
    "ColumnInfo": "viewdef",
    "ViewDefinition": "viewdef",
    "ViewDefinitionError": "viewdef",
    "ViewEvaluationError": "viewdef",
    "load_view": "viewdef",
    "run_view": "viewdef",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'blina_study.adapter.fhir' has no attribute {name!r}")
    return getattr(importlib.import_module(f"blina_study.adapter.fhir.{module}"), name)
