"""Plausibility rules for study-relevant FHIR values (``mappings/fhir/plausibility.yaml``), validated at load.

The rules that need one resource only (JSON types, dates in the window, start <= end, value sets, NUL
characters, leap seconds) are applied by ``blina_study.adapter.fhir.mapper.ResourceMapper.map``; the ones that need
two resources (an event against its patient's birth and death) or the vocabulary (a value's range in the
variable's canonical unit) by the SQL step (``blina_study.adapter.fhir.ingest_sql``). Every violation rejects the
resource with the element and the rule; nothing is coerced.

Number literals: orjson (the reader's parser) already refuses a literal that overflows a double (1e400)
as malformed JSON, but reads one that underflows (1e-400) as 0.0 without a trace. A float 0.0 in a
mapped numeric element is rare, so only then is the record's text read again, with the standard
library's parser and a ``parse_float`` hook that sees each literal (:func:`underflowing_numbers`); doing
that for every record would parse every study record twice.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.resources import mappings_dir

__all__ = ["Plausibility", "PlausibilityError", "Rules", "UnitTexts", "check_ranges", "load_plausibility",
           "underflowing_numbers"]

RULES_FILE = "mappings/fhir/plausibility.yaml"


class PlausibilityError(BlinaError):
    """``plausibility.yaml`` does not match its schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DateRules(_Strict):
    earliest: dt.date
    latest_after_today_days: int = Field(ge=0, le=36600)
    death_grace_days: int = Field(ge=0, le=3660)


class PeriodRule(_Strict):
    start: list[str] = Field(min_length=1)
    end: list[str] = Field(min_length=1)


class Plausibility(_Strict):
    """The file's content (see the comments in ``mappings/fhir/plausibility.yaml``)."""

    dates: DateRules
    periods: dict[str, PeriodRule] = Field(default_factory=dict)
    value_sets: dict[str, list[str]] = Field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> Plausibility:
        for name, (lo, hi) in self.ranges.items():
            if not lo <= hi:
                raise ValueError(f"ranges.{name}: min {lo} is above max {hi}")
        for key in self.value_sets:
            if not re.fullmatch(r"[a-z_]+\.[a-z_]+", key):
                raise ValueError(f"value_sets.{key}: expected view.column")
        return self


def load_plausibility(path: str | Path | None = None) -> Plausibility:
    """Read and validate the rules (default: the packaged ``mappings/fhir/plausibility.yaml``)."""
    p = Path(path) if path else mappings_dir() / "fhir" / "plausibility.yaml"
    return _load(str(p))


@cache
def _load(p: str) -> Plausibility:
    try:
        raw = yaml.safe_load(Path(p).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlausibilityError(f"{p}: cannot read ({exc})", hint=f"fix or restore {RULES_FILE}") from exc
    try:
        # strict models: dates are given as strings in YAML (quoted), read here
        if isinstance(raw, dict) and isinstance(raw.get("dates"), dict) and "earliest" in raw["dates"]:
            raw["dates"]["earliest"] = dt.date.fromisoformat(str(raw["dates"]["earliest"]))
        if isinstance(raw, dict) and isinstance(raw.get("ranges"), dict):
            raw["ranges"] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["ranges"].items()}
        return Plausibility.model_validate(raw)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e.get("loc", ()))
            msg = f"{where}: {e.get('msg')}"
        else:
            msg = str(exc)
        raise PlausibilityError(f"{p}: {msg}", hint="see the comments in the file") from exc


@dataclass(frozen=True)
class Rules:
    """The rules of one run: the file plus today's date (the window's upper end moves with the clock)."""

    file: Plausibility
    today: dt.date
    earliest: str  # YYYY-MM-DD
    latest: str

    @classmethod
    def for_today(cls, file: Plausibility | None = None, today: dt.date | None = None) -> Rules:
        file = file or load_plausibility()
        today = today or dt.date.today()
        latest = today + dt.timedelta(days=file.dates.latest_after_today_days)
        return cls(file, today, file.dates.earliest.isoformat(), latest.isoformat())

    def outside_window(self, day: str) -> bool:
        """``day`` (``YYYY-MM-DD``, or a ``YYYY``/``YYYY-MM`` prefix) lies outside [earliest, latest]."""
        n = len(day)
        return day < self.earliest[:n] or day > self.latest[:n]

    def window_text(self) -> str:
        return (f"dates must lie within [{self.earliest}, {self.latest}] (today + "
                f"{self.file.dates.latest_after_today_days} days, {RULES_FILE} dates)")


