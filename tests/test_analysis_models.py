"""fit_outcome_model and run_analysis on simulated studies with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohortflow.analysis.effects import adjust_p
from cohortflow.analysis.models import AnalysisDataError, fit_outcome_model, run_analysis
from cohortflow.analysis.plan import AnalysisPlan
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import load_study

STUDY = load_study()
ARMS = ["proeftuin", "vt", "gi"]


def _plan(**over) -> AnalysisPlan:
    base = {
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"], "reference_group": "jongerenpanel",
        "defaults": {"fixed_effects": {"covariates": ["age_years", "sex"]},
                     "random_effects": {"household": True, "person": True, "slope": "months_since_t0"},
                     "engine": "profiled"},
        "outcomes": [{"name": "sim.total", "primary": True},
                     {"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"}],
        "multiplicity": {"method": "holm", "families": [{"name": "primary", "outcomes": ["sim.total", "sim.above"]}]},
        "sensitivity": {"multiple_imputation": {"imputations": 3, "iterations": 3}},
        "resilience": {"outcome": "res.total", "covariates": ["age_years", "sex"]},
    }
    base.update(over)
    return AnalysisPlan.model_validate(base)


@pytest.fixture(scope="module")
def study_data() -> tuple[pd.DataFrame, object]:
    spec = default_spec(ARMS, STUDY.wave_codes, effect=-3.0, scale=0.8)
    return simulate_study(spec, seed=11), spec


@pytest.fixture(scope="module")
def main_result(study_data):
    df, _ = study_data
    plan = _plan()
    return fit_outcome_model(df, plan.outcomes[0], plan, STUDY)


def test_counts_match_an_independent_tally(study_data, main_result):
    df, _ = study_data
    c = main_result.counts.set_index(["arm", "wave"])
    tally = df.groupby(["arm", "wave"]).agg(n_obs=("score", "size"), n_persons=("person_id", "nunique"),
                                            n_households=("household_id", "nunique"))
    for key, row in tally.iterrows():
        assert c.loc[key, "n_obs"] == row["n_obs"]
        assert c.loc[key, "n_persons"] == row["n_persons"]
        assert c.loc[key, "n_households"] == row["n_households"]
    base = df[df.wave == "T0"].groupby("arm")["score"].agg(["mean", "std", "size"])
    b = main_result.baseline.set_index("arm")
    np.testing.assert_allclose(b.loc[base.index, "mean"], base["mean"])
    np.testing.assert_allclose(b.loc[base.index, "sd"], base["std"])


def test_difference_in_change_recovers_the_truth(study_data, main_result):
    _, spec = study_data
    c = main_result.contrasts.set_index("contrast")
    for comp in ["vt", "gi"]:
        truth = spec.true_diff_in_change("proeftuin", comp, 2)
        row = c.loc[f"proeftuin - {comp}: change T0 to T2"]
        assert abs(row["estimate"] - truth) < 3 * row["se"]
        assert row["lower"] < row["estimate"] < row["upper"]
        assert "pooled baseline SD" in row["d_denominator"]
        # d has the sign of the estimate and the CI brackets it
        assert np.sign(row["d"]) == np.sign(row["estimate"]) and row["d_lower"] < row["d"] < row["d_upper"]


def test_contrasts_are_differences_of_marginal_means(main_result):
    e = main_result.emms.set_index(["arm", "wave"])["emmean"]
    c = main_result.contrasts.set_index("contrast")["estimate"]
    assert c["vt: T1 - T0"] == pytest.approx(e["vt", "T1"] - e["vt", "T0"], rel=1e-10)
    expect = (e["proeftuin", "T2"] - e["proeftuin", "T0"]) - (e["gi", "T2"] - e["gi", "T0"])
    assert c["proeftuin - gi: change T0 to T2"] == pytest.approx(expect, rel=1e-10)


def test_growth_model_d_has_the_direction_of_the_effect(main_result):
    g = main_result.growth.set_index("arm2")
    assert set(g.index) == {"vt", "gi"}
    assert (g["slope_diff"] < 0).all() and (g["d"] < 0).all()
    assert (g["duration"] > 17).all()  # months from the T0 to the T2 planned offset (30 -> 575 days)


def test_zero_slope_variance_triggers_the_stated_fallback():
    spec = default_spec(ARMS, STUDY.wave_codes, scale=0.5)
    spec.sd_slope = 0.0
    spec.sd_household = 0.0
    df = simulate_study(spec, seed=5)
    plan = _plan()
    res = fit_outcome_model(df, plan.outcomes[0], plan, STUDY)
    assert res.fallback is not None and "dropped the random slope" in res.fallback
    assert "months_since_t0 | person_id" not in res.random_structure
    assert "Fallback:" in res.method


def test_binary_outcome_by_gee(study_data):
    df, _ = study_data
    plan = _plan()
    res = fit_outcome_model(df, plan.outcomes[1], plan, STUDY)
    assert res.family == "binomial" and "GEE" in res.method
    e = res.emms.set_index(["arm", "wave"])["emmean"]
    assert ((e > 0) & (e < 1)).all()
    c = res.contrasts.set_index("contrast")
    row = c.loc["proeftuin - vt: change T0 to T2"]
    # risk difference = difference in change of the marginal probabilities
    expect = (e["proeftuin", "T2"] - e["proeftuin", "T0"]) - (e["vt", "T2"] - e["vt", "T0"])
    assert row["estimate"] == pytest.approx(expect, rel=1e-10)
    # odds ratio of the difference in change = exp(-interaction) (proeftuin is the reference level)
    fe = res.fixed_effects.set_index("term")["estimate"]
    assert row["ratio"] == pytest.approx(np.exp(-fe["armvt:waveT2"]), rel=1e-10)
    assert row["ratio_kind"] == "odds ratio" and row["ratio_lower"] < row["ratio"] < row["ratio_upper"]


def test_missing_column_error_names_it(study_data):
    df, _ = study_data
    plan = _plan()
    with pytest.raises(AnalysisDataError, match=r"columns \['sex'\] are missing"):
        fit_outcome_model(df.drop(columns="sex"), plan.outcomes[0], plan, STUDY)


def test_run_analysis_adjusts_families_and_runs_sensitivity(study_data):
    df, _ = study_data
    rng = np.random.default_rng(3)
    base = df[df.wave == "T0"].assign(outcome="res.total", score=lambda d: 50 + rng.normal(0, 5, len(d)))
    panel = pd.DataFrame({"household_id": [f"panel-{i}" for i in range(300)], "person_id": [f"pp-{i}" for i in range(300)],
                          "arm": "jongerenpanel", "wave": "T0", "outcome": "res.total",
                          "age_years": rng.uniform(8, 18, 300), "sex": rng.choice(["male", "female"], 300),
                          "score": 52 + rng.normal(0, 5, 300)})
    data = pd.concat([df, base, panel], ignore_index=True)
    plan = _plan()
    res = run_analysis(data, plan, STUDY)
    assert res.failures == {}
    fam = res.contrasts[res.contrasts["family"] == "primary"]
    assert len(fam) == 8 and set(fam["kind"]) == {"diff_in_change"}
    np.testing.assert_allclose(fam["p_adj"], adjust_p(fam["p"].to_numpy(), "holm"))
    assert res.contrasts.loc[res.contrasts["family"].isna(), "p_adj"].isna().all()
    s = res.sensitivity
    assert len(s) == 4
    for col in ["main_estimate", "ipw_estimate", "mi_estimate", "ipw_changes", "mi_changes", "conclusion_changes"]:
        assert col in s.columns
    assert "mean score of the other members of the household" in res.methods["sim.total:mi"]
    # under MAR dropout the sensitivity estimates stay near the main estimate
    assert np.all(np.abs(s["mi_estimate"] - s["main_estimate"]) < 2 * s["mi_se"])
    assert np.all(np.abs(s["ipw_estimate"] - s["main_estimate"]) < 2 * s["ipw_se"])
    # weighting improves baseline balance
    b = res.balance
    assert (b["smd_weighted"].abs() <= b["smd"].abs() + 0.05).all()
    r = res.resilience.set_index("cohort").loc["all cohort arms"]
    assert r["lower"] < -2.0 < r["upper"]


def test_binary_outcome_without_baseline_gives_between_arm_contrasts(study_data):
    """E.g. 'violence stopped', only measured at follow-up waves: arms are compared per wave."""
    df, _ = study_data
    d = df[df.wave != "T0"].assign(outcome="stopped", above_cutoff=lambda x: (x["score"] < 27).astype(float))
    plan = _plan(outcomes=[{"name": "stopped", "family": "binomial", "response": "above_cutoff"}], multiplicity={})
    res = fit_outcome_model(d, plan.outcomes[0], plan, STUDY)
    assert set(res.contrasts["kind"]) == {"between_arm"}
    e = res.emms.set_index(["arm", "wave"])["emmean"]
    row = res.contrasts.set_index("contrast").loc["proeftuin - gi at T1"]
    assert row["estimate"] == pytest.approx(e["proeftuin", "T1"] - e["gi", "T1"], rel=1e-10)


def test_count_outcome_rate_ratio_covers_the_truth():
    """Negative binomial GEE: counts with a known rate ratio for the difference in change."""
    rng = np.random.default_rng(4)
    rows = []
    log_mu = {"proeftuin": [3.0, 2.0, 1.6], "vt": [3.0, 2.5, 2.3]}  # true ratio of ratios at T2: exp(-0.7)
    for arm, mus in log_mu.items():
        for h in range(250):
            u = rng.normal(0, 0.3)
            for w, m in zip(STUDY.wave_codes, mus, strict=True):
                lam = np.exp(m + u) * rng.gamma(2.0, 0.5)
                rows.append({"household_id": f"{arm}{h}", "person_id": f"{arm}{h}", "arm": arm, "wave": w,
                             "outcome": "violence.count", "score": float(rng.poisson(lam)), "age_years": 40.0,
                             "sex": "female", "months_since_t0": 0.0})
    d = pd.DataFrame(rows)
    plan = _plan(comparison_arms=["vt"], outcomes=[{"name": "violence.count", "family": "negative_binomial"}],
                 multiplicity={}, defaults={"fixed_effects": {"covariates": []}})
    res = fit_outcome_model(d, plan.outcomes[0], plan, STUDY)
    row = res.contrasts.set_index("contrast").loc["proeftuin - vt: change T0 to T2"]
    assert row["ratio_kind"] == "rate ratio"
    assert row["ratio_lower"] < np.exp(-0.7) < row["ratio_upper"]
    assert "negative binomial" in res.method


def test_missing_dates_and_constant_covariates_are_handled_and_noted(study_data):
    df, _ = study_data
    d = df.copy()
    d.loc[d.index[:5], "months_since_t0"] = np.nan
    d["site_size"] = 1.0
    plan = _plan(defaults={"fixed_effects": {"covariates": ["age_years", "site_size"]},
                           "random_effects": {"slope": "months_since_t0"}, "engine": "profiled"})
    res = fit_outcome_model(d, plan.outcomes[0], plan, STUDY)
    assert res.counts["n_obs"].sum() == len(d)  # no rows lost for a missing date
    assert any("5 row(s) without a response date" in w for w in res.warnings)
    assert any("['site_size'] are constant" in w for w in res.warnings)
    assert "site_size" not in set(res.fixed_effects["term"])


def test_violence_stopped_is_the_share_without_violence_among_those_with_violence_at_baseline():
    """'stopped' at a follow-up wave = any violence at T0 and none at that wave; persons without violence at T0
    are not in the denominator. With an independence working correlation and no covariates the saturated GEE
    reproduces the raw shares exactly; arms are compared per wave (no baseline for 'stopped')."""
    rng = np.random.default_rng(12)
    rows = []
    p_stop = {"proeftuin": {"T1": 0.5, "T2": 0.6}, "vt": {"T1": 0.3, "T2": 0.35}}
    for arm, ps in p_stop.items():
        for h in range(150):
            base = float(rng.random() < 0.8)
            rows.append({"household_id": f"{arm}{h}", "person_id": f"{arm}{h}", "arm": arm, "wave": "T0",
                         "score": base})
            for w, p in ps.items():
                if rng.random() < 0.75:  # attrition
                    now = float(rng.random() >= p) if base else float(rng.random() < 0.3)
                    rows.append({"household_id": f"{arm}{h}", "person_id": f"{arm}{h}", "arm": arm, "wave": w,
                                 "score": now})
    d = pd.DataFrame(rows).assign(outcome="violence.any", age_years=40.0, sex="female", months_since_t0=0.0)
    plan = _plan(comparison_arms=["vt"], multiplicity={}, defaults={"fixed_effects": {"covariates": []}},
                 outcomes=[{"name": "violence.any", "key": "stopped", "family": "binomial", "response": "stopped",
                            "working_correlation": "independence", "direction": "higher_better"}])
    res = fit_outcome_model(d, plan.outcomes[0], plan, STUDY)
    at_risk = set(d.loc[(d.wave == "T0") & (d.score == 1), "person_id"])
    follow = d[(d.wave != "T0") & d.person_id.isin(at_risk)]
    raw = (follow.score == 0).groupby([follow.arm, follow.wave]).mean()
    e = res.emms.set_index(["arm", "wave"])["emmean"]
    assert set(e.index) == set(raw.index)
    for k in raw.index:
        assert e[k] == pytest.approx(raw[k], rel=1e-8)
    assert set(res.contrasts["kind"]) == {"between_arm"}
    c = res.contrasts.set_index("contrast").loc["proeftuin - vt at T2"]
    assert c["estimate"] == pytest.approx(raw["proeftuin", "T2"] - raw["vt", "T2"], rel=1e-8)
    assert c["lower"] < 0.6 - 0.35 < c["upper"]
    n = res.counts.set_index(["arm", "wave"])["n_persons"]
    assert n["vt", "T1"] == follow[(follow.arm == "vt") & (follow.wave == "T1")].person_id.nunique()
    assert res.rows_dropped["follow-up rows of persons without a score > 0 at baseline"] == int(
        ((d.wave != "T0") & ~d.person_id.isin(at_risk)).sum())
    assert res.baseline.set_index("arm").loc["vt", "n"] == len({p for p in at_risk if p.startswith("vt")})
    assert res.method.startswith("'Stopped' at a follow-up wave = 1 when violence.any was > 0 at T0")


def test_propensity_weights_take_a_categorical_arm_with_unused_categories():
    """The analysis dataset's `arm` is categorical with every arm of the study (also a reference group's that
    no cohort row holds): the weights equal those of the same arms as plain text, without pandas' deprecation
    of recoding such a Categorical (a future error)."""
    import warnings

    from cohortflow.analysis.sensitivity import propensity_weights

    rng = np.random.default_rng(7)
    n = 300
    x = rng.normal(size=n)
    arm = np.where(x + rng.normal(size=n) > 0.5, "pt", np.where(rng.random(n) < 0.5, "vt", "gi"))
    plain = pd.DataFrame({"arm": arm, "age": x}, index=[f"p{i}" for i in range(n)])
    cat = plain.assign(arm=pd.Categorical(arm, categories=["gi", "pt", "reference", "vt"]))
    want = propensity_weights(plain, ["pt", "vt", "gi"], ["age"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = propensity_weights(cat, ["pt", "vt", "gi"], ["age"])
    pd.testing.assert_series_equal(got, want)
    assert want.nunique() > 10  # weights that depend on the covariate, not a constant
