"""Simulated analysis datasets (Contract 5 long frame) from a known linear mixed model.

Used by the tests (R-parity dataset, small calibration) and by benchmarks/calibration.py. The truth is a
mean per arm x wave, a household and a person random intercept, an uncorrelated person slope on months since
T0, residual noise, and attrition (missing completely at random or depending on the previous score).
Arm and wave codes are arguments: nothing here names a study's arms or waves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class SimulationSpec:
    """The truth of a simulated study."""

    arms: list[str]
    households: dict[str, int]  # households per arm
    waves: list[str]
    months: list[float]  # planned months since T0 per wave
    means: dict[str, list[float]]  # true mean per arm, per wave
    persons_per_household: tuple[float, float] = (1.0, 0.6)  # 1 + Poisson(lambda) capped at 3, ~(mean, lambda)
    sd_household: float = 3.0
    sd_person: float = 4.0
    sd_slope: float = 0.15  # per month
    sd_residual: float = 5.0
    age_effect: float = 0.2
    male_effect: float = -1.0
    dropout: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.15])  # P(drop at wave | present before)
    informative_dropout: float = 0.0  # logit slope of dropout on the previous score (standardised)
    cutoff: float | None = None
    outcome: str = "sim.total"
    role: str = "child"

    def true_diff_in_change(self, arm: str, other: str, wave_index: int) -> float:
        a, b = self.means[arm], self.means[other]
        return (a[wave_index] - a[0]) - (b[wave_index] - b[0])


def simulate_study(spec: SimulationSpec, seed: int = 1) -> pd.DataFrame:
    """Draw one study: a long frame with the columns of Contract 5 (one outcome)."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm in spec.arms:
        mu = np.asarray(spec.means[arm], float)
        for h in range(spec.households[arm]):
            hid = f"{arm}-h{h:04d}"
            u_h = rng.normal(0, spec.sd_household)
            n_p = 1 + min(2, rng.poisson(spec.persons_per_household[1]))
            for p in range(n_p):
                pid = f"{hid}-p{p}"
                u_p = rng.normal(0, spec.sd_person)
                s_p = rng.normal(0, spec.sd_slope)
                age = float(rng.uniform(8, 18))
                sex = "male" if rng.random() < 0.5 else "female"
                present = True
                prev = None
                for w, wave in enumerate(spec.waves):
                    if w > 0:
                        logit_p = np.log(spec.dropout[w] / (1 - spec.dropout[w])) if 0 < spec.dropout[w] < 1 else None
                        if logit_p is None:
                            p_drop = spec.dropout[w]
                        else:
                            z = 0.0 if prev is None else (prev - mu[0]) / 8.0
                            p_drop = 1 / (1 + np.exp(-(logit_p + spec.informative_dropout * z)))
                        if not present or rng.random() < p_drop:
                            present = False
                            continue
                    month = spec.months[w] + rng.uniform(-1.0, 1.0) * (0.5 if w == 0 else 1.5)
                    month = max(month, 0.0)
                    y = (mu[w] + u_h + u_p + s_p * month + spec.age_effect * (age - 12)
                         + (spec.male_effect if sex == "male" else 0.0) + rng.normal(0, spec.sd_residual))
                    prev = y
                    rows.append({
                        "household_id": hid, "person_id": pid, "informant_id": pid, "role": spec.role, "arm": arm,
                        "site": f"{arm}-s{h % 3}", "wave": wave, "days_since_t0": round(month * 30.4375),
                        "months_since_t0": month, "age_years": age, "sex": sex, "outcome": spec.outcome,
                        "score": y,
                    })
    df = pd.DataFrame(rows)
    if spec.cutoff is not None:
        df["above_cutoff"] = (df["score"] >= spec.cutoff).astype(float)
    else:
        df["above_cutoff"] = np.nan
    base = df[df["wave"] == spec.waves[0]].set_index("person_id")["score"]
    df["baseline_score"] = df["person_id"].map(base)
    return df


def default_spec(arms: list[str], waves: list[str], effect: float = -3.0, scale: float = 1.0) -> SimulationSpec:
    """Three-arm, three-wave truth: arms improve over time; the first arm gains `effect` more by the last wave."""
    base = 30.0
    means = {}
    for i, a in enumerate(arms):
        drift = [0.0, -2.0, -3.0][: len(waves)]
        extra = effect if i == 0 else 0.0
        means[a] = [base + i * 0.5 + d + extra * (w / (len(waves) - 1)) for w, d in enumerate(drift)]
    sizes = {a: max(5, int(round(n * scale))) for a, n in zip(arms, [70, 80, 60], strict=False)}
    return SimulationSpec(arms=arms, households=sizes, waves=waves, months=[1.0, 13.0, 19.0][: len(waves)],
                          means=means, cutoff=35.0)
