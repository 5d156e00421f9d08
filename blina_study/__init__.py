"""blina-study: re-run the multicenter blinatumomab pediatric B-ALL study from FHIR R4 or OMOP CDM data.

One distinctive import name for everything the wheel installs (nothing generic such as ``analysis``
lands at the top level of site-packages). The repository keeps the design card's folders
``adapter/`` (data: FHIR, OMOP, study views, CLI) and ``analysis/`` (statistics, reports, pooling); the
wheel installs them as ``blina_study.adapter`` and ``blina_study.analysis``.

Typical notebook use::

    from blina_study import analyze, read_course, read_patient
    results = analyze(read_course("out/course.parquet"), read_patient("out/patient.parquet"))
    results.to_tidy()["response"]

Command line: ``blina --help`` or ``python -m blina_study --help``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["StudyResults", "__version__", "analyze", "read_course", "read_patient", "write_results"]

# In a source checkout (the repository on sys.path, or an editable install) adapter/ and analysis/ sit
# beside this folder instead of inside it, as the wheel has them: let the package find them there.
_HERE = Path(__file__).resolve().parent
if not (_HERE / "adapter").is_dir() and (_HERE.parent / "adapter" / "cli.py").is_file():
    __path__.append(str(_HERE.parent))

# Resolved on first use, so that ``python -m blina_study`` and the CLI do not import pandas up front.
_LAZY = {
    "StudyResults": "blina_study.analysis.tables",
    "analyze": "blina_study.analysis.tables",
    "read_course": "blina_study.analysis.io",
    "read_patient": "blina_study.analysis.io",
    "write_results": "blina_study.analysis.io",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blina_study' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
