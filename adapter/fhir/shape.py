"""Name the malformed element of a resource whose reading failed with an exception.

The reader, mapper and validator assume the JSON types FHIR R4 gives the elements they touch (a string
for ``code``, ``system``, ``id``, ``reference``; an array for ``coding``, ``identifier``, ``entry``...).
A record that breaks such an assumption raises somewhere deep inside (``unhashable type: 'dict'``,
``'int' object is not iterable``, a recursion limit). The ingest catches that per record and asks
:func:`malformed_element` for the element to name in the rejection, so one bad record is one rejected
record with file, line, element and reason, and the run goes on.

Hand-written (a few dozen lines): a full FHIR type check is the validator's job (fhir.resources); this
only has to find, cheaply and without recursion, the first element of the kinds that crash the code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_DEPTH", "malformed_element", "reason_for"]

# Deeper than this is never FHIR R4 data the study reads (and orjson serialises at most 254 levels).
MAX_DEPTH = 200

# Elements the reader and mappers read as strings, and those they iterate as arrays.
_STRINGS = frozenset({
    "resourceType", "id", "system", "code", "reference", "status", "unit", "display", "version", "fullUrl",
    "gender", "birthDate", "deceasedDateTime", "effectiveDateTime", "issued", "recordedDate", "onsetDateTime",
    "abatementDateTime", "performedDateTime", "authoredOn", "occurrenceDateTime", "start", "end", "comparator",
    "valueString", "valueCode", "valueDateTime", "url",
})
_ARRAYS = frozenset({
    "coding", "identifier", "entry", "category", "extension", "contained", "dosageInstruction", "performer",
    "interpretation", "component", "note", "name", "address", "telecom", "reasonCode", "bodySite",
})
_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
          float: "a number", type(None): "null"}


def _kind(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _short(path: str) -> str:
    return path if len(path) <= 80 else f"{path[:60]}...({path.count('.') + path.count('[')} levels)"


def malformed_element(resource: Any) -> str | None:
    """``"<path>: <problem>"`` for the first element (depth first) that is nested too deep or has the
    wrong JSON type for what the ingest reads there; None when none is found."""
    stack: list[tuple[str, Any, int]] = [("", resource, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{_short(path) or 'the resource'}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            children = []
            for key, child in value.items():
                here = f"{path}.{key}" if path else str(key)
                # code is a string in Coding and Quantity, a CodeableConcept (object) elsewhere
                as_object = key == "code" and "system" not in value and not path.endswith("Quantity")
                if key in _STRINGS and not isinstance(child, str) and not (as_object and isinstance(child, dict)):
                    return f"{_short(here)}: expected a string, found {_kind(child)}"
                if key in _ARRAYS and not isinstance(child, list):
                    if not (key == "name" and isinstance(child, str)):  # Organization.name is a string
                        return f"{_short(here)}: expected an array, found {_kind(child)}"
                children.append((here, child, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value)]))
    return None


def reason_for(resource: Any, exc: BaseException) -> str:
    """The rejection reason for a resource whose reading raised ``exc``."""
    where = malformed_element(resource)
    detail = "nested too deep" if isinstance(exc, RecursionError) or "Recursion limit" in str(exc) else (
        f"{type(exc).__name__}: {str(exc)[:120]}")
    if where:
        return f"malformed element {where} ({detail})"
    return f"malformed resource: an element has a JSON type the ingest cannot read ({detail})"
