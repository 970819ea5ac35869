"""`LmmDesign.with_response` (the design of a fit with another response, as multiple imputation refits the same
model on each imputed data set) equals a design built from scratch to the last bit, and so do the fits that
`fit_lmm(..., design_cache=...)` returns; a cache never mixes designs of different sizes."""

from __future__ import annotations

import numpy as np
import pytest

from cohortflow.analysis.fastlmm_api import build_spec
from cohortflow.analysis.fastlmm_core import LmmDesign, fit_design
from cohortflow.analysis.fastlmm_sim import simulate_study


@pytest.fixture(scope="module")
def spec():
    df = simulate_study(0.05, seed=11, continuous_time=True)  # households of different sizes: several layouts
    return build_spec("y1 ~ arm * time", df, "household_id", "1", {"person_id": "1 + time"})


def _other_response(spec, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(spec.y, float) + rng.normal(0.0, 1.0, len(spec.y))


def test_with_response_equals_a_fresh_design_bit_for_bit(spec):
    X = spec.X.to_numpy(float)
    first = LmmDesign(spec.y, X, spec.groups, spec.terms)
    assert len(first.layouts) > 1
    y2 = _other_response(spec, 3)
    fresh = LmmDesign(y2, X, spec.groups, spec.terms)
    swapped = first.with_response(y2)
    assert np.array_equal(swapped.xy, fresh.xy)
    for a, b in zip(swapped.layouts, fresh.layouts, strict=True):
        assert np.array_equal(a.s, b.s) and np.array_equal(a.ztz, b.ztz) and np.array_equal(a.classes, b.classes)
    theta = np.array([0.6, 0.9, -0.1, 0.3])
    for reml in (True, False):
        e1, e2 = swapped.evaluator(reml).evaluate(theta), fresh.evaluator(reml).evaluate(theta)
        assert e1["deviance"] == e2["deviance"]
        assert np.array_equal(e1["grad"], e2["grad"]) and np.array_equal(e1["beta"], e2["beta"])
    f1, f2 = fit_design(swapped), fit_design(fresh)
    assert np.array_equal(f1.theta, f2.theta) and np.array_equal(f1.beta, f2.beta)
    # the original keeps its own response and evaluators
    assert np.array_equal(first.xy[:, -1], np.asarray(spec.y, float)[first.order])
    assert first.evaluator(True).evaluate(theta)["deviance"] != e1["deviance"]


def test_with_response_refuses_a_response_of_another_length_or_missing_values(spec):
    design = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms)
    with pytest.raises(ValueError, match="rows"):
        design.with_response(np.zeros(len(spec.y) - 1))
    bad = np.asarray(spec.y, float).copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        design.with_response(bad)


def test_fit_lmm_with_a_design_cache_gives_the_same_fits():
    """Through fit_lmm, as mi_analysis uses it: three responses with one cache equal three fits without."""
    import pandas as pd

    from cohortflow.analysis.lmm import RandomStructure, fit_lmm  # noqa: F401 - RandomStructure: the type built below
    from cohortflow.analysis.models import build_random_structure
    from cohortflow.analysis.plan import RandomEffects

    df = simulate_study(0.05, seed=12, continuous_time=False)
    df = df.rename(columns={"y1": "score"}).sort_values(["household_id", "person_id", "time"]).reset_index(drop=True)
    df["wave"] = df["time"].astype(str)
    X = pd.get_dummies(df[["arm"]], drop_first=True, dtype=float).assign(one=1.0, t=df["time"].astype(float))
    X = X.to_numpy(float)
    structure, _ = build_random_structure(df, RandomEffects(), set())
    cache: dict = {}
    rng = np.random.default_rng(5)
    for _k in range(3):
        y = df["score"].to_numpy(float) + rng.normal(0, 1, len(df))
        a = fit_lmm(y, X, structure, satterthwaite=False, design_cache=cache)
        b = fit_lmm(y, X, structure, satterthwaite=False)
        assert np.array_equal(a.params, b.params) and np.array_equal(a.cov_params, b.cov_params)
        assert np.array_equal(a.varpar, b.varpar) and a.loglik == b.loglik
    assert "design" in cache


def test_a_fitted_design_is_freed_without_the_cyclic_collector(spec):
    """A design caches its evaluators; the evaluator must not point back at the design, else every multiple-
    imputation fit leaves its design (~33 MiB at factor 10) until a full gc pass (the model flow's workers
    grew by hundreds of MiB). With the cyclic collector off, dropping the last reference frees it at once."""
    import gc
    import weakref

    design = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms)
    fit_design(design.with_response(_other_response(spec, 5)))  # a fit of a swapped design, then dropped
    gc.disable()
    try:
        swapped = design.with_response(_other_response(spec, 4))
        fit = fit_design(swapped)
        assert swapped.__dict__.get("_evaluators")  # the fit used (and cached) an evaluator
        alive = weakref.ref(swapped)
        del swapped, fit
        assert alive() is None
    finally:
        gc.enable()
