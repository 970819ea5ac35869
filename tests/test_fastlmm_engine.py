"""The fast engine's algebra and its agreement with statsmodels' MixedLM (the reference engine).

Independent references: a dense-matrix REML/ML log-likelihood written from the textbook formula (no Woodbury,
no blocks), central differences for the analytic gradient, statsmodels fitted with BFGS to a tight gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis import fastlmm_api
from cohortflow.analysis.fastlmm_api import build_spec, fit_mixed
from cohortflow.analysis.fastlmm_core import LmmDesign, RETerm, fit_design, fit_lmm_fast
from cohortflow.analysis.fastlmm_sim import simulate_growth, simulate_study

RTOL = 1e-6


def _dense_deviance(y, X, Z, Psi, sigma2, reml):
    """-2 log-likelihood from the dense marginal covariance V = Z Psi Z' + sigma2 I (textbook formula)."""
    n, p = X.shape
    V = Z @ Psi @ Z.T + sigma2 * np.eye(n)
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    dev = np.linalg.slogdet(V)[1] + r @ Vi @ r + n * math.log(2 * math.pi)
    if reml:
        dev += np.linalg.slogdet(XtViX)[1] - p * math.log(2 * math.pi)
    return dev


def _small_nested(continuous: bool) -> pd.DataFrame:
    df = simulate_study(0.02, seed=5, continuous_time=continuous)
    return df


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("reml", [True, False])
def test_deviance_equals_dense_formula(continuous: bool, reml: bool) -> None:
    """Blocked Woodbury deviance (pattern-summed and per-block paths) equals the dense textbook value."""
    df = _small_nested(continuous)
    spec = build_spec("y1 ~ arm * time", df, "household_id", "1", {"person_id": "1 + time"})
    design = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms)
    theta = np.array([0.7, 1.1, -0.2, 0.4])  # household intercept; person (intercept, cov, slope) factor
    # dense Z in the original row order: household intercepts, then person intercept and slope
    hh = pd.factorize(spec.frame["household_id"])[0]
    pe = pd.factorize(spec.frame["person_id"])[0]
    t = spec.frame["time"].to_numpy(float)
    n = len(t)
    Zh = np.zeros((n, hh.max() + 1))
    Zh[np.arange(n), hh] = 1
    Zp = np.zeros((n, 2 * (pe.max() + 1)))
    Zp[np.arange(n), 2 * pe] = 1
    Zp[np.arange(n), 2 * pe + 1] = t
    lam_p = np.array([[1.1, 0.0], [-0.2, 0.4]])
    sigma2 = 1.7
    Psi = sigma2 * np.block([
        [theta[0] ** 2 * np.eye(Zh.shape[1]), np.zeros((Zh.shape[1], Zp.shape[1]))],
        [np.zeros((Zp.shape[1], Zh.shape[1])), np.kron(np.eye(pe.max() + 1), lam_p @ lam_p.T)],
    ])
    Z = np.hstack([Zh, Zp])
    dense = _dense_deviance(spec.y, spec.X.to_numpy(float), Z, Psi, sigma2, reml)
    ev = design.evaluator(reml=reml)
    fast = ev.evaluate(theta, grad=False, sigma=math.sqrt(sigma2))["deviance"]
    assert_allclose(fast, dense, rtol=1e-10)
    modes = {p.t is not None for p in ev.parts}
    assert modes == ({True} if not continuous else {False}) or len(modes) == 2


@pytest.mark.parametrize("sigma", [None, 1.3])
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("continuous", [False, True])
def test_gradient_matches_central_differences(continuous: bool, reml: bool, sigma: float | None) -> None:
    df = simulate_study(0.05, seed=2, continuous_time=continuous)
    spec = build_spec("y1 ~ arm * time", df, "household_id", "1", {"person_id": "1 + time"})
    ev = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms).evaluator(reml=reml)
    theta = np.array([0.6, 0.9, 0.15, 0.3])
    g = ev.evaluate(theta, sigma=sigma)["grad"]
    num = []
    for j in range(len(theta)):
        e = np.zeros_like(theta)
        e[j] = 1e-6
        num.append((ev.evaluate(theta + e, sigma=sigma)["deviance"] - ev.evaluate(theta - e, sigma=sigma)["deviance"]) / 2e-6)
    assert_allclose(g, num, rtol=1e-5, atol=1e-5)


def _sm_compare(fast, sm, rtol=RTOL):
    assert_allclose(fast.fe_params.to_numpy(), sm.fe_params.to_numpy(), rtol=rtol)
    assert_allclose(fast.llf, sm.llf, rtol=rtol)
    assert_allclose(fast.scale, sm.scale, rtol=rtol)
    v = sm.varcorr.vcov.to_numpy()
    assert_allclose(fast.varcorr.vcov.to_numpy(), v, rtol=rtol, atol=rtol * np.abs(v).max())
    # standard errors: both lme4's sigma^2 (X'V^-1X)^-1, statsmodels' at its own estimates
    assert_allclose(fast.bse.to_numpy(), sm.bse.to_numpy(), rtol=rtol)


