"""Cluster bootstrap and parallel fitting.

References: a bootstrap refit by block weights equals a fit of the explicitly resampled, relabelled data;
with a correctly specified model the bootstrap SE is close to the model-based SE (simulation, fixed seed);
parallel fits equal sequential ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis.fastlmm_api import fit_mixed
from cohortflow.analysis.fastlmm_boot import (
    _cluster_of_blocks,
    cluster_bootstrap,
    fit_many,
    resample_clusters,
)
from cohortflow.analysis.fastlmm_core import fit_design
from cohortflow.analysis.fastlmm_sim import simulate_growth, simulate_study

FORMULA = "y1 ~ arm * time"
NESTED = {"groups": "household_id", "re_formula": "1", "vc": {"person_id": "1 + time"}}


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    return simulate_study(0.1, seed=21)


@pytest.fixture(scope="module")
def full_fit(study: pd.DataFrame):
    return fit_mixed(FORMULA, study, **NESTED)


def test_weighted_refit_equals_resampled_data(study: pd.DataFrame, full_fit) -> None:
    """A household drawn k times = k relabelled copies: block weights give the same fit as the data."""
    rng = np.random.default_rng(5)
    sample = resample_clusters(study, "household_id", rng, relabel=["person_id"])
    explicit = fit_mixed(FORMULA, sample, **NESTED)
    # the same draws as block weights
    hh = pd.Series(sample["household_id"].str.split("#").str[0])
    counts = hh.groupby(sample["household_id"]).first().value_counts()
    cl_of_block, _ = _cluster_of_blocks(full_fit, study, "household_id")
    labels = full_fit.design.block_labels
    w = np.array([counts.get(lab, 0) for lab in labels], dtype=float)
    assert cl_of_block.shape == w.shape
    weighted = fit_design(full_fit.design, reml=True, weights=w)
    assert_allclose(weighted.beta, explicit.fe_params.to_numpy(), rtol=1e-7)
    assert_allclose(weighted.llf, explicit.llf, rtol=1e-9)


def test_bootstrap_is_reproducible_and_independent_of_workers(study: pd.DataFrame, full_fit) -> None:
    a = cluster_bootstrap(full_fit, study, "household_id", n=20, seed=3)
    b = cluster_bootstrap(full_fit, study, "household_id", n=20, seed=3, n_jobs=2)
    c = cluster_bootstrap(full_fit, study, "household_id", n=20, seed=4)
    assert a.replicates.shape == (20, len(full_fit.fe_params)) and a.n_failed == 0
    assert_allclose(a.replicates.to_numpy(), b.replicates.to_numpy(), rtol=1e-12)
    assert not np.allclose(a.replicates.to_numpy(), c.replicates.to_numpy())
    ci = a.ci(0.9)
    assert (ci.lower <= ci.upper).all() and list(ci.index) == list(full_fit.fe_params.index)
    basic = a.ci(0.9, kind="basic")
    assert_allclose(basic.lower + ci.upper, 2 * a.estimate)


def test_bootstrap_se_close_to_model_se_when_model_is_right() -> None:
    """Correct model, 600 independent subjects: bootstrap SE of the fixed effects within 15% of the model SE."""
    df = simulate_growth(600, seed=12)
    fit = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    boot = cluster_bootstrap(fit, df, "subject", n=200, seed=2)
    ratio = boot.se / fit.bse
    assert ratio.between(0.85, 1.15).all(), ratio


def test_custom_statistic_and_generic_function(study: pd.DataFrame, full_fit) -> None:
    def slope_contrast(f) -> pd.Series:
        fe = f.fe_params
        return pd.Series({"diff": fe["arm[T.a2]:time"] - fe["arm[T.a1]:time"], "sigma": f.sigma})

    fast = cluster_bootstrap(full_fit, study, "household_id", n=5, seed=1, statistic=slope_contrast)
    assert list(fast.replicates.columns) == ["diff", "sigma"]
    assert_allclose(fast.estimate["sigma"], full_fit.sigma)

    def mean_by_arm(d: pd.DataFrame) -> pd.Series:
        return d.groupby("arm")["y1"].mean()

    gen = cluster_bootstrap(mean_by_arm, study, "household_id", n=30, seed=1, relabel=["person_id"])
    assert gen.replicates.shape == (30, 3)
    assert (gen.se > 0).all()


def test_bootstrap_needs_nested_clusters(study: pd.DataFrame, full_fit) -> None:
    with pytest.raises(ValueError, match="blocks must be nested"):
        cluster_bootstrap(full_fit, study, "person_id", n=2, seed=1)  # a household spans several persons
    fit = fit_mixed(FORMULA, study, "person_id", "1 + time")
    assert cluster_bootstrap(fit, study, "household_id", n=2, seed=1).n_clusters == study.household_id.nunique()
    with pytest.raises(ValueError, match="cluster column 'family'"):
        cluster_bootstrap(fit, study, "family", n=2, seed=1)


def test_fit_many_in_processes_equals_sequential(study: pd.DataFrame) -> None:
    tasks = [
        {"name": "main", "formula": FORMULA, "data": study, **NESTED},
        {"name": "ml", "formula": FORMULA, "data": study, "reml": False, **NESTED},
        {"name": "growth", "formula": "y1 ~ arm * time", "data": study, "groups": "person_id", "re_formula": "1 + time"},
    ]
    par = fit_many(tasks, n_jobs=2)
    seq = fit_many(tasks, n_jobs=1)
    for a, b in zip(par, seq, strict=True):
        assert a.engine == b.engine == "fast"
        assert a.design is None  # dropped unless keep_design
        assert_allclose(a.fe_params.to_numpy(), b.fe_params.to_numpy(), rtol=1e-12)
    assert par[1].reml is False
    bad = [{"name": "broken", "formula": "y1 ~ missing_column", "data": study, **NESTED}, tasks[0]]
    with pytest.raises(RuntimeError, match="fitting broken failed"):
        fit_many(bad, n_jobs=2)
