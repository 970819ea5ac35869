"""Effect sizes, multiplicity, balance, reliable change and Rubin's rules against hand-worked values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohortflow.analysis.effects import (
    adjust_p,
    feingold_d,
    hedges_j,
    pooled_sd,
    standardise,
    standardised_mean_difference,
)
from cohortflow.analysis.models import describe_reliable_change
from cohortflow.analysis.sensitivity import conclusion_changes, pool_rubin


def test_pooled_sd_and_hedges_by_hand():
    # sqrt((9*4^2 + 19*5^2) / 28) = sqrt((144 + 475) / 28) = sqrt(22.107142857)
    assert pooled_sd(4.0, 10, 5.0, 20) == pytest.approx(4.70182333, rel=1e-8)
    # J = 1 - 3 / (4 * 28 - 1) = 1 - 3/111
    assert hedges_j(28) == pytest.approx(1 - 3 / 111)
    d, lo, hi = standardise(-2.0, -3.0, -1.0, 4.0, 28)
    assert (d, lo, hi) == pytest.approx((-0.5 * (1 - 3 / 111), -0.75 * (1 - 3 / 111), -0.25 * (1 - 3 / 111)))
    # Feingold: slope diff 0.1 per month over 18 months, SD 6, df 98 -> 1.8 / 6 * (1 - 3/391)
    assert feingold_d(0.1, 0.0, 0.2, 18.0, 6.0, 98)[0] == pytest.approx(0.3 * (1 - 3 / 391))


def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, np.nan]
    # Holm: sorted .01 .03 .04 -> .03, .06, max(.06, .04) = .06
    np.testing.assert_allclose(adjust_p(p, "holm")[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adjust_p(p, "holm")[3])
    # BH: .04*3/3 = .04; .03*3/2 = .045 -> min(.045, .04) = .04; .01*3/1 = .03
    np.testing.assert_allclose(adjust_p(p, "fdr_bh")[:3], [0.03, 0.04, 0.04])


def test_smd_by_hand():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    # means 2 and 4, variances 1 and 4 -> (2 - 4) / sqrt(2.5)
    assert standardised_mean_difference(a, b) == pytest.approx(-2 / np.sqrt(2.5))


def test_reliable_change_threshold_matches_the_study_test_vector():
    # study.md: SD1 = 7.6, r = .95 gives 1.96 * S_diff = 4.7105
    df = pd.DataFrame({"person_id": ["a", "a", "b", "b", "c", "c"], "arm": ["x"] * 6,
                       "wave": ["T0", "T1"] * 3, "score": [20, 15, 20, 16, 20, 25]})
    rc = describe_reliable_change(df, ["x"], ["T0", "T1"], "T0", 0.95, 7.6, "higher_worse", 1.96)
    assert rc["threshold"].iloc[0] == pytest.approx(4.7105, abs=5e-5)
    # a improved by 5 (> 4.71), b by 4 (not reliable), c deteriorated by 5
    assert rc["pct_improved"].iloc[0] == pytest.approx(100 / 3)
    assert rc["pct_deteriorated"].iloc[0] == pytest.approx(100 / 3)


def test_rubins_rules_by_hand():
    q = np.array([1.0, 2.0, 3.0])
    u = np.array([0.5, 0.5, 0.5])
    r = pool_rubin(q, u, df_complete=100)
    # qbar 2, B = 1, T = 0.5 + (4/3) * 1 = 1.8333, lambda = 1.3333 / 1.8333 = 0.72727
    assert r["estimate"] == 2.0
    assert r["se"] == pytest.approx(np.sqrt(0.5 + 4 / 3))
    lam = (4 / 3) / (0.5 + 4 / 3)
    nu_old = 2 / lam**2
    nu_obs = 101 / 103 * 100 * (1 - lam)
    assert r["df"] == pytest.approx(1 / (1 / nu_old + 1 / nu_obs))
    assert r["fmi"] == pytest.approx(lam)


def test_conclusion_change_flags():
    main = pd.DataFrame({"contrast": ["a", "b", "c"], "estimate": [-2.0, -1.0, 1.0], "p": [0.01, 0.2, 0.3]})
    sens = pd.DataFrame({"contrast": ["a", "b", "c"], "estimate": [-1.5, -2.0, -0.5], "p": [0.08, 0.01, 0.4]})
    assert conclusion_changes(main, sens, 0.05).tolist() == [True, True, True]
    sens2 = pd.DataFrame({"contrast": ["a"], "estimate": [-3.0], "p": [0.001]})
    assert conclusion_changes(main, sens2, 0.05).tolist() == [False]
