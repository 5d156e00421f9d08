"""A DuckDB reader of Bulk NDJSON, measured and not adopted (issue 14): why the ingest keeps its Python reader.

    .venv/bin/python bench/duckdb_line_scan.py /work/bench/export_1000000_noise9 [--results bench/RESULTS.md]

What was tried: DuckDB splits each NDJSON file into numbered lines (``read_csv`` with one VARCHAR column and
no delimiter, quote or escape; ``row_number() OVER ()``, documented as the file order), parses them with
its JSON functions and classifies each line on all cores, in one query:

* noise (kind 1): a resource the ingest only counts (a type no view maps and follow-up does not read, or a
  record of a code-filtered type with no study code): counted by type, its follow-up dates (protocol 3b.10)
  taken in SQL; it would never reach Python;
* Python (kind 2): everything else (study records, Patients, Encounters, Bundles, odd lines) would go to
  the unchanged Python path with its line number; blank lines (kind 0) are not resources.

Exactness needs guards, because DuckDB's JSON parser and orjson differ: DuckDB accepts ``NaN``, ``nan``, ``inf``,
``Infinity``, numbers beyond a double, trailing commas and nesting deeper than 1024, and it reads the
*first* of duplicate keys where orjson reads the last. So such texts go to Python, every object the
classification reads must have distinct keys, the study-code test is textual (no study code as a JSON
string in the line, and no escape sequence that could spell one), shapes on which the Python classifier
raises go to Python, and the first/last follow-up dates must have the ``YYYY-MM-DD`` shape on which
Python's ``date.fromisoformat`` and DuckDB's DATE agree.

What this script measures, on an export written by bench/fhir_ingest.py: the one-core orjson parse of every
line (the limit), the Python classification of the same lines (``_NoiseSink`` of the ingest: what the
workers do per line), and this scan; it checks that the scan's noise counts and follow-up dates equal the
Python classification's (the lines it sends to Python are classified there, as the ingest would).
Result (bench/RESULTS.md): the guarded classification costs several times the parse in DuckDB's JSON
functions (per-row list and key checks dominate; reading and splitting the lines alone is ~0.1x the
parse), so two forked orjson workers stay faster; the ingest keeps them.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))

from blina_study.adapter.fhir.mapper import ResourceMapper  # noqa: E402

_DATE_SHAPE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"  # a GLOB
# Texts DuckDB parses and orjson rejects or reads otherwise: such a line goes to Python. Literals, and a number
# that may overflow a double (an exponent of 3 digits, an integer of 300) or a trailing comma after the
# character that starts it (a regular expression that starts with a literal is 4x faster in DuckDB).
_PARSER_LITERALS = ("nan", "inf", "\\", "chr(13)")  # on the lower-cased line; \ also: an escape could spell a code
_UNHASHABLE = r'"(?:code|system)"\s*:\s*[\[{]'  # a code or system that is an array or object
_BIG = r"-?(?:[0-9][0-9.]*[eE]|[0-9]{300})"  # any exponent (a long mantissa with a short one overflows too)
_PARSER_PATTERNS = (rf":\s*{_BIG}", rf"\[\s*{_BIG}", rf",\s*(?:{_BIG}|[\]}}])")
_MAX_DEPTH_TEXT = 1000  # lines with this many '[' or '{' may nest deeper than orjson reads


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _path(*keys: str) -> str:
    for k in keys:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", k):
            raise ValueError(f"unexpected element name {k!r}")
    return _q("$." + ".".join(keys))


def _distinct_keys(obj: str) -> str:
    """SQL: the JSON object ``obj`` has no key twice (DuckDB would read the first, orjson the last)."""
    return f"(len(json_keys({obj})) = len(list_distinct(json_keys({obj}))))"


@dataclass
class FileScan:
    """What the scan of one file found (see module doc)."""

    n_lines: int
    n_noise: int
    n_routed: int
    not_relevant: Counter
    followup: dict[str, list[str | None]]


class NoiseScan:
    """Classifies NDJSON lines in DuckDB (see module doc)."""

    def __init__(self, mapper: ResourceMapper, con: duckdb.DuckDBPyConnection) -> None:
        self.mapper = mapper
        self.con = con
        self.classify = self._classify_sql()

    # ------------------------------------------------------------------------------------ SQL
    # The resource is parsed by DuckDB three times (validity, its keys, the elements below in one
    # json_extract); each test then reads one small element, not the whole resource again.
    def _elements(self) -> list[str]:
        m = self.mapper
        names: list[str] = ["resourceType", "id"]
        for rtype in sorted(m.wanted):
            keys = m._filter_keys.get(rtype)
            if rtype in m.relevant and keys:
                names.append(keys[0])
            spec = m.config.followup.get(rtype)
            if spec is not None:
                names += [spec[0], *spec[1], m.config.status_element(rtype)]
        return list(dict.fromkeys(names))

    def _el(self, name: str) -> str:
        """SQL: the top-level element ``name`` as JSON (NULL when absent)."""
        return f"e[{self.element_index[name] + 1}]"

    def _object_ok(self, name: str) -> str:
        """SQL: element ``name`` is not an object with a repeated key."""
        el = self._el(name)
        return f"(coalesce(json_type({el}), '') <> 'OBJECT' OR {_distinct_keys(el)})"

    def _code_test(self, rtype: str) -> str | None:
        """SQL: a record of the code-filtered type ``rtype`` surely has no study coding (None: cannot say).

        The shape is Python's common case (``code.coding`` a list whose first item is an object); no study
        code appears in the line as a JSON string (the line has no escape sequence, see the guard), and no
        ``code`` or ``system`` is an array or object (Python would fail to hash it)."""
        m = self.mapper
        keys = m._filter_keys.get(rtype)
        if m.study_codes is None or keys is None or len(keys) != 2:
            return None
        k0, k1 = keys
        codes = sorted({c for _, c in m.study_codes if isinstance(c, str)} | set(m.any_system_codes))
        parent = self._el(k0)
        parts = [
            f"json_type({parent}) = 'OBJECT'",
            _distinct_keys(parent),
            f"json_type({parent}, {_path(k1)}) = 'ARRAY'",
            f"json_type({parent}, {_q('$.' + k1 + '[0]')}) = 'OBJECT'",
            f"NOT regexp_matches(CAST({parent} AS VARCHAR), {_q(_UNHASHABLE)})",
        ]
        if codes:
            pattern = '"(?:' + "|".join(re.escape(c) for c in codes) + ')"'
            parts.append(f"NOT regexp_matches(l, {_q(pattern)})")
        return " AND ".join(f"({p})" for p in parts)

    def _status(self, rtype: str) -> tuple[str, str]:
        """SQL (safe, not_done) for the status element of ``rtype``: ``safe`` when the Python check cannot
        raise on it, ``not_done`` when it says the record did not happen (protocol 3b.3)."""
        m = self.mapper
        el = self._el(m.config.status_element(rtype))
        codes = ", ".join(_q(c) for c in sorted(m.config.not_done_status))
        st = f"coalesce(json_type({el}), '')"
        coding = f"({el}->'$.coding')"
        coding_t = f"coalesce(json_type({el}, '$.coding'), '')"
        elem_ok = ("lambda c: json_type(c) <> 'OBJECT' OR (" + _distinct_keys("c")
                   + " AND coalesce(json_type(c, '$.code'), '') NOT IN ('ARRAY', 'OBJECT'))")
        safe = (f"({st} <> 'OBJECT' OR ({_distinct_keys(el)} AND ({coding_t} IN ('', 'NULL', 'OBJECT', 'VARCHAR') "
                f"OR ({coding_t} = 'ARRAY' AND list_bool_and(list_transform(CAST({coding} AS JSON[]), {elem_ok}))))))")
        elem_done = (f"lambda c: json_type(c) = 'OBJECT' AND json_type(c, '$.code') = 'VARCHAR' AND "
                     f"(c->>'$.code') IN ({codes})")
        not_done = (f"(CASE WHEN {st} = 'VARCHAR' THEN ({el}->>'$') IN ({codes}) "
                    f"WHEN {st} = 'OBJECT' AND {coding_t} = 'ARRAY' THEN coalesce(list_bool_or(list_transform("
                    f"CAST({coding} AS JSON[]), {elem_done})), false) ELSE false END)")
        return safe, not_done

    def _followup(self, rtype: str) -> tuple[str, str, str] | None:
        """SQL (safe, patient, dates) of a record's follow-up dates (as ResourceMapper.followup_dates): the
        ``YYYY-MM-DD`` prefixes inside the plausibility window, a list."""
        spec = self.mapper.config.followup.get(rtype)
        if spec is None:
            return None
        subject, dates = spec
        subj = self._el(subject)
        ref = f"({subj}->>'$.reference')"
        patient = (f"(CASE WHEN json_type({subj}) = 'OBJECT' AND json_type({subj}, '$.reference') = 'VARCHAR' "
                   f"AND starts_with({ref}, 'Patient/') AND NOT contains({ref}, chr(0)) "
                   f"THEN split_part(substr({ref}, 9), '/', 1) END)")
        values = []
        safe = [self._object_ok(subject)]
        for name in dates:
            el = self._el(name)
            values.append(f"(CASE WHEN json_type({el}) = 'VARCHAR' THEN {el}->>'$' END)")
            for side in ("start", "end"):
                values.append(f"(CASE WHEN json_type({el}) = 'OBJECT' AND json_type({el}, '$.{side}') = 'VARCHAR' "
                              f"THEN {el}->>'$.{side}' END)")
            safe.append(self._object_ok(name))
        rules = self.mapper.rules
        lo, hi = rules.earliest[:10], rules.latest[:10]
        cands = f"list_filter([{', '.join(values)}], lambda d: d IS NOT NULL AND length(d) >= 10)"
        window = (f"list_filter(list_transform({cands}, lambda d: left(d, 10)), "
                  f"lambda d: d >= {_q(lo)} AND d <= {_q(hi)})")
        return " AND ".join(safe), patient, window

    def _classify_sql(self) -> str:
        m = self.mapper
        names = self._elements()
        self.element_index = {n: i for i, n in enumerate(names)}
        paths = ", ".join(_path(n) for n in names)
        wanted = ", ".join(_q(t) for t in sorted(m.wanted))
        kinds, patients, windows, dones = [], [], [], []
        for rtype in sorted(m.wanted):
            tests: list[str] = []
            if rtype in m.relevant:
                code = self._code_test(rtype)
                if code is None:
                    continue  # always Python: Patient, Encounter, Medication, or a filter the scan cannot read
                tests.append(code)
            fu = self._followup(rtype)
            if fu is not None:
                safe, patient, window = fu
                status_safe, not_done = self._status(rtype)
                # the first and last date in the shape Python's calendar check (date.fromisoformat) and
                # DuckDB's DATE agree on (Python also reads week dates, DuckDB other separators)
                shape = (f"(first_date IS NULL OR (first_date GLOB {_q(_DATE_SHAPE)} AND "
                         f"last_date GLOB {_q(_DATE_SHAPE)}))")
                tests += [safe, status_safe, shape]
                patients.append(f"WHEN {_q(rtype)} THEN {patient}")
                windows.append(f"WHEN {_q(rtype)} THEN {window}")
                dones.append(f"WHEN {_q(rtype)} THEN {not_done}")
            test = " AND ".join(f"({t})" for t in tests) or "true"
            kinds.append(f"WHEN rtype = {_q(rtype)} THEN CASE WHEN {test} THEN 1 ELSE 2 END")

        def per_type(cases: list[str]) -> str:
            return f"CASE rtype {' '.join(cases)} END" if cases else "NULL"

        literals = [f"contains(lower(l), {_q(x)})" if not x.startswith("chr(") else f"contains(l, {x})"
                    for x in _PARSER_LITERALS]
        patterns = [f"regexp_matches(l, {_q(x)})" for x in _PARSER_PATTERNS]
        guard = " OR ".join([*literals, *patterns, f"(strlen(l) > {2 * _MAX_DEPTH_TEXT} AND strlen(l) - "
                             f"strlen(replace(replace(l, '[', ''), '{{', '')) >= {_MAX_DEPTH_TEXT})"])
        return f"""
