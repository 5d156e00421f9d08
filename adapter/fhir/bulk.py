"""Bulk Data exports as they arrive: the ``$export`` manifest, the server's error files, and files that are
not FHIR data (a Synthea ``log.ndjson``).

:func:`prepare` sorts the input files before the ingest reads them:

* a **manifest** (the ``$export`` status response saved as JSON: an object with ``transactionTime`` and an
  ``output`` array, no ``resourceType``) is not data. Its ``output`` entries name the data files (found by
  the file name of their ``url``, in the input or in the manifest's folder tree; a listed file that is
  missing is a finding); the ``count`` an entry states is checked against the resources read from that
  file after the run (:func:`count_findings`); its ``error`` entries name NDJSON files of OperationOutcomes,
  which are the *server's* errors: read and listed (:class:`ServerError`), never counted as input
  resources, never a reason for exit 1;
* an NDJSON file none of whose lines is a JSON object with a ``resourceType`` (and that no manifest lists as
  output) is **not FHIR data**: ignored and listed with the reason (it holds no resource to account for);
* everything else is data, read and accounted for as before.

Recognising a manifest reads the first 64 KiB of each ``.json`` file (a Bundle is parsed only if that
prefix has ``"transactionTime"`` and ``"output"``); recognising a non-FHIR NDJSON file parses its first
line, and the whole file only when that line has no ``resourceType``. Hand-written: there is no Python
library for the Bulk Data manifest (it is a plain JSON object of a few keys).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.fhir.reader import BOM, discover_files, is_ndjson

__all__ = ["BulkInput", "Manifest", "ServerError", "count_findings", "prepare"]

_log = logging.getLogger(__name__)
_PEEK = 64 << 10
_MAX_LISTED = 1000  # server errors listed in the report (all are counted)


@dataclass
class ServerError:
    """One issue of an OperationOutcome in an error file of the export (what the server could not export)."""

    file: str
    line: int | None
    severity: str | None
    code: str | None
    diagnostics: str


@dataclass
class Manifest:
    """A Bulk Data manifest: its file, transactionTime, request, and the files it lists."""

    file: str
    transaction_time: str | None
    request: str | None
    # (resource type, url, stated count or None, the local file or None when missing)
    outputs: list[tuple[str | None, str, int | None, Path | None]] = field(default_factory=list)
    errors: list[tuple[str | None, str, Path | None]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "transactionTime": self.transaction_time,
            "request": self.request,
            "output": [{"type": t, "url": u, "count": c, "file": str(p) if p else None}
                       for t, u, c, p in self.outputs],
            "error": [{"type": t, "url": u, "file": str(p) if p else None} for t, u, p in self.errors],
        }


@dataclass
class BulkInput:
    """The input sorted by :func:`prepare`."""

    files: list[Path]  # data files, read and accounted for
    skipped_files: list[Path]  # not an input kind (suffix)
    manifests: list[Manifest] = field(default_factory=list)
    not_fhir: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not FHIR data)
    server_errors: list[ServerError] = field(default_factory=list)  # the first _MAX_LISTED
    n_server_errors: int = 0
    findings: list[str] = field(default_factory=list)  # problems of the export itself (exit 1)


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read(limit if limit is not None else -1)
        with open(path, "rb") as fh:
            return fh.read(limit if limit is not None else -1)
    except (OSError, EOFError, zlib.error) as exc:
        raise BlinaError(f"{path}: cannot read the file ({exc}); nothing from this run was stored",
                         hint="check the file (a truncated .gz must be exported again) and rerun") from exc


def _as_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest object of a ``.json`` file, or None when it is not a manifest."""
    if is_ndjson(path):
        return None
    head = _read_bytes(path, _PEEK)
    if b'"transactionTime"' not in head or b'"output"' not in head:
        return None
    data = _read_bytes(path)
    try:
        obj = orjson.loads(data[3:] if data.startswith(BOM) else data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and "resourceType" not in obj and isinstance(obj.get("output"), list):
        return obj
    return None


def _file_name(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return name or None


def _not_fhir(path: Path) -> str | None:
    """Why an NDJSON file is not FHIR data (no line is an object with a resourceType), or None."""
    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb") as fh:
            n = 0
            for raw in fh:
                if raw.startswith(BOM):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                n += 1
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return None  # a damaged data line: the ingest rejects it with its reason
                if not isinstance(obj, dict) or "resourceType" in obj:
                    return None
    except (OSError, EOFError, zlib.error):
        return None  # the reader reports it
    if n == 0:
        return None  # an empty file holds nothing to account for either way
    return f"not FHIR data: none of its {n} lines is a resource (no resourceType), e.g. an export log"


def _server_errors(path: Path, out: BulkInput) -> None:
    """Read an error file of the export (NDJSON OperationOutcomes) into ``out.server_errors``."""

    def add(line: int | None, severity: Any, code: Any, text: str) -> None:
        out.n_server_errors += 1
        if len(out.server_errors) < _MAX_LISTED:
            out.server_errors.append(ServerError(str(path), line, severity if isinstance(severity, str) else None,
                                                 code if isinstance(code, str) else None, text))

    data = _read_bytes(path)
    for lineno, raw in enumerate(data.splitlines(), 1):
        if raw.startswith(BOM):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            add(lineno, None, None, f"unreadable line of the error file (malformed JSON: {exc.msg})")
            continue
        issues = obj.get("issue") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or obj.get("resourceType") != "OperationOutcome" or not isinstance(issues, list):
            add(lineno, None, None, "a line of the error file that is not an OperationOutcome with issues")
            continue
        for issue in issues:
            if not isinstance(issue, dict):
                add(lineno, None, None, "an OperationOutcome issue that is not an object")
                continue
            details = issue.get("details")
            text = issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None)
            add(lineno, issue.get("severity"), issue.get("code"), text if isinstance(text, str) else "(no text)")


def prepare(paths: Iterable[str | Path]) -> BulkInput:
    """Sort the input into data files, manifests, the server's error files and files that are not FHIR
    data (see module doc). Raises :class:`BlinaError` for a path that does not exist."""
    files, skipped = discover_files(paths)
    out = BulkInput(files=[], skipped_files=skipped)
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    listed: set[Path] = set()
    error_files: set[Path] = set()
    manifest_files: set[Path] = set()
    for f in files:
        obj = _as_manifest(f)
        if obj is None:
            continue
        manifest_files.add(f)
        req, tt = obj.get("request"), obj.get("transactionTime")
        m = Manifest(str(f), tt if isinstance(tt, str) else None, req if isinstance(req, str) else None)

        def local(url: Any, f: Path = f) -> Path | None:
            name = _file_name(url)
            if name is None:
                return None
            beside = f.parent / name
            if beside.is_file():
                return beside
            found = by_name.get(name) or sorted(f.parent.rglob(name))  # e.g. error/ beside the manifest
            return found[0] if found else None

        for i, entry in enumerate(obj.get("output") or []):
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                out.findings.append(f"{f}: output[{i}] has no url: the manifest is damaged; export again")
                continue
            rtype, count = entry.get("type"), entry.get("count")
            p = local(entry["url"])
            m.outputs.append((rtype if isinstance(rtype, str) else None, entry["url"],
                              count if isinstance(count, int) and not isinstance(count, bool) else None, p))
            if p is None:
                out.findings.append(f"{f}: output file {entry['url']} ({rtype}) is not in the input: "
                                    f"download it (file {_file_name(entry['url'])}) next to the manifest")
            else:
                listed.add(p.resolve())
        for i, entry in enumerate(obj.get("error") or []):
            url = entry.get("url") if isinstance(entry, dict) else None
            if not isinstance(url, str):
                out.findings.append(f"{f}: error[{i}] has no url: the manifest is damaged; export again")
                continue
            p = local(url)
            rtype = entry.get("type")
            m.errors.append((rtype if isinstance(rtype, str) else None, url, p))
            if p is None:
                out.findings.append(f"{f}: error file {url} is not in the input: download it next to the manifest "
                                    "(it holds the server's messages on what it could not export)")
            else:
                error_files.add(p.resolve())
        out.manifests.append(m)
        _log.info("%s: Bulk Data manifest, %d output and %d error files", f, len(m.outputs), len(m.errors))
    # a file the user passed that is also reached through a manifest is read once
    seen: set[Path] = set()
    extra = [p for m in out.manifests for _, _, _, p in m.outputs if p is not None]
    extra += [p for m in out.manifests for _, _, p in m.errors if p is not None]
    for f in [*files, *extra]:
        r = f.resolve()
        if f in manifest_files or r in seen:
            continue
        seen.add(r)
        if r in error_files:
            _server_errors(f, out)
            continue
        why = None if r in listed or not is_ndjson(f) else _not_fhir(f)
        if why is not None:
            out.not_fhir.append((f, why))
            continue
        out.files.append(f)
    return out


def count_findings(bulk: BulkInput, read_by_file: Mapping[str, int]) -> list[str]:
    """The manifests' stated counts that differ from the resources read from their files."""
    problems = []
    by_path = {str(p.resolve()): n for p, n in ((Path(k), v) for k, v in read_by_file.items())}
    for m in bulk.manifests:
        for rtype, _url, count, p in m.outputs:
            if count is None or p is None:
                continue
            got = by_path.get(str(p.resolve()), 0)
            if got != count:
                problems.append(f"{m.file}: the manifest states {count} {rtype or ''} resources in {p}, "
                                f"the file has {got}: the download is incomplete or the file was changed; "
                                "download it again")
    return problems