def check_ranges(study: Any, rules: Rules) -> None:
    """Every quantity variable of ``study`` (a StudyDefinition) has a range, and every range a variable."""
    quantity = {n for n, v in study.variables.items() if v.value == "quantity"}
    missing = sorted(quantity - set(rules.file.ranges))
    unknown = sorted(set(rules.file.ranges) - set(study.variables))
    if missing or unknown:
        what = (f"no plausible range for the quantity variable(s) {', '.join(missing)}" if missing
                else f"ranges for unknown study variable(s) {', '.join(unknown)}")
        raise PlausibilityError(f"{RULES_FILE}: {what}",
                                hint="give each quantity variable of the study definition a [min, max] under ranges")


class _Bad(float):
    """A number literal that does not survive as a double (it underflows to 0)."""

    literal: str

    def __new__(cls, literal: str) -> _Bad:
        obj = super().__new__(cls, 0.0)
        obj.literal = literal
        return obj


_NONZERO_MANTISSA = re.compile(r"-?0*\.?0*[1-9]")


def _parse_float(literal: str) -> float:
    value = float(literal)
    if value == 0.0 and _NONZERO_MANTISSA.match(literal.split("e")[0].split("E")[0]):
        return _Bad(literal)
    return value


class UnitTexts:
    """Reads the raw text of input units again, forward only (the ingest asks in input order), so that
    asking for many lines of one file costs one pass over it, not one pass per line."""

    def __init__(self) -> None:
        self._file: str | None = None
        self._fh: Any = None
        self._line = 0  # lines of self._file read so far

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._file, self._fh, self._line = None, None, 0

    def _open(self, file: str) -> None:
        self.close()
        self._fh = gzip.open(file, "rb") if file.lower().endswith(".gz") else open(file, "rb")
        self._file = file

    def raw(self, file: str, line: int | None) -> bytes | None:
        """The NDJSON line ``line`` of ``file`` (or the whole file when ``line`` is None)."""
        if line is None:
            self._open(file)
            data = self._fh.read()
            self.close()
            return data
        if self._file != file or line <= self._line:
            self._open(file)
        for raw in self._fh:
            self._line += 1
            if self._line == line:
                return raw
        return None


def _unit_text(file: str, line: int | None, entry: str | None, texts: UnitTexts | None = None,
               source: bytes | None = None) -> Any:
    """The NDJSON line (``source``: its text when the caller has it) or the Bundle entry's resource, parsed
    with the hook (None if it cannot be read)."""
    own = texts is None
    texts = texts or UnitTexts()
    try:
        raw = source if source is not None else texts.raw(file, line)
        if raw is None:
            return None
        data: Any = json.loads(raw.decode("utf-8-sig"), parse_float=_parse_float)
        for step in (entry or "").split(".") if entry else ():
            data = data["resource"] if step == "resource" else data["entry"][int(step[len("entry["):-1])]
        if isinstance(data, dict) and entry and isinstance(data.get("resource"), dict):
            data = data["resource"]
        return data
    except (OSError, EOFError, zlib.error, ValueError, KeyError, IndexError, TypeError, RecursionError):
        texts.close()
        return None
    finally:
        if own:
            texts.close()


def underflowing_numbers(file: str, line: int | None, entry: str | None,
                         texts: UnitTexts | None = None, source: bytes | None = None) -> list[tuple[str, str]]:
    """(element path, literal) of every number literal of this input unit that a double cannot hold
    (it would be read as 0). ``source``: the NDJSON line's text when the caller still has it (reading the
    file again for it took 0.35 s of a 3.3 s ingest at 1e6 resources); else ``texts``, a run's
    :class:`UnitTexts`, so that a file's lines are read again in one pass (re-reading a 1e6-line file from
    its start for every zero value halved the ingest rate at 1e6 resources)."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, _Bad):
            found.append((path, node.literal))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(_unit_text(file, line, entry, texts, source), "")
    return found
