"""The model flow's worker scheduling (issue #9): outcomes are started longest first over forked workers, and
the results are the same, in plan order, as one after the other."""

from __future__ import annotations

import pandas as pd

from cohortflow.analysis.models import _longest_first, run_analysis
from cohortflow.analysis.plan import AnalysisPlan
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import load_study


def _plan(sensitivity: bool = True) -> AnalysisPlan:
    # plan order deliberately puts the cheap binary outcome first and the continuous one with IPW/MI last
    return AnalysisPlan.model_validate({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"random_effects": {"slope": None}},
        "outcomes": [{"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"},
                     {"name": "sim.total", "key": "sim.count", "family": "negative_binomial"},
                     {"name": "sim.total"}],
        "sensitivity": {"ipw": {"enabled": sensitivity},
                        "multiple_imputation": {"enabled": sensitivity, "imputations": 2, "iterations": 2}}})


def test_longest_first_puts_continuous_outcomes_with_sensitivity_analyses_first():
    rows = pd.DataFrame({"outcome": ["sim.total"] * 10})
    assert _longest_first(rows, _plan(), sensitivity=True) == [2, 1, 0]
    # without sensitivity analyses a continuous outcome weighs as a binary one: ties keep plan order
    assert _longest_first(rows, _plan(), sensitivity=False) == [1, 0, 2]
    assert _longest_first(rows, _plan(sensitivity=False), sensitivity=True) == [1, 0, 2]


def test_two_workers_give_the_results_of_one_in_plan_order():
    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], scale=0.3), seed=11)
    plan = _plan()
    runs = {}
    for workers in (1, 2):
        seen: list[str] = []
        runs[workers] = run_analysis(df, plan, load_study(), workers=workers, progress=seen.append)
        assert seen == ["sim.above", "sim.count", "sim.total"]
        assert list(runs[workers].job_seconds) == seen
        assert all(s > 0 for s in runs[workers].job_seconds.values())
    one, two = runs[1], runs[2]
    assert not one.failures and not two.failures
    pd.testing.assert_frame_equal(one.contrasts, two.contrasts, check_exact=True)
    pd.testing.assert_frame_equal(one.sensitivity, two.sensitivity, check_exact=True)
    assert not one.sensitivity.empty and {"ipw_estimate", "mi_estimate"} <= set(one.sensitivity.columns)
