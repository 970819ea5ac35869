"""The scoring engine: item values -> scale scores, cut-offs, bands and classifications (Contract 4).

Everything is driven by the instrument definition (`instruments/definitions/*.yaml`); no instrument, scale
or item is named here. Scoring is vectorised over all responses of an instrument: the long item values are
put into a response x item matrix (numpy), score maps and reversal are array operations, and every scale
is a handful of reductions over columns of that matrix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohortflow.instruments.model import Condition, Cutoff, Instrument, Scale

SCORE_COLUMNS = [
    "response_id",
    "instrument",
    "instrument_version",
    "scale",
    "score",
    "n_items",
    "n_answered",
    "prorated",
    "above_cutoff",
    "band",
]


class ScoringError(ValueError):
    """Item values cannot be scored: the message names the instrument, item, value and what to do."""


def definition_fingerprint(instrument: Instrument) -> str:
    """SHA-256 (hex) of the whole definition as canonical JSON: changes whenever any scored fact changes."""
    payload = instrument.model_dump(mode="json", by_alias=True)
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_values_fingerprint(item_values) -> str:  # noqa: ANN001 - a long frame or wide instrument blocks
    """SHA-256 (hex) of the item values whatever their row order.

    In: a long frame `response_id, [instrument,] item, value`, or wide blocks per instrument (objects with
    `instrument, response_ids, item_codes, values`, e.g. `warehouse.read.item_matrices`). The wide form is
    hashed per instrument (by code) with columns in item-code order and rows by response id, NaN and -0.0
    canonical, so it changes whenever a value, response or item changes and not with storage order or
    layout. (The two forms give different hashes for the same data.) With `definition_fingerprint` it tells
    the warehouse when stored scores are stale: recompute when either changes.
    """
    if not isinstance(item_values, pd.DataFrame):
        return _wide_fingerprint(item_values)
    cols = [c for c in ("response_id", "instrument", "item", "value") if c in item_values.columns]
    frame = item_values[cols]
    # Row hashes do not depend on the row's position: hash in chunks (no sorted copy of a 90 M-row frame),
    # then take them in the order of the sort keys (categoricals with sorted categories sort by their codes).
    step = 5_000_000
    row_hashes = np.concatenate([pd.util.hash_pandas_object(frame.iloc[lo:lo + step], index=False).to_numpy()
                                 for lo in range(0, len(frame), step)] or [np.array([], dtype=np.uint64)])
    keys = []
    for c in cols[:-1]:
        col = frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype) and list(col.cat.categories) == sorted(col.cat.categories):
            keys.append(np.asarray(col.cat.codes))
        else:
            keys.append(pd.factorize(col, sort=True)[0])
    order = np.lexsort(keys[::-1]) if keys else np.arange(len(frame))
    return hashlib.sha256(row_hashes[order].tobytes()).hexdigest()


def _wide_fingerprint(blocks) -> str:  # noqa: ANN001
    h = hashlib.sha256()
    for b in sorted(blocks, key=lambda b: str(b.instrument)):
        rids = np.asarray(b.response_ids, dtype=np.int64)
        cols = np.argsort(np.array(b.item_codes, dtype=object).astype(str), kind="stable")
        rows = np.argsort(rids, kind="stable")
        vals = np.asarray(b.values, dtype=np.float64)[np.ix_(rows, cols)] + 0.0  # -0.0 -> 0.0
        vals[np.isnan(vals)] = np.nan  # one NaN bit pattern
        h.update(json.dumps([str(b.instrument), [str(b.item_codes[j]) for j in cols], len(rids)]).encode())
        h.update(rids[rows].astype("<i8").tobytes())
        h.update(np.ascontiguousarray(vals, dtype="<f8").tobytes())
    return h.hexdigest()


# --- input -> matrix ------------------------------------------------------------------------------


@dataclass
class ItemMatrix:
    """Raw codes of one instrument: rows = responses (`response_ids`), columns = the definition's items."""

    response_ids: np.ndarray
    values: np.ndarray  # float64, NaN = missing
    item_codes: list[str]


