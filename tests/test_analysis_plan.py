"""The analysis plan as data: the shipped plan loads and fits the study; bad plans fail with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cohortflow.analysis.plan import AnalysisPlan, load_analysis_plan
from cohortflow.config.loading import ConfigError
from cohortflow.config.study import load_study


def test_shipped_plan_loads_and_matches_the_study():
    plan = load_analysis_plan()
    study = load_study()
    plan.check_against(study)
    assert plan.multiplicity.method == "holm"
    assert plan.small_cell_threshold == 10
    assert plan.sensitivity.multiple_imputation.imputations >= 20
    assert plan.cohort_arms[0] == plan.intervention_arm
    assert set(plan.comparison_arms) <= set(study.arm_codes)
    keys = [o.id for o in plan.outcomes]
    assert len(keys) == len(set(keys))
    for fam in plan.multiplicity.families:
        assert set(fam.outcomes) <= set(keys)


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "analysis.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


BASE = {"intervention_arm": "proeftuin", "comparison_arms": ["vt"], "outcomes": [{"name": "pss.total"}]}


def test_duplicate_outcome_keys_are_refused(tmp_path):
    p = _write(tmp_path, BASE | {"outcomes": [{"name": "pss.total"}, {"name": "pss.total"}]})
    with pytest.raises(ConfigError, match=r"analysis.yaml.*outcome keys \['pss.total'\] are used twice"):
        load_analysis_plan(p)


def test_family_naming_an_unknown_outcome_is_refused(tmp_path):
    p = _write(tmp_path, BASE | {"multiplicity": {"families": [{"name": "f", "outcomes": ["nope"]}]}})
    with pytest.raises(ConfigError, match="unknown outcomes"):
        load_analysis_plan(p)


def test_bad_method_names_the_field(tmp_path):
    p = _write(tmp_path, BASE | {"multiplicity": {"method": "tukey"}})
    with pytest.raises(ConfigError, match=r"multiplicity.method"):
        load_analysis_plan(p)


def test_arms_must_exist_in_the_study():
    plan = AnalysisPlan.model_validate(BASE | {"comparison_arms": ["elsewhere"]})
    with pytest.raises(ConfigError, match=r"arms \['elsewhere'\] are not in the study"):
        plan.check_against(load_study())


def test_a_yes_no_response_needs_the_binomial_family():
    from pydantic import ValidationError

    from cohortflow.analysis.plan import OutcomeSpec

    with pytest.raises(ValidationError, match="response 'stopped' is 0/1 and needs family: binomial"):
        OutcomeSpec(name="violence.any", response="stopped", family="gaussian")
    assert OutcomeSpec(name="violence.any", response="stopped", family="binomial").response == "stopped"
