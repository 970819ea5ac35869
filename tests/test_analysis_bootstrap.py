"""Household-bootstrap CIs of the plan (sensitivity.bootstrap) and outcomes fitted side by side (workers).

References: a simulated study with known truth (analysis.simulate), and for one resample the same model
refitted on explicitly duplicated households (ids relabelled per draw) with the main analysis's own code, so
the block-weight refit and the baseline SDs behind d are checked against an independent computation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cohortflow.analysis.models import BOOTSTRAP_COLUMNS, bootstrap_outcome, fit_outcome_model, run_analysis
from cohortflow.analysis.plan import AnalysisPlan, load_analysis_plan
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import load_study

STUDY = load_study()
ARMS = ["proeftuin", "vt", "gi"]
RESAMPLES = 300


def _plan(boot: dict | None = None, **over) -> AnalysisPlan:
    base = {
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"fixed_effects": {"covariates": ["age_years", "sex"]},
                     "random_effects": {"household": True, "person": True, "slope": "months_since_t0"}},
        "outcomes": [{"name": "sim.total", "primary": True},
                     {"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"}],
        "sensitivity": {"ipw": {"enabled": False}, "multiple_imputation": {"enabled": False},
                        "bootstrap": {"enabled": True, "resamples": RESAMPLES, "seed": 7, **(boot or {})}},
    }
    base.update(over)
    return AnalysisPlan.model_validate(base)


@pytest.fixture(scope="module")
def sim():
    spec = default_spec(ARMS, STUDY.wave_codes, effect=-3.0, scale=1.0)
    return simulate_study(spec, seed=12), spec


@pytest.fixture(scope="module")
def main_fit(sim):
    df, _ = sim
    plan = _plan()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_outcome_model(df, plan.outcomes[0], plan, STUDY)


@pytest.fixture(scope="module")
def boot(sim, main_fit):
    df, _ = sim
    return bootstrap_outcome(df, _plan().outcomes[0], _plan(), STUDY, main_fit)


def test_full_data_statistics_equal_the_main_analysis(main_fit, boot):
    main = main_fit.contrasts.set_index("contrast")
    b = boot.set_index("contrast")
    assert len(b) == 4 and set(main.loc[b.index, "kind"]) == {"diff_in_change"}
    np.testing.assert_allclose(b["estimate"], main.loc[b.index, "estimate"], rtol=1e-8)
    np.testing.assert_allclose(b["d"], main.loc[b.index, "d"], rtol=1e-8)
    assert (b["boot_resamples"] + b["boot_failed"] == RESAMPLES).all() and (b["boot_failed"] <= 3).all()


def test_bootstrap_ci_covers_the_truth_and_matches_the_model_ci(sim, main_fit, boot):
    """Known truth -1.5 (T1) and -3 (T2). Each 95% CI misses the truth in 1 of 20 draws; in this draw
    (seed 12) the model CIs cover all four (seed 11's miss one, by chance) and so must the bootstrap CIs,
    which must also cover exactly where the model CIs do. A correct model and a correct
    bootstrap give the same CI width up to Monte-Carlo error (300 resamples: the SD of a percentile-interval
    width is about 6%), so the tolerance is 25%; centres within a quarter of the model CI's half-width."""
    df, spec = sim
    main = main_fit.contrasts.set_index("contrast")
    covered = []
    for _, r in boot.iterrows():
        m = main.loc[r["contrast"]]
        wave_index = STUDY.wave_codes.index(m["wave"])
        truth = spec.true_diff_in_change(m["arm"], m["arm2"], wave_index)
        boot_covers = r["boot_lower"] < truth < r["boot_upper"]
        assert boot_covers == (m["lower"] < truth < m["upper"]), r["contrast"]
        covered.append(boot_covers)
        ratio = (r["boot_upper"] - r["boot_lower"]) / (m["upper"] - m["lower"])
        assert 0.75 < ratio < 1.25, (r["contrast"], ratio)
        assert abs(r["boot_se"] / m["se"] - 1) < 0.25
        half = (m["upper"] - m["lower"]) / 2
        assert abs((r["boot_upper"] + r["boot_lower"]) / 2 - m["estimate"]) < 0.25 * half
        d_ratio = (r["boot_d_upper"] - r["boot_d_lower"]) / (m["d_upper"] - m["d_lower"])
        assert 0.75 < d_ratio < 1.3, (r["contrast"], d_ratio)
        assert r["boot_d_lower"] < r["d"] < r["boot_d_upper"]
    assert all(covered)


def test_one_resample_equals_a_refit_on_duplicated_households(sim, main_fit):
    """Block weights == the households really duplicated (relabelled): same difference in change and d."""
    df, _ = sim
    plan = _plan(boot={"resamples": 200})
    b = bootstrap_outcome(df, plan.outcomes[0], plan, STUDY, main_fit, resamples=1, seed=123)
    # the same draw, made by hand: households in order of first appearance in the model's rows
    rows = df.sort_values(["household_id", "person_id"], kind="stable")
    codes, uniq = pd.factorize(rows["household_id"], sort=False)
    draws = np.random.default_rng(123).integers(0, len(uniq), len(uniq))
    parts = []
    for k, h in enumerate(draws):
        part = df[df["household_id"] == uniq[h]].copy()
        part["household_id"] = part["household_id"] + f"#{k}"
        part["person_id"] = part["person_id"] + f"#{k}"
        parts.append(part)
    dup = pd.concat(parts, ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fit_outcome_model(dup, plan.outcomes[0], plan, STUDY)
    if ref.fallback != main_fit.fallback:
        pytest.skip("the resample's own fit took another fallback step (not a like-for-like refit)")
    refc = ref.contrasts.set_index("contrast")
    names = b["contrast"].tolist()
    got_e = b["boot_lower"].to_numpy()  # with one resample, every quantile is the replicate itself
    got_d = b["boot_d_lower"].to_numpy()
    np.testing.assert_allclose(got_e, refc.loc[names, "estimate"].to_numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got_d, refc.loc[names, "d"].to_numpy(), rtol=2e-5, atol=1e-7)


def test_run_analysis_adds_bootstrap_columns_and_method_text(sim):
    df, _ = sim
    plan = _plan(boot={"resamples": 200})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_analysis(df, plan, STUDY)
    assert res.failures == {}
    r = res.outcomes["sim.total"]
    assert r.bootstrap is not None and len(r.bootstrap) == 4
    dic = r.contrasts[r.contrasts["kind"] == "diff_in_change"]
    assert set(BOOTSTRAP_COLUMNS) <= set(r.contrasts.columns)
    assert dic[BOOTSTRAP_COLUMNS].notna().all().all()
    assert r.contrasts.loc[r.contrasts["kind"] != "diff_in_change", "boot_lower"].isna().all()
    assert (dic["boot_lower"] < dic["estimate"]).all() and (dic["estimate"] < dic["boot_upper"]).all()
    assert "boot_lower" not in res.outcomes["sim.above"].contrasts.columns  # binary outcome: not bootstrapped
    assert "200 resamples" in res.methods["sim.total:bootstrap"] and "percentile" in res.methods["sim.total:bootstrap"]
    assert "bootstrap" in r.method.lower()
    # the effect table carries the bootstrap limits (same numbers) and shows them beside the model CI
    from cohortflow.analysis import tables as T
    from cohortflow.analysis.labels import text
    rows = T.effect_rows(res, plan, STUDY).set_index("outcome")
    for comp in plan.comparison_arms:
        for w in rows.loc[["sim.total"], "wave"]:
            c = dic[(dic["arm2"] == comp) & (dic["wave"] == w)].iloc[0]
            row = rows[(rows.index == "sim.total") & (rows["wave"] == w)].iloc[0]
            for src, dst in [("boot_lower", "diff_boot_lower"), ("boot_upper", "diff_boot_upper"),
                             ("boot_d_lower", "d_boot_lower"), ("boot_d_upper", "d_boot_upper")]:
                assert row[T.col(dst, "proeftuin", comp)] == pytest.approx(c[src], rel=1e-12)
        assert rows.loc["sim.above", T.col("diff_boot_lower", "proeftuin", comp)].isna().all()
    shown = T.suppress_small_cells(T.effect_rows(res, plan, STUDY), plan)
    for lang in ("nl", "en"):
        disp = T.display_table(shown, plan, STUDY, {}, lang)
        prefix = text(lang, "boot_ci", ci="").split(":")[0]
        cells = disp.loc[disp["outcome_key"] == "sim.total"].astype(str).to_numpy().ravel()
        assert sum(prefix in v for v in cells) == 2 * 2 * len(plan.comparison_arms)  # diff and d, 2 follow-ups
        cells_bin = disp.loc[disp["outcome_key"] == "sim.above"].astype(str).to_numpy().ravel()
        assert not any(prefix in v for v in cells_bin)
    # off by default: no bootstrap, same contrasts
    off = run_analysis(df, _plan(boot={"enabled": False}), STUDY)
    assert off.outcomes["sim.total"].bootstrap is None
    np.testing.assert_allclose(off.outcomes["sim.total"].contrasts["estimate"], r.contrasts["estimate"], rtol=1e-10)


def test_two_workers_give_the_same_results_as_one(sim):
    df, _ = sim
    plan = _plan(boot={"enabled": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = run_analysis(df, plan, STUDY, workers=1)
        two = run_analysis(df, plan, STUDY, workers=2)
    assert list(one.outcomes) == list(two.outcomes) == ["sim.total", "sim.above"]
    pd.testing.assert_frame_equal(one.contrasts, two.contrasts)
    assert one.methods == two.methods and one.failures == two.failures


@pytest.mark.parametrize(("boot", "message"), [
    ({"resamples": 50}, "resamples"),
    ({"workers": 0}, "workers"),
    ({"outcomes": ["nope.total"]}, "unknown outcomes ['nope.total']"),
    ({"outcomes": ["sim.above"]}, "not gaussian"),
    ({"method": "bca"}, "percentile"),
    ({"resampels": 100}, "resampels"),
])
def test_plan_rejects_bad_bootstrap_settings(boot, message):
    with pytest.raises(ValidationError) as err:
        _plan(boot=boot)
    assert message in str(err.value)
    assert "bootstrap" in str(err.value)


def test_shipped_plan_offers_the_bootstrap_off_by_default():
    plan = load_analysis_plan()
    b = plan.sensitivity.bootstrap
    assert b.enabled is False and b.resamples == 1000 and b.outcomes is None
    assert plan.bootstrap_outcomes() == []
    on = plan.model_copy(update={"sensitivity": plan.sensitivity.model_copy(
        update={"bootstrap": b.model_copy(update={"enabled": True})})})
    assert on.bootstrap_outcomes() == [o.id for o in plan.outcomes if o.primary and o.family == "gaussian"]
