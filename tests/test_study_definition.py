"""The study definition and site overlay: the packaged files load, and every error path names
the file, the key and the expected form."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blina_study.adapter.resources import mappings_dir
from blina_study.adapter.study import StudyDefinitionError, load_overlay, load_study

PROTOCOL_PARAMS = {
    "course_gap_days": 7, "status_lookback_days": 30, "blast_cr_threshold_pct": 5.0,
    "mrd_positive_threshold": 1e-4, "burden_window_days": 42, "delay_window_days": 28,
    "response_from_day": 14, "response_until_days": 14, "high_mrd_threshold": 1e-3,
    "cd19_loss_threshold": 0.01, "bridge_window_days": 180,
}
PROTOCOL_VARIABLES = {
    "blinatumomab", "b_all_diagnosis", "relapse", "marrow_blasts", "mrd", "cd3_abs", "cd4_abs", "cd8_abs",
    "cd19_abs", "il6", "il10", "ifng", "tnfa", "bcr_abl1", "poor_cytogenetics", "chemotherapy", "hsct",
    "car_t", "crs", "icans", "death",
}


def _base() -> dict:
    return yaml.safe_load((mappings_dir() / "study.yaml").read_text())


def _write(tmp_path: Path, data: dict | str, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_packaged_definition_has_every_protocol_param_with_its_default():
    study = load_study()
    for name, value in PROTOCOL_PARAMS.items():
        assert getattr(study.params, name) == value, name


def test_packaged_definition_has_every_protocol_variable():
    assert PROTOCOL_VARIABLES <= set(load_study().variables)


def test_fingerprint_changes_with_a_parameter():
    study = load_study()
    assert study.fingerprint() == load_study().fingerprint()
    assert study.with_params(course_gap_days=10).fingerprint() != study.fingerprint()


def _error(tmp_path: Path, data) -> str:
    with pytest.raises(StudyDefinitionError) as exc:
        load_study(_write(tmp_path, data))
    return str(exc.value)


def test_unknown_top_level_key(tmp_path):
    data = _base() | {"colour": "blue"}
    msg = _error(tmp_path, data)
    assert "study.yaml" in msg and "colour: unknown key" in msg


def test_unknown_param(tmp_path):
    data = _base()
    data["params"]["course_gap_dayz"] = 7
    assert "params.course_gap_dayz: unknown key" in _error(tmp_path, data)


def test_missing_param(tmp_path):
    data = _base()
    del data["params"]["course_gap_days"]
    assert "params.course_gap_days: missing required field" in _error(tmp_path, data)


def test_wrong_type_param(tmp_path):
    data = _base()
    data["params"]["course_gap_days"] = "seven"
    msg = _error(tmp_path, data)
    assert "params.course_gap_days" in msg and "integer" in msg and "'seven'" in msg


def test_bool_is_not_a_number(tmp_path):
    data = _base()
    data["params"]["high_mrd_threshold"] = True
    assert "params.high_mrd_threshold" in _error(tmp_path, data)


def test_out_of_range_param(tmp_path):
    data = _base()
    data["params"]["mrd_positive_threshold"] = 2
    assert "params.mrd_positive_threshold" in _error(tmp_path, data)


def test_variable_with_unknown_domain(tmp_path):
    data = _base()
    data["variables"]["mrd"]["domain"] = "labs"
    msg = _error(tmp_path, data)
    assert "variables.mrd.domain" in msg and "'drug'" in msg


def test_code_missing_vocabulary(tmp_path):
    data = _base()
    data["variables"]["mrd"]["codes"][0] = {"code": "X"}
    assert "variables.mrd.codes.0.vocabulary_id: missing required field" in _error(tmp_path, data)


def test_code_with_unknown_key(tmp_path):
    data = _base()
    data["variables"]["mrd"]["codes"][0]["decendants"] = True
    assert "variables.mrd.codes.0.decendants: unknown key" in _error(tmp_path, data)


def test_code_as_number_not_string(tmp_path):
    data = _base()
    data["variables"]["blinatumomab"]["codes"][0]["code"] = 1597258
    assert "variables.blinatumomab.codes.0.code" in _error(tmp_path, data)


def test_null_codes_list(tmp_path):
    data = _base()
    data["variables"]["death"]["codes"] = None
    assert "variables.death.codes: expected a list" in _error(tmp_path, data)


def test_quantity_without_unit_family(tmp_path):
    data = _base()
    del data["variables"]["cd3_abs"]["unit_family"]
    assert "unit_family" in _error(tmp_path, data)


def test_unit_family_not_defined(tmp_path):
    data = _base()
    data["variables"]["cd3_abs"]["unit_family"] = "furlongs"
    assert "variables.cd3_abs.unit_family 'furlongs'" in _error(tmp_path, data)


def test_canonical_unit_must_have_factor_one(tmp_path):
    data = _base()
    data["unit_families"]["percent"]["factors"]["%"] = 2
    assert "canonical unit '%'" in _error(tmp_path, data)


def test_unknown_operator(tmp_path):
    data = _base()
    data["operators"].append("~")
    assert "operators.5" in _error(tmp_path, data)


def test_invalid_yaml_names_the_line(tmp_path):
    msg = _error(tmp_path, "study_id: x\nparams: [unclosed\n")
    assert "study.yaml" in msg and "line" in msg and "not valid YAML" in msg


def test_top_level_not_a_mapping(tmp_path):
    assert "expected a mapping" in _error(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path):
    with pytest.raises(StudyDefinitionError, match="cannot read"):
        load_study(tmp_path / "nope.yaml")


# ------------------------------------------------------------------ overlays

def _overlay(tmp_path: Path, data) -> str:
    with pytest.raises(StudyDefinitionError) as exc:
        load_overlay(_write(tmp_path, data, "site.yaml"))
    return str(exc.value)


def test_overlay_example_loads(tmp_path):
    overlay = load_overlay(_write(tmp_path, {
        "site_id": "center4",
        "variables": {"mrd": [{"source_value": "MRD-FCM", "unit": "%"}],
                      "cd3_abs": [{"source_value": "CD3ABS", "unit": "/uL"}]},
    }, "site.yaml"))
    assert overlay.variables["cd3_abs"][0].unit == "/uL"


def test_overlay_unknown_variable(tmp_path):
    msg = _overlay(tmp_path, {"site_id": "c4", "variables": {"mrdd": [{"source_value": "X", "unit": "%"}]}})
    assert "site.yaml" in msg and "variables.mrdd: unknown study variable" in msg and "mrd" in msg


def test_overlay_quantity_needs_unit(tmp_path):
    msg = _overlay(tmp_path, {"site_id": "c4", "variables": {"cd3_abs": [{"source_value": "CD3ABS"}]}})
    assert "variables.cd3_abs[0].unit: missing" in msg


def test_overlay_unconvertible_unit(tmp_path):
    msg = _overlay(tmp_path, {"site_id": "c4", "variables": {"cd3_abs": [{"source_value": "CD3ABS", "unit": "mg"}]}})
    assert "'mg' cannot be converted to '10*9/L'" in msg


def test_overlay_bad_site_id(tmp_path):
    assert "site_id" in _overlay(tmp_path, {"site_id": "center 4; drop"})


def test_overlay_unknown_key(tmp_path):
    msg = _overlay(tmp_path, {"site_id": "c4", "variables": {"mrd": [{"source_value": "M", "unit": "%", "x": 1}]}})
    assert "variables.mrd.0.x: unknown key" in msg


def test_overlay_missing_site_id(tmp_path):
    assert "site_id: missing required field" in _overlay(tmp_path, {"variables": {}})
