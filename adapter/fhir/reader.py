"""Stream FHIR R4 input: Bundles, single resources and Bulk Data NDJSON (plain or ``.gz``), in folders.

Grain: :func:`iter_items` yields one :class:`Item` per *input resource*: an NDJSON line, a Bundle entry,
or a single-resource JSON file. A Bundle is a container, not an input resource: its entries are (nested
Bundles are expanded the same way). A unit that cannot be read as a resource (malformed JSON, a line that
is not a JSON object, a Bundle entry without ``resource``) is still one item, with ``resource=None`` and
``error`` set, so the caller can account for it.

With ``relevant`` given, a resource of any other type is only counted (in ``skipped``, by type) and not
yielded: the hot path for noise is one ``orjson.loads`` and one set lookup.

Memory: NDJSON is read line by line; a Bundle file is parsed whole (one patient's record) and dropped
before the next file. Nothing is retained between items except the current Bundle's fullUrl map.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from blina_study.adapter.errors import BlinaError

__all__ = [
    "BOM",
    "INPUT_SUFFIXES",
    "Item",
    "Note",
    "discover_files",
    "iter_items",
    "is_ndjson",
    "iter_line_items",
    "line_chunks",
    "normalize_reference",
    "read_chunk",
    "read_raw",
]

# File name endings the reader takes (lower case); anything else in a folder is listed as skipped.
INPUT_SUFFIXES: tuple[str, ...] = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz")
BOM = b"\xef\xbb\xbf"
_LINE_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")


# note(resource, resource type, id (any JSON value), NDJSON line, Bundle entry): see iter_items
Note = Callable[[dict[str, Any], str, Any, "int | None", "str | None"], None]


@dataclass(slots=True)
class Item:
    """One input resource (or the unreadable remains of one).

    ``line``: 1-based NDJSON line (None for .json files); ``offset``: byte offset of that line in the
    (decompressed) file; ``entry``: the Bundle entry path, e.g. ``entry[3]`` (None outside Bundles);
    ``refs``: the enclosing Bundle's ``fullUrl -> "Type/id"`` map (None outside Bundles);
    ``raw``: the undecodable text, for unreadable items; ``fallback_id``: the id a Bundle entry gets from
    its ``urn:uuid`` fullUrl or ``request.url`` when the resource itself has none (transaction Bundles);
    ``source``: the NDJSON line it was parsed from (without a BOM), for checks that need the text.
    """

    resource: dict[str, Any] | None
    file: str
    line: int | None = None
    offset: int | None = None
    entry: str | None = None
    error: str | None = None
    refs: dict[str, str] | None = None
    fallback_id: str | None = None
    raw: str | None = None
    source: bytes | None = None


def is_ndjson(path: Path) -> bool:
    """True for an NDJSON file (plain or .gz), read line by line; False for a JSON file."""
    return _kind(path) == "lines"


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in INPUT_SUFFIXES:
        if name.endswith(suffix):
            return "lines" if suffix in _LINE_SUFFIXES else "json"
    return None


def discover_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Expand files and folders (recursively, sorted) into (input files, skipped files).

    Raises :class:`BlinaError` for a path that does not exist.
    """
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for child in sorted(c for c in p.rglob("*") if c.is_file()):
                (files if _kind(child) else skipped).append(child)
        elif p.is_file():
            # A file named explicitly is read even with an unusual suffix: as NDJSON unless it is .json.
            files.append(p)
        else:
            raise BlinaError(f"{p}: no such file or folder", hint="pass FHIR Bundle/NDJSON files or folders of them")
    return files, skipped


def _open(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block


def normalize_reference(ref: str, refs: dict[str, str] | None) -> str | None:
    """``"Type/id"`` for a reference string, or None when it cannot be resolved.

    Handles relative (``Patient/x``), absolute (``https://host/fhir/Patient/x``), versioned
    (``.../_history/2``) and, inside a Bundle, ``urn:uuid:``/``urn:oid:`` or absolute fullUrls.
    Contained references (``#x``) are returned unchanged for the caller to resolve.
    """
    if refs is not None:
        hit = refs.get(ref)
        if hit is not None:
            return hit
    if ref.startswith("#"):
        return ref
    if ref.startswith("urn:"):
        return None
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-1] or not parts[-2][:1].isupper():
        return None
    return f"{parts[-2]}/{parts[-1]}"


def _bundle_refs(entries: list[Any]) -> dict[str, str]:
    refs: dict[str, str] = {}
    for e in entries:
        if not isinstance(e, dict):
            continue
        res, full = e.get("resource"), e.get("fullUrl")
        if isinstance(res, dict) and isinstance(full, str):
            rid = res.get("id") or _fallback_id(e)
            if isinstance(res.get("resourceType"), str) and rid:
                refs[full] = f"{res['resourceType']}/{rid}"
    return refs


