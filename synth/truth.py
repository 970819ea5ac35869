"""The truth of a synthetic study, by Monte Carlo on a large separate population.

Scores are a nonlinear function of theta, so the true arm x wave mean of a scale is computed by drawing
`persons_per_arm` persons per arm from the same latent model (a separate RNG stream; no attrition, no item
non-response), sampling their items with the same graded-response model and scoring each scale with
`score_sum` (score map, reversal, aggregation of the definition). The same random draws are shared by all
arms and waves (common random numbers), so differences in change carry little Monte Carlo noise.
"""

from __future__ import annotations

import numpy as np

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .config import SynthModel
from .items import ItemScorer, instrument_direction, item_noise, item_params, sample_items, synth_scorable
from .latent import arm_wave_means


def compute_truth(
    study: Study, model: SynthModel, instruments: dict[str, Instrument], used: dict[str, list[str]],
    rng: np.random.Generator, persons_per_arm: int | None = None,
) -> dict:
    """Truth per outcome `<instrument>.<scale>`: means/sd/cut-off shares per arm x wave, differences in change.

    `used` maps instrument code -> arm codes whose respondents answer it.
    """
    n = persons_per_arm or model.truth.persons_per_arm
    v = model.variance
    waves = study.wave_codes
    offsets = {w.code: w.offset_days / 365.25 for w in study.waves}
    base_sd = float(np.hypot(v.household_sd, v.person_sd))
    constructs = sorted({instruments[c].construct_code for c in used})
    draws = {}
    for c in constructs:  # common random numbers per construct
        draws[c] = {
            "base": rng.normal(0, base_sd, n),
            "slope": rng.normal(0, v.slope_sd_per_year, n),
            "noise": {w: rng.normal(0, v.occasion_sd, n) for w in waves},
            "item_seed": int(rng.integers(0, 2**31)),
        }
    outcomes: dict[str, dict] = {}
    for code in sorted(used):
        inst = instruments[code]
        c = inst.construct_code
        d = draws[c]
        means = arm_wave_means(study, model, c)
        sign = 1.0 if instrument_direction(inst) != "higher_better" else -1.0
        params = item_params(inst, model.items)
        scales = [sc for sc in inst.scales if synth_scorable(inst, sc)]
        res = {f"{inst.code}.{sc.code}": {"instrument": inst.code, "scale": sc.code, "construct": c,
                                            "direction": sc.direction, "mean": {}, "sd": {}, "mc_se": {},
                                            "above_cutoff": {}} for sc in scales}
        noise: dict[str, np.ndarray] = {}  # common random numbers: the same item draws for every arm
        for arm in study.arms:
            if arm.code not in used[code]:
                continue
            for w in study.waves_of(arm.code):
                if w not in noise:
                    noise[w] = item_noise(np.random.default_rng([d["item_seed"], waves.index(w)]), n, len(params))
                problem = means.loc[arm.code, w] + d["base"] + d["slope"] * offsets[w] + d["noise"][w]
                codes = sample_items(sign * problem, params, None, noise[w])
                col_of = {p.key: j for j, p in enumerate(params)}
                scorer = ItemScorer(inst, lambda key, codes=codes, col_of=col_of: codes[:, col_of[key]])
                for sc in scales:
                    key = f"{inst.code}.{sc.code}"
                    s = scorer.score(sc)
                    r = res[key]
                    r["mean"].setdefault(arm.code, {})[w] = float(np.mean(s))
                    r["sd"].setdefault(arm.code, {})[w] = float(np.std(s, ddof=1))
                    r["mc_se"].setdefault(arm.code, {})[w] = float(np.std(s, ddof=1) / np.sqrt(n))
                    for cut in sc.cutoffs:
                        if cut.when.sex is not None or cut.when.min_age_years is not None \
                                or cut.when.max_age_years is not None:
                            continue
                        tkey = f">={cut.threshold:g}"
                        r["above_cutoff"].setdefault(tkey, {}).setdefault(arm.code, {})[w] = float(
                            np.mean(s >= cut.threshold))
        outcomes.update(res)
    for r in outcomes.values():
        r["difference_in_change"] = _differences(study, r["mean"], r["sd"])
    return {
        "method": ("Monte Carlo: persons_per_arm persons per arm from the generating model, common random "
                   "numbers across arms and waves, no attrition, no item non-response, items scored with "
                   "the definition's score map, reversal and aggregation"),
        "persons_per_arm": n,
        "baseline_wave": study.baseline_wave,
        "outcomes": outcomes,
        "latent": {c: arm_wave_means(study, model, c).round(6).to_dict(orient="index") for c in constructs},
        "variance": model.variance.model_dump(),
    }


def _differences(study: Study, mean: dict, sd: dict) -> dict:
    """Difference in change of each intervention arm vs each comparison arm per follow-up wave,
    raw and standardised by the pooled baseline SD of the two arms."""
    base = study.baseline_wave
    out: dict[str, dict] = {}
    for a in study.arms:
        if a.role != "intervention" or a.code not in mean:
            continue
        for b in study.arms:
            if b.role != "comparison" or b.code not in mean:
                continue
            rec = {}
            for w in study.waves_of(a.code):
                if w == base or w not in mean[b.code] or base not in mean[a.code] or base not in mean[b.code]:
                    continue
                diff = (mean[a.code][w] - mean[a.code][base]) - (mean[b.code][w] - mean[b.code][base])
                pooled = float(np.sqrt((sd[a.code][base] ** 2 + sd[b.code][base] ** 2) / 2))
                rec[w] = {"difference": diff, "standardised": diff / pooled if pooled > 0 else None,
                          "pooled_baseline_sd": pooled}
            out[f"{a.code}_vs_{b.code}"] = {"intervention": a.code, "comparison": b.code, "waves": rec}
    return out
