"""The sparse lme4 criterion against statsmodels' MixedLM.loglike, and Satterthwaite df by hand."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

from cohortflow.analysis.lmm import LmmCriterion, RandomStructure, VarianceComponent, _statsmodels_vc, fit_lmm


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(40), 6)
    person = np.repeat(np.arange(120), 2)
    t = np.tile([0.0, 1.0], 120)
    X = np.column_stack([np.ones(240), t, rng.normal(size=240)])
    y = X @ [1.0, -0.5, 0.3] + rng.normal(0, 1, 40)[g] + rng.normal(0, 0.7, 120)[person] + rng.normal(size=240)
    s = RandomStructure(groups=g, exog_re=np.ones((240, 1)), re_names=["(Intercept)"], group_name="household",
                        components=[VarianceComponent("person", person, np.ones(240))])
    return y, X, s


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("theta", [(0.3, 0.8), (1.2, 0.1), (0.05, 0.5)])
def test_criterion_equals_statsmodels_loglike(reml, theta):
    """At any variance parameters, lme4's profiled deviance equals -2 x statsmodels' profiled loglike."""
    y, X, s = _data()
    crit = LmmCriterion(y, X, s, reml=reml)
    model = MixedLM(y, X, groups=s.groups, exog_re=s.exog_re, exog_vc=_statsmodels_vc(s))
    model.reml = reml
    model.cov_pen, model.fe_pen, model._cov_sing = None, None, 0  # set by fit(); needed by loglike()
    p = MixedLMParams.from_components(fe_params=np.zeros(3), cov_re=np.array([[theta[0] ** 2]]),
                                      vcomp=np.array([theta[1] ** 2]))
    ll_sm = model.loglike(p, profile_fe=True)
    dev, _, _ = crit.profiled(np.array(theta))
    assert -dev / 2 == pytest.approx(ll_sm, rel=1e-9)


def test_satterthwaite_df_without_random_effects_is_residual_df():
    """With the random-effect variances at zero, df of any contrast tends to n - p (the OLS df)."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(60), 3)
    X = np.column_stack([np.ones(180), rng.normal(size=180)])
    y = X @ [1.0, 2.0] + rng.normal(size=180)  # no group effect at all
    s = RandomStructure(groups=g, exog_re=np.ones((180, 1)), re_names=["(Intercept)"])
    fit = fit_lmm(y, X, s)
    if fit.varpar[0] == 0.0:  # boundary: only sigma is left, df = n - p exactly
        assert fit.satterthwaite_df(np.array([0.0, 1.0])) == pytest.approx(178, rel=1e-4)
    else:
        assert fit.satterthwaite_df(np.array([0.0, 1.0])) > 100


def test_balanced_one_way_df_by_hand():
    """Balanced random-intercept model: the df of the intercept is the number of groups - 1 (ANOVA)."""
    rng = np.random.default_rng(2)
    G, m = 30, 4
    g = np.repeat(np.arange(G), m)
    y = 5 + rng.normal(0, 2, G)[g] + rng.normal(size=G * m)
    s = RandomStructure(groups=g, exog_re=np.ones((G * m, 1)), re_names=["(Intercept)"])
    fit = fit_lmm(y, np.ones((G * m, 1)), s)
    assert fit.varpar[0] > 0
    # Var(mean) = (tau^2 + sigma^2/m)/G depends only on the between-group mean square: df = G - 1
    assert fit.satterthwaite_df(np.array([1.0])) == pytest.approx(G - 1, rel=1e-3)
    # and the estimate is the grand mean with SE sqrt(MSB / (G m))
    means = y.reshape(G, m).mean(axis=1)
    msb = m * np.var(means, ddof=1)
    est, se, _ = fit.contrast(np.array([1.0]))
    assert est == pytest.approx(y.mean(), rel=1e-10)
    assert se == pytest.approx(np.sqrt(msb / (G * m)), rel=1e-5)


def test_a_callable_engine_plugs_in_and_reaches_the_same_optimum():
    y, X, s = _data(3)
    calls = []

    def rough(y_, X_, s_, reml):
        calls.append(reml)
        return np.array([0.5, 0.5])  # a poor start: the criterion's polish must still reach the optimum

    a = fit_lmm(y, X, s, engine=rough, satterthwaite=False)
    b = fit_lmm(y, X, s, engine="statsmodels", satterthwaite=False)
    assert calls == [True] and a.backend == "rough"
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-7)
    with pytest.raises(ValueError, match="unknown engine"):
        fit_lmm(y, X, s, engine="lme5")


def test_refits_through_a_design_cache_reach_the_same_optimum(monkeypatch):
    """MI refits: with a design cache the second response starts quasi-Newton steps from the first fit's inverse
    Hessian (analysis/lmm.py _warm_hess_inv) and reaches the optimum L-BFGS-B reaches without the cache."""
    from cohortflow.analysis import fastlmm_core

    quick = []
    chord = fastlmm_core._chord_newton
    monkeypatch.setattr(fastlmm_core, "_chord_newton", lambda *a, **k: quick.append(chord(*a, **k)) or quick[-1])
    y, X, s = _data(5)
    rng = np.random.default_rng(6)
    cache: dict = {"warm_hessian": True}
    first = fit_lmm(y, X, s, satterthwaite=False, design_cache=cache)
    assert cache.get("hess_inv") is not None and cache["hess_inv"].shape == (2, 2)
    start = first.varpar[:-1] / first.varpar[-1]  # lme4's theta: the main model's warm start, as in MI

    def main_theta(*_args):
        return start

    for k in range(3):
        y2 = y + rng.normal(0, 0.3, len(y))  # another imputed response, same design
        warm = fit_lmm(y2, X, s, satterthwaite=False, design_cache=cache, engine=main_theta)
        cold = fit_lmm(y2, X, s, satterthwaite=False, engine=main_theta)
        np.testing.assert_allclose(warm.varpar, cold.varpar, rtol=1e-7, err_msg=f"response {k}")
        np.testing.assert_allclose(warm.params, cold.params, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(warm.cov_params, cold.cov_params, rtol=1e-8)
        assert warm.loglik == pytest.approx(cold.loglik, abs=1e-8)
    assert len(quick) == 3 and all(q is not None for q in quick)  # the warm path was taken every time