def _fallback_id(entry: dict[str, Any]) -> str | None:
    full = entry.get("fullUrl")
    if isinstance(full, str) and full.startswith("urn:uuid:"):
        return full[len("urn:uuid:") :]
    req = entry.get("request")
    url = req.get("url") if isinstance(req, dict) else None
    if isinstance(url, str):
        parts = url.split("?")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-1]:
            return parts[-1]
    return None


def _expand(
    resource: dict[str, Any], file: str, line: int | None, offset: int | None, prefix: str, keep: _Keep,
    note: Note | None = None,
) -> Iterator[Item]:
    """Yield a resource, or the entries of a Bundle (recursively)."""
    if resource.get("resourceType") != "Bundle":
        if keep(resource):
            yield Item(resource, file, line, offset, prefix or None)
        elif note is not None:
            note(resource, resource["resourceType"], resource.get("id"), line, prefix or None)
        return
    entries = resource.get("entry", [])
    if not isinstance(entries, list):
        yield Item(None, file, line, offset, prefix or None, error="Bundle.entry is not a list")
        return
    refs = _bundle_refs(entries)
    for i, e in enumerate(entries):
        where = f"{prefix}.entry[{i}]" if prefix else f"entry[{i}]"
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict):
            req = e.get("request") if isinstance(e, dict) else None
            method = req.get("method") if isinstance(req, dict) else None
            why = f"Bundle entry has no resource (request {method})" if method else "Bundle entry has no resource"
            yield Item(None, file, line, offset, where, error=why)
        elif res.get("resourceType") == "Bundle":
            yield from _expand(res, file, line, offset, where + ".resource", keep, note)
        elif keep(res):
            yield Item(res, file, line, offset, where, refs=refs, fallback_id=_fallback_id(e))
        elif note is not None:
            note(res, res["resourceType"], res.get("id") or _fallback_id(e), line, where)


def _json_error(exc: orjson.JSONDecodeError) -> str:
    return f"malformed JSON ({exc.msg} at column {exc.colno})"


class _Keep:
    """Decides whether a resource is yielded; counts the others by type in ``skipped``."""

    __slots__ = ("relevant", "skipped")

    def __init__(self, relevant: frozenset[str] | None, skipped: dict[str, int] | None) -> None:
        self.relevant = relevant
        self.skipped = skipped if skipped is not None else {}

    def __call__(self, resource: dict[str, Any]) -> bool:
        rtype = resource.get("resourceType")
        # the type test first: a resourceType that is an object or array is unhashable
        if self.relevant is None or not isinstance(rtype, str) or rtype in self.relevant:
            return True  # a missing resourceType is yielded: the caller rejects it
        self.skipped[rtype] = self.skipped.get(rtype, 0) + 1
        return False


