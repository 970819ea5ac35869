"""Effect sizes, multiplicity adjustment and balance statistics.

* `pooled_sd` / `hedges_j` / `standardise`: difference (in change) divided by the pooled baseline SD of the
  arms compared, times Hedges' small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9); the CI is the
  contrast's CI on the same scale (the SD treated as known). The denominator is stated with every d.
  Within-arm change uses that arm's baseline SD and J with df = n - 1.
* `feingold_d`: growth-model d (Feingold 2009): difference in slopes x duration / pooled baseline SD.
* `adjust_p`: Holm (default), Benjamini-Hochberg (`fdr_bh`), Bonferroni, per family.
* `standardised_mean_difference`: balance (difference in means / sqrt((s1^2 + s2^2) / 2)), optionally weighted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pooled_sd(sd1: float, n1: int, sd2: float, n2: int) -> float:
    """Pooled SD sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2))."""
    if n1 + n2 <= 2:
        return float("nan")
    return float(np.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / (n1 + n2 - 2)))


def hedges_j(df: float) -> float:
    """Hedges' small-sample correction J = 1 - 3 / (4 df - 1); df = n1 + n2 - 2 (two arms) or n - 1 (one)."""
    return 1.0 - 3.0 / (4.0 * df - 1.0) if df > 1 else float("nan")


def standardise(estimate: float, lower: float, upper: float, sd: float, df: float) -> tuple[float, float, float]:
    """(d, d_lower, d_upper) = J(df) x (estimate, lower, upper) / sd."""
    if not np.isfinite(sd) or sd <= 0:
        return (float("nan"),) * 3
    j = hedges_j(df)
    return estimate / sd * j, lower / sd * j, upper / sd * j


def feingold_d(slope_diff: float, lower: float, upper: float, duration: float, sd: float, df: float
               ) -> tuple[float, float, float]:
    """Growth-model d: (difference in slopes x duration) / pooled baseline SD, with Hedges' J(df)."""
    return standardise(slope_diff * duration, lower * duration, upper * duration, sd, df)


def adjust_p(p: np.ndarray | list[float], method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values (NaN entries are left out and stay NaN)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
        return out
    out[ok] = multipletests(p[ok], method=method)[1]
    return out


def weighted_mean_var(x: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    x = np.asarray(x, float)
    w = np.ones_like(x) if w is None else np.asarray(w, float)
    ok = np.isfinite(x) & np.isfinite(w)
    x, w = x[ok], w[ok]
    m = float(np.sum(w * x) / np.sum(w))
    v = float(np.sum(w * (x - m) ** 2) / (np.sum(w) - np.sum(w**2) / np.sum(w))) if len(x) > 1 else float("nan")
    return m, v


def standardised_mean_difference(x1: np.ndarray, x2: np.ndarray, w1: np.ndarray | None = None,
                                 w2: np.ndarray | None = None) -> float:
    """(mean1 - mean2) / sqrt((var1 + var2) / 2), weighted if weights are given (Austin 2009)."""
    m1, v1 = weighted_mean_var(x1, w1)
    m2, v2 = weighted_mean_var(x2, w2)
    denom = np.sqrt((v1 + v2) / 2)
    return float((m1 - m2) / denom) if denom > 0 else float("nan")


def balance_table(persons: pd.DataFrame, arm_col: str, intervention: str, comparisons: list[str],
                  covariates: list[str], weights: pd.Series | None = None) -> pd.DataFrame:
    """Baseline balance: SMD of each covariate (factor covariates per level) intervention vs each comparison.

    `persons`: one row per person (baseline values). Returns covariate, level, comparison, mean/proportion per
    arm, smd, and smd_weighted when `weights` (aligned with `persons`) is given.
    """
    rows = []
    for c in covariates:
        s = persons[c]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        variants = [(None, s.astype(float))] if numeric else [
            (lev, (s.astype(str) == lev).astype(float).where(s.notna())) for lev in sorted(s.dropna().astype(str).unique())
        ]
        for lev, x in variants:
            for comp in comparisons:
                a = persons[arm_col] == intervention
                b = persons[arm_col] == comp
                row = {"covariate": c, "level": lev, "comparison": comp,
                       "mean_intervention": float(x[a].mean()), "mean_comparison": float(x[b].mean()),
                       "smd": standardised_mean_difference(x[a].to_numpy(), x[b].to_numpy())}
                if weights is not None:
                    row["smd_weighted"] = standardised_mean_difference(
                        x[a].to_numpy(), x[b].to_numpy(), weights[a].to_numpy(), weights[b].to_numpy())
                rows.append(row)
    return pd.DataFrame(rows)
