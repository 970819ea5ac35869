"""The Contract 5 long frame as linkage built it before issue #9 (merges of wide frames, one sort, a merge of
the household context): kept as the reference the look-up build in `warehouse.linkage` must equal.
Copied verbatim from warehouse/linkage.py at commit 005a505; do not optimise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cohortflow.instruments.model import Instrument
from cohortflow.warehouse.linkage import LONG_COLUMNS


def _as_category(col: pd.Series) -> pd.Series:
    """`col` as a categorical with lexically sorted categories, so sorting by it sorts by text (as for plain
    strings) while storing a small integer code per row."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        ordered = sorted(cats)
        return col if list(cats) == ordered else col.cat.reorder_categories(ordered)
    values = col.dropna().unique()
    return col.astype(pd.CategoricalDtype(pd.Index(sorted(values), dtype="str")))


# Contract 5 text columns stored as categoricals in the long frame: the same values as text, a code per row
# (at factor 100 the long frame has ~24 M rows; three 64-character pseudonyms as text alone would be ~5 GB).
CATEGORICAL_COLUMNS = ["household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "sex",
                       "outcome", "instrument", "scale"]


def _long_frame(inc: pd.DataFrame, scores: pd.DataFrame, instruments: dict[str, Instrument] | None,
                base: str) -> pd.DataFrame:
    """Contract 5 long frame from included responses and their scores (scored scales only; classification
    rows without a score are kept when they carry `above_cutoff`). Text columns are categoricals
    (`CATEGORICAL_COLUMNS`, categories in sorted order); rows sorted as documented."""
    s = scores[[c for c in ("response_id", "instrument", "scale", "score", "above_cutoff") if c in scores]]
    inst, scale = _as_category(s["instrument"]), _as_category(s["scale"])
    keep = s["response_id"].isin(inc["response_id"]).to_numpy().copy()
    if instruments is not None:
        keep &= inst.isin(list(instruments)).to_numpy()
    s = s.assign(instrument=inst, scale=scale)[keep]
    if "above_cutoff" not in s:
        s = s.assign(above_cutoff=pd.NA)
    # outcome = instrument.scale, built once per distinct pair
    n_scale = max(len(s["scale"].cat.categories), 1)
    pair = s["instrument"].cat.codes.to_numpy(np.int64) * n_scale + s["scale"].cat.codes.to_numpy(np.int64)
    codes, uniq = pd.factorize(pair)
    icat, scat = s["instrument"].cat.categories, s["scale"].cat.categories
    names = np.array([f"{icat[u // n_scale]}.{scat[u % n_scale]}" for u in uniq], dtype=object)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    outcome = pd.Categorical.from_codes(rank[codes] if len(codes) else codes,
                                        categories=pd.Index(names[order].tolist(), dtype="str"))
    s = s.assign(outcome=outcome)
    cols = ["response_id", "household_id", "subject_id", "person_id", "role", "arm", "site", "wave", "response_date",
            "days_since_t0", "months_since_t0", "age_years", "sex"]
    left = inc[cols].rename(columns={"person_id": "informant_id", "subject_id": "person_id"})
    left = left.assign(**{c: _as_category(left[c]) for c in
                          ("household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "sex")})
    m = left.merge(s, on="response_id")
    m["score"] = pd.to_numeric(m["score"], errors="coerce").astype("float64")
    m["above_cutoff"] = m["above_cutoff"].astype("boolean")
    key = ["person_id", "role", "outcome"]
    b = m[m["wave"] == base].groupby(key, sort=False, observed=True)["score"].first().rename("baseline_score")
    m = m.merge(b.reset_index(), on=key, how="left")
    m = m[LONG_COLUMNS + ["response_id", "instrument", "scale", "response_date"]]
    return m.sort_values(["household_id", "person_id", "role", "outcome", "days_since_t0", "response_id"],
                         ignore_index=True)


def _attach_household_context(long: pd.DataFrame, instruments: dict[str, Instrument] | None,
                               constructs: list[str]) -> pd.DataFrame:
    """Add `hh_<instrument>_<scale>` columns: per (household, wave) the highest score of that scale reported
    by any informant of the household (e.g. legal measures, help received), on every row of it."""
    if not instruments or not constructs or long.empty:
        return long
    codes = [c for c, i in instruments.items() if i.construct_code in constructs]
    ctx = long[long["instrument"].isin(codes)]
    if ctx.empty:
        return long
    t = ctx.groupby(["household_id", "wave", "outcome"], observed=True)["score"].max().unstack("outcome")
    t.columns = ["hh_" + str(c).replace(".", "_") for c in t.columns]
    return long.merge(t.reset_index(), on=["household_id", "wave"], how="left")
