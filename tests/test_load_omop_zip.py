"""``blina load-omop`` reads a .zip of the CSV files in place (OHDSI ships Eunomia as one), both engines:
same rows as the unpacked folder, macOS resource forks left out, rejections named ``zip!member``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from blina_study.adapter.cli import main

EUNOMIA = "eunomia-synthea27nj-5.4/Synthea27Nj_5.4.zip"
HEADER = ("person_id,gender_concept_id,year_of_birth,month_of_birth,day_of_birth,birth_datetime,race_concept_id,"
          "ethnicity_concept_id,location_id,provider_id,care_site_id,person_source_value,gender_source_value,"
          "gender_source_concept_id,race_source_value,race_source_concept_id,ethnicity_source_value,"
          "ethnicity_source_concept_id")


def _args(url: str) -> list[str]:
    return ["--db", url, "--cdm-schema", "cdm", "--vocab-schema", "vocab"]


def test_eunomia_zip_is_read_in_place(engine_url: str, shared_dir: Path, tmp_path: Path, capsys) -> None:
    """Was: 'Synthea27Nj_5.4.zip: no such folder' (exit 2); its __MACOSX/._*.csv members are not tables."""
    report = tmp_path / "load.json"
    assert main(["load-omop", str(shared_dir / "external" / EUNOMIA), *_args(engine_url),
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "read 291875 rows: loaded 291875 " in out and "rejected 0" in out, out
    loaded = json.loads(report.read_text())
    assert "person" in json.dumps(loaded) and "._" not in out


def test_rejections_in_a_zip_name_the_member(engine_url: str, tmp_path: Path, capsys) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("export/PERSON.csv", f"{HEADER}\n1,8507,2010,1,2,,0,0,,,,P1,M,0,,0,,0\n"
                                          "2,8507,notayear,1,2,,0,0,,,,P2,M,0,,0,,0\n")
        zf.writestr("__MACOSX/export/._PERSON.csv", b"\x00\x05\x16\x07 resource fork")
    assert main(["load-omop", str(archive), *_args(engine_url)]) == 1
    out = capsys.readouterr().out
    assert "loaded 1 (person 1), rejected 1" in out, out
    assert f"rejected {archive}!PERSON.csv:3: " in out, out
    assert "blina-omop-" not in out  # never the temporary copy's path
