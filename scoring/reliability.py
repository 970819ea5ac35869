"""Internal consistency per scale: Cronbach's alpha with a Feldt confidence interval, McDonald's omega total.

Both work on complete cases of a scale's scored items (after value maps and reversal). Alpha is psych::alpha's
`raw_alpha` (k/(k-1) * (1 - sum of item variances / variance of the total)); the interval is Feldt's, as
psych::alpha.ci. Omega total comes from a one-factor maximum-likelihood model on the item correlations:
(sum of loadings)^2 / ((sum of loadings)^2 + sum of uniquenesses), as from psych::fa(fm = "ml").
Checked against R in tests/data/r/psych_alpha.R.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

from cohortflow.instruments.model import Instrument

from .engine import item_matrix, scored_item_matrix

RELIABILITY_AGGREGATIONS = {"sum", "mean", "mean_times_n", "count_endorsed"}


def _complete(items: pd.DataFrame | np.ndarray) -> np.ndarray:
    x = np.asarray(items, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("items must be a 2-D table: rows = respondents, columns = items")
    return x[~np.isnan(x).any(axis=1)]


def cronbach_alpha(items: pd.DataFrame | np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Alpha of the complete rows of an n x k item table, with Feldt's interval.

    Out: {n, k, alpha, alpha_lower, alpha_upper}; NaN when fewer than 3 complete rows, fewer than 2 items
    or no variance of the total.
    """
    x = _complete(items)
    n, k = x.shape
    out = {"n": float(n), "k": float(k), "alpha": math.nan, "alpha_lower": math.nan, "alpha_upper": math.nan}
    if n < 3 or k < 2:
        return out
    item_var = x.var(axis=0, ddof=1).sum()
    total_var = x.sum(axis=1).var(ddof=1)
    if total_var <= 0:
        return out
    alpha = k / (k - 1) * (1.0 - item_var / total_var)
    p = 1.0 - confidence
    df1, df2 = n - 1, (n - 1) * (k - 1)
    out["alpha"] = float(alpha)
    out["alpha_lower"] = float(1 - (1 - alpha) * stats.f.ppf(1 - p / 2, df1, df2))
    out["alpha_upper"] = float(1 - (1 - alpha) * stats.f.ppf(p / 2, df1, df2))
    return out


def one_factor_ml(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loadings and uniquenesses of a one-factor ML model fitted to a correlation matrix.

    Minimises the ML discrepancy log|S| + tr(R S^-1), S = l l' + diag(u), over l and log(u); starts from
    the first principal axis.
    """
    k = corr.shape[0]
    w, v = np.linalg.eigh(corr)
    lam0 = v[:, -1] * math.sqrt(max(w[-1], 1e-6))
    lam0 *= np.sign(lam0.sum()) or 1.0
    u0 = np.clip(1 - lam0**2, 0.05, 1.0)

    def f(theta: np.ndarray) -> float:
        lam, u = theta[:k], np.exp(theta[k:])
        s = np.outer(lam, lam) + np.diag(u)
        sign, logdet = np.linalg.slogdet(s)
        if sign <= 0:
            return 1e10
        return float(logdet + np.trace(np.linalg.solve(s, corr)))

    res = optimize.minimize(f, np.concatenate([lam0, np.log(u0)]), method="L-BFGS-B", options={"maxiter": 2000})
    lam, u = res.x[:k], np.exp(res.x[k:])
    if lam.sum() < 0:
        lam = -lam
    return lam, u


def omega_total(items: pd.DataFrame | np.ndarray) -> float:
    """McDonald's omega total from a one-factor ML model on the complete rows' item correlations."""
    x = _complete(items)
    n, k = x.shape
    if n < k + 2 or k < 3:
        return math.nan
    sd = x.std(axis=0, ddof=1)
    if (sd <= 0).any():
        return math.nan
    corr = np.corrcoef(x, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lam, u = one_factor_ml(corr)
    num = lam.sum() ** 2
    return float(num / (num + u.sum()))


def scale_reliability(
    instrument: Instrument,
    item_values: pd.DataFrame,
    groups: pd.DataFrame | None = None,
    by: tuple[str, ...] = ("wave", "arm"),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Alpha (with CI) and omega per item-based scale of one instrument, per group (e.g. wave x arm).

    In: long item values `response_id, item, value` of the instrument; `groups` indexed by (or with a column)
    `response_id` holding the `by` columns (None: one group over all responses).
    Out: one row per (scale, group): `instrument, scale, <by...>, n, k, alpha, alpha_lower, alpha_upper,
    omega_total`, on complete cases of the scale's scored items.
    """
    mat = item_matrix(instrument, item_values)
    scored = scored_item_matrix(instrument, mat.values)
    col = {c: j for j, c in enumerate(instrument.item_codes)}
    if groups is None:
        keys = pd.DataFrame(index=pd.Index(mat.response_ids))
        by = ()
    else:
        g = groups.set_index("response_id") if "response_id" in groups.columns else groups
        keys = g.reindex(pd.Index(mat.response_ids))[list(by)]
    rows = []
    grouped = [((), np.arange(len(mat.response_ids)))] if not by else [
        (k if isinstance(k, tuple) else (k,), idx) for k, idx in keys.reset_index(drop=True).groupby(list(by), sort=True).indices.items()
    ]
    for sc in instrument.scales:
        if sc.items is None or len(sc.items) < 2 or sc.aggregation not in RELIABILITY_AGGREGATIONS:
            continue
        block = scored[:, [col[c] for c in sc.items]]
        if sc.aggregation == "count_endorsed":
            block = np.where(np.isnan(block), np.nan, (block >= (sc.endorsed_at or 0)).astype(float))
        for key, idx in grouped:
            a = cronbach_alpha(block[idx], confidence)
            rows.append(
                {
                    "instrument": instrument.code,
                    "scale": sc.code,
                    **dict(zip(by, key, strict=True)),
                    "n": int(a["n"]),
                    "k": int(a["k"]),
                    "alpha": a["alpha"],
                    "alpha_lower": a["alpha_lower"],
                    "alpha_upper": a["alpha_upper"],
                    "omega_total": omega_total(block[idx]),
                }
            )
    return pd.DataFrame(rows)
