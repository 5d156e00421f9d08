"""Benchmark of the OMOP study views (not a test): build + extract vs the limit.

A synthetic OMOP CDM is generated directly in SQL (same statements on DuckDB and PostgreSQL) at
1e4 and 1e5 persons: 200 measurements per person (2e7 at 1e5), ~2 % of them study-relevant (every
50th row of a person, every 10th of the 2 % of persons who receive blinatumomab), plus drugs,
conditions, procedures, visits, observations and deaths around them. Concept ids of the study codes
are looked up in the loaded vocabulary (none is written here); irrelevant facts use small ids that
are not in it.

Measured per engine and size (best of ``--repeat`` runs, warm cache):
* build   = ``blina_study.adapter.views.build`` (course + patient, read-only queries);
* extract = ``blina_study.adapter.views.extract`` (course, patient, lineage, fingerprint, CSV/Parquet/JSON);
* limit   = one indexed scan selecting the study's measurement and drug concepts (the rows any
  implementation must read): ``count/sum/max`` over ``measurement`` and ``drug_exposure`` filtered
  on the resolved concept ids.

Run:  .venv/bin/python bench/omop_views.py [--sizes 10000,100000] [--engines duckdb,postgresql]
      [--pg postgresql://postgres@127.0.0.1:5432] [--repeat 3] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from blina_study.adapter.db import Database, connect
from blina_study.adapter.omop import create_cdm, load_study_vocabulary
from blina_study.adapter.study import load_study
from blina_study.adapter.views import build, extract, render_query

MEAS_PER_PERSON = 200
COHORT_EVERY = 50          # 2 % of persons receive blinatumomab

# Study measurements written by the generator: (vocabulary, code, UCUM unit, value scale).
_RELEVANT = [
    ("LOINC", "11150-0", "%", 40.0), ("BLINA", "MRD-FCM-BM", "%", 2.0), ("LOINC", "8122-4", "10*9/L", 2.0),
    ("LOINC", "24467-3", "/uL", 900.0), ("LOINC", "14135-8", "10*3/uL", 1.5), ("LOINC", "8116-6", "/uL", 50.0),
    ("LOINC", "26881-3", "pg/mL", 300.0), ("LOINC", "26848-2", "pg/mL", 80.0),
]


def _relevant_cte(db: Database) -> str:
    rows = ", ".join(f"('{v}', '{c}', '{u}', {s})" for v, c, u, s in _RELEVANT)
    concept = db.qualified("vocab", "concept")
    return f"""rel as (
    select cast(row_number() over (order by x.code) - 1 as integer) as k, c.concept_id, u.concept_id as unit_id,
           x.scale
    from (values {rows}) as x(v, code, unit, scale)
    join {concept} as c on c.vocabulary_id = x.v and c.concept_code = x.code
    join {concept} as u on u.vocabulary_id = 'UCUM' and u.concept_code = x.unit
)"""


def _series(n: int, alias: str, col: str) -> str:
    """1..n as INTEGER (DuckDB's series is BIGINT, and DATE + BIGINT is not defined there)."""
    return f"(select cast(s.x as integer) as {col} from generate_series(1, {int(n)}) as s(x)) as {alias}"


def _concept_id(db: Database, vocab: str, code: str) -> int:
    return int(db.query(f"select concept_id from {db.qualified('vocab', 'concept')} "
                        "where vocabulary_id = :v and concept_code = :c", {"v": vocab, "c": code})[0][0])


def generate(db: Database, n: int) -> dict[str, int]:
    """Fill the CDM tables for ``n`` persons; returns rows per table."""
    q = lambda t: db.qualified("cdm", t)  # noqa: E731
    base = "cast('2021-01-01' as date)"
    persons = _series(int(n), "p", "i")
    cohort = f"p.i % {COHORT_EVERY} = 0"
    index = f"({base} + (p.i % 365))"
    ids = {k: _concept_id(db, *v) for k, v in {
        "male": ("Gender", "M"), "female": ("Gender", "F"), "blina": ("RxNorm", "1597262"),
        "cytarabine": ("RxNorm", "3041"), "mp": ("RxNorm", "103"), "relapse": ("ICD10CM", "C91.02"),
        "crs2": ("ICD10CM", "D89.832"), "hsct": ("CPT4", "38240")}.items()}
    stmts = [
        f"""insert into {q('person')} (person_id, gender_concept_id, year_of_birth, month_of_birth, day_of_birth,
            race_concept_id, ethnicity_concept_id, person_source_value)
        select p.i, case when p.i % 2 = 0 then {ids['male']} else {ids['female']} end, 2005 + p.i % 12,
            1 + p.i % 12, 1 + p.i % 28, 0, 0, 'MRN' || cast(p.i as varchar(12))
        from {persons}""",
        f"""insert into {q('observation_period')} (observation_period_id, person_id, observation_period_start_date,
            observation_period_end_date, period_type_concept_id)
        select p.i, p.i, {base} - 800, {base} + 900 + p.i % 200, 0 from {persons}""",
        # 20 irrelevant drug exposures per person; cohort: 2 courses of 2 bags, chemotherapy around them
        f"""insert into {q('drug_exposure')} (drug_exposure_id, person_id, drug_concept_id, drug_exposure_start_date,
            drug_exposure_end_date, drug_type_concept_id)
        select (p.i - 1) * 30 + g.j, p.i, 1000 + (p.i * 7 + g.j * 13) % 900,
            {base} + (p.i * 3 + g.j * 41) % 900 - 400, {base} + (p.i * 3 + g.j * 41) % 900 - 400 + g.j % 5, 0
        from {persons} cross join {_series(20, "g", "j")}""",
        f"""insert into {q('drug_exposure')} (drug_exposure_id, person_id, drug_concept_id, drug_exposure_start_date,
            drug_exposure_end_date, drug_type_concept_id)
        select (p.i - 1) * 30 + 20 + b.j, p.i,
            case when b.j <= 4 then {ids['blina']} when b.j = 5 then {ids['cytarabine']} else {ids['mp']} end,
            {index} + case b.j when 1 then 0 when 2 then 14 when 3 then 60 when 4 then 74 when 5 then -30 else 120 end,
            {index} + case b.j when 1 then 13 when 2 then 27 when 3 then 73 when 4 then 87 when 5 then -26 else 150 end,
            0
        from {persons} cross join {_series(6, "b", "j")}
        where {cohort}""",
        # 200 measurements per person: every 50th is a study variable; cohort persons: every 10th, dated
        # around their courses
        f"""insert into {q('measurement')} (measurement_id, person_id, measurement_concept_id, measurement_date,
            measurement_type_concept_id, value_as_number, unit_concept_id, measurement_source_concept_id,
            measurement_source_value)
        with {_relevant_cte(db)}
        select (p.i - 1) * {MEAS_PER_PERSON} + g.j, p.i,
            coalesce(rel.concept_id, 1000 + (p.i * 7 + g.j * 13) % 900),
            case when {cohort} and g.j % 10 = 0 then {index} + cast(floor(g.j / 10.0) as integer) * 6 - 20
                 else {base} + (p.i * 3 + g.j * 17) % 900 - 400 end,
            0,
            cast((p.i * 31 + g.j * 7) % 1000 as double precision) / 1000 * coalesce(rel.scale, 100),
            rel.unit_id, coalesce(rel.concept_id, 0), 'LAB' || cast(g.j % 40 as varchar(4))
        from {persons}
        cross join {_series(MEAS_PER_PERSON, "g", "j")}
        left join rel
            on rel.k = (p.i + cast(floor(g.j / 10.0) as integer)) % {len(_RELEVANT)}
            and (g.j % 50 = 0 or ({cohort} and g.j % 10 = 0))
        order by 1""",   # stored in id order: study rows scattered over the whole table, as in an ETL
        f"""insert into {q('condition_occurrence')} (condition_occurrence_id, person_id, condition_concept_id,
            condition_start_date, condition_type_concept_id, condition_source_concept_id)
        select (p.i - 1) * 12 + g.j, p.i,
            case when g.j > 10 then 0 else 1000 + (p.i + g.j * 11) % 900 end,
            case when g.j = 11 then {index} + 5 when g.j = 12 then {index} + 200
                 else {base} + (p.i * 5 + g.j * 29) % 900 - 400 end,
            0,
            case when g.j = 11 then {ids['crs2']} when g.j = 12 then {ids['relapse']} else 0 end
        from {persons} cross join {_series(12, "g", "j")}
        where g.j <= 10 or ({cohort} and (g.j = 11 or p.i % 150 = 0))""",
        f"""insert into {q('procedure_occurrence')} (procedure_occurrence_id, person_id, procedure_concept_id,
            procedure_date, procedure_type_concept_id)
        select (p.i - 1) * 6 + g.j, p.i, case when g.j = 6 then {ids['hsct']} else 1000 + (p.i + g.j) % 900 end,
            case when g.j = 6 then {index} + 150 else {base} + (p.i * 7 + g.j * 31) % 900 - 400 end, 0
        from {persons} cross join {_series(6, "g", "j")}
        where g.j <= 5 or ({cohort} and p.i % 100 = 0)""",
        f"""insert into {q('visit_occurrence')} (visit_occurrence_id, person_id, visit_concept_id, visit_start_date,
            visit_end_date, visit_type_concept_id)
        select (p.i - 1) * 20 + g.j, p.i, 0, {base} + (p.i * 11 + g.j * 43) % 1000 - 400,
            {base} + (p.i * 11 + g.j * 43) % 1000 - 400 + g.j % 3, 0
        from {persons} cross join {_series(20, "g", "j")}""",
        f"""insert into {q('observation')} (observation_id, person_id, observation_concept_id, observation_date,
            observation_type_concept_id)
        select (p.i - 1) * 10 + g.j, p.i, 1000 + g.j, {base} + (p.i * 13 + g.j * 47) % 900 - 400, 0
        from {persons} cross join {_series(10, "g", "j")}""",
        f"""insert into {q('death')} (person_id, death_date, death_type_concept_id)
        select p.i, {base} + 300 + p.i % 400, 0 from {persons} where p.i % 97 = 0""",
    ]
    for s in stmts:
        db.execute(s)
    counts = {}
    for t in ("person", "drug_exposure", "measurement", "condition_occurrence", "procedure_occurrence",
              "visit_occurrence", "observation", "death"):
        counts[t] = int(db.query(f"select count(*) from {q(t)}")[0][0])
    return counts


def limit_query(db: Database) -> tuple[str, str]:
    """The two indexed selections of the study's measurement and drug concepts (ids resolved now)."""
    study = load_study()
    sql, params = render_query(study, None, db, """
select v.domain, s.concept_id from int_concept_sets as s
join study_variables as v on v.variable = s.variable
where s.match_on = 'standard' and v.domain in ('measurement', 'drug')""", ("int_concept_sets",))
    rows = db.query(sql, params)
    meas = ", ".join(str(int(c)) for d, c in rows if d == "measurement")
    drug = ", ".join(str(int(c)) for d, c in rows if d == "drug")
    return (f"select count(*), sum(value_as_number), max(measurement_date) from {db.qualified('cdm', 'measurement')} "
            f"where measurement_concept_id in ({meas})",
            f"select count(*), max(drug_exposure_end_date) from {db.qualified('cdm', 'drug_exposure')} "
            f"where drug_concept_id in ({drug})")


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _pg_admin(url: str, dbname: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(url.rstrip("/") + "/postgres", autocommit=True) as admin:
        admin.execute(f'drop database if exists "{dbname}"')
        if create:
            admin.execute(f'create database "{dbname}"')


def _pg_vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")


def run_one(engine: str, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    dbname = f"blina_views_bench_{n}"   # unique: other benchmarks use blina_bench_*
    if engine == "duckdb":
        url = str(tmp / f"{dbname}.duckdb")
    else:
        _pg_admin(args.pg, dbname, create=True)
        url = f"{args.pg.rstrip('/')}/{dbname}"
    study = load_study()
    try:
        with connect(url, cdm_schema="cdm", vocab_schema="vocab") as db:
            t0 = time.perf_counter()
            create_cdm(db, indexes=False)
            load_study_vocabulary(db)
            counts = generate(db, n)
            if engine == "postgresql":
                create_cdm(db)                       # keys + standard OHDSI indexes after the load
                _pg_vacuum(url)
            setup = time.perf_counter() - t0
            lq = limit_query(db)
            t_limit, lim = best_of(lambda: [db.query(s) for s in lq], args.repeat)
            t_build, (course, patient) = best_of(lambda: build(db, study, site_id="bench"), args.repeat)
            out = tmp / f"out_{engine}_{n}"
            t_extract, _ = best_of(lambda: extract(db, study, site_id="bench", out_dir=out), args.repeat)
        relevant = int(lim[0][0][0]) + int(lim[1][0][0])
        return {"engine": engine, "persons": n, "measurement": counts["measurement"],
                "rows": sum(counts.values()), "relevant": relevant, "courses": len(course),
                "patients": len(patient), "setup": setup, "limit": t_limit, "build": t_build,
                "extract": t_extract}
    finally:
        if engine == "postgresql" and not args.keep:
            _pg_admin(args.pg, dbname, create=False)


NOTES = """Reading the numbers (OMOP views, issue 4):

- How the ratio is read: `build` is `blina build` (course + patient) and `extract` is `blina extract`
  (which computes course + patient + lineage itself, then writes the files); a site runs one or the other.
  Both are shown against the limit, and their sum as the issue's "build + extract".
- PostgreSQL (the hospital route): build is within 3x the limit at both sizes (2.3x at 1e4, 1.7x at 1e5);
  extract (which adds lineage and the input fingerprint) is 3.0x at 1e5 and 3.9x at 1e4; build + extract
  run back to back is 4.7-6.2x. At 1e4 the limit is only 0.07 s, and the fixed cost of planning (17 ms)
  and running a ~40-relation query sets the ratio; the largest single step there is the sequential scan
  of DRUG_EXPOSURE that finds the cohort (28 ms: the rule ORs drug_concept_id with the source concept
  and source value, and the OHDSI indexes cover drug_concept_id only).
- What made PostgreSQL fast: every relation that reads a large fact table first keeps the study patients
  only (`sql/intermediate/int_cohort_persons.sql`, the persons with a blinatumomab exposure; the
  `in_cohort` macro in adapter/views.py becomes `person_id = any(array(...))`, answered with the OHDSI
  person_id index). The code-set matching (standard, source concept and overlay source value) then runs on
  the study patients' ~4e5 rows instead of a sequential scan of 2e7 (was 3.3 s of 5.2 s). Build went from
  6.1x to 1.5x the limit at 1e5 persons. The input fingerprint in extract.json is taken over the same
  rows (a whole-CDM count cost another full scan).
- DuckDB misses the target at both sizes. Its limit is one filtered column scan (0.06 s for 2e7 rows,
  0.01 s for 2e6). The build is ~0.1 s of planning (DuckDB's profile at 1e5: optimizer 0.069 s, of which
  projection pull-up 0.032 s; binder/planner 0.029 s) plus ~0.36 s CPU of ~40 small operators, the largest
  the measurement scan with the study-patient semi-join (0.05 s). At 1e4 persons the fixed costs are the
  whole build (0.23 s against 0.009 s): planning alone is 10x the limit, so 3x is out of reach for any
  composed SQL of the protocol's derivations. Disabling projection pull-up saves 0.015-0.03 s; disabling
  CTE inlining doubles the time; both left at DuckDB's defaults.
- Build and extract each run ONE composed query (course + patient [+ lineage]); relations shared by the
  outputs are computed once.
- PostgreSQL runs the query with `SET LOCAL jit = off, enable_nestloop = off, work_mem = '256MB'` (the dialect
  table in adapter/views.py): with JIT on, compiling ~1000 expressions cost 6 s; with nested loops allowed,
  misestimated CTE joins went quadratic (80 s at 1e5).
- Data: 2 % of persons receive blinatumomab (2 courses each); study rows are scattered over the table (rows
  stored in id order), as in an ETL-loaded CDM. PostgreSQL has the standard OHDSI indexes and VACUUM ANALYZE.
"""


def write_results(path: Path, results: list[dict[str, object]], argv: list[str]) -> None:
    lines = ["## OMOP views", "",
             f"Run {dt.date.today().isoformat()} on {platform.machine()}, {platform.python_version()}; "
             "best of the repeats, warm cache. Rerun with:", "",
             "```", (".venv/bin/python bench/omop_views.py " + " ".join(argv)).rstrip(), "```", "",
             "limit = one indexed scan selecting the study's measurement and drug concepts; build = course + "
             "patient (read-only composed queries); extract = course + patient + lineage + input fingerprint + "
             "CSV/Parquet/JSON files.", "",
             "| engine | persons | measurement rows | study rows | courses | limit s | build s | extract s "
             "| build/limit | extract/limit | (build+extract)/limit |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for r in results:
        lim = float(r["limit"])  # type: ignore[arg-type]
        b, e = float(r["build"]), float(r["extract"])  # type: ignore[arg-type]
        rows.append(f"| {r['engine']} | {r['persons']:,} | {r['measurement']:,} | {r['relevant']:,} | "
                    f"{r['courses']:,} | {lim:.3f} | {b:.3f} | {e:.3f} | {b / lim:.1f} | {e / lim:.1f} | "
                    f"{(b + e) / lim:.1f} |")
    section = "\n".join(lines + rows) + "\n\n" + NOTES
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## OMOP views\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--engines", default="duckdb,postgresql")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server URL without database")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL bench databases")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="blina_bench_") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            for engine in args.engines.split(","):
                r = run_one(engine, n, args, Path(tmp))
                print(f"{engine:10s} n={n:>7,} meas={r['measurement']:>11,} setup {r['setup']:.1f}s  "
                      f"limit {r['limit']:.3f}s  build {r['build']:.3f}s  extract {r['extract']:.3f}s  "
                      f"courses {r['courses']}", flush=True)
                results.append(r)
    write_results(args.results, results, argv)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
