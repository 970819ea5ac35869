"""The vectorised GEE (analysis/gee.py) against statsmodels' GEE on the same data: same iterations, same
estimates, robust covariance and working correlation to 1e-8 relative (they differ only in summation order).

Data: the R fixture dataset (tests/data/r/lmm_dataset.csv; 726 rows in households of 1-4 observations) with
the derived binary and count responses of tests/test_analysis_gee_parity.py, rows shuffled so clusters are not
contiguous; the geepack/emmeans comparison of the whole GEE layer is in test_analysis_gee_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis.design import build_design
from cohortflow.analysis.models import fit_gee

R = Path(__file__).parent / "data" / "r"


@pytest.fixture(scope="module")
def design() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(R / "lmm_dataset.csv").sample(frac=1.0, random_state=7).reset_index(drop=True)
    X, _ = build_design(df, ["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], ["age_years", "sex"])
    above = (df["score"] >= 30).to_numpy(float)
    count = np.floor(np.maximum(df["score"] - 20, 0) / 4).to_numpy(float)
    return X, above, count, pd.factorize(df["household_id"])[0]


@pytest.mark.parametrize("family", ["binomial", "poisson", "negative_binomial"])
@pytest.mark.parametrize("corstr", ["exchangeable", "independence"])
def test_vectorised_gee_matches_statsmodels(design, family, corstr):
    X, above, count, groups = design
    y = above if family == "binomial" else count
    fast, w_fast, a_fast = fit_gee(y, X, groups, family, corstr, engine="vectorised")
    ref, w_ref, a_ref = fit_gee(y, X, groups, family, corstr, engine="statsmodels")
    assert fast.iterations == ref.iterations
    assert fast.converged and ref.converged
    assert w_fast == w_ref
    assert a_fast == a_ref
    assert_allclose(fast.params, ref.params, rtol=1e-8, atol=1e-12)
    scale = np.sqrt(np.outer(np.diag(ref.cov_robust), np.diag(ref.cov_robust)))
    assert_allclose(fast.cov_robust / scale, ref.cov_robust / scale, rtol=0, atol=1e-8)  # correlations
    assert_allclose(np.diag(fast.cov_robust), np.diag(ref.cov_robust), rtol=1e-8)
    assert_allclose(fast.dep_param, ref.dep_param, rtol=1e-8, atol=1e-14)
    if corstr == "exchangeable":
        assert ref.dep_param > 0.05  # the exchangeable path is exercised with a real correlation


def test_vectorised_gee_row_order_does_not_matter(design):
    X, above, _, groups = design
    order = np.argsort(groups, kind="stable")
    a, _, _ = fit_gee(above, X, groups, "binomial", "exchangeable")
    b, _, _ = fit_gee(above[order], X[order], groups[order], "binomial", "exchangeable")
    assert_allclose(a.params, b.params, rtol=1e-12)
    assert_allclose(a.cov_robust, b.cov_robust, rtol=1e-10, atol=1e-16)


def test_vectorised_gee_rejects_unknown_working_correlation(design):
    X, above, _, groups = design
    with pytest.raises(ValueError, match="working correlation 'ar1'"):
        fit_gee(above, X, groups, "binomial", "ar1")


def test_vectorised_gee_stops_at_the_iteration_limit_as_statsmodels(design):
    """Two steps only (the first, from the GLM start, has a zero score): both warn that the limit was reached and stand at the same (unconverged) point."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import IterationLimitWarning

    from cohortflow.analysis.gee import fit_gee_grouped

    X, above, _, groups = design
    with pytest.warns(IterationLimitWarning):
        fast = fit_gee_grouped(above, X, groups, "binomial", "exchangeable", maxiter=2)
    with pytest.warns(IterationLimitWarning):
        ref = sm.GEE(above, X, groups=groups, family=sm.families.Binomial(),
                     cov_struct=sm.cov_struct.Exchangeable()).fit(maxiter=2)
    assert not fast.converged and not ref.converged
    assert_allclose(fast.params, ref.params, rtol=1e-8, atol=1e-12)
    assert_allclose(fast.dep_param, ref.cov_struct.dep_params, rtol=1e-8)
    assert_allclose(np.diag(fast.cov_robust), np.diag(np.asarray(ref.cov_params())), rtol=1e-8)
