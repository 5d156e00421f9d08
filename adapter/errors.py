"""Errors the CLI turns into one line with a hint (exit code 2), or data findings (exit code 1)."""

from __future__ import annotations

__all__ = ["BlinaError", "DataFindings"]


class BlinaError(Exception):
    """A usage or environment error: shown as one line plus a hint, exit code 2."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class DataFindings(Exception):
    """The run finished but found data problems (rejected records): exit code 1."""