WITH src AS (
    SELECT row_number() OVER () AS ln, l FROM read_csv($path, columns = {{'l': 'VARCHAR'}}, header = false,
        delim = chr(0), quote = '', escape = '', auto_detect = false, new_line = '\\n', compression = 'auto')
), parsed AS (
    SELECT ln, l, CASE WHEN l IS NOT NULL AND NOT ({guard}) THEN try_cast(l AS JSON) END AS j FROM src
), elements AS (
    SELECT ln, l, CASE WHEN json_type(j) = 'OBJECT' AND {_distinct_keys('j')} THEN json_extract(j, [{paths}]) END AS e
    FROM parsed
), typed AS (
    SELECT ln, l, e, CASE WHEN json_type(e[1]) = 'VARCHAR' THEN e[1]->>'$' END AS rtype FROM elements
), dated AS (
    SELECT ln, l, e, rtype, {per_type(windows)} AS win FROM typed
), classed AS (
    SELECT ln, l, e, rtype, first_date, last_date, CASE
        WHEN l IS NULL THEN 0
        WHEN rtype IS NULL OR rtype = 'Bundle' THEN 2
        WHEN rtype NOT IN ({wanted}) THEN 1
        {' '.join(kinds)}
        ELSE 2 END AS kind
    FROM (SELECT *, list_min(win) AS first_date, list_max(win) AS last_date FROM dated)
)
SELECT ln, kind, rtype,
    CASE WHEN kind = 1 AND json_type(e[2]) = 'VARCHAR' AND (e[2]->>'$') <> '' THEN e[2]->>'$' END AS rid,
    CASE WHEN kind = 1 THEN {per_type(patients)} END AS patient,
    CASE WHEN kind = 1 THEN first_date END AS first_date,
    CASE WHEN kind = 1 THEN last_date END AS last_date,
    CASE WHEN kind = 1 THEN {per_type(dones)} END AS not_done,
    CASE WHEN kind = 2 THEN l END AS text
