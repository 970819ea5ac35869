"""Truth of the synthetic study: score_sum by hand, truth.json against an independent quadrature, observed
baseline means against the truth (large sample), attrition that depends on observed baseline severity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments
from cohortflow.synth import generate_study, score_sum
from cohortflow.synth.config import load_synth_model
from cohortflow.synth.inspect import read_study
from cohortflow.synth.items import instrument_direction, item_params

STUDY = load_study()
INSTRUMENTS = load_instruments()
MODEL = load_synth_model()
OUTCOMES = ["cries13.total", "pss.total", "cyrm_r.total"]


def _codes(inst, values: dict[str, float], default: float) -> pd.DataFrame:
    return pd.DataFrame([{inst.item_key(i): values.get(i, default) for i in inst.item_codes}])


# --- score_sum, worked by hand ----------------------------------------------------------------
def test_score_sum_pss_reverses_items():
    pss = INSTRUMENTS["pss"]
    # all items answered 1: the 8 reversed items (1,2,5,6,7,8,17,18) score 5, the other 10 score 1
    assert score_sum(pss, "total", _codes(pss, {}, 1)).iloc[0] == 8 * 5 + 10 * 1
    # all 5: reversed score 1 -> 8 + 50
    assert score_sum(pss, "total", _codes(pss, {}, 5)).iloc[0] == 58


def test_score_sum_cries_score_map_and_prorating():
    cries = INSTRUMENTS["cries13"]
    # code 2 ('sometimes') scores 3: 13 x 3 = 39; code 3 scores 5: 65
    assert score_sum(cries, "total", _codes(cries, {}, 2)).iloc[0] == 39
    assert score_sum(cries, "total", _codes(cries, {}, 3)).iloc[0] == 65
    # one item missing (-9 is not a code): prorated (12 answered of 13, min 12) 12 x 1 x 13/12 = 13
    one_missing = _codes(cries, {"01": -9}, 1)
    assert score_sum(cries, "total", one_missing).iloc[0] == pytest.approx(13.0)
    # two missing: below min_answered 12 -> NaN
    assert np.isnan(score_sum(cries, "total", _codes(cries, {"01": -9, "02": np.nan}, 1)).iloc[0])


# --- truth.json against Gauss-Hermite quadrature ----------------------------------------------
def _expected_score(inst, scale: str, mean: float, sd: float) -> float:
    """E[scale score] for theta ~ N(mean, sd) under the GRM, by quadrature (independent of sampling)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(101)
    theta = mean + sd * nodes
    w = weights / weights.sum()
    params = {p.key: p for p in item_params(inst, MODEL.items)}
    total = np.zeros_like(theta)
    for ic in inst.scale(scale).items:
        p = params[inst.item_key(ic)]
        rs = inst.response_scale_of(ic)
        smap = rs.score_map
        lo, hi = rs.score_range
        ge = [1 / (1 + np.exp(-p.a * (theta - b))) for b in p.thresholds]  # P(category >= k), k = 1..K-1
        cum = [np.ones_like(theta), *ge, np.zeros_like(theta)]
        for k, code in enumerate(p.codes):  # p.codes in ascending scored order
            prob = cum[k] - cum[k + 1]
            written = p.codes[len(p.codes) - 1 - k] if p.reversed else code
            scored = smap[int(written)]
            total += prob * ((lo + hi - scored) if p.reversed else scored)
    return float(np.sum(w * total))


@pytest.fixture(scope="module")
def truth_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("truth")
    generate_study(out, factor=0.01, seed=5, truth_persons_per_arm=40000)
    return json.loads((out / "truth" / "truth.json").read_text())


def test_truth_matches_quadrature(truth_only):
    v = MODEL.variance
    for outcome in OUTCOMES:
        code, scale = outcome.split(".")
        inst = INSTRUMENTS[code]
        rec = truth_only["outcomes"][outcome]
        sign = 1.0 if instrument_direction(inst) != "higher_better" else -1.0
        for arm, waves in rec["mean"].items():
            arm_obj = STUDY.arm(arm)
            for wave, value in waves.items():
                years = STUDY.wave(wave).offset_days / 365.25
                mu = MODEL.baseline(inst.construct_code, arm_obj) - MODEL.improvement(inst.construct_code, arm_obj, wave)
                sd = np.sqrt(v.household_sd**2 + v.person_sd**2 + (v.slope_sd_per_year * years) ** 2 + v.occasion_sd**2)
                exact = _expected_score(inst, scale, sign * mu, sd)
                # Monte Carlo error: 4 standard errors as stated in truth.json
                assert abs(value - exact) < 4 * rec["mc_se"][arm][wave], (outcome, arm, wave, value, exact)


