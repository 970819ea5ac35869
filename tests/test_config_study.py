"""The study configuration: the shipped study loads, and a bad file is refused naming the file and field."""

from pathlib import Path

import pytest
import yaml

from cohortflow.config.loading import ConfigError
from cohortflow.config.study import load_study


def test_shipped_study_matches_the_design():
    study = load_study()
    sites = {a.code: len(a.sites) for a in study.arms}
    targets = {a.code: a.target_households for a in study.arms}
    assert sites == {"proeftuin": 10, "gi": 9, "vt": 13, "jongerenpanel": 1}
    assert targets == {"proeftuin": 200, "gi": 200, "vt": 1300, "jongerenpanel": None}
    assert study.arm("jongerenpanel").role == "reference"
    assert study.waves_of("jongerenpanel") == ["T0"]
    assert study.wave_codes == ["T0", "T1", "T2"] and study.baseline_wave == "T0"
    child = study.role("child")
    assert (child.informant, child.subject, child.min_age_years) == ("self", "child", 8)
    assert study.role("parent").min_age_years == 3
    for w in study.waves:
        assert w.window_days[0] <= w.offset_days <= w.window_days[1]


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


@pytest.fixture
def study_dict() -> dict:
    return yaml.safe_load((Path(__file__).parents[1] / "config" / "study.yaml").read_text())


def test_offset_outside_window_names_file_and_field(tmp_path, study_dict):
    study_dict["waves"][1]["offset_days"] = 900
    path = _write(tmp_path, study_dict)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    msg = str(err.value)
    assert str(path) in msg and "waves[1]" in msg and "must contain offset_days 900" in msg


def test_duplicate_arm_code_is_refused(tmp_path, study_dict):
    study_dict["arms"][1]["code"] = "proeftuin"
    with pytest.raises(ConfigError, match=r"arms: .*'proeftuin' is used twice"):
        load_study(_write(tmp_path, study_dict))


def test_unknown_field_and_bad_type_are_both_reported(tmp_path, study_dict):
    study_dict["arms"][0]["target_households"] = "many"
    study_dict["waves"][0]["colour"] = "red"
    with pytest.raises(ConfigError) as err:
        load_study(_write(tmp_path, study_dict))
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert "arms[0].target_households" in msg and "'many'" in msg
    assert "waves[0].colour" in msg and "Extra inputs are not permitted" in msg


def test_arm_naming_an_unknown_wave_is_refused(tmp_path, study_dict):
    study_dict["arms"][3]["waves"] = ["T9"]
    with pytest.raises(ConfigError, match="names wave 'T9'"):
        load_study(_write(tmp_path, study_dict))


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "study.yaml"
    p.write_text("name: x\narms: [\n  - code: a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"study.yaml: not valid YAML at line \d+"):
        load_study(p)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="file not found.*COHORTFLOW_CONFIG_DIR"):
        load_study(tmp_path / "nope.yaml")


def test_config_dir_can_be_overridden(tmp_path, study_dict, monkeypatch):
    study_dict["short_name"] = "other_study"
    _write(tmp_path, study_dict)
    monkeypatch.setenv("COHORTFLOW_CONFIG_DIR", str(tmp_path))
    assert load_study().short_name == "other_study"