@pytest.mark.parametrize("reml", [True, False])
def test_random_intercept_and_slope_matches_statsmodels(reml: bool) -> None:
    df = simulate_growth(150, seed=5, missing=0.1)
    fast = fit_mixed("y ~ time * group", df, "subject", "1 + time", reml=reml)
    sm = fit_mixed("y ~ time * group", df, "subject", "1 + time", reml=reml, engine="statsmodels")
    assert fast.engine == "fast" and sm.engine == "statsmodels"
    assert fast.converged and not fast.boundary
    _sm_compare(fast, sm)
    assert list(fast.cov_re.index) == ["Intercept", "time"]


def test_statsmodels_observed_information_se_differs_only_by_cross_terms() -> None:
    """statsmodels' own bse_fe inverts the full observed Hessian (fixed x variance cross terms); without the
    cross terms its fixed-effect block gives exactly lme4's vcov, which the fast engine reports."""
    df = simulate_growth(150, seed=5, missing=0.1)
    fast = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    sm = fit_mixed("y ~ time * group", df, "subject", "1 + time", engine="statsmodels")
    res = sm.sm_result
    hess = res.model.hessian(res.params_object)
    hess = hess[0] if isinstance(hess, tuple) else hess
    p = len(fast.fe_params)
    assert_allclose(np.linalg.inv(-hess[:p, :p]), fast.cov_params.to_numpy(), rtol=1e-5)
    rel = np.abs(np.asarray(res.bse_fe) / fast.bse.to_numpy() - 1)
    assert 1e-6 < rel.max() < 1e-2  # observed-information SEs differ from lme4's slightly


@pytest.mark.slow
@pytest.mark.parametrize("reml", [True, False])
def test_nested_households_match_statsmodels(reml: bool) -> None:
    df = simulate_study(0.1, seed=11, person_slope_sd=0.6)
    args = ("y1 ~ arm * time", df, "household_id", "1", {"person_id": "1 + time"})
    fast = fit_mixed(*args, reml=reml, vc_cov="diag")
    sm = fit_mixed(*args, reml=reml, vc_cov="diag", engine="statsmodels")
    assert fast.engine == "fast"
    _sm_compare(fast, sm)
    assert list(fast.cov_vc) == ["person_id"]


@pytest.mark.slow
def test_nested_random_intercepts_match_statsmodels() -> None:
    df = simulate_study(0.08, seed=9)
    args = ("y1 ~ arm * time", df, "household_id", "1", {"person_id": "1"})
    _sm_compare(fit_mixed(*args), fit_mixed(*args, engine="statsmodels"))


@pytest.mark.slow
def test_zero_slope_variance_boundary_matches_statsmodels() -> None:
    """Independent intercept and slope, true slope variance 0, estimated at the bound by both engines.

    statsmodels stops about 1e-6 short on the bound (its likelihood is not higher); lme4 agrees with the fast
    engine to 1e-6 on these data (tests/test_fastlmm_reference.py, growth_boundary_diag)."""
    df = simulate_growth(400, slope_sd=0.0, seed=1)
    fast = fit_mixed("y ~ time * group", df, "subject", "1 + time", re_cov="diag")
    sm = fit_mixed("y ~ time * group", df, "subject", "1 + time", re_cov="diag", engine="statsmodels")
    assert fast.boundary and fast.converged
    assert fast.cov_re.loc["time", "time"] == 0.0
    assert any("boundary" in w for w in fast.warnings)
    assert fast.llf >= sm.llf - 1e-9 * abs(sm.llf)
    _sm_compare(fast, sm, rtol=1e-5)
    assert sm.cov_re.loc["time", "time"] < 1e-5 * sm.scale


@pytest.mark.slow
def test_singular_correlated_fit_matches_statsmodels() -> None:
    """Correlated intercept and slope with a singular estimate (correlation -1): the same optimum."""
    df = simulate_growth(400, slope_sd=0.0, seed=1)
    fast = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    sm = fit_mixed("y ~ time * group", df, "subject", "1 + time", engine="statsmodels")
    assert fast.boundary and sm.boundary
    assert_allclose(fast.varcorr.sdcor.iloc[2], -1.0, atol=1e-8)
    # on this flat ridge statsmodels' optimiser stops a little short (lme4 agrees with the fast engine to
    # 1e-6: tests/test_fastlmm_reference.py, growth_boundary_full); the fast likelihood is not lower
    assert fast.llf >= sm.llf - 1e-9 * abs(sm.llf)
    _sm_compare(fast, sm, rtol=1e-5)