def test_truth_differences_in_change(truth_only):
    for outcome in OUTCOMES:
        rec = truth_only["outcomes"][outcome]
        m = rec["mean"]
        better = -1 if rec["direction"] == "higher_worse" else 1
        for key, dic in rec["difference_in_change"].items():
            a, b = dic["intervention"], dic["comparison"]
            assert key == f"{a}_vs_{b}" and STUDY.arm(a).role == "intervention"
            for w, d in dic["waves"].items():
                assert d["difference"] == pytest.approx((m[a][w] - m[a]["T0"]) - (m[b][w] - m[b]["T0"]))
            # the pilot improves more: a moderate effect by the last wave
            assert 0.2 < better * dic["waves"]["T2"]["standardised"] < 0.6, (outcome, key)
            assert abs(dic["waves"]["T1"]["difference"]) < abs(dic["waves"]["T2"]["difference"])
    # about 4 in 10 children at or above the CRIES-13 cut-off at baseline in the cohort arms
    share = truth_only["outcomes"]["cries13.total"]["above_cutoff"][">=30"]
    for arm in ("proeftuin", "gi", "vt"):
        assert 0.3 < share[arm]["T0"] < 0.55


# --- the generated data against the truth (factor 0.4: ~5 s idle, 10-15 s on a loaded machine) ---
@pytest.fixture(scope="module")
def large(tmp_path_factory):
    out = tmp_path_factory.mktemp("large")
    m = generate_study(out, factor=0.4, seed=13, truth_persons_per_arm=20000)
    data = read_study(out, m)
    truth = json.loads((out / "truth" / "truth.json").read_text())
    persons = pd.read_parquet(out / "truth" / "persons.parquet")
    return data, truth, persons


def _scores(data: pd.DataFrame, outcome: str) -> pd.Series:
    code, scale = outcome.split(".")
    inst = INSTRUMENTS[code]
    cols = {f"{code.upper()}_{i.upper()}": inst.item_key(i) for i in inst.item_codes}
    codes = data[list(cols)].rename(columns=cols)
    return score_sum(inst, scale, codes.where(codes >= 0))


@pytest.mark.slow
def test_observed_baseline_means_close_to_truth(large):
    """Generous tolerance: 4 standard errors, inflated by 1.5 for clustering in households."""
    data, truth, _ = large
    base = data[data["wave"] == STUDY.baseline_wave]
    checked = 0
    for outcome in OUTCOMES:
        s = _scores(base, outcome)
        for arm, g in s.groupby(base["arm"]):
            g = g.dropna()
            if arm not in truth["outcomes"][outcome]["mean"] or len(g) < 30:
                continue
            expected = truth["outcomes"][outcome]["mean"][arm][STUDY.baseline_wave]
            tol = 4 * 1.5 * g.std() / np.sqrt(len(g))
            assert abs(g.mean() - expected) < tol, (outcome, arm, g.mean(), expected, tol)
            checked += 1
    assert checked >= 9


@pytest.mark.slow
def test_attrition_depends_on_baseline_severity(large):
    data, _, persons = large
    base = data[(data["wave"] == STUDY.baseline_wave) & (data["arm"] != "jongerenpanel")]
    z = []
    for outcome in OUTCOMES:
        s = _scores(base, outcome)
        zs = (s - s.mean()) / s.std()
        if INSTRUMENTS[outcome.split(".")[0]].scale("total").direction == "higher_better":
            zs = -zs
        z.append(pd.DataFrame({"gezin_id": base["gezin_id"], "z": zs}))
    severity = pd.concat(z).dropna().groupby("gezin_id")["z"].mean()
    hh = persons[persons["arm"] != "jongerenpanel"].groupby("gezin_id")["dropout_wave"].first()
    dropped_t1 = severity[hh.reindex(severity.index) == "T1"]
    stayed = severity[hh.reindex(severity.index).isna()]
    diff = dropped_t1.mean() - stayed.mean()
    se = np.sqrt(dropped_t1.var() / len(dropped_t1) + stayed.var() / len(stayed))
    assert diff > 3 * se, (diff, se)
    # overall retention about 65% at T1 and 55% at T2 (households)
    retained_t1 = (hh != "T1").mean()
    retained_t2 = hh.isna().mean()
    assert 0.59 < retained_t1 < 0.71 and 0.49 < retained_t2 < 0.61
    # dropout is monotone: nobody answers after their household's dropout wave
    p = persons[persons["dropout_wave"] == "T1"]
    assert not p["responded_T1"].any() and not p["responded_T2"].any()
