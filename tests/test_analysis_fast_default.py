"""fit_lmm's default (fast batched engine) against the statsmodels reference path on a generated study.

Both paths minimise lme4's REML criterion, so they must agree within the R-parity tolerances of
tests/test_analysis_r_parity.py: estimates and SEs rtol 1e-4, variance components rtol 1e-4, loglik rtol 1e-6,
Satterthwaite df rtol 0.01. The engine that fitted each model is recorded in `LmmFit.backend`.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis.design import build_design
from cohortflow.analysis.lmm import RandomStructure, VarianceComponent, fit_lmm
from cohortflow.analysis.models import build_random_structure
from cohortflow.analysis.plan import RandomEffects
from cohortflow.analysis.simulate import default_spec, simulate_study

ARMS = ["a1", "a2", "a3"]
WAVES = ["w0", "w1", "w2"]


def _study(slope: bool, seed: int):
    df = simulate_study(default_spec(ARMS, WAVES, scale=0.3), seed=seed)
    df = df.sort_values(["household_id", "person_id", "months_since_t0"]).reset_index(drop=True)
    X, info = build_design(df, ARMS, WAVES, ["age_years", "sex"])
    s, _ = build_random_structure(df, RandomEffects(slope="months_since_t0" if slope else None), set())
    return df["score"].to_numpy(float), X, s, info.columns


@pytest.mark.parametrize(("slope", "seed"), [(True, 3), (False, 4)])
def test_default_fast_path_equals_statsmodels_path(slope, seed):
    y, X, s, names = _study(slope, seed)
    fast = fit_lmm(y, X, s, fe_names=names)
    ref = fit_lmm(y, X, s, fe_names=names, engine="statsmodels")
    assert fast.backend == "fast" and ref.backend == "statsmodels"
    assert not any("fast engine not used" in w for w in fast.warnings)
    a, b = fast.fixed_effects(), ref.fixed_effects()
    assert_allclose(a["estimate"], b["estimate"], rtol=1e-4, atol=1e-8)
    assert_allclose(a["se"], b["se"], rtol=1e-4)
    assert_allclose(a["df"], b["df"], rtol=0.01)
    va = fast.variance_components.set_index("component")["variance"]
    vb = ref.variance_components.set_index("component")["variance"]
    assert list(va.index) == list(vb.index)
    # a component at the boundary is ~0 in both; compare on the residual variance's scale there
    assert_allclose(va, vb, rtol=1e-4, atol=1e-6 * float(vb["residual"]))
    assert fast.loglik == pytest.approx(ref.loglik, rel=1e-6)
    assert fast.boundary == ref.boundary and fast.converged and ref.converged
    # a contrast across waves and arms (what the report's effects are made of)
    L = np.zeros(len(names))
    L[[1, 3]] = [1.0, -1.0]
    ea, sa, da = fast.contrast(L)
    eb, sb, db = ref.contrast(L)
    assert ea == pytest.approx(eb, rel=1e-4, abs=1e-8)
    assert sa == pytest.approx(sb, rel=1e-4)
    assert da == pytest.approx(db, rel=0.01)


def test_structure_the_fast_engine_does_not_cover_falls_back_to_statsmodels():
    """Crossed (non-nested) component levels: the fast engine declines, statsmodels fits, the fit says so."""
    rng = np.random.default_rng(5)
    n = 300
    g = np.repeat(np.arange(30), 10)
    rater = rng.integers(0, 8, n)  # raters shared across groups: not nested
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = X @ [1.0, 0.5] + rng.normal(0, 1, 30)[g] + rng.normal(0, 0.8, 8)[rater] + rng.normal(size=n)
    s = RandomStructure(groups=g, exog_re=np.ones((n, 1)), re_names=["(Intercept)"],
                        components=[VarianceComponent("rater", rater, np.ones(n))])
    fit = fit_lmm(y, X, s, satterthwaite=False)
    assert fit.backend == "statsmodels"
    assert any("not nested" in w for w in fit.warnings)


def test_warm_start_callable_reaches_the_default_optimum_and_is_recorded():
    y, X, s, names = _study(True, 6)
    base = fit_lmm(y, X, s, fe_names=names, satterthwaite=False)

    def warm(*_args):
        return base.varpar[:-1] * 1.3

    again = fit_lmm(y, X, s, fe_names=names, satterthwaite=False, engine=warm)
    assert again.backend == "warm"
    assert_allclose(again.params, base.params, rtol=1e-6, atol=1e-9)
    assert again.loglik == pytest.approx(base.loglik, rel=1e-9)


def _impute_wide_pandas(wide, score_cols, cov_matrix, iterations, rng):
    """The former pandas implementation of one chained-equations imputation (reference for the numpy one)."""
    from cohortflow.analysis.sensitivity import _bayes_draw

    out = wide.copy()
    miss = {c: out[c].isna().to_numpy() for c in score_cols}
    for c in score_cols:
        out.loc[miss[c], c] = out.loc[~miss[c], c].mean()
    for _ in range(iterations):
        for c in score_cols:
            if not miss[c].any():
                continue
            others = [o for o in score_cols if o != c]
            X = np.column_stack([np.ones(len(out)), out[others].to_numpy(float), cov_matrix])
            yv = out[c].to_numpy(float)
            out.loc[miss[c], c] = _bayes_draw(yv[~miss[c]], X[~miss[c]], X[miss[c]], rng)
    return out


def test_numpy_imputation_draws_what_the_pandas_version_drew():
    """Same seed, same imputations: MI results do not change with the faster implementation."""
    import pandas as pd

    from cohortflow.analysis.sensitivity import impute_wide

    rng = np.random.default_rng(8)
    n = 120
    base = rng.normal(10, 3, n)
    wide = pd.DataFrame({"s@0": base, "s@1": base + rng.normal(-1, 2, n), "s@2": base + rng.normal(-2, 2, n)},
                        index=pd.Index([f"p{i}" for i in range(n)], name="person_id"))
    wide.loc[rng.random(n) < 0.3, "s@1"] = np.nan
    wide.loc[rng.random(n) < 0.4, "s@2"] = np.nan
    cov = rng.normal(size=(n, 2))
    cols = list(wide.columns)
    a = impute_wide(wide, cols, cov, 5, np.random.default_rng(42))
    b = _impute_wide_pandas(wide, cols, cov, 5, np.random.default_rng(42))
    assert not a.isna().any().any()
    assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12, atol=1e-12)
    assert_allclose(a.loc[wide["s@1"].notna(), "s@1"], wide["s@1"].dropna())  # observed values kept