def test_block_weights_equal_duplicated_blocks() -> None:
    """A block with weight 2 is the same as that block twice under a new label (the bootstrap identity)."""
    df = simulate_growth(200, seed=3, missing=0.2)
    spec = build_spec("y ~ time * group", df, "subject", "1 + time")
    design = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, design.n_blocks).astype(float)
    weighted = fit_design(design, weights=w)
    parts = []
    for b, label in enumerate(design.block_labels):
        for k in range(int(w[b])):
            part = df[df.subject == label].copy()
            part["subject"] = f"{label}#{k}"
            parts.append(part)
    dup = fit_mixed("y ~ time * group", pd.concat(parts), "subject", "1 + time")
    assert_allclose(weighted.beta, dup.fe_params.to_numpy(), rtol=1e-8)
    assert_allclose(weighted.llf, dup.llf, rtol=1e-10)
    assert_allclose(weighted.sigma2, dup.scale, rtol=1e-8)


def test_deviance_functions_at_the_estimates() -> None:
    df = simulate_growth(150, seed=6)
    fit = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    assert_allclose(fit.deviance_at(fit.theta), -2 * fit.llf, rtol=1e-12)
    assert_allclose(fit.reml_deviance(fit.theta, sigma=fit.sigma), -2 * fit.llf, rtol=1e-12)
    # at the optimum sigma-hat minimises the unprofiled criterion
    assert fit.reml_deviance(fit.theta, sigma=fit.sigma * 1.01) > -2 * fit.llf
    assert_allclose(fit.vcov_beta(fit.theta), fit.cov_params.to_numpy(), rtol=1e-12)
    assert_allclose(fit.vcov_beta(fit.theta, sigma=2 * fit.sigma), 4 * fit.cov_params.to_numpy(), rtol=1e-12)
    assert_allclose(fit.varpar, np.append(fit.theta, fit.sigma))
    ml = fit_mixed("y ~ time * group", df, "subject", "1 + time", reml=False)
    assert_allclose(ml.deviance_at(ml.theta), -2 * ml.llf, rtol=1e-12)


def test_low_level_api_reports_lme4_quantities() -> None:
    df = simulate_growth(100, seed=7)
    Z = np.column_stack([np.ones(len(df)), df.time])
    X = np.column_stack([np.ones(len(df)), df.time, df.group, df.time * df.group])
    fit = fit_lmm_fast(df.y.to_numpy(), X, df.subject.to_numpy(), [RETerm("subject", Z, ("(Intercept)", "time"))])
    ref = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    assert_allclose(fit.beta, ref.fe_params.to_numpy(), rtol=1e-9)
    assert_allclose(fit.cov_term(0), ref.cov_re.to_numpy(), rtol=1e-7, atol=1e-9)
    assert fit.design.n_patterns == 1  # complete data, same three times for every subject


def test_missing_values_are_dropped_and_reported() -> None:
    df = simulate_growth(120, seed=2)
    df.loc[[3, 10, 50], "y"] = np.nan
    df.loc[[7], "group"] = np.nan
    fit = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    assert fit.nobs == len(df) - 4
    assert any("4 rows" in w for w in fit.warnings)
    ref = fit_mixed("y ~ time * group", df.dropna(), "subject", "1 + time")
    assert_allclose(fit.fe_params.to_numpy(), ref.fe_params.to_numpy(), rtol=1e-12)


def test_fallback_to_statsmodels_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    df = simulate_growth(80, seed=2)

    def broken(*args, **kwargs):
        raise FloatingPointError("simulated failure")

    monkeypatch.setattr(fastlmm_api, "fit_design", broken)
    fit = fit_mixed("y ~ time * group", df, "subject", "1 + time")
    assert fit.engine == "statsmodels"
    assert fit.warnings[0].startswith("fell back to statsmodels: fast engine could not fit: simulated failure")
    with pytest.raises(FloatingPointError):
        fit_mixed("y ~ time * group", df, "subject", "1 + time", engine="fast")


def test_statsmodels_cannot_fit_correlated_nested_effects() -> None:
    df = simulate_study(0.02, seed=1)
    with pytest.raises(NotImplementedError, match="correlated"):
        fit_mixed("y1 ~ time", df, "household_id", "1", {"person_id": "1 + time"}, engine="statsmodels")


def test_clear_errors() -> None:
    df = simulate_growth(20, seed=1)
    with pytest.raises(ValueError, match="grouping column 'person'"):
        fit_mixed("y ~ time", df, "person", "1 + time")
    with pytest.raises(ValueError, match="engine must be"):
        fit_mixed("y ~ time", df, "subject", engine="lme4")
    with pytest.raises(ValueError, match="model formula"):
        fit_mixed("y ~ nonexistent", df, "subject")