FROM classed
"""

    # ------------------------------------------------------------------------------------ running
    def scan(self, path: Path) -> FileScan:
        """Classify the lines of ``path`` into table ``_scan`` and take the noise's counts and follow-up."""
        con = self.con
        con.execute(f"CREATE OR REPLACE TABLE _scan AS {self.classify}", {"path": str(path)})
        n_lines, n_noise, n_routed = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE kind = 1), count(*) FILTER (WHERE kind = 2) FROM _scan").fetchone()
        counts = Counter(dict(con.execute(
            "SELECT rtype, count(*) FROM _scan WHERE kind = 1 GROUP BY rtype").fetchall()))
        followup: dict[str, list[str | None]] = {}
        rows = con.execute(
            "SELECT patient, min(first_date) FILTER (WHERE NOT not_done AND try_cast(first_date AS DATE) IS NOT NULL),"
            " max(last_date) FILTER (WHERE NOT not_done AND try_cast(last_date AS DATE) IS NOT NULL) "
            "FROM _scan WHERE kind = 1 AND patient IS NOT NULL AND first_date IS NOT NULL GROUP BY patient").fetchall()
        for patient, lo, hi in rows:
            if lo is not None or hi is not None:
                followup[patient] = [lo, hi]
        return FileScan(int(n_lines), int(n_noise), int(n_routed), counts, followup)


