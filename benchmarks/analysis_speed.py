"""Time per mixed-model fit (statsmodels engine vs lme4's profiled criterion) and per outcome.

Usage: .venv/bin/python benchmarks/analysis_speed.py [--scale 1 8] [--imputations 20]
Scale 1 = 210 households (~330 persons, ~790 rows); scale 8 ~ the study's full size (1,680 households).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from cohortflow.analysis.design import build_design
from cohortflow.analysis.lmm import fit_lmm
from cohortflow.analysis.models import build_random_structure, fit_outcome_model
from cohortflow.analysis.plan import AnalysisPlan, RandomEffects
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import load_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, nargs="+", default=[1.0, 8.0])
    ap.add_argument("--outcome", action="store_true", help="also time fit_outcome_model (main + growth model)")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    study = load_study()
    arms, waves = ["proeftuin", "vt", "gi"], study.wave_codes
    for scale in a.scale:
        df = simulate_study(default_spec(arms, waves, scale=scale), seed=1)
        df = df.sort_values(["household_id", "person_id", "months_since_t0"]).reset_index(drop=True)
        X, info = build_design(df, arms, waves, ["age_years", "sex"])
        s, _ = build_random_structure(df, RandomEffects(slope="months_since_t0"), set())
        y = df["score"].to_numpy(float)
        out = {}
        for engine in ["profiled", "statsmodels"]:
            t0 = time.perf_counter()
            fit = fit_lmm(y, X, s, fe_names=info.columns, engine=engine)
            out[engine] = (time.perf_counter() - t0, fit)
        d = np.max(np.abs(out["profiled"][1].params - out["statsmodels"][1].params))
        print(f"scale {scale}: {df.household_id.nunique()} households, {df.person_id.nunique()} persons, {len(df)} rows; "
              f"profiled {out['profiled'][0]:.2f} s, statsmodels+refine {out['statsmodels'][0]:.2f} s, "
              f"max |beta difference| {d:.2g}, loglik difference {out['profiled'][1].loglik - out['statsmodels'][1].loglik:.2g}")
        if a.outcome:
            for engine in ["profiled", "statsmodels"]:
                plan = AnalysisPlan.model_validate({"intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
                                                    "defaults": {"random_effects": {"slope": "months_since_t0"},
                                                                 "fixed_effects": {"covariates": ["age_years", "sex"]},
                                                                 "engine": engine},
                                                    "outcomes": [{"name": "sim.total"}]})
                t0 = time.perf_counter()
                fit_outcome_model(df, plan.outcomes[0], plan, study)
                print(f"  fit_outcome_model ({engine}): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
