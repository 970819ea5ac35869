"""Latent person trajectories per construct (the TRUE model) and the item-level response process."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cohortflow.config.study import Study

from .config import SynthModel
from .population import DAYS_PER_YEAR, Population


def arm_wave_means(study: Study, model: SynthModel, construct: str) -> pd.DataFrame:
    """True latent problem mean (+ = worse) per arm (rows) and wave (columns); NaN where not measured."""
    out = pd.DataFrame(index=study.arm_codes, columns=study.wave_codes, dtype=float)
    for arm in study.arms:
        base = model.baseline(construct, arm)
        for w in study.waves_of(arm.code):
            out.loc[arm.code, w] = base - model.improvement(construct, arm, w)
    return out


def draw_problem(
    study: Study, model: SynthModel, pop: Population, construct: str, rng: np.random.Generator
) -> pd.DataFrame:
    """Latent problem level per person (rows) and wave (columns) for `construct`:

    arm x wave mean + household effect + person intercept + person slope x years since registration
    + occasion noise. NaN where the person's arm is not measured at the wave.
    """
    v = model.variance
    means = arm_wave_means(study, model, construct)
    persons = pop.persons
    hh_effect = rng.normal(0.0, v.household_sd, len(pop.households))
    person = rng.normal(0.0, v.person_sd, len(persons))
    slope = rng.normal(0.0, v.slope_sd_per_year, len(persons))
    reg = pop.households["registration"].to_numpy()[persons["hh_idx"].to_numpy()]
    base = hh_effect[persons["hh_idx"].to_numpy()] + person
    out = {}
    for w in study.wave_codes:
        years = (pop.wave_dates[w].to_numpy() - reg) / np.timedelta64(1, "D") / DAYS_PER_YEAR
        mu = means[w].reindex(persons["arm"]).to_numpy(dtype=float)
        noise = rng.normal(0.0, v.occasion_sd, len(persons))
        out[w] = mu + base + slope * np.nan_to_num(years) + noise
        out[w][np.isnan(years)] = np.nan
    return pd.DataFrame(out, index=persons.index)
