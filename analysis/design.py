"""Fixed-effects design matrices for arm x wave (or arm x time) models, and emmeans-style reference grids.

Coding follows R's treatment contrasts so that column names equal lme4's: `(Intercept)`, `arm<code>`,
`wave<code>`, numeric covariates by name, factor covariates `<name><level>` (levels sorted, first is the
reference), interactions `arm<code>:wave<code>` (or `arm<code>:<time>`). The first arm and first wave given are
the reference levels. Cells that are empty in the data (an arm not measured at a wave) get no column.

The reference grid follows emmeans' defaults: numeric covariates at their mean over the model's rows, factor
covariates averaged with equal weights over their levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
import pandas as pd


@dataclass
class DesignInfo:
    """What is needed to rebuild a design row for any arm x wave (or arm x time) cell."""

    arms: list[str]
    waves: list[str]
    numeric: dict[str, float] = field(default_factory=dict)  # covariate -> mean over model rows
    factors: dict[str, list[str]] = field(default_factory=dict)  # covariate -> levels (first = reference)
    columns: list[str] = field(default_factory=list)
    time: str | None = None  # continuous time column (growth model) instead of waves
    covariates: list[str] = field(default_factory=list)

    def row(self, arm: str, wave: str | None = None, time_value: float | None = None,
            cov_values: dict[str, object] | None = None) -> np.ndarray:
        """Design row for one cell; covariates from `cov_values` else the grid defaults (averaged)."""
        cov_values = cov_values or {}
        free = [f for f in self.factors if f not in cov_values]
        combos = list(product(*[self.factors[f] for f in free])) or [()]
        acc = np.zeros(len(self.columns))
        for combo in combos:
            vals = dict(zip(free, combo, strict=True))
            vals.update(cov_values)
            acc += self._one_row(arm, wave, time_value, vals)
        return acc / len(combos)

    def _one_row(self, arm: str, wave: str | None, t: float | None, vals: dict[str, object]) -> np.ndarray:
        r = dict.fromkeys(self.columns, 0.0)
        r["(Intercept)"] = 1.0
        a = f"arm{arm}"
        if a in r:
            r[a] = 1.0
        if self.time is None:
            w = f"wave{wave}"
            if w in r:
                r[w] = 1.0
            if f"{a}:{w}" in r:
                r[f"{a}:{w}"] = 1.0
        else:
            r[self.time] = float(t)
            if f"{a}:{self.time}" in r:
                r[f"{a}:{self.time}"] = float(t)
        for c, mean in self.numeric.items():
            r[c] = float(vals.get(c, mean))
        for c, levels in self.factors.items():
            v = vals.get(c)
            for lev in levels[1:]:
                r[f"{c}{lev}"] = 1.0 if v == lev else 0.0
        return np.array([r[c] for c in self.columns])

    def estimable(self, arm: str, wave: str) -> bool:
        """False for a cell with no data (its interaction column was dropped)."""
        if self.time is not None or arm == self.arms[0] or wave == self.waves[0]:
            return True
        return f"arm{arm}:wave{wave}" in self.columns


def build_design(
    frame: pd.DataFrame,
    arms: list[str],
    waves: list[str] | None,
    covariates: list[str],
    time: str | None = None,
    arm_col: str = "arm",
    wave_col: str = "wave",
) -> tuple[np.ndarray, DesignInfo]:
    """Design matrix (n x p) and its DesignInfo for `arm * wave + covariates` (or `arm * time + covariates`).

    Covariates with a non-numeric dtype are factors (treatment coded, levels sorted). Rows must have no
    missing values in the columns used; the caller drops them and reports how many.
    """
    n = len(frame)
    arm = frame[arm_col].astype(str).to_numpy()
    cols: dict[str, np.ndarray] = {"(Intercept)": np.ones(n)}
    for a in arms[1:]:
        cols[f"arm{a}"] = (arm == a).astype(float)
    if time is None:
        assert waves is not None
        wave = frame[wave_col].astype(str).to_numpy()
        for w in waves[1:]:
            cols[f"wave{w}"] = (wave == w).astype(float)
    else:
        cols[time] = frame[time].to_numpy(float)
    numeric: dict[str, float] = {}
    factors: dict[str, list[str]] = {}
    for c in covariates:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            cols[c] = s.to_numpy(float)
            numeric[c] = float(s.mean())
        else:
            levels = sorted(s.astype(str).unique().tolist())
            factors[c] = levels
            sv = s.astype(str).to_numpy()
            for lev in levels[1:]:
                cols[f"{c}{lev}"] = (sv == lev).astype(float)
    if time is None:
        for w in waves[1:]:
            for a in arms[1:]:
                v = cols[f"arm{a}"] * cols[f"wave{w}"]
                if v.any():
                    cols[f"arm{a}:wave{w}"] = v
    else:
        for a in arms[1:]:
            cols[f"arm{a}:{time}"] = cols[f"arm{a}"] * cols[time]
    names = [k for k, v in cols.items() if k == "(Intercept)" or np.any(v != 0)]
    X = np.column_stack([cols[k] for k in names])
    info = DesignInfo(arms=list(arms), waves=list(waves or []), numeric=numeric, factors=factors, columns=names,
                      time=time, covariates=list(covariates))
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        raise ValueError(
            f"the fixed-effects design has rank {rank} < {X.shape[1]} columns ({names}); a covariate is constant "
            "or collinear with arm/wave in the selected rows. Remove it from the plan's covariates for this outcome."
        )
    return X, info
