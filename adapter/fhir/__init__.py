"""FHIR side of the adapter: a FHIRPath subset compiler and a SQL-on-FHIR v2 view runner."""

from adapter.fhir.fhirpath import (
    CompiledPath,
    FhirPathError,
    FhirPathEvaluationError,
    compile_path,
)
from adapter.fhir.viewdef import (
    ColumnInfo,
    ViewDefinition,
    ViewDefinitionError,
    ViewEvaluationError,
    load_view,
    run_view,
)

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