def _python_classify(mapper: ResourceMapper, files: list[Path]) -> tuple[Counter, dict, int]:
    """The ingest's classification of the same lines (one process): noise counts, follow-up, lines kept."""
    from blina_study.adapter.fhir.ingest import _NoiseSink

    counts: Counter = Counter()
    sink = _NoiseSink(mapper, counts)
    kept = 0
    for f in files:
        with open(f, "rb") as fh:
            for raw in fh:
                try:
                    res = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    kept += 1
                    continue
                rtype = res.get("resourceType") if isinstance(res, dict) else None
                if not isinstance(rtype, str) or rtype == "Bundle":
                    kept += 1
                elif rtype not in mapper.wanted:
                    counts[rtype] += 1
                elif not sink(res, rtype):
                    kept += 1
    return counts, sink.followup, kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", type=Path, help="a folder of NDJSON files (bench/fhir_ingest.py writes them)")
    ap.add_argument("--results", type=Path, default=None, help="replace this section of a RESULTS.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(_ROOT / "bench"))
    from fhir_ingest import _bench_mapper

    mapper, _ = _bench_mapper()
    files = sorted(args.export.glob("*.ndjson"))
    t0 = time.perf_counter()
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            for raw in fh:
                orjson.loads(raw)
                n += 1
    parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    py_counts, py_followup, py_kept = _python_classify(mapper, files)
    python = time.perf_counter() - t0
    con = duckdb.connect()
    scan = NoiseScan(mapper, con)
    t0 = time.perf_counter()
    counts: Counter = Counter()
    followup: dict[str, list[str | None]] = {}
    routed = 0
    split = 0.0
    for f in files:
        found = scan.scan(f)
        counts.update(found.not_relevant)
        routed += found.n_routed
        for patient, (lo, hi) in found.followup.items():  # files hold other patients' records too: merge
            cur = followup.setdefault(patient, [None, None])
            cur[0] = lo if cur[0] is None or (lo is not None and lo < cur[0]) else cur[0]
            cur[1] = hi if cur[1] is None or (hi is not None and hi > cur[1]) else cur[1]
    duck = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in files:
        con.execute("SELECT count(*) FROM (SELECT row_number() OVER () AS ln, l FROM read_csv($p, columns = {'l': "
                    "'VARCHAR'}, header = false, delim = chr(0), quote = '', escape = '', auto_detect = false, "
                    "new_line = '\\n'))", {"p": str(f)}).fetchall()
    split = time.perf_counter() - t0
    py_fu = {k: v for k, v in py_followup.items() if v[0] or v[1]}
    same = counts == py_counts and followup == py_fu
    # lines the scan sends to Python that Python counts as noise: the cost of the guards' caution
    cautious = routed - py_kept
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    rows = [
        ("orjson parse, one core (the limit)", parse),
        ("Python classification, one core (the ingest's per-line work)", python),
        (f"DuckDB line split only, {threads} threads", split),
        (f"DuckDB guarded classification, {threads} threads", duck),
    ]
    lines = [f"Export {args.export.name}: {n:,} lines in {len(files)} files; machine: {_machine()}.", "",
             "| step | seconds | lines/s | x parse |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {s:.2f} | {n / s:,.0f} | {parse / s:.2f} |" for name, s in rows]
    lines += ["", f"Outcome: noise counts and follow-up dates {'EQUAL' if same else 'DIFFER'} to the Python "
              f"classification ({sum(counts.values()):,} noise lines, {len(followup):,} patients with follow-up "
              f"dates); {routed:,} lines sent to Python, {cautious:,} of them noise the guards could not prove."]
    text = "\n".join(lines)
    print(text)
    if args.results:
        _write(args.results, text)
    return 0 if same else 1


def _machine() -> str:
    import os
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
            f"load average {os.getloadavg()[0]:.2f}")


_TITLE = "## FHIR ingest: a DuckDB line classifier, measured and not adopted (issue 14)"


def _write(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = f"{_TITLE}\n\nRerun: `.venv/bin/python bench/duckdb_line_scan.py <export> --results {path}` " \
              f"(bench/duckdb_line_scan.py says what is measured).\n\n{body}\n"
    pattern = re.compile(rf"^{re.escape(_TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
