"""Simulated longitudinal studies with known truth, for checking and benchmarking the mixed-model engines.

Not the study generator (that is ``synth``): a small, fast generator of the model's own structure, persons
nested in households, arms per household, waves with attrition, so estimates can be compared between fast
engine, statsmodels and lme4 at any size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulate_growth(
    n_subjects: int,
    n_waves: int = 3,
    seed: int = 1,
    slope_sd: float = 0.5,
    missing: float = 0.0,
) -> pd.DataFrame:
    """``y ~ time * group + (1 + time | subject)`` data: columns ``subject, group, time, y``.

    In: number of subjects, waves (time 0..n_waves-1), seed, SD of the random slopes (0 gives the boundary
    case), share of observations missing completely at random. Out: long frame, one row per observation.
    Truth: intercept 10, time -0.5, group 1.0, time:group -0.4; intercept SD 2, slope SD ``slope_sd``,
    intercept-slope correlation -0.3 (when slope_sd > 0), residual SD 1.5.
    """
    rng = np.random.default_rng(seed)
    sub = np.repeat(np.arange(n_subjects), n_waves)
    time = np.tile(np.arange(n_waves, dtype=float), n_subjects)
    group = np.repeat(rng.integers(0, 2, n_subjects), n_waves)
    cov = np.array([[4.0, -0.3 * 2 * slope_sd], [-0.3 * 2 * slope_sd, slope_sd**2]])
    b = rng.multivariate_normal([0.0, 0.0], cov, size=n_subjects, method="eigh")
    y = 10 - 0.5 * time + 1.0 * group - 0.4 * time * group + b[sub, 0] + b[sub, 1] * time
    y = y + rng.normal(0, 1.5, len(y))
    df = pd.DataFrame({"subject": sub, "group": group, "time": time, "y": y})
    if missing > 0:
        df = df[rng.random(len(df)) >= missing].reset_index(drop=True)
    return df


def simulate_study(
    factor: float = 1.0,
    seed: int = 1,
    person_slope_sd: float = 0.4,
    continuous_time: bool = False,
    n_outcomes: int = 1,
) -> pd.DataFrame:
    """Households with 1-4 persons, three arms, three waves with attrition, one or more outcomes.

    In: size factor (factor 1 is 1,700 households, about 3,000 persons), seed, SD of the person slopes,
    whether time is each person's own (jittered) time since T0 in years or the wave's planned time, number of
    outcomes. Out: long frame ``household_id, person_id, arm, wave, time, y1..yK`` (arm codes ``a0, a1, a2``).
    """
    rng = np.random.default_rng(seed)
    n_hh = int(round(1700 * factor))
    arm = rng.choice(np.array(["a0", "a1", "a2"]), size=n_hh, p=[200 / 1700, 200 / 1700, 1300 / 1700])
    size = rng.choice([1, 2, 3, 4], size=n_hh, p=[0.35, 0.35, 0.2, 0.1])
    hh = np.repeat(np.arange(n_hh), size)
    n_p = len(hh)
    person = np.arange(n_p)
    wave_time = np.array([0.0, 1.0, 1.5])
    rows_p = np.repeat(person, 3)
    wave = np.tile(np.arange(3), n_p)
    t = wave_time[wave]
    if continuous_time:
        t = t + rng.uniform(-0.1, 0.25, len(t))
    # attrition: a person present at wave w stays with probability 0.75; some miss T1 only
    stay1 = rng.random(n_p) < 0.75
    stay2 = stay1 & (rng.random(n_p) < 0.8) | (~stay1 & (rng.random(n_p) < 0.15))
    present = np.column_stack([np.ones(n_p, bool), stay1, stay2]).ravel()
    arm_eff = {"a0": 0.0, "a1": 0.3, "a2": 0.5}
    slope_eff = {"a0": -1.0, "a1": -0.5, "a2": -0.4}
    arm_r = arm[hh][rows_p]
    df = pd.DataFrame(
        {
            "household_id": [f"H{h:06d}" for h in hh[rows_p]],
            "person_id": [f"P{p:07d}" for p in rows_p],
            "arm": arm_r,
            "wave": np.array(["W0", "W1", "W2"])[wave],
            "time": t,
        }
    )
    for k in range(n_outcomes):
        u_h = rng.normal(0, 1.0, n_hh)
        cov = np.array([[2.0, -0.2 * np.sqrt(2.0) * person_slope_sd], [-0.2 * np.sqrt(2.0) * person_slope_sd, person_slope_sd**2]])
        b = rng.multivariate_normal([0, 0], cov, size=n_p, method="eigh")
        mu = 20 + np.vectorize(arm_eff.get)(arm_r) + np.vectorize(slope_eff.get)(arm_r) * t
        y = mu + u_h[hh][rows_p] + b[rows_p, 0] + b[rows_p, 1] * t + rng.normal(0, 1.2, len(t))
        df[f"y{k + 1}"] = y
    return df[present].reset_index(drop=True)