def _resolve_item_codes(instrument: Instrument, cats: pd.Categorical) -> np.ndarray:
    """Column index (into instrument.item_codes) of each row's item; accepts item codes or item keys."""
    lookup: dict[str, int] = {}
    for i, code in enumerate(instrument.item_codes):
        lookup[code] = i
        lookup[instrument.item_key(code)] = i
    cat_idx = np.array([lookup.get(str(name), -1) for name in cats.categories] + [-2], dtype=np.int64)
    codes = np.asarray(cats.codes)
    resolved = cat_idx[codes]  # code -1 (NA item) picks the trailing -2
    if (resolved < 0).any():
        if (resolved == -2).any():
            raise ScoringError(
                f"instrument {instrument.code!r}: the item is empty in {int((resolved == -2).sum())} row(s); "
                "every item value needs an item code"
            )
        unknown = sorted({str(cats.categories[c]) for c in np.unique(codes[resolved == -1])})
        raise ScoringError(
            f"instrument {instrument.code!r} (version {instrument.version}): unknown item(s) {unknown[:10]}; "
            f"the definition has items {instrument.item_codes[:5]}... (codes or keys like "
            f"{instrument.item_key(instrument.item_codes[0])!r}). Map the column to a defined item or add it to "
            "the definition."
        )
    return resolved


def _as_categorical(items: pd.Series | pd.Categorical) -> pd.Categorical:
    if isinstance(items, pd.Categorical):
        return items
    return items.array if isinstance(items.dtype, pd.CategoricalDtype) else pd.Categorical(items)


