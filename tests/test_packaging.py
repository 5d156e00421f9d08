"""Packaging: one distinctive import name in site-packages, usable next to a user's own modules."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import blina_study


def test_documented_imports_work_next_to_local_analysis_and_adapter_modules(tmp_path):
    # A notebook folder with its own analysis.py and adapter.py (reproduced breakage before the rename).
    for name in ("analysis", "adapter"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the local {name}.py was imported')\n")
    code = (
        "from blina_study import analyze, read_course, read_patient, write_results, StudyResults\n"
        "from blina_study.analysis import analyze as a2\n"
        "from blina_study.adapter.cli import main\n"
        "assert analyze is a2\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_python_dash_m_runs_the_cli(tmp_path):
    (tmp_path / "analysis.py").write_text("raise ImportError('the local analysis.py was imported')\n")
    res = subprocess.run([sys.executable, "-m", "blina_study", "--version"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert blina_study.__version__ in res.stdout


def test_public_api_names_resolve():
    for name in blina_study.__all__:
        assert getattr(blina_study, name) is not None


def test_the_wheel_installs_nothing_generic_at_the_top_level():
    dist = importlib.metadata.distribution("blina-study")
    top = {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}
    assert top <= {"blina_study", f"blina_study-{dist.version}.dist-info"}, top
