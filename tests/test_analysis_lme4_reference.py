"""The model layer against statsmodels' shipped lme4 reference cases (regression/tests/results/lme*.csv).

12 data sets x (ML, REML) x (dependent, independent random effects): fixed effects, random-effects
covariance, residual variance and log-likelihood from lme4 (lme_r_results.py) must agree to rtol 1e-4
(absolute 1e-6 for variances that lme4 puts at the boundary, ~1e-14).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import statsmodels

from cohortflow.analysis.lmm import RandomStructure, VarianceComponent, fit_lmm

RESULTS = Path(statsmodels.__file__).parent / "regression" / "tests" / "results"
lme_r = pytest.importorskip("statsmodels.regression.tests.results.lme_r_results")

CASES = [(ds, meth, rf) for ds in range(12) for meth in ("ml", "reml") for rf in ("drf", "irf")
         if not (rf == "irf" and ds < 6)]


def _load(ds: int):
    data = np.genfromtxt(RESULTS / f"lme{ds:02d}.csv", delimiter=",", names=True)
    names = data.dtype.names
    y = data["endog"]
    g = data["groups"].astype(int)
    X = np.column_stack([data[n] for n in names if n.startswith("exog_fe")])
    Z = np.column_stack([data[n] for n in names if n.startswith("exog_re")])
    return y, g, X, Z


@pytest.mark.parametrize(("ds", "meth", "rf"), CASES, ids=[f"lme{d:02d}-{m}-{r}" for d, m, r in CASES])
def test_matches_lme4(ds, meth, rf):
    y, g, X, Z = _load(ds)
    if rf == "drf":  # correlated random effects: (z0 + z1 | group)
        s = RandomStructure(groups=g, exog_re=Z, re_names=[f"z{i}" for i in range(Z.shape[1])])
    else:  # independent random effects: (0 + z0 | group) + (0 + z1 | group)
        comps = [VarianceComponent(f"z{i}", g, Z[:, i]) for i in range(1, Z.shape[1])]
        s = RandomStructure(groups=g, exog_re=Z[:, :1], re_names=["z0"], components=comps)
    fit = fit_lmm(y, X, s, reml=(meth == "reml"), satterthwaite=False, engine="profiled" if ds % 2 else "statsmodels")
    b = f"_{meth}_{rf}_{ds}"
    coef = getattr(lme_r, "coef" + b)
    cov_re = np.atleast_2d(getattr(lme_r, "cov_re" + b))
    scale = getattr(lme_r, "scale" + b)[0]
    loglike = getattr(lme_r, "loglike" + b)[0]
    np.testing.assert_allclose(fit.params, coef, rtol=1e-4)
    np.testing.assert_allclose(fit.cov_params, getattr(lme_r, "vcov" + b), rtol=1e-4, atol=1e-9)
    vc = fit.variance_components.set_index("component")["variance"]
    assert vc["residual"] == pytest.approx(scale, rel=1e-4)
    variances = [vc["group:z0"]] + ([vc[f"group:z{i}"] if rf == "drf" else vc[f"z{i}"] for i in range(1, Z.shape[1])])
    np.testing.assert_allclose(variances, np.diag(cov_re), rtol=1e-4, atol=1e-6)
    if rf == "drf" and Z.shape[1] == 2:
        assert vc["group:cov(z1,z0)"] == pytest.approx(cov_re[1, 0], rel=1e-4, abs=1e-6)
    assert fit.loglik == pytest.approx(loglike, rel=1e-4)