def _as_values(values: pd.Series | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _item_matrix_arrays(
    instrument: Instrument, response_id: np.ndarray | pd.Series, items: pd.Categorical, values: np.ndarray
) -> ItemMatrix:
    col_idx = _resolve_item_codes(instrument, items)
    row_idx, response_ids = pd.factorize(response_id, sort=True)
    if (row_idx < 0).any():
        raise ScoringError(
            f"instrument {instrument.code!r}: response_id is empty in {int((row_idx < 0).sum())} item value row(s); "
            "every item value must belong to a response"
        )
    n_rows, n_cols = len(response_ids), len(instrument.item_codes)
    flat = row_idx.astype(np.int64) * n_cols + col_idx
    counts = np.bincount(flat, minlength=n_rows * n_cols)
    if counts.max(initial=0) > 1:
        dup = np.flatnonzero(counts[flat] > 1)[:3]
        ex = [(np.asarray(response_id)[i], str(items[i])) for i in dup]
        raise ScoringError(
            f"instrument {instrument.code!r}: an item is given twice for the same response, e.g. "
            f"(response_id, item) {ex}; each (response_id, item) must occur once"
        )
    matrix = np.full(n_rows * n_cols, np.nan)
    matrix[flat] = values
    return ItemMatrix(np.asarray(response_ids), matrix.reshape(n_rows, n_cols), list(instrument.item_codes))


def item_matrix(instrument: Instrument, item_values) -> ItemMatrix:  # noqa: ANN001
    """Pivot a long frame `response_id, item, value` (one instrument) into a response x item matrix, or
    arrange a wide block (`instrument, response_ids, item_codes, values`, as `warehouse.read.item_matrices`
    yields) in the definition's item order.

    `item` may hold item codes ('07') or item keys ('sdq_parent_07'); a (response, item) pair given twice is
    an error. Items not given for a response are missing (NaN).
    """
    if not isinstance(item_values, pd.DataFrame):
        return _item_matrix_wide(instrument, item_values)
    for col in ("response_id", "item", "value"):
        if col not in item_values.columns:
            raise ScoringError(
                f"instrument {instrument.code!r}: item values need columns response_id, item, value; "
                f"column {col!r} is missing (got {list(item_values.columns)})"
            )
    return _item_matrix_arrays(
        instrument, item_values["response_id"], _as_categorical(item_values["item"]), _as_values(item_values["value"])
    )


def _item_matrix_wide(instrument: Instrument, block) -> ItemMatrix:  # noqa: ANN001
    cats = pd.Categorical([str(c) for c in block.item_codes])
    col_idx = _resolve_item_codes(instrument, cats)  # raises on unknown or empty item codes
    if len(set(col_idx.tolist())) != len(col_idx):
        raise ScoringError(f"instrument {instrument.code!r}: an item is given twice in a wide block "
                           f"({list(block.item_codes)}); each item must occur once")
    rids = np.asarray(block.response_ids)
    if len(np.unique(rids)) != len(rids):
        raise ScoringError(f"instrument {instrument.code!r}: a response occurs twice in a wide block; each "
                           "(response_id, item) must occur once")
    values = np.asarray(block.values, dtype=np.float64)
    n_cols = len(instrument.item_codes)
    if list(col_idx) == list(range(n_cols)):
        matrix = values
    else:
        matrix = np.full((len(rids), n_cols), np.nan)
        matrix[:, col_idx] = values
    order = np.argsort(rids, kind="stable")
    if (order != np.arange(len(rids))).any():
        rids, matrix = rids[order], matrix[order]
    return ItemMatrix(rids, matrix, list(instrument.item_codes))


def scored_item_matrix(
    instrument: Instrument, raw: np.ndarray, on_invalid: str = "raise", response_ids: np.ndarray | None = None
) -> np.ndarray:
    """Map raw codes to scored values (response options' `score`), then reverse reversed items.

    Reversal is `min + max - score` over the response scale's scored range. A code that is not an option
    (or outside a numeric range) raises ScoringError naming item and value, or with `on_invalid="missing"`
    becomes missing.
    """
    out = np.full(raw.shape, np.nan)
    by_scale: dict[str, list[int]] = {}
    for j, it in enumerate(instrument.items):
        by_scale.setdefault(instrument.response_scale_of(it).code, []).append(j)
    for rs_code, cols in by_scale.items():
        rs = next(r for r in instrument.response_scales if r.code == rs_code)
        block = raw[:, cols]
        present = ~np.isnan(block)
        if rs.options is not None:
            smap = rs.score_map
            codes = np.array(sorted(smap), dtype=np.float64)
            scores = np.array([smap[int(c)] for c in codes], dtype=np.float64)
            pos = np.clip(np.searchsorted(codes, block), 0, len(codes) - 1)
            ok = present & (codes[pos] == block)
            mapped = np.where(ok, scores[pos], np.nan)
        else:
            lo, hi = rs.numeric  # type: ignore[misc]
            ok = present & (block >= lo) & (block <= hi)
            if rs.integer:
                ok &= np.floor(block) == block
            mapped = np.where(ok, block, np.nan)
        bad = present & ~ok
        if bad.any() and on_invalid == "raise":
            r, c = np.argwhere(bad)[0]
            expected = rs.codes if rs.options is not None else f"a number in {list(rs.numeric or ())}"
            where = f" (e.g. response_id {response_ids[r]})" if response_ids is not None else ""
            raise ScoringError(
                f"instrument {instrument.code!r}: item {instrument.items[cols[c]].code!r} has value "
                f"{float(block[r, c]):g} in {int(bad.sum())} response(s){where}; expected {expected} (response scale "
                f"{rs_code!r}). Fix the source's value map or mark the value missing."
            )
        out[:, cols] = mapped
    for j, it in enumerate(instrument.items):
        if it.reversed:
            lo, hi = instrument.response_scale_of(it).score_range
            out[:, j] = lo + hi - out[:, j]
    return out


# --- conditions ------------------------------------------------------------------------------------


def _condition_mask(when: Condition, context: pd.DataFrame | None, n: int) -> np.ndarray:
    """Boolean per response: does the condition hold? Needs a context aligned to the responses."""
    mask = np.ones(n, dtype=bool)
    needs = when.roles is not None or when.min_age_years is not None or when.max_age_years is not None or when.sex
    if not needs:
        return mask
    if context is None:
        return np.zeros(n, dtype=bool)
    if when.roles is not None:
        role = context["role"] if "role" in context else pd.Series(pd.NA, index=context.index)
        mask &= role.isin(when.roles).to_numpy()
    if when.min_age_years is not None or when.max_age_years is not None:
        age = (
            pd.to_numeric(context["subject_age_years"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            if "subject_age_years" in context
            else np.full(n, np.nan)
        )
        ok = ~np.isnan(age)
        if when.min_age_years is not None:
            ok &= np.nan_to_num(age, nan=-np.inf) >= when.min_age_years
        if when.max_age_years is not None:
            ok &= np.nan_to_num(age, nan=np.inf) < when.max_age_years
        mask &= ok
    if when.sex is not None:
        sex = context["subject_sex"] if "subject_sex" in context else pd.Series(pd.NA, index=context.index)
        mask &= (sex == when.sex).fillna(False).to_numpy(dtype=bool)
    return mask


def _compare(x: np.ndarray, op: str, value: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if op == ">=":
            return x >= value
        if op == ">":
            return x > value
        if op == "<=":
            return x <= value
        if op == "<":
            return x < value
        if op == "==":
            return x == value
        if op == "!=":
            return x != value
    raise ValueError(f"unknown operator {op!r}")


# --- scales ----------------------------------------------------------------------------------------


@dataclass
class ScaleResult:
    score: np.ndarray
    n_items: int
    n_answered: np.ndarray
    prorated: np.ndarray


def _aggregate(scale: Scale, block: np.ndarray) -> ScaleResult:
    """Aggregate a response x k block of scored values by the scale's rule and missing-item rule."""
    k = block.shape[1]
    answered = ~np.isnan(block)
    n_ans = answered.sum(axis=1)
    need = k if scale.min_answered is None else scale.min_answered
    valid = (n_ans >= need) & (n_ans > 0)
    total = np.where(answered, block, 0.0).sum(axis=1)
    safe_n = np.maximum(n_ans, 1)
    prorated = np.zeros(len(block), dtype=bool)
    agg = scale.aggregation
    if agg == "sum":
        if scale.prorate:
            score = total * k / safe_n
            prorated = valid & (n_ans < k)
        else:
            score = total
    elif agg == "mean":
        score = total / safe_n
        prorated = valid & (n_ans < k)
    elif agg == "mean_times_n":
        score = total / safe_n * k
        prorated = valid & (n_ans < k)
    elif agg in ("count_endorsed", "any"):
        with np.errstate(invalid="ignore"):
            endorsed = (block >= scale.endorsed_at) & answered
        count = endorsed.sum(axis=1).astype(np.float64)
        if agg == "any":
            score = (count > 0).astype(np.float64)
            # one endorsed item settles 'any' whatever the other items are
            valid = valid | (count > 0)
        elif scale.prorate:
            score = count * k / safe_n
            prorated = valid & (n_ans < k)
        else:
            score = count
    elif agg == "max":
        score = np.where(answered, block, -np.inf).max(axis=1)
    else:  # pragma: no cover - the model restricts the literal
        raise ValueError(f"unknown aggregation {agg!r}")
    if scale.rounding == "half_up":
        score = np.floor(0.5 + score)
    score = np.where(valid, score, np.nan)
    return ScaleResult(score, k, n_ans, prorated)


def _cutoff_flags(cutoffs: list[Cutoff], score: np.ndarray, context: pd.DataFrame | None) -> np.ndarray:
    """Per response: 1.0 above, 0.0 not above, NaN when the score is missing or no cut-off applies."""
    out = np.full(len(score), np.nan)
    assigned = np.zeros(len(score), dtype=bool)
    for co in cutoffs:
        m = _condition_mask(co.when, context, len(score)) & ~assigned
        out[m] = _compare(score[m], co.operator, co.threshold).astype(np.float64)
        assigned |= m
    out[np.isnan(score)] = np.nan
    return out


def _band_codes(scale: Scale, score: np.ndarray, context: pd.DataFrame | None, universe: dict[str, int]) -> np.ndarray:
    """Per response the band's position in `universe` (int32; -1 when no band set applies or no score)."""
    out = np.full(len(score), -1, dtype=np.int32)
    assigned = np.zeros(len(score), dtype=bool)
    for bs in scale.bands:
        m = _condition_mask(bs.when, context, len(score)) & ~assigned & ~np.isnan(score)
        assigned |= m
        if not m.any():
            continue
        bands = sorted(bs.bands, key=lambda b: b.min)
        mins = np.array([b.min for b in bands])
        codes = np.array([universe[b.code] for b in bands], dtype=np.int32)
        s = score[m]
        pos = np.searchsorted(mins, s, side="right") - 1
        inside = (pos >= 0) & (s <= bands[-1].max)
        out[m] = np.where(inside, codes[np.clip(pos, 0, len(bands) - 1)], -1)
    return out


def _uses_context(instrument: Instrument) -> bool:
    """Does any cut-off, band set or classification of the instrument depend on role, age or sex?"""
    conds = [c.when for sc in instrument.scales for c in sc.cutoffs] + [b.when for sc in instrument.scales for b in sc.bands]
    conds += [cl.when for cl in instrument.classifications]
    return any(c.roles is not None or c.min_age_years is not None or c.max_age_years is not None or c.sex for c in conds)


def _align_context(context: pd.DataFrame | None, response_ids: np.ndarray) -> pd.DataFrame | None:
    if context is None:
        return None
    ctx = context
    if "response_id" in ctx.columns:
        ctx = ctx.set_index("response_id")
    if not ctx.index.is_unique:
        raise ScoringError("context: response_id must be unique (one row per response)")
    return ctx.reindex(pd.Index(response_ids))


@dataclass
class ScoreBlock:
    """Scores of one instrument as flat arrays (scale-major): the Contract 4 frame before it is built."""

    instrument: str
    version: str
    response_ids: np.ndarray
    scales: list[str]
    bands: list[str]
    score: np.ndarray
    n_items: np.ndarray
    n_answered: np.ndarray
    prorated: np.ndarray
    above: np.ndarray  # 1.0 / 0.0 / NaN
    band: np.ndarray  # int32 index into `bands`, -1 = none

    @property
    def n_rows(self) -> int:
        return len(self.score)


def score_matrix(
    instrument: Instrument,
    response_ids: np.ndarray,
    scored: np.ndarray,
    context: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Scales, cut-offs, bands and classifications from a response x item matrix of scored values."""
    return blocks_to_frame([score_block(instrument, response_ids, scored, context)])


def score_block(
    instrument: Instrument,
    response_ids: np.ndarray,
    scored: np.ndarray,
    context: pd.DataFrame | None = None,
) -> ScoreBlock:
    """Like score_matrix, but returns the flat arrays (cheap to concatenate over instruments)."""
    ctx = _align_context(context, response_ids) if _uses_context(instrument) else None
    n = len(response_ids)
    col = {c: j for j, c in enumerate(instrument.item_codes)}
    results: dict[str, ScaleResult] = {}
    parts: list[dict] = []
    band_list = _band_universe(instrument)
    universe = {code: i for i, code in enumerate(band_list)}
    for sc in instrument.scales:
        if sc.items is not None:
            block = scored[:, [col[c] for c in sc.items]]
        else:
            block = np.column_stack([results[c].score for c in sc.components or []])
        res = _aggregate(sc, block)
        results[sc.code] = res
        parts.append(
            {
                "scale": sc.code,
                "score": res.score,
                "n_items": res.n_items,
                "n_answered": res.n_answered,
                "prorated": res.prorated,
                "above_cutoff": _cutoff_flags(sc.cutoffs, res.score, ctx),
                "band": _band_codes(sc, res.score, ctx, universe),
            }
        )
    for cl in instrument.classifications:
        used = cl.scales_used
        scores = {s: results[s].score for s in used}
        complete = np.ones(n, dtype=bool)
        for s in used:
            complete &= ~np.isnan(scores[s])
        complete &= _condition_mask(cl.when, ctx, n)
        band = np.full(n, -1, dtype=np.int32)
        flag = np.full(n, np.nan)
        open_ = complete.copy()
        for cat in cl.categories:
            m = open_.copy()
            for t in cat.all_of:
                m &= _compare(scores[t.scale], t.operator, t.value)
            band[m] = universe[cat.code]
            if cat.positive is not None:
                flag[m] = float(cat.positive)
            open_ &= ~m
        n_ans = np.zeros(n, dtype=np.int64)
        for s in used:
            n_ans += ~np.isnan(scores[s])
        parts.append(
            {
                "scale": cl.code,
                "score": np.full(n, np.nan),
                "n_items": len(used),
                "n_answered": n_ans,
                "prorated": np.zeros(n, dtype=bool),
                "above_cutoff": flag,
                "band": band,
            }
        )
    n_parts = len(parts)

    def cat(key: str, dtype: type) -> np.ndarray:
        if n_parts == 0:
            return np.empty(0, dtype=dtype)
        return np.concatenate([np.asarray(p[key], dtype=dtype) for p in parts])

    return ScoreBlock(
        instrument=instrument.code,
        version=instrument.version,
        response_ids=np.asarray(response_ids),
        scales=[p["scale"] for p in parts],
        bands=band_list,
        score=cat("score", np.float64),
        n_items=np.repeat(np.array([p["n_items"] for p in parts], dtype=np.int64), n),
        n_answered=cat("n_answered", np.int64),
        prorated=cat("prorated", bool),
        above=cat("above_cutoff", np.float64),
        band=cat("band", np.int32),
    )


def blocks_to_frame(blocks: list[ScoreBlock]) -> pd.DataFrame:
    """One Contract 4 frame from the score blocks of one or more instruments (categoricals shared)."""
    blocks = [b for b in blocks if b.n_rows > 0]
    if not blocks:
        return empty_scores()
    inst_cats = list(dict.fromkeys(b.instrument for b in blocks))
    ver_cats = list(dict.fromkeys(b.version for b in blocks))
    scale_cats = list(dict.fromkeys(sc for b in blocks for sc in b.scales))
    band_cats = list(dict.fromkeys(bd for b in blocks for bd in b.bands))
    s_pos = {c: i for i, c in enumerate(scale_cats)}
    b_pos = {c: i for i, c in enumerate(band_cats)}
    inst_codes, ver_codes, scale_codes, band_codes, rids = [], [], [], [], []
    for b in blocks:
        n, m = len(b.response_ids), len(b.scales)
        inst_codes.append(np.full(b.n_rows, inst_cats.index(b.instrument), dtype=np.int32))
        ver_codes.append(np.full(b.n_rows, ver_cats.index(b.version), dtype=np.int32))
        scale_codes.append(np.repeat(np.array([s_pos[sc] for sc in b.scales], dtype=np.int32), n))
        remap = np.array([b_pos[bd] for bd in b.bands] + [-1], dtype=np.int32)
        band_codes.append(remap[b.band])  # -1 picks the trailing -1
        rids.append(np.tile(b.response_ids, m))
    above = np.concatenate([b.above for b in blocks])

    def categorical(codes: list[np.ndarray], cats: list[str]) -> pd.Categorical:
        return pd.Categorical.from_codes(np.concatenate(codes), categories=pd.Index(cats, dtype="str"))

    return pd.DataFrame(
        {
            "response_id": np.concatenate(rids),
            "instrument": categorical(inst_codes, inst_cats),
            "instrument_version": categorical(ver_codes, ver_cats),
            "scale": categorical(scale_codes, scale_cats),
            "score": np.concatenate([b.score for b in blocks]),
            "n_items": np.concatenate([b.n_items for b in blocks]),
            "n_answered": np.concatenate([b.n_answered for b in blocks]),
            "prorated": np.concatenate([b.prorated for b in blocks]),
            "above_cutoff": pd.arrays.BooleanArray(above == 1.0, np.isnan(above)),
            "band": categorical(band_codes, band_cats),
        }
    )


def _band_universe(instrument: Instrument) -> list[str]:
    """Every band and category code the instrument can assign (the categories of the `band` column)."""
    codes: list[str] = []
    for sc in instrument.scales:
        for bs in sc.bands:
            codes += [b.code for b in bs.bands]
    for cl in instrument.classifications:
        codes += [c.code for c in cl.categories]
    return list(dict.fromkeys(codes))


def empty_scores() -> pd.DataFrame:
    """An empty frame with the Contract 4 columns."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in SCORE_COLUMNS})


def score_instrument(
    instrument: Instrument,
    item_values: pd.DataFrame,
    context: pd.DataFrame | None = None,
    on_invalid: str = "raise",
) -> pd.DataFrame:
    """Score all responses of one instrument (Contract 4).

    In: `item_values` long frame `response_id, item, value` (raw codes, NaN = missing; item codes or item
    keys); `context` indexed by (or with a column) `response_id` with `role`, `subject_age_years`,
    `subject_sex` for conditional cut-offs, bands and classifications.
    Out: one row per (response, scale or classification): `response_id, instrument, instrument_version,
    scale, score, n_items, n_answered, prorated, above_cutoff, band`.
    """
    mat = item_matrix(instrument, item_values)
    scored = scored_item_matrix(instrument, mat.values, on_invalid=on_invalid, response_ids=mat.response_ids)
    return score_matrix(instrument, mat.response_ids, scored, context)


def score_all(
    item_values_long: pd.DataFrame,
    context: pd.DataFrame | None,
    instruments: dict[str, Instrument],
    on_unknown: str = "raise",
    on_invalid: str = "raise",
) -> pd.DataFrame:
    """Score every instrument in a long frame `response_id, instrument, item, value`, or in wide blocks per
    instrument (`warehouse.read.item_matrices`: `instrument, response_ids, item_codes, values`).

    Instruments without a definition raise ScoringError (or are skipped with `on_unknown="skip"`).
    Returns the concatenated Contract 4 frames (instrument, scale and band as categoricals).
    """
    if not isinstance(item_values_long, pd.DataFrame):
        return _score_all_wide(list(item_values_long), context, instruments, on_unknown, on_invalid)
    if "instrument" not in item_values_long.columns:
        raise ScoringError("score_all: item values need an 'instrument' column (response_id, instrument, item, value)")
    inst_codes = _as_categorical(item_values_long["instrument"])
    if (inst_codes.codes < 0).any():
        raise ScoringError(f"score_all: the instrument is empty in {int((inst_codes.codes < 0).sum())} item value row(s)")
    used = np.bincount(inst_codes.codes.astype(np.int64), minlength=len(inst_codes.categories)) > 0
    unknown = sorted(str(c) for c, u in zip(inst_codes.categories, used, strict=True) if u and c not in instruments)
    if unknown and on_unknown == "raise":
        raise ScoringError(
            f"score_all: no definition for instrument(s) {unknown}; known {sorted(instruments)}. Add a definition "
            "(instruments/definitions or COHORTFLOW_INSTRUMENT_DIRS) or drop these item values."
        )
    frames = []
    items = _as_categorical(item_values_long["item"])
    values = _as_values(item_values_long["value"])
    rids = item_values_long["response_id"].to_numpy()
    order = np.argsort(inst_codes.codes, kind="stable")
    sorted_codes = inst_codes.codes[order]
    bounds = np.searchsorted(sorted_codes, np.arange(len(inst_codes.categories) + 1))
    for j, code in enumerate(inst_codes.categories):
        idx = order[bounds[j] : bounds[j + 1]]
        if len(idx) == 0 or code not in instruments:
            continue
        inst = instruments[code]
        mat = _item_matrix_arrays(inst, rids[idx], items[idx], values[idx])
        scored = scored_item_matrix(inst, mat.values, on_invalid=on_invalid, response_ids=mat.response_ids)
        frames.append(score_block(inst, mat.response_ids, scored, context))
    return blocks_to_frame(frames)


def _score_all_wide(blocks: list, context: pd.DataFrame | None, instruments: dict[str, Instrument],
                    on_unknown: str, on_invalid: str) -> pd.DataFrame:
    unknown = sorted({str(b.instrument) for b in blocks if b.instrument not in instruments and len(b.response_ids)})
    if unknown and on_unknown == "raise":
        raise ScoringError(
            f"score_all: no definition for instrument(s) {unknown}; known {sorted(instruments)}. Add a definition "
            "(instruments/definitions or COHORTFLOW_INSTRUMENT_DIRS) or drop these item values."
        )
    frames = []
    for b in sorted(blocks, key=lambda b: str(b.instrument)):
        if b.instrument not in instruments or not len(b.response_ids):
            continue
        inst = instruments[b.instrument]
        mat = _item_matrix_wide(inst, b)
        scored = scored_item_matrix(inst, mat.values, on_invalid=on_invalid, response_ids=mat.response_ids)
        frames.append(score_block(inst, mat.response_ids, scored, context))
    return blocks_to_frame(frames)
