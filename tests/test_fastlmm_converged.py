"""The fast engine against lme4 driven to convergence (fixture: tests/data/r/fastlmm_converged.R/.csv).

lme4's derivative-free optimisers (BOBYQA with rhoend = 1e-12, NLopt with xtol_rel = 1e-12, a restart from
their own optimum) stop where the REML criterion is flat to ~1e-13 relative, up to 1e-5 (relative) short of
the optimum on variance components. The fixture therefore also takes Newton steps on lme4's own deviance
function with lme4's finite-difference derivatives (`newton`), and evaluates lme4 at the fast engine's theta
(`at_fast`). Checked, each quantity separately at 1e-6 relative (near-zero entries of a covariance relative
to its largest entry): fixed effects, SEs, variance components, logLik; and that lme4's own criterion is no
better anywhere else than at the fast engine's theta (beyond rounding, 1e-12 relative). Models: a factor-1
study (persons nested in households, correlated person intercept and slope) and a growth model whose slope
variance is zero (boundary), with a correlated and with an uncorrelated random part; REML and ML.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

R_DIR = Path(__file__).parent / "data" / "r"
sys.path.insert(0, str(R_DIR))
from fastlmm_make_converged import MODELS, fast_fit  # noqa: E402

R = pd.read_csv(R_DIR / "fastlmm_converged.csv")
RTOL = 1e-6
OPTIMISERS = ["bobyqa", "nlopt", "restart", "newton"]

pytestmark = pytest.mark.r_reference


def rel_diff(a, b) -> float:
    """Largest |a - b| / |b|, with |b| floored at 1e-6 x the largest |b| (entries near zero)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    den = np.maximum(np.abs(b), 1e-6 * np.abs(b).max())
    return float(np.max(np.abs(a - b) / den))


def _r(model: str, fit: str, quantity: str) -> np.ndarray:
    s = R[(R.model == model) & (R.fit == fit) & (R.quantity == quantity)]
    assert len(s), (model, fit, quantity)
    return s.value.to_numpy(float)


_FITS: dict = {}


def _fast(name: str, meth: str):
    if (name, meth) not in _FITS:
        file, model = MODELS[name]
        _FITS[(name, meth)] = fast_fit(pd.read_csv(R_DIR / file), model, meth == "reml")
    return _FITS[(name, meth)]


CASES = [(name, meth) for name in MODELS for meth in ("reml", "ml")]


@pytest.mark.parametrize(("name", "meth"), CASES)
def test_each_quantity_matches_converged_lme4(name: str, meth: str) -> None:
    f = _fast(name, meth)
    key = f"{name}:{meth}"
    assert f.engine == "fast" and f.converged
    assert rel_diff(f.fe_params, _r(key, "newton", "coef")) < RTOL
    assert rel_diff(f.bse, _r(key, "newton", "se")) < RTOL
    assert rel_diff(f.varcorr.vcov, _r(key, "newton", "vcov")) < RTOL
    assert rel_diff([f.llf], _r(key, "newton", "loglike")) < RTOL
    # lme4's Newton steps stopped at a gradient of rounding size (deriv12, delta 1e-4)
    assert np.abs(_r(key, "newton", "newton_gradient")).max() < 1e-5


@pytest.mark.parametrize(("name", "meth"), CASES)
def test_no_lme4_optimum_beats_the_fast_theta(name: str, meth: str) -> None:
    """lme4's criterion at the fast theta is at most rounding (1e-12 relative) above its best optimum."""
    key = f"{name}:{meth}"
    at_fast = _r(key, "at_fast", "criterion")[0]
    best = min(_r(key, o, "criterion")[0] for o in OPTIMISERS)
    assert at_fast <= best + 1e-12 * abs(best)
    # and lme4 evaluated at the fast theta reproduces the fast estimates (same computation)
    f = _fast(name, meth)
    assert rel_diff(f.fe_params, _r(key, "at_fast", "coef")) < 1e-9
    assert rel_diff(f.varcorr.vcov, _r(key, "at_fast", "vcov")) < 1e-9


@pytest.mark.parametrize("meth", ["reml", "ml"])
def test_zero_slope_variance_is_on_the_boundary_in_both(meth: str) -> None:
    for name in ("growth_boundary_full", "growth_boundary_diag"):
        f = _fast(name, meth)
        theta_r = _r(f"{name}:{meth}", "newton", "theta")
        assert theta_r[-1] == 0.0 and f.theta_lme4()[-1] == 0.0
        assert f.boundary


def test_derivative_free_lme4_stops_short_on_the_nested_study() -> None:
    """Why the Newton reference is needed: BOBYQA's variance components differ from the converged ones by
    more than 1e-6 on the nested study, while its criterion differs only at rounding level."""
    key = "study_f1:reml"
    assert rel_diff(_r(key, "bobyqa", "vcov"), _r(key, "newton", "vcov")) > 1e-6
    c_b, c_n = _r(key, "bobyqa", "criterion")[0], _r(key, "newton", "criterion")[0]
    assert abs(c_b - c_n) < 1e-11 * abs(c_n)
