"""blina-study adapter: FHIR R4 / OMOP CDM v5.4 to the study's course and patient tables."""

__version__ = "0.1.0"
__all__ = ["__version__"]
