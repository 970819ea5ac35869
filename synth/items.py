"""Item responses from a graded-response model, generic over instrument definitions, and `score_sum`.

theta is on the scale of the instrument's scored direction: a higher theta gives higher scale scores
(after reversing reversed items). A categorical item with K options has K-1 ordered thresholds b_k and
discrimination a; its response category (in ascending scored order) is the number of thresholds below
theta + L/a with L standard logistic, i.e. P(Y >= k) = logistic(a (theta - b_k)). Reversed items write
the mirrored code, so that reversing them in scoring restores the category.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohortflow.instruments.model import Instrument, Scale

from .config import ItemModel


@dataclass(frozen=True)
class ItemParams:
    """GRM parameters of one item: key, codes in ascending scored order, discrimination, thresholds."""

    key: str
    codes: np.ndarray  # categorical: codes by ascending scored value; numeric: empty
    numeric: tuple[float, float] | None
    integer: bool
    a: float
    thresholds: np.ndarray
    reversed: bool


def instrument_direction(inst: Instrument) -> str:
    """The direction of the instrument's primary scale (see `primary_scale`)."""
    sc = primary_scale(inst)
    return sc.direction if sc is not None else "higher_worse"


SYNTH_AGGREGATIONS = ("sum", "mean", "mean_times_n")


def synth_scorable(inst: Instrument, sc: Scale) -> bool:
    """Whether `score_sum` can score `sc`: sum/mean aggregations, through every component."""
    if sc.components is not None:
        return all(synth_scorable(inst, inst.scale(c)) for c in sc.components)
    return sc.aggregation in SYNTH_AGGREGATIONS


def primary_scale(inst: Instrument) -> Scale | None:
    """The scorable scale covering most items with a non-neutral direction (e.g. the total), else None."""
    best: Scale | None = None
    best_n = -1
    for sc in inst.scales:
        if sc.direction == "neutral" or not synth_scorable(inst, sc):
            continue
        n = len(scale_items(inst, sc))
        if n > best_n:
            best, best_n = sc, n
    return best


def scale_items(inst: Instrument, sc: Scale) -> list[str]:
    """Item codes of a scale, expanding components."""
    if sc.items is not None:
        return list(sc.items)
    out: list[str] = []
    for comp in sc.components or []:
        out += scale_items(inst, inst.scale(comp))
    return out


def item_params(inst: Instrument, model: ItemModel) -> list[ItemParams]:
    """Deterministic GRM parameters per item (seeded by the instrument code, not the study seed)."""
    rng = np.random.default_rng(zlib.crc32(f"items:{inst.code}".encode()))
    lo_a, hi_a = model.instrument_discrimination.get(inst.code, model.discrimination)
    out: list[ItemParams] = []
    for it in inst.items:
        rs = inst.response_scale_of(it)
        a = float(rng.uniform(lo_a, hi_a))
        loc = float(rng.normal(0.0, model.location_sd)) + model.instrument_location.get(inst.code, 0.0)
        if rs.options:
            opts = sorted(rs.options, key=lambda o: (o.scored, o.code))
            k = len(opts)
            steps = (np.arange(k - 1) - (k - 2) / 2.0) * model.threshold_spacing
            out.append(ItemParams(inst.item_key(it.code), np.array([o.code for o in opts]), None, True, a,
                                  loc + steps, it.reversed))
        else:
            out.append(ItemParams(inst.item_key(it.code), np.array([]), rs.numeric, rs.integer, a,
                                  np.array([loc]), it.reversed))
    return out


