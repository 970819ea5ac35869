"""Residual diagnostics of the mixed models against lme4 (`fitted`, `resid`, `ranef`; R 4.2.2, lme4 1.1-31).

Fixtures: tests/data/r/diag_{a,b}_*.csv written by tests/data/r/lmm_diagnostics.R from lmm_dataset.csv
(model a: household and person intercepts plus a person slope of time; model b: the two intercepts). The
BLUPs rest on the variance parameters, which agree with lme4 to about 1e-5 relative (test_analysis_r_parity),
so BLUPs, fitted values and residuals are compared to 1e-4 absolute on the score scale (SD of the score ~7.6;
the largest difference seen is 1.6e-5)
and the summaries to 1e-3 relative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis.diagnostics import moments
from cohortflow.analysis.models import fit_outcome_model
from cohortflow.analysis.plan import AnalysisPlan
from cohortflow.config.study import load_study

R = Path(__file__).parent / "data" / "r"
pytestmark = pytest.mark.r_reference
TERMS = {"a": {"household:(Intercept)": ("household_id", "(Intercept)"), "person": ("person_id", "(Intercept)"),
               "slope": ("person_id", "months_since_t0")},
         "b": {"household:(Intercept)": ("household_id", "(Intercept)"), "person": ("person_id", "(Intercept)")}}


@pytest.fixture(scope="module", params=["a", "b"])
def fitted(request):
    df = pd.read_csv(R / "lmm_dataset.csv").assign(outcome="sim.total", above_cutoff=np.nan)
    plan = AnalysisPlan.model_validate({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"fixed_effects": {"covariates": ["age_years", "sex"]},
                     "random_effects": {"household": True, "person": True,
                                        "slope": "months_since_t0" if request.param == "a" else None},
                     "fallback": [], "time_column": "none"},
        "outcomes": [{"name": "sim.total"}]})
    res = fit_outcome_model(df, plan.outcomes[0], plan, load_study())
    return request.param, res, df


def test_blups_match_lme4_ranef(fitted):
    model, res, _ = fitted
    r = pd.read_csv(R / f"diag_{model}_ranef.csv")
    assert set(res.residuals.blups) == set(TERMS[model])
    for name, (group, term) in TERMS[model].items():
        expect = r[(r.group == group) & (r.term == term)].set_index("level")["blup"]
        got = res.residuals.blups[name]
        assert sorted(got.index) == sorted(expect.index)
        assert_allclose(got.loc[expect.index], expect, atol=1e-4, err_msg=name)


def test_fitted_and_conditional_residuals_match_lme4(fitted):
    model, res, df = fitted
    r = pd.read_csv(R / f"diag_{model}_resid.csv")
    # the model rows are sorted by household, person, wave: line R's rows up by (person, wave)
    key = ["person_id", "wave"]
    mine = (pd.read_csv(R / "lmm_dataset.csv").sort_values(["household_id", "person_id", "wave"])[key]
            .reset_index(drop=True).assign(fitted=res.residuals.fitted, resid=res.residuals.resid))
    both = mine.merge(r, on=key, suffixes=("", "_r"))
    assert len(both) == len(r) == len(df)
    assert_allclose(both["fitted"], both["fitted_r"], atol=1e-4)
    assert_allclose(both["resid"], both["resid_r"], atol=1e-4)


def test_summary_matches_r_moments(fitted):
    model, res, _ = fitted
    r = pd.read_csv(R / f"diag_{model}_summary.csv")
    names = {"conditional residuals": "conditional residuals",
             **{f"BLUPs {k}": f"{g} {t}" for k, (g, t) in TERMS[model].items()}}
    s = res.residual_diagnostics.set_index("quantity")
    rr = r.set_index("quantity")
    for ours, theirs in names.items():
        assert s.loc[ours, "n"] == rr.loc[theirs, "n"]
        for c in ["sd", "skewness", "excess_kurtosis"]:
            assert s.loc[ours, c] == pytest.approx(rr.loc[theirs, c], rel=1e-3, abs=1e-3), (ours, c)
        assert s.loc[ours, "pct_abs_std_gt_3"] == pytest.approx(rr.loc[theirs, "pct_abs_std_gt_3"], abs=1e-9)


def test_moments_of_known_distributions():
    """Skewness and excess kurtosis of large normal and exponential samples: 0, 0 and 2, 6."""
    rng = np.random.default_rng(1)
    _, s, k = moments(rng.normal(size=400_000))
    assert abs(s) < 0.02 and abs(k) < 0.04
    _, s, k = moments(rng.exponential(size=400_000))
    assert s == pytest.approx(2.0, abs=0.05) and k == pytest.approx(6.0, abs=0.4)
