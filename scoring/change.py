"""Reliable change (Jacobson & Truax 1991) and clinically significant change between two waves.

RC = (x2 - x1) / S_diff, S_diff = sqrt(2 * SE^2), SE = SD1 * sqrt(1 - r). |RC| > 1.96 is a reliable change
(two-sided p < .05). SD1 is the reference SD (the definition's `reliability.sd`) or else the sample SD of the
first-wave scores; the SD and reliability used are returned with every row.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cohortflow.instruments.model import Direction, Scale

from .engine import _compare

RC_CRITICAL = 1.96


def reliable_change(
    scores_t1: pd.Series,
    scores_t2: pd.Series,
    reliability: float,
    sd: float | None = None,
    direction: Direction = "higher_worse",
    cutoff: float | None = None,
    critical: float = RC_CRITICAL,
    cutoff_operator: str | None = None,
) -> pd.DataFrame:
    """Jacobson-Truax reliable change per person (rows aligned on the Series' index).

    In: first- and second-wave scores (Series with the same index, e.g. person_id), the reliability r
    (test-retest preferred, else alpha), the reference SD (default: sample SD of `scores_t1`, ddof=1),
    the scale's direction and optionally its clinical cut-off: `score <cutoff_operator> cutoff` is the
    clinical range (default operator `>=` when higher is worse, `<=` when higher is better).
    Out: frame with `score_t1, score_t2, change, se, s_diff, rc, reliability, sd, sd_source, category`
    (`improved`, `deteriorated`, `no_reliable_change`; for a neutral direction `increased`/`decreased`),
    and with a cut-off also `clinical_t1, clinical_t2, clinically_significant` (reliably improved and moved
    from the clinical to the non-clinical range: Jacobson-Truax 'recovered').
    """
    if not 0 < reliability < 1:
        raise ValueError(f"reliability must be between 0 and 1 (exclusive), got {reliability}")
    t1, t2 = scores_t1.align(scores_t2, join="outer")
    t1 = pd.to_numeric(t1, errors="coerce").astype(float)
    t2 = pd.to_numeric(t2, errors="coerce").astype(float)
    if sd is None:
        sd_used = float(t1.dropna().std(ddof=1))
        sd_source = "sample SD of first-wave scores"
        if not math.isfinite(sd_used) or sd_used <= 0:
            raise ValueError("cannot estimate the SD from fewer than 2 distinct first-wave scores; give sd=")
    else:
        if sd <= 0:
            raise ValueError(f"sd must be positive, got {sd}")
        sd_used, sd_source = float(sd), "reference SD (given)"
    se = sd_used * math.sqrt(1.0 - reliability)
    s_diff = math.sqrt(2.0 * se * se)
    change = t2 - t1
    rc = change / s_diff
    up = rc > critical
    down = rc < -critical
    known = rc.notna()
    if direction == "higher_worse":
        labels = ("deteriorated", "improved")
    elif direction == "higher_better":
        labels = ("improved", "deteriorated")
    else:
        labels = ("increased", "decreased")
    category = pd.Series(pd.NA, index=rc.index, dtype="string")
    category[known] = "no_reliable_change"
    category[up & known] = labels[0]
    category[down & known] = labels[1]
    out = pd.DataFrame(
        {
            "score_t1": t1,
            "score_t2": t2,
            "change": change,
            "se": se,
            "s_diff": s_diff,
            "rc": rc,
            "reliability": reliability,
            "sd": sd_used,
            "sd_source": sd_source,
            "category": category,
        }
    )
    if cutoff is not None:
        op = cutoff_operator or ("<=" if direction == "higher_better" else ">=")
        clin1, clin2 = (pd.Series(_compare(t.to_numpy(), op, cutoff), index=t.index) for t in (t1, t2))
        clin1 = clin1.astype("boolean").mask(t1.isna())
        clin2 = clin2.astype("boolean").mask(t2.isna())
        out["clinical_t1"] = clin1
        out["clinical_t2"] = clin2
        recovered = clin1 & ~clin2 & (category == "improved")
        out["clinically_significant"] = recovered.astype("boolean").mask(~known)
    return out


def reliable_change_for_scale(
    scale: Scale, scores_t1: pd.Series, scores_t2: pd.Series, sd: float | None = None
) -> pd.DataFrame:
    """Reliable change using the scale's declared reliability, reference SD, direction and first cut-off."""
    if scale.reliability is None:
        raise ValueError(f"scale {scale.code!r} declares no reliability; add one to its definition to compute reliable change")
    cut = scale.cutoffs[0] if scale.cutoffs else None
    return reliable_change(
        scores_t1,
        scores_t2,
        reliability=scale.reliability.value,
        sd=sd if sd is not None else scale.reliability.sd,
        direction=scale.direction,
        cutoff=cut.threshold if cut is not None else None,
        cutoff_operator=cut.operator if cut is not None else None,
    )


def rc_threshold(sd: float, reliability: float, critical: float = RC_CRITICAL) -> float:
    """The smallest reliable change in score points: critical x S_diff."""
    se = sd * math.sqrt(1.0 - reliability)
    return float(critical * np.sqrt(2.0 * se * se))


def reliable_change_between_waves(
    scores: pd.DataFrame,
    scale: Scale,
    wave_from: str,
    wave_to: str,
    person: str = "person_id",
    wave: str = "wave",
    sd: float | None = None,
) -> pd.DataFrame:
    """Reliable change per person between two waves from a long frame `person, wave, score` of one scale.

    Persons measured at only one of the waves get NA; a person with two scores at one wave is an error.
    The SD is the scale's reference SD if declared, else the sample SD at `wave_from` (stated in the output).
    """
    sub = scores[scores[wave].isin([wave_from, wave_to])]
    dup = sub.duplicated([person, wave], keep=False)
    if dup.any():
        ex = sub.loc[dup, [person, wave]].head(3).to_dict("records")
        raise ValueError(f"reliable change {scale.code!r}: more than one score per person and wave, e.g. {ex}")
    wide = sub.pivot(index=person, columns=wave, values="score")
    t1 = wide[wave_from] if wave_from in wide else pd.Series(np.nan, index=wide.index)
    t2 = wide[wave_to] if wave_to in wide else pd.Series(np.nan, index=wide.index)
    out = reliable_change_for_scale(scale, t1, t2, sd=sd)
    out.insert(0, "wave_to", wave_to)
    out.insert(0, "wave_from", wave_from)
    return out
