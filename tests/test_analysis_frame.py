"""The model flow reads only the plan's part of the analysis dataset (issue #9, memory at factor 100):
`analysis_columns` / `analysis_outcome_names` are derived from the plan (a covariate, slope, IPW or resilience
covariate added there is kept), `analysis_frame` keeps those rows and columns in order, `read_analysis_dataset`
reads exactly that from Parquet, and `run_analysis` gives the same results on the whole dataset as on its part."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohortflow.analysis.models import (
    analysis_columns,
    analysis_frame,
    analysis_outcome_names,
    read_analysis_dataset,
    run_analysis,
)
from cohortflow.analysis.plan import AnalysisPlan
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import load_study

STUDY = load_study()


def _plan() -> AnalysisPlan:
    """A plan whose second outcome adjusts for its own covariate (`family_size`) and whose IPW and resilience
    covariates are columns no other part of the plan names."""
    return AnalysisPlan.model_validate({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"], "reference_group": "jongerenpanel",
        "defaults": {"fixed_effects": {"covariates": ["age_years"]},
                     "random_effects": {"household": True, "person": True, "slope": "months_since_t0"}},
        "outcomes": [{"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"},
                     {"name": "sim.total", "fixed_effects": {"covariates": ["age_years", "family_size"]}}],
        "sensitivity": {"ipw": {"covariates": ["age_years", "ipw_only"]},
                        "multiple_imputation": {"imputations": 2, "iterations": 2}},
        "resilience": {"outcome": "res.total", "covariates": ["age_years", "resilience_only"]},
    })


@pytest.fixture(scope="module")
def dataset() -> pd.DataFrame:
    """A simulated analysis dataset with the plan's outcome, a resilience outcome, an outcome the plan does not
    use and columns it does not use, as categoricals (as the linked dataset has them)."""
    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], STUDY.wave_codes, scale=0.3), seed=5)
    rng = np.random.default_rng(7)
    size = pd.Series(rng.integers(2, 7, df["household_id"].nunique()), index=df["household_id"].unique())
    df["family_size"] = df["household_id"].map(size).astype(float)
    df["ipw_only"] = rng.normal(size=len(df))
    df["resilience_only"] = rng.normal(size=len(df))
    df["response_id"] = np.arange(len(df))
    res = df[df["wave"] == "T0"].assign(outcome="res.total", score=lambda d: 50 + rng.normal(0, 5, len(d)))
    panel = pd.DataFrame({"household_id": [f"panel-{i}" for i in range(60)], "person_id": [f"pp-{i}" for i in range(60)],
                          "arm": "jongerenpanel", "wave": "T0", "outcome": "res.total",
                          "age_years": rng.uniform(8, 18, 60), "resilience_only": rng.normal(size=60),
                          "score": 52 + rng.normal(0, 5, 60)})
    other = df.assign(outcome="other.total", score=df["score"] + 1.0)
    data = pd.concat([other.iloc[:40], df, res, panel, other.iloc[40:]], ignore_index=True)
    for col in ["household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "sex", "outcome"]:
        data[col] = data[col].astype("category")
    return data


def test_columns_and_outcomes_come_from_the_plan():
    cols = analysis_columns(_plan())
    for col in ["household_id", "person_id", "arm", "wave", "outcome", "score", "role", "above_cutoff",
                "months_since_t0", "age_years", "family_size", "ipw_only", "resilience_only"]:
        assert col in cols
    assert len(cols) == len(set(cols))
    for col in ["sex", "response_id", "site", "informant_id", "days_since_t0", "baseline_score"]:
        assert col not in cols  # not named by this plan
    assert analysis_outcome_names(_plan()) == ["sim.total", "res.total"]


def test_analysis_frame_keeps_the_plans_rows_and_columns_in_order(dataset):
    part = analysis_frame(dataset, _plan())
    keep = dataset["outcome"].isin(["sim.total", "res.total"])
    assert len(part) == int(keep.sum()) < len(dataset)
    assert list(part.columns) == [c for c in dataset.columns if c in analysis_columns(_plan())]
    assert part.index.equals(pd.RangeIndex(len(part)))
    expected = dataset.loc[keep, part.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expected, check_exact=True)
    # a copy: changing the part leaves the dataset alone
    part.loc[0, "score"] = -1.0
    assert dataset.loc[keep, "score"].iloc[0] != -1.0


def test_read_analysis_dataset_reads_only_that_part_of_the_parquet(dataset, tmp_path):
    path = tmp_path / "analysis_long.parquet"
    dataset.to_parquet(path, index=False, row_group_size=100)  # several row groups, filtered one by one
    read = read_analysis_dataset(path, _plan())
    pd.testing.assert_frame_equal(read, analysis_frame(pd.read_parquet(path), _plan()), check_exact=True)
    assert set(read["outcome"].astype(str)) == {"sim.total", "res.total"}
    assert "response_id" not in read.columns and "family_size" in read.columns


def test_run_analysis_gives_the_same_results_on_the_whole_dataset_and_its_part(dataset):
    plan = _plan()
    whole = run_analysis(dataset, plan, STUDY, workers=1)
    part = run_analysis(analysis_frame(dataset, plan), plan, STUDY, workers=1)
    assert whole.failures == {} and part.failures == {}
    # the outcome's own covariate reached the model (pruning kept it)
    terms = set(whole.outcomes["sim.total"].fixed_effects["term"])
    assert any("family_size" in t for t in terms)
    pd.testing.assert_frame_equal(whole.contrasts, part.contrasts, check_exact=True)
    pd.testing.assert_frame_equal(whole.sensitivity, part.sensitivity, check_exact=True)
    pd.testing.assert_frame_equal(whole.resilience, part.resilience, check_exact=True)
    assert "resilience_only" in whole.resilience["adjusted_for"].iloc[0]