def iter_items(
    path: Path,
    relevant: frozenset[str] | None = None,
    skipped: dict[str, int] | None = None,
    consume: Callable[[dict[str, Any], str], bool] | None = None,
    note: Note | None = None,
) -> Iterator[Item]:
    """Yield the input resources of one file (see module doc). File-level I/O failures raise BlinaError.

    ``relevant``: resource types to yield (None: all); others are counted in ``skipped`` by type.
    ``consume(resource, type)``: called for each NDJSON resource of a yielded type before an Item is built;
    when it returns True the resource was dealt with by the caller and is not yielded (the fast path of
    noise; Bundle entries are always yielded).
    ``note(resource, type, id, line, entry)``: called for each resource this function counts or hands to
    ``consume`` instead of yielding (for the duplicate check, which sees every resource).
    """
    file = str(path)
    loads = orjson.loads
    keep = _Keep(relevant, skipped)
    wanted = relevant if relevant is not None else None
    try:
        if _kind(path) == "json":
            with _open(path) as fh:
                data = fh.read()
            if data.startswith(BOM):
                data = data[3:]
            try:
                res = loads(data)
            except orjson.JSONDecodeError as exc:
                yield Item(None, file, error=f"malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                           raw=data[:2000].decode("utf-8", "replace"))
                return
            if not isinstance(res, dict):
                yield Item(None, file, error=f"not a FHIR resource (a JSON {type(res).__name__}, not an object)")
                return
            yield from _expand(res, file, None, None, "", keep, note)
            return
        with _open(path) as fh:
            yield from _line_items(file, _numbered(fh, 1, 0), keep, wanted, consume, note)
    except (OSError, EOFError, zlib.error) as exc:
        raise BlinaError(
            f"{file}: cannot read the file ({exc}); nothing from this run was stored",
            hint="check the file (a truncated .gz must be exported again) and rerun",
        ) from exc


def _numbered(lines: Iterable[bytes], first_line: int, offset: int) -> Iterator[tuple[int, int, bytes]]:
    for lineno, raw in enumerate(lines, first_line):
        yield lineno, offset, raw
        offset += len(raw)


def _line_items(file: str, lines: Iterable[tuple[int, int, bytes]], keep: _Keep, wanted: frozenset[str] | None,
                consume: Callable[[dict[str, Any], str], bool] | None, note: Note | None = None) -> Iterator[Item]:
    """The Items of NDJSON lines given as (line number, byte offset, raw line)."""
    loads = orjson.loads
    for lineno, start, raw in lines:
        if raw.startswith(BOM):  # a UTF-8 byte-order mark (files written on Windows) is not part of the JSON
            raw = raw[3:]
        try:
            res = loads(raw)
        except orjson.JSONDecodeError as exc:
            if raw.strip():
                yield Item(None, file, lineno, start, error=_json_error(exc),
                           raw=raw[:2000].decode("utf-8", "replace").rstrip("\n"))
            continue  # a blank line is not a resource
        if res.__class__ is dict:
            rtype = res.get("resourceType")
            # hot path: noise is counted by type and dropped without building an Item
            # the type test first: a resourceType that is an object or array is unhashable
            if wanted is not None and rtype.__class__ is str and rtype not in wanted and rtype != "Bundle":
                keep.skipped[rtype] = keep.skipped.get(rtype, 0) + 1
                if note is not None:
                    note(res, rtype, res.get("id"), lineno, None)
            elif rtype == "Bundle":
                yield from _expand(res, file, lineno, start, "", keep, note)
            elif consume is None or rtype.__class__ is not str or not consume(res, rtype):
                yield Item(res, file, lineno, start, source=raw)
            elif note is not None:
                note(res, rtype, res.get("id"), lineno, None)
        else:
            yield Item(None, file, lineno, start, error=f"not a FHIR resource (a JSON {type(res).__name__})",
                       raw=raw[:2000].decode("utf-8", "replace").rstrip("\n"))


def line_chunks(path: Path, chunk_bytes: int) -> list[tuple[int, int | None]]:
    """Byte ranges ``[start, end)`` of an NDJSON file that start and end on line boundaries (``end`` None:
    to the end of the file), for reading it in parallel. A compressed file is one range."""
    if path.name.lower().endswith(".gz") or chunk_bytes <= 0:
        return [(0, None)]
    try:
        size = path.stat().st_size
        bounds = [0]
        with open(path, "rb") as fh:
            while bounds[-1] + chunk_bytes < size:
                fh.seek(bounds[-1] + chunk_bytes)
                fh.readline()  # to the start of the next line
                if fh.tell() >= size:
                    break
                bounds.append(fh.tell())
    except OSError as exc:
        raise BlinaError(f"{path}: cannot read the file ({exc}); nothing from this run was stored",
                         hint="check the file and rerun") from exc
    return [(a, b) for a, b in zip(bounds, [*bounds[1:], None], strict=True)]


def read_chunk(path: Path, start: int, end: int | None) -> Iterator[bytes]:
    """The lines of one range of :func:`line_chunks`, each with its line feed as file iteration gives it
    (the range starts at byte ``start``). File-level I/O failures raise BlinaError."""
    try:
        with _open(path) as fh:
            fh.seek(start)
            if end is None:  # a whole (compressed) file: streamed
                yield from fh
                return
            data = fh.read(end - start)
        yield from io.BytesIO(data)  # splits on LF only, like the file itself
    except (OSError, EOFError, zlib.error) as exc:
        raise BlinaError(
            f"{path}: cannot read the file ({exc}); nothing from this run was stored",
            hint="check the file (a truncated .gz must be exported again) and rerun",
        ) from exc


def iter_line_items(file: str, lines: Iterable[tuple[int, int, bytes]], relevant: frozenset[str] | None = None,
                    skipped: dict[str, int] | None = None, note: Note | None = None) -> Iterator[Item]:
    """:func:`iter_items` for NDJSON lines already read, as (line number, byte offset, raw line)."""
    yield from _line_items(file, lines, _Keep(relevant, skipped), relevant, None, note)


def read_raw(path: str, line: int | None, entry: str | None) -> Any:
    """Re-read one input unit (for the quarantine file): the NDJSON line or the Bundle entry, as JSON."""
    p = Path(path)
    try:
        if line is not None:
            with _open(p) as fh:
                for i, raw in enumerate(fh, 1):  # noqa: B007 - raw is the wanted line after the break
                    if i == line:
                        break
                else:
                    return None
            try:
                data: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return raw.decode("utf-8", "replace").rstrip("\n")
        else:
            with _open(p) as fh:
                blob = fh.read()
            try:
                data = orjson.loads(blob)
            except orjson.JSONDecodeError:
                return blob.decode("utf-8", "replace")
        if entry:
            for step in entry.split("."):
                if step == "resource":
                    data = data["resource"]
                else:
                    data = data["entry"][int(step[len("entry[") : -1])]
            if isinstance(data, dict) and isinstance(data.get("resource"), dict):
                data = data["resource"]
        return data
    except (OSError, EOFError, zlib.error, KeyError, IndexError, TypeError, ValueError):
        return None
