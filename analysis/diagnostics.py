"""Residual diagnostics of a fitted linear mixed model: conditional residuals, fitted values and BLUPs.

`lmm_residuals(y, X, structure, fit, labels) -> LmmResiduals` computes, as lme4 does (`fitted`, `resid`,
`ranef`), the conditional modes of the random effects b = Lambda u with
(Lambda' Z' Z Lambda + I) u = Lambda' Z' (y - X beta), the fitted values X beta + Z b and the conditional
residuals y - fitted. `residual_summary(res) -> DataFrame` gives the numbers the technical appendix shows:
per quantity (conditional residuals, each random effect's BLUPs) n, SD, skewness, excess kurtosis (moment
estimators, as `e1071::skewness(type = 1)`), and for the residuals the share with |resid / sigma| > 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from .lmm import LmmFit, RandomStructure


@dataclass
class LmmResiduals:
    """Per observation: fitted, conditional residual; per random-effect term: BLUPs by level label."""

    fitted: np.ndarray
    resid: np.ndarray
    sigma: float
    blups: dict[str, pd.Series] = field(default_factory=dict)  # term name -> BLUP per level (index = label)


def _terms(structure: RandomStructure, labels: dict[str, np.ndarray] | None) -> list[tuple[str, np.ndarray, np.ndarray,
                                                                                          np.ndarray]]:
    """(name, level codes, covariate values, level labels) of every scalar random-effect term, in theta order."""
    if structure.k_re > 1:
        raise ValueError("residual diagnostics handle scalar random-effect terms only (no correlated block)")
    labels = labels or {}
    out = []
    if structure.k_re == 1:
        codes = np.asarray(structure.groups)
        out.append((f"{structure.group_name}:{structure.re_names[0]}", codes,
                    np.asarray(structure.exog_re[:, 0], float), labels.get(structure.group_name)))
    for c in structure.components:
        out.append((c.name, np.asarray(c.levels), np.asarray(c.values, float), labels.get(c.name)))
    return out


def lmm_residuals(y: np.ndarray, X: np.ndarray, structure: RandomStructure, fit: LmmFit,
                  labels: dict[str, np.ndarray] | None = None) -> LmmResiduals:
    """BLUPs, fitted values and conditional residuals at the fit's beta and variance parameters.

    `labels` maps a term's grouping name (the structure's `group_name` or a component's name) to the label
    of each level code (e.g. the person ids), used as the index of the BLUP series.
    """
    y = np.asarray(y, float)
    X = np.asarray(X, float)
    n = len(y)
    theta, sigma = np.asarray(fit.varpar[:-1], float), float(fit.varpar[-1])
    terms = _terms(structure, labels)
    if len(terms) != len(theta):
        raise ValueError(f"{len(theta)} variance parameters for {len(terms)} random-effect terms")
    blocks, lam = [], []
    for (_, codes, values, _), th in zip(terms, theta, strict=True):
        q = int(codes.max()) + 1
        blocks.append(sp.csc_matrix((values, (np.arange(n), codes)), shape=(n, q)))
        lam.append(np.full(q, th))
    Z = sp.hstack(blocks, format="csc")
    lam_d = np.concatenate(lam)
    ZL = Z @ sp.diags(lam_d)
    r = y - X @ fit.params
    M = (ZL.T @ ZL + sp.identity(ZL.shape[1])).tocsc()
    u = np.atleast_1d(spsolve(M, ZL.T @ r))
    b = lam_d * u
    zb = Z @ b
    fitted = X @ fit.params + zb
    out = LmmResiduals(fitted=fitted, resid=y - fitted, sigma=sigma)
    start = 0
    for name, codes, _, lab in terms:
        q = int(codes.max()) + 1
        index = pd.Index(lab if lab is not None else np.arange(q), name="level")
        out.blups[name] = pd.Series(b[start:start + q], index=index, name=name)
        start += q
    return out


def moments(x: np.ndarray) -> tuple[float, float, float]:
    """(SD with n - 1, skewness, excess kurtosis) with the moment estimators m3 / m2^1.5 and m4 / m2^2 - 3."""
    x = np.asarray(x, float)
    d = x - x.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    if m2 <= 0:
        return 0.0, float("nan"), float("nan")
    return float(x.std(ddof=1)), float(m3 / m2**1.5), float(m4 / m2**2 - 3)


def residual_summary(res: LmmResiduals) -> pd.DataFrame:
    """One row per quantity: n, SD, skewness, excess kurtosis, % |standardised| > 3 (residuals: resid / sigma;
    BLUPs: BLUP / their SD)."""
    rows = []
    for name, x, scale in [("conditional residuals", res.resid, res.sigma),
                           *[(f"BLUPs {k}", v.to_numpy(), None) for k, v in res.blups.items()]]:
        sd, skew, kurt = moments(x)
        s = scale if scale is not None else sd
        share = float(np.mean(np.abs(x / s) > 3) * 100) if s > 0 else float("nan")
        rows.append({"quantity": name, "n": len(x), "sd": sd, "skewness": skew, "excess_kurtosis": kurt,
                     "pct_abs_std_gt_3": share})
    return pd.DataFrame(rows)
