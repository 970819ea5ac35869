"""The GEE layer (binary and count outcomes) against R (geepack 1.3.9 + emmeans 1.8.4-1), and separation.

Fixtures: tests/data/r/gee_*.csv, written by tests/data/r/gee_parity.R from lmm_dataset.csv with the derived
responses above = score >= 30 and count = floor(max(score - 20, 0) / 4). With an independence working
correlation statsmodels and geepack solve the same estimating equations, so marginal probabilities/rates,
their link-scale CIs, risk/mean differences with delta-method SEs and link-scale contrasts must agree to
1e-8 relative (seen: 1e-14). geepack's exchangeable correlation uses another moment estimator of alpha
(another degrees-of-freedom correction: alpha 0.1845 vs statsmodels' 0.1834 here), so there the check is
2e-3 relative (seen: 2e-4 on marginal means and SEs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis.models import fit_outcome_model, separated_cells
from cohortflow.analysis.plan import AnalysisPlan
from cohortflow.config.study import load_study

R = Path(__file__).parent / "data" / "r"
STUDY = load_study()
pytestmark = pytest.mark.r_reference


def _plan(family: str, corstr: str) -> AnalysisPlan:
    return AnalysisPlan.model_validate({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"fixed_effects": {"covariates": ["age_years", "sex"]}},
        "outcomes": [{"name": "sim.total", "family": family, "working_correlation": corstr,
                      "response": "above_cutoff" if family == "binomial" else "score"}]})


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    df = pd.read_csv(R / "lmm_dataset.csv")
    df["outcome"] = "sim.total"
    df["above_cutoff"] = (df["score"] >= 30).astype(float)
    return df


def _fit(data: pd.DataFrame, family: str, corstr: str):
    d = data if family == "binomial" else data.assign(score=np.floor(np.maximum(data["score"] - 20, 0) / 4))
    plan = _plan(family, corstr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no sqrt of a negative variance, no overflow
        return fit_outcome_model(d, plan.outcomes[0], plan, STUDY)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
@pytest.mark.parametrize("corstr", ["independence", "exchangeable"])
def test_gee_matches_geepack_and_emmeans(data, family, corstr):
    res = _fit(data, family, corstr)
    rtol = 1e-8 if corstr == "independence" else 2e-3
    atol = 1e-10 if corstr == "independence" else 1e-3  # link-scale coefficients near 0 (seen: 2e-4)
    coef = pd.read_csv(R / f"gee_{family}_{corstr}_coef.csv").set_index("term")
    fe = res.fixed_effects.set_index("term")
    terms = [t for t in coef.index]
    assert_allclose(fe.loc[terms, "estimate"], coef.loc[terms, "estimate"], rtol=rtol, atol=atol)
    assert_allclose(fe.loc[terms, "se"], coef.loc[terms, "se"], rtol=rtol)
    r_emm = pd.read_csv(R / f"gee_{family}_{corstr}_emmeans.csv").set_index(["arm", "wave"])
    emm = res.emms.set_index(["arm", "wave"]).loc[r_emm.index]
    for c in ["emmean", "se", "lower", "upper"]:
        assert_allclose(emm[c], r_emm[c], rtol=rtol, err_msg=c)
    r_ct = pd.read_csv(R / f"gee_{family}_{corstr}_contrasts.csv").set_index("contrast")
    ct = res.contrasts.set_index("contrast").loc[r_ct.index]
    for c in ["estimate", "se", "lower", "upper"]:
        assert_allclose(ct[c], r_ct[c], rtol=rtol, atol=1e-10 if corstr == "independence" else 2e-4, err_msg=c)
    # odds/rate ratios: exp of the link-scale contrast and of its Wald limits
    r_lk = pd.read_csv(R / f"gee_{family}_{corstr}_link.csv").set_index("contrast")
    assert_allclose(np.log(ct["ratio"]), r_lk["estimate"], rtol=rtol, atol=atol)
    assert_allclose(np.log(ct["ratio_lower"]), r_lk["lower"], rtol=rtol, atol=atol)
    assert_allclose(np.log(ct["ratio_upper"]), r_lk["upper"], rtol=rtol, atol=atol)


def test_probability_cis_stay_inside_0_and_1_for_rare_events(data):
    """A rare outcome: the Wald CI on the probability scale would cross 0; the link-scale CI cannot."""
    d = data.assign(above_cutoff=(data["score"] >= 40).astype(float))
    plan = _plan("binomial", "exchangeable")
    res = fit_outcome_model(d, plan.outcomes[0], plan, STUDY)
    assert (res.emms["lower"] >= 0).all() and (res.emms["upper"] <= 1).all()
    e = res.emms[res.emms["link"].notna()]  # model-based cells (one cell has 0 events: shown as observed)
    assert len(e) == 8 and (e["lower"] > 0).all() and (e["upper"] < 1).all()
    assert ((e["emmean"] - 1.96 * e["se"]) < 0).any()  # the symmetric interval would have crossed 0
    # hand-worked: CI = expit(eta -/+ z se_eta); se on the response scale = p (1 - p) se_eta
    expit = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert_allclose(e["lower"], expit(e["link"] - 1.959963985 * e["link_se"]), rtol=1e-9)
    assert_allclose(e["se"], e["emmean"] * (1 - e["emmean"]) * e["link_se"], rtol=1e-9)


def test_separated_cell_is_reported_not_garbled(data):
    """0 events in one arm x wave cell: no infinite coefficient, no NaN-from-sqrt; the cell is shown as observed."""
    d = data.copy()
    cell = (d["arm"] == "proeftuin") & (d["wave"] == "T2")
    d.loc[cell, "above_cutoff"] = 0.0
    assert separated_cells(d, "above_cutoff", "binomial", ["proeftuin", "vt", "gi"], ["T0", "T1", "T2"]) == [
        {"arm": "proeftuin", "wave": "T2", "n": int(cell.sum()), "events": 0}]
    res = _fit(d, "binomial", "exchangeable")
    fe = res.fixed_effects
    assert fe["se"].notna().all() and (fe["estimate"].abs() < 20).all()
    e = res.emms.set_index(["arm", "wave"])
    n = int(cell.sum())
    assert e.loc[("proeftuin", "T2"), "emmean"] == 0.0
    assert e.loc[("proeftuin", "T2"), "upper"] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)  # exact: 0 of n
    c = res.contrasts.set_index("contrast")
    assert np.isnan(c.loc["proeftuin - vt: change T0 to T2", "estimate"])
    assert np.isfinite(c.loc["proeftuin - vt: change T0 to T1", "estimate"])
    assert any("separation" in w for w in res.warnings)
    # The other cells: the limit of the full fit, i.e. the fit without the separated cell's rows (geepack,
    # independence working correlation, cell-means coding; gee_parity.R).
    ind = _fit(d, "binomial", "independence").emms
    ind = ind[ind["link"].notna()].assign(cell=lambda x: x["arm"] + ":" + x["wave"]).set_index("cell")
    r = pd.read_csv(R / "gee_separated_emmeans.csv").set_index("cell")
    assert sorted(ind.index) == sorted(r.index)
    for c in ["emmean", "se", "lower", "upper"]:
        assert_allclose(ind.loc[r.index, c], r[c], rtol=1e-5, err_msg=c)
