"""Reliable change (Jacobson & Truax) against the published test vector and hand-worked categories."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.change import rc_threshold, reliable_change, reliable_change_for_scale


def test_published_test_vector():
    # SD1 = 7.6, r = .95: SE = 7.6 x sqrt(.05) = 1.6994, S_diff = sqrt(2) x SE = 2.4033, 1.96 x S_diff = 4.7105
    assert rc_threshold(7.6, 0.95) == pytest.approx(4.7105, abs=5e-5)
    out = reliable_change(pd.Series([20.0]), pd.Series([10.0]), reliability=0.95, sd=7.6)
    assert out["se"].iloc[0] == pytest.approx(1.6994, abs=5e-5)
    assert out["s_diff"].iloc[0] == pytest.approx(2.4033, abs=5e-5)
    assert out["rc"].iloc[0] == pytest.approx(-10 / 2.40333, abs=1e-4)
    assert (out["reliability"].iloc[0], out["sd"].iloc[0]) == (0.95, 7.6)


def test_categories_follow_direction_at_the_threshold():
    # threshold 4.7105 points: changes of 4.7 are not reliable, 4.72 are
    t1 = pd.Series([20.0, 20.0, 20.0, 20.0, 20.0, None], index=list("abcdef"))
    t2 = pd.Series([15.28, 15.3, 24.72, 24.7, 20.0, 10.0], index=list("abcdef"))
    worse = reliable_change(t1, t2, 0.95, sd=7.6, direction="higher_worse")
    assert list(worse["category"].iloc[:5]) == ["improved", "no_reliable_change", "deteriorated", "no_reliable_change", "no_reliable_change"]
    assert worse["category"].isna().iloc[5]
    better = reliable_change(t1, t2, 0.95, sd=7.6, direction="higher_better")
    assert list(better["category"].iloc[[0, 2]]) == ["deteriorated", "improved"]
    neutral = reliable_change(t1, t2, 0.95, sd=7.6, direction="neutral")
    assert list(neutral["category"].iloc[[0, 2]]) == ["decreased", "increased"]


def test_sample_sd_used_and_stated_when_no_reference_sd():
    t1 = pd.Series([10.0, 12.0, 14.0, 16.0, 18.0])  # sample SD (n-1) = sqrt(10)
    out = reliable_change(t1, t1 + 1, reliability=0.8)
    assert out["sd"].iloc[0] == pytest.approx(math.sqrt(10))
    assert out["sd_source"].iloc[0].startswith("sample SD")
    assert out["s_diff"].iloc[0] == pytest.approx(math.sqrt(2 * 10 * 0.2))


def test_clinically_significant_change_needs_reliable_improvement_across_the_cutoff():
    # CRIES-13: cut-off >= 30, alpha .89; with SD 12: S_diff = sqrt(2 x 144 x .11) = 5.628, threshold 11.03
    cries = load_instruments()["cries13"].scale("total")
    t1 = pd.Series([45.0, 35.0, 45.0, 20.0], index=["p1", "p2", "p3", "p4"])
    t2 = pd.Series([25.0, 25.0, 33.0, 40.0], index=["p1", "p2", "p3", "p4"])
    out = reliable_change_for_scale(cries, t1, t2, sd=12.0)
    assert out.loc["p1", "category"] == "improved" and bool(out.loc["p1", "clinically_significant"])
    assert out.loc["p2", "category"] == "no_reliable_change" and not out.loc["p2", "clinically_significant"]  # 10 < 11.03
    assert out.loc["p3", "category"] == "improved" and not out.loc["p3", "clinically_significant"]  # still >= 30
    assert out.loc["p4", "category"] == "deteriorated" and bool(out.loc["p4", "clinical_t2"])
    assert out["reliability"].iloc[0] == 0.89


def test_bad_reliability_is_refused():
    with pytest.raises(ValueError, match="reliability"):
        reliable_change(pd.Series([1.0, 2.0]), pd.Series([1.0, 2.0]), reliability=1.0)
    with pytest.raises(ValueError, match="declares no reliability"):
        reliable_change_for_scale(load_instruments()["cantril"].scale("now"), pd.Series([1.0]), pd.Series([2.0]))


def test_reliable_change_between_waves_from_long_scores():
    from cohortflow.scoring.change import reliable_change_between_waves

    pss = load_instruments()["pss"].scale("total")  # test-retest .81
    long = pd.DataFrame({
        "person_id": ["a", "a", "b", "b", "c", "d"],
        "wave": ["T0", "T1", "T0", "T1", "T0", "T1"],
        "score": [60.0, 45.0, 50.0, 52.0, 55.0, 40.0],
    })
    out = reliable_change_between_waves(long, pss, "T0", "T1", sd=8.0)
    # S_diff = sqrt(2 x 64 x .19) = 4.9315; threshold 1.96 x 4.9315 = 9.666
    assert out.loc["a", "category"] == "improved" and out.loc["b", "category"] == "no_reliable_change"
    assert out["category"].isna().tolist() == [False, False, True, True]
    assert out["s_diff"].iloc[0] == pytest.approx(math.sqrt(2 * 64 * 0.19))
    with pytest.raises(ValueError, match="more than one score"):
        reliable_change_between_waves(pd.concat([long, long.iloc[:1]]), pss, "T0", "T1")