def sample_items(theta: np.ndarray, params: list[ItemParams], rng: np.random.Generator) -> np.ndarray:
    """Item codes (float, shape len(theta) x n_items) for persons with latent values `theta`."""
    n = len(theta)
    out = np.empty((n, len(params)), dtype=float, order="F")
    for j, p in enumerate(params):
        x = theta + rng.logistic(size=n) / p.a
        if p.numeric is None:
            cat = np.zeros(n, dtype=np.int64)  # number of thresholds below x
            for b in p.thresholds:
                cat += x > b
            if p.reversed:
                cat = len(p.codes) - 1 - cat
            out[:, j] = p.codes[cat]
        else:
            lo, hi = p.numeric
            frac = 1.0 / (1.0 + np.exp(-(x - p.thresholds[0])))
            if p.reversed:
                frac = 1.0 - frac
            v = lo + (hi - lo) * frac
            out[:, j] = np.round(v) if p.integer else np.round(v, 1)
    return out


def _scored(inst: Instrument, item_code: str, codes: pd.Series) -> np.ndarray:
    """Scored values of one item's raw codes (NaN for missing or unknown codes), reversed if the item is."""
    it = inst.item(item_code)
    rs = inst.response_scale_of(it)
    arr = codes.to_numpy(dtype=float) if pd.api.types.is_numeric_dtype(codes) else \
        pd.to_numeric(codes, errors="coerce").to_numpy(dtype=float)
    if rs.options:
        smap = rs.score_map
        kmin, kmax = min(smap), max(smap)
        lut = np.full(kmax - kmin + 1, np.nan)
        for k, v in smap.items():
            lut[k - kmin] = v
        valid = (arr >= kmin) & (arr <= kmax) & (arr == np.floor(arr))
        s = np.where(valid, lut[np.where(valid, arr - kmin, 0).astype(np.int64)], np.nan)
    else:
        lo, hi = rs.numeric  # type: ignore[misc]
        s = np.where((arr >= lo) & (arr <= hi), arr, np.nan)
    if it.reversed:
        lo_s, hi_s = rs.score_range
        s = lo_s + hi_s - s
    return s


def score_sum(inst: Instrument, scale: str | Scale, frame_of_codes: pd.DataFrame) -> pd.Series:
    """Scale score per row of `frame_of_codes` (columns named by item key, raw codes; other codes = missing).

    For the generator's truth and attrition only (the real scoring engine lives in `scoring/`): codes are
    mapped by the response scale's score map, reversed items mirrored (min + max - score), then aggregated
    (sum, mean, mean_times_n; components summed). Fewer than `min_answered` items (default all) gives NaN;
    `prorate` scales a sum up to all items.
    """
    sc = inst.scale(scale) if isinstance(scale, str) else scale
    if sc.components is not None:
        parts = [score_sum(inst, c, frame_of_codes) for c in sc.components]
        return pd.concat(parts, axis=1).sum(axis=1, min_count=len(parts)).rename(f"{inst.code}.{sc.code}")
    if sc.aggregation not in SYNTH_AGGREGATIONS:
        raise NotImplementedError(
            f"{inst.code}.{sc.code}: aggregation {sc.aggregation!r} is not supported by synth.score_sum "
            "(sum, mean, mean_times_n only); use the scoring engine"
        )
    items = list(sc.items or [])
    scored = np.empty((len(frame_of_codes), len(items)), order="F")
    for j, ic in enumerate(items):
        scored[:, j] = _scored(inst, ic, frame_of_codes[inst.item_key(ic)])
    n_items = len(items)
    answered = (~np.isnan(scored)).sum(axis=1)
    need = sc.min_answered if sc.min_answered is not None else n_items
    total = np.nansum(scored, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(answered > 0, total / np.maximum(answered, 1), np.nan)
    if sc.aggregation == "sum":
        score = mean * n_items if sc.prorate else np.where(answered == n_items, total, np.nan)
    elif sc.aggregation == "mean":
        score = mean
    else:
        score = mean * n_items
    if sc.rounding == "half_up":
        score = np.floor(score + 0.5)
    score = np.where(answered >= need, score, np.nan)
    return pd.Series(score, index=frame_of_codes.index, name=f"{inst.code}.{sc.code}")
