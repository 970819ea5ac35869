"""The look-up build of the Contract 5 long frame (issue #9) gives exactly the frame, dtypes, row order and
snapshot hash of the merge-and-sort build it replaced (kept in tests/linkage_reference.py), on random
responses and scores with every awkward case: scores of excluded responses and undefined instruments, two
versions of one scale, missing scores and cut-offs, missing days since T0, subjects without a baseline,
responses without scores, household-context constructs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from linkage_reference import _attach_household_context as ref_context
from linkage_reference import _long_frame as ref_long

from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.linkage import LinkageRules, _attach_household_context, _long_frame
from cohortflow.warehouse.snapshot import snapshot_hash

INSTRUMENTS = load_instruments()
CONSTRUCTS = LinkageRules().household_constructs


def _inputs(seed: int, n_resp: int = 600) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Included responses (`LinkedData.responses` columns linkage uses) and warehouse-shaped scores."""
    rng = np.random.default_rng(seed)
    waves = ["T0", "T1", "T2"]
    n_hh = n_resp // 6
    hh = rng.integers(0, n_hh, n_resp)
    subject = hh * 3 + rng.integers(0, 3, n_resp)
    informant = hh * 3 + rng.integers(0, 2, n_resp)
    days = pd.array(rng.integers(-5, 400, n_resp), dtype="Int64")
    days[rng.random(n_resp) < 0.05] = pd.NA
    date = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n_resp), unit="D")
    inc = pd.DataFrame({
        "response_id": rng.permutation(np.arange(10, 10 + 2 * n_resp))[:n_resp].astype(np.int64),
        "household_id": [f"h{h:05d}" for h in hh],
        "subject_id": [f"p{p:06d}" for p in subject],
        "person_id": [f"p{p:06d}" for p in informant],
        "role": rng.choice(["child", "parent"], n_resp),
        "arm": np.where(hh % 2 == 0, "vt", "gi"),
        "site": np.where(hh % 3 == 0, "s1", "s2"),
        "wave": rng.choice(waves, n_resp, p=[0.45, 0.3, 0.25]),
        "response_date": date,
        "days_since_t0": days,
        "months_since_t0": days.astype("Float64") / (365.25 / 12),
        "age_years": pd.array(rng.uniform(3, 17, n_resp), dtype="Float64"),
        "sex": rng.choice(np.array(["F", "M", None], dtype=object), n_resp, p=[0.48, 0.48, 0.04]),
    })
    # scores: defined instruments (two with household-context constructs) plus one undefined instrument,
    # for included responses and for some that are not (excluded by linkage)
    ctx = [c for c, i in INSTRUMENTS.items() if i.construct_code in CONSTRUCTS][:2]
    other = [c for c in INSTRUMENTS if c not in ctx][:3]
    assert len(ctx) == 2 and len(other) == 3
    parts = []
    ids = np.r_[inc["response_id"].to_numpy()[rng.random(n_resp) < 0.9], np.arange(5000, 5040)]
    for code in [*ctx, *other, "not_defined"]:
        scales = [s.code for s in INSTRUMENTS[code].scales][:3] if code in INSTRUMENTS else ["total"]
        for sc in scales:
            who = ids[rng.random(len(ids)) < 0.6]
            score = np.round(rng.normal(10, 4, len(who)), 1)
            score[rng.random(len(who)) < 0.08] = np.nan
            above = pd.array(rng.random(len(who)) < 0.3, dtype="boolean")
            above[rng.random(len(who)) < 0.2] = pd.NA
            parts.append(pd.DataFrame({"response_id": who, "instrument": code, "instrument_version": "1",
                                       "scale": sc, "score": score, "above_cutoff": above}))
    scores = pd.concat(parts, ignore_index=True)
    # a second version of some scores of one scale (both stored: ties in every sort key but the merge order)
    again = scores[scores["instrument"] == other[0]].sample(frac=0.3, random_state=seed)
    scores = pd.concat([scores, again.assign(instrument_version="2", score=again["score"] + 1)], ignore_index=True)
    scores = scores.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    cats = {c: "category" for c in ("instrument", "scale")}
    return inc, scores.astype(cats).drop(columns=["instrument_version"]), "T0"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lookup_long_frame_equals_merge_build(seed):
    inc, scores, base = _inputs(seed)
    expected = ref_context(ref_long(inc, scores, INSTRUMENTS, base), INSTRUMENTS, CONSTRUCTS)
    got = _attach_household_context(_long_frame(inc, scores, INSTRUMENTS, base), INSTRUMENTS, CONSTRUCTS)
    assert len(expected) > 1000 and expected["baseline_score"].notna().any() and expected["baseline_score"].isna().any()
    assert [c for c in expected.columns if c.startswith("hh_")], "the inputs must exercise the household context"
    assert expected["days_since_t0"].isna().any() and expected["score"].isna().any()
    pd.testing.assert_frame_equal(got, expected)
    assert snapshot_hash(got) == snapshot_hash(expected)


def test_lookup_long_frame_without_instruments_or_rows():
    inc, scores, base = _inputs(4, n_resp=120)
    pd.testing.assert_frame_equal(_long_frame(inc, scores, None, base), ref_long(inc, scores, None, base))
    none = scores.iloc[:0]
    pd.testing.assert_frame_equal(_long_frame(inc, none, INSTRUMENTS, base), ref_long(inc, none, INSTRUMENTS, base))
    # no baseline wave among the responses
    later = inc[inc["wave"] != base]
    pd.testing.assert_frame_equal(_long_frame(later, scores, INSTRUMENTS, base),
                                  ref_long(later, scores, INSTRUMENTS, base))


def test_parquet_written_in_row_groups_reads_back_as_to_parquet(tmp_path):
    from cohortflow.warehouse.linkage import write_long_parquet

    inc, scores, base = _inputs(5, n_resp=300)
    long = _attach_household_context(_long_frame(inc, scores, INSTRUMENTS, base), INSTRUMENTS, CONSTRUCTS)
    long.to_parquet(tmp_path / "whole.parquet", index=False)
    write_long_parquet(long, tmp_path / "groups.parquet", rows_per_group=400)
    whole, groups = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "groups.parquet")
    assert len(long) > 1200  # several row groups
    pd.testing.assert_frame_equal(groups, whole)
    pd.testing.assert_frame_equal(groups, long)
    import pyarrow.parquet as pq

    assert pq.read_schema(tmp_path / "groups.parquet").equals(pq.read_schema(tmp_path / "whole.parquet"),
                                                                 check_metadata=True)


def test_sparse_response_ids_take_the_sorted_search():
    """Response ids far apart (no dense id table) give the same frame through the sorted search."""
    inc, scores, base = _inputs(6, n_resp=200)
    inc = inc.assign(response_id=inc["response_id"] * 10**9)
    scores = scores.assign(response_id=scores["response_id"] * 10**9)
    pd.testing.assert_frame_equal(_long_frame(inc, scores, INSTRUMENTS, base), ref_long(inc, scores, INSTRUMENTS, base))
