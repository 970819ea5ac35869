"""SDQ scoring equals the published scoring algorithm (sdqinfo.org syntax) on a set of test vectors.

The reference below re-implements the published syntax independently, line by line, as a plain per-row
loop (as ported in R at github gbiele/masterfile scripts4tests/sdq.R and in sdqinfo's own R/SPSS code):

    qobeys <- abs(pobeys - 2)    (likewise reflect, attends, friend, popular)
    nemotion <- number of NA among the 5 items
    pemotion <- ifelse(nemotion < 3, rowMeans(items, na.rm = TRUE), NA)
    pemotion <- floor(0.5 + pemotion * 5)
    pebdtot <- pemotion + pconduct + phyper + ppeer      (NA when any is NA)

It does not call the engine. Test vectors: random answers with random missing items (0-5 per scale),
plus the edge patterns (all missing, exactly 2 and 3 answered, halves that round up).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import score_instrument

# sdqinfo item names in questionnaire order 1..25
SDQINFO_ITEMS = [
    "consid", "restles", "somatic", "shares", "tantrum", "loner", "obeys", "worries", "caring", "fidgety",
    "friend", "fights", "unhappy", "popular", "distrac", "clingy", "kind", "lies", "bullied", "helpout",
    "reflect", "steals", "oldbest", "afraid", "attends",
]
REFLECTED = {"obeys", "reflect", "attends", "friend", "popular"}
DIMS = {
    "emotional": ["somatic", "worries", "unhappy", "clingy", "afraid"],
    "conduct": ["tantrum", "obeys", "fights", "lies", "steals"],
    "hyperactivity": ["restles", "fidgety", "distrac", "reflect", "attends"],
    "peer": ["loner", "friend", "popular", "bullied", "oldbest"],
    "prosocial": ["consid", "shares", "caring", "kind", "helpout"],
}


def published_sdq(answers: dict[str, float | None]) -> dict[str, float | None]:
    """One respondent, following the sdqinfo syntax step by step (None = NA)."""
    recoded: dict[str, float | None] = {}
    for name, v in answers.items():
        if v is None:
            recoded[name] = None
        elif name in REFLECTED:
            recoded[name] = abs(v - 2)
        else:
            recoded[name] = v
    out: dict[str, float | None] = {}
    for dim, names in DIMS.items():
        n_missing = sum(1 for nm in names if recoded[nm] is None)
        if n_missing < 3:
            present = [recoded[nm] for nm in names if recoded[nm] is not None]
            mean = sum(present) / len(present)
            out[dim] = math.floor(0.5 + mean * 5)
        else:
            out[dim] = None
    parts = [out["emotional"], out["conduct"], out["hyperactivity"], out["peer"]]
    out["total"] = None if any(p is None for p in parts) else sum(parts)
    out["internalising"] = None if out["emotional"] is None or out["peer"] is None else out["emotional"] + out["peer"]
    out["externalising"] = (
        None if out["conduct"] is None or out["hyperactivity"] is None else out["conduct"] + out["hyperactivity"]
    )
    return out


def _vectors(n: int, seed: int) -> list[dict[str, float | None]]:
    rng = random.Random(seed)
    vecs: list[dict[str, float | None]] = []
    for _ in range(n):
        v: dict[str, float | None] = {nm: float(rng.randint(0, 2)) for nm in SDQINFO_ITEMS}
        for names in DIMS.values():
            for nm in rng.sample(names, rng.choice([0, 0, 0, 1, 1, 2, 2, 3, 4, 5])):
                v[nm] = None
        vecs.append(v)
    # edge patterns: 3 answered summing to 1 (1/3 x 5 = 1.67 -> 2); 4 answered summing to 1 (1.25 -> 1),
    # 2 (2.5 -> 3: half rounds up), 7 (8.75 -> 9); exactly 2 answered (NA); all missing
    def edge(vals: list[float | None]) -> dict[str, float | None]:
        d: dict[str, float | None] = {nm: 0.0 for nm in SDQINFO_ITEMS}
        for names in DIMS.values():
            for nm, x in zip(names, vals, strict=True):
                d[nm] = x
        return d
    vecs += [
        edge([1, 0, 0, None, None]), edge([1, 0, 0, 0, None]), edge([1, 1, 0, 0, None]), edge([2, 2, 2, 1, None]),
        edge([2, 2, None, None, None]), edge([None] * 5), edge([2, 2, 2, 2, 2]), edge([0, 0, 0, 0, 0]),
    ]
    return vecs


@pytest.mark.parametrize("inst_code", ["sdq_parent", "sdq_self"])
def test_sdq_equals_published_algorithm(inst_code: str):
    inst = load_instruments()[inst_code]
    vecs = _vectors(400, seed=20240820)
    rows = []
    for rid, v in enumerate(vecs):
        for k, nm in enumerate(SDQINFO_ITEMS, start=1):
            rows.append((rid, f"{k:02d}", np.nan if v[nm] is None else v[nm]))
    iv = pd.DataFrame(rows, columns=["response_id", "item", "value"])
    got = score_instrument(inst, iv).set_index(["response_id", "scale"])["score"]
    n_checked = 0
    n_missing = 0
    for rid, v in enumerate(vecs):
        ref = published_sdq(v)
        for scale, expected in ref.items():
            g = got.loc[(rid, scale)]
            if expected is None:
                assert np.isnan(g), (rid, scale, v)
                n_missing += 1
            else:
                assert g == expected, (rid, scale, g, expected, v)
            n_checked += 1
    assert n_checked == len(vecs) * 8
    assert 100 < n_missing < n_checked / 2  # the vectors exercise the missing rule, not only full data
