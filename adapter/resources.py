"""Locate the data folders (mappings/, sql/) whether running from a checkout or an installed wheel.

The wheel carries them as ``adapter/_data/{mappings,sql}`` (see pyproject ``force-include``);
a source checkout keeps them at the repository root.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["mappings_dir", "sql_dir", "data_dir"]

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` ("mappings" or "sql") from the wheel or the checkout."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"data folder {name!r} not found next to {_PKG}; reinstall blina-study")


def mappings_dir() -> Path:
    return data_dir("mappings")


def sql_dir() -> Path:
    return data_dir("sql")
