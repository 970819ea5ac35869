"""Estimated marginal means and change contrasts per arm and wave (as R's emmeans computes them).

Every quantity is a linear combination L'beta of the fixed effects of a fitted model with a `contrast(L)`
method returning (estimate, SE, df): Satterthwaite df for mixed models (`lmm.LmmFit`), infinite df (z) for
GEE/WLS. L rows come from the reference grid of `design.DesignInfo` (covariates at their means, factor
covariates averaged with equal weights), so covariates cancel in change contrasts as they do in emmeans.

Contrast kinds:
* `within_change`: mean at a follow-up wave minus the baseline mean, within one arm;
* `diff_in_change`: within-arm change of the intervention arm minus that of a comparison arm;
* `between_arm`: intervention minus comparison at one wave (outcomes without a baseline measurement).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from scipy import stats

from .design import DesignInfo


class LinearEstimator(Protocol):
    params: np.ndarray
    cov_params: np.ndarray

    def contrast(self, L: np.ndarray) -> tuple[float, float, float]: ...


def _ci(est: float, se: float, df: float, alpha: float) -> tuple[float, float, float, float]:
    """(t, p, lower, upper) with t (or z when df is infinite) quantiles."""
    q = stats.t.ppf(1 - alpha / 2, df) if np.isfinite(df) else stats.norm.ppf(1 - alpha / 2)
    t = est / se if se > 0 else np.nan
    p = 2 * (stats.t.sf(abs(t), df) if np.isfinite(df) else stats.norm.sf(abs(t)))
    return float(t), float(p), est - q * se, est + q * se


def marginal_means(est: LinearEstimator, info: DesignInfo, alpha: float = 0.05) -> pd.DataFrame:
    """One row per estimable arm x wave: arm, wave, emmean, se, df, lower, upper."""
    rows = []
    for arm in info.arms:
        for wave in info.waves:
            if not info.estimable(arm, wave):
                continue
            e, se, df = est.contrast(info.row(arm, wave))
            _, _, lo, hi = _ci(e, se, df, alpha)
            rows.append({"arm": arm, "wave": wave, "emmean": e, "se": se, "df": df, "lower": lo, "upper": hi})
    return pd.DataFrame(rows)


def contrast_vectors(info: DesignInfo, intervention: str, comparisons: list[str], baseline: str | None
                     ) -> list[dict]:
    """The L vectors of all change contrasts (or between-arm contrasts when `baseline` is None)."""
    out = []
    follow = [w for w in info.waves if w != baseline]
    if baseline is not None:
        for arm in info.arms:
            for w in follow:
                if info.estimable(arm, w) and info.estimable(arm, baseline):
                    out.append({"contrast": f"{arm}: {w} - {baseline}", "kind": "within_change", "arm": arm,
                                "arm2": None, "wave": w, "L": info.row(arm, w) - info.row(arm, baseline)})
        for comp in comparisons:
            for w in follow:
                cells = [(a, x) for a in (intervention, comp) for x in (w, baseline)]
                if all(info.estimable(a, x) for a, x in cells):
                    L = (info.row(intervention, w) - info.row(intervention, baseline)) - (
                        info.row(comp, w) - info.row(comp, baseline))
                    out.append({"contrast": f"{intervention} - {comp}: change {baseline} to {w}",
                                "kind": "diff_in_change", "arm": intervention, "arm2": comp, "wave": w, "L": L})
    else:
        for comp in comparisons:
            for w in info.waves:
                if info.estimable(intervention, w) and info.estimable(comp, w):
                    out.append({"contrast": f"{intervention} - {comp} at {w}", "kind": "between_arm",
                                "arm": intervention, "arm2": comp, "wave": w,
                                "L": info.row(intervention, w) - info.row(comp, w)})
    return out


def change_contrasts(est: LinearEstimator, info: DesignInfo, intervention: str, comparisons: list[str],
                     baseline: str | None, alpha: float = 0.05) -> pd.DataFrame:
    """Contrasts with estimate, se, df, t, p, lower, upper (p_adj and d are filled in later)."""
    rows = []
    for c in contrast_vectors(info, intervention, comparisons, baseline):
        e, se, df = est.contrast(c["L"])
        t, p, lo, hi = _ci(e, se, df, alpha)
        rows.append({k: v for k, v in c.items() if k != "L"} | {
            "estimate": e, "se": se, "df": df, "t": t, "p": p, "lower": lo, "upper": hi})
    cols = ["contrast", "kind", "arm", "arm2", "wave", "estimate", "se", "df", "t", "p", "lower", "upper"]
    return pd.DataFrame(rows, columns=cols)
