"""An OMOP CSV export's own vocabulary is loaded by ``blina load-omop`` (the real Eunomia sample, both
engines); an Athena download is refused with the command that loads it; ``init-db`` never lays the study
subset over a database's own vocabulary."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest

from blina_study.adapter.cli import main
from blina_study.adapter.db import connect

EUNOMIA = "eunomia-synthea27nj-5.4/Synthea27Nj_5.4.zip"
VOCAB_FILES = ("CONCEPT", "CONCEPT_ANCESTOR", "CONCEPT_RELATIONSHIP", "VOCABULARY", "DOMAIN", "CONCEPT_CLASS",
               "RELATIONSHIP", "CONCEPT_SYNONYM", "DRUG_STRENGTH")


@pytest.fixture
def eunomia(shared_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "eunomia"
    with zipfile.ZipFile(shared_dir / "external" / EUNOMIA) as zf:
        zf.extractall(folder, [n for n in zf.namelist() if not n.startswith("__MACOSX")])
    return folder


def _rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def _args(url: str) -> list[str]:
    return ["--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]


def test_load_omop_loads_the_exports_vocabulary(engine_url: str, eunomia: Path, capsys) -> None:
    assert main(["init-db", *_args(engine_url)]) == 0  # the study subset first: the export replaces it
    assert main(["load-omop", str(eunomia), *_args(engine_url)]) == 0
    out = capsys.readouterr().out
    skipped = out.split("skipped files that are not CDM tables the study reads: ", 1)[-1].split("\n")[0]
    assert not set(skipped.split(", ")) & {f"{name}.csv" for name in VOCAB_FILES}
    with connect(engine_url, cdm_schema="cdm", vocab_schema="vocab") as db:
        for name in VOCAB_FILES:
            n = db.query(f"select count(*) from {db.qualified('vocab', name.lower())}")[0][0]
            assert n == _rows(eunomia / f"{name}.csv"), name
        # a real concept of the export, and the subset's rows are gone (the export's vocabulary replaced it)
        assert db.query(f"select concept_name from {db.qualified('vocab', 'concept')} "
                        "where concept_id = 40316773")[0][0] == "Prediabetes"
        assert db.query(f"select count(*) from {db.qualified('vocab', 'concept')}")[0][0] == 2294
    assert main(["check", *_args(engine_url)]) == 1
    out = capsys.readouterr().out
    assert "vocabulary version: v5.0 09-APR-22*" in out and "CONCEPT_ANCESTOR is empty" in out
    assert "blinatumomab: none of its study codes (RxNorm 1597258) is in CONCEPT" in out
    assert "no blinatumomab administrations" not in out  # the same thing said twice in one line
    # init-db again: the database now has its own vocabulary, the subset is not laid over it
    assert main(["init-db", *_args(engine_url)]) == 0
    assert "has its own vocabulary (" in capsys.readouterr().out
    with connect(engine_url, cdm_schema="cdm", vocab_schema="vocab") as db:
        assert db.query(f"select count(*) from {db.qualified('vocab', 'concept')}")[0][0] == 2294


def test_load_omop_refuses_an_athena_folder_with_the_command(tmp_path: Path, capsys) -> None:
    athena = tmp_path / "athena"
    athena.mkdir()
    (athena / "CONCEPT.csv").write_text(
        "concept_id\tconcept_name\tdomain_id\tvocabulary_id\tconcept_class_id\tstandard_concept\tconcept_code\t"
        "valid_start_date\tvalid_end_date\tinvalid_reason\n"
        "1\tx\tDrug\tRxNorm\tIngredient\tS\t1\t19700101\t20991231\t\n")
    assert main(["load-omop", str(athena), "--db", str(tmp_path / "x.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "Athena" in err and f"blina load-vocab {athena}" in err


def _to_athena(src: Path, dst: Path) -> dict[str, int]:
    """Eunomia's vocabulary files rewritten as Athena writes them: tab-separated, unquoted, YYYYMMDD."""
    dst.mkdir()
    counts = {}
    for name in VOCAB_FILES:
        with open(src / f"{name}.csv", newline="", encoding="utf-8") as fh, \
                open(dst / f"{name}.csv", "w", encoding="utf-8", newline="") as out:
            rows = list(csv.reader(fh))
            header = rows[0]
            dates = [i for i, h in enumerate(header) if h.endswith("_date")]
            for row in rows:
                if row is not header:
                    row = [v.replace("-", "") if i in dates else v for i, v in enumerate(row)]
                out.write("\t".join(row) + "\n")
            counts[name.lower()] = len(rows) - 1
    return counts


def test_load_vocab_reads_an_athena_folder(engine_url: str, eunomia: Path, tmp_path: Path, capsys) -> None:
    athena = tmp_path / "athena"
    counts = _to_athena(eunomia, athena)
    with open(athena / "CONCEPT.csv", "a", encoding="utf-8") as fh:  # Athena does not quote: a " in a name
        fh.write('2000000001\tBlinatumomab 35 MCG "kit"\tDrug\tLocal\tClinical Drug\t\tBL-1\t20200101\t20991231\t\n')
        fh.write("2000000002\tbad date\tDrug\tLocal\tClinical Drug\t\tBL-2\t2020013\t20991231\t\n")
    (athena / "CONCEPT_CPT4.csv").write_text("not a vocabulary table\n")
    assert main(["load-vocab", str(athena), *_args(engine_url), "--quiet"]) == 1  # one rejected row
    out = capsys.readouterr().out
    total = sum(counts.values()) + 2
    assert f"read {total} rows: loaded {total - 1} " in out and "rejected 1" in out
    assert f"CONCEPT.csv:{counts['concept'] + 3}: valid_start_date: '2020013' is not a date YYYY-MM-DD" in out
    assert "skipped files that are not vocabulary tables: CONCEPT_CPT4.csv" in out
    with connect(engine_url, cdm_schema="cdm", vocab_schema="vocab") as db:
        for name, n in counts.items():
            got = db.query(f"select count(*) from {db.qualified('vocab', name)}")[0][0]
            assert got == n + (1 if name == "concept" else 0), name
        row = db.query(f"select concept_name, valid_start_date, standard_concept, invalid_reason from "
                       f"{db.qualified('vocab', 'concept')} where concept_id = 2000000001")[0]
        assert row[0] == 'Blinatumomab 35 MCG "kit"' and str(row[1]) == "2020-01-01"
        assert row[2] is None and row[3] is None
        assert str(db.query(f"select valid_end_date from {db.qualified('vocab', 'concept')} "
                            "where concept_id = 40316773")[0][0]) == "2002-01-31"
