"""blina-study analysis layer: the study's statistics over the ``course`` and ``patient`` tables.

Typical notebook use::

    from blina_study.analysis import read_course, read_patient, analyze
    results = analyze(read_course("out/course.parquet"), read_patient("out/patient.parquet"))
    results.to_tidy()["response"]
"""

from blina_study.analysis.io import read_course, read_patient, write_results
from blina_study.analysis.tables import StudyResults, analyze

__all__ = ["StudyResults", "analyze", "read_course", "read_patient", "write_results"]
