"""Vectorised GEE for exchangeable and independence working correlations (statsmodels' algorithm, group sums).

`fit_gee_grouped(y, X, groups, family, cov_struct) -> GeeFit` solves the same estimating equations by the same
iterations as `statsmodels.genmod.GEE(...).fit()` with default options (GLM starting values; Fisher scoring
steps; the moment estimator of the exchangeable correlation updated after every step; stop when the score's
L2 norm is below 1e-6 after at least one correlation update; robust (sandwich) covariance; scale 1 for the
binomial, Poisson and negative binomial families). statsmodels loops over clusters in Python (about 7 s per
fit at 19,000 households); here every per-cluster quantity is a group sum over household-sorted rows
(`np.add.reduceat`), because with an exchangeable working correlation R = (1 - a) I + a J the inverse is
closed form: V^-1 x = S^-1 (x / (1 - a) - c_k sum(x)) with S = diag(sd), c_k = a / (1 - a) / (1 + a (k - 1)).
Elementwise values (means, derivatives, variances) come from the same statsmodels family objects, so results
differ from statsmodels only in the order of summation (last digits; tests/test_analysis_gee_fast.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class GeeFit:
    """Estimates of one GEE fit: params, robust covariance, working correlation, converged, iterations."""

    params: np.ndarray
    cov_robust: np.ndarray
    cov_naive: np.ndarray
    dep_param: float
    converged: bool
    iterations: int
    score_norm: float

    def cov_params(self) -> np.ndarray:
        """Robust (sandwich) covariance of params (as statsmodels' GEEResults.cov_params() with cov_type robust)."""
        return self.cov_robust


class _Groups:
    """Rows sorted by cluster (stable: statsmodels' within-cluster order) and cluster sums over them."""

    def __init__(self, groups: np.ndarray) -> None:
        g = np.asarray(groups)
        self.order = np.argsort(g, kind="stable")
        gs = g[self.order]
        self.starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]]) if len(gs) else np.zeros(0, int)
        self.sizes = np.diff(np.r_[self.starts, len(gs)]).astype(float)

    def sum(self, a: np.ndarray) -> np.ndarray:
        """Per-cluster sums of a (rows already in cluster order): shape (clusters,) or (clusters, p)."""
        return np.add.reduceat(a, self.starts, axis=0)


def _family(family: str, alpha: float | None):
    import statsmodels.api as sm

    if family == "binomial":
        return sm.families.Binomial()
    if family == "poisson":
        return sm.families.Poisson()
    if family == "negative_binomial":
        return sm.families.NegativeBinomial(alpha=alpha)
    raise ValueError(f"GEE family {family!r} is not one of binomial, poisson, negative_binomial")


def fit_gee_grouped(y: np.ndarray, X: np.ndarray, groups: np.ndarray, family: str,
                    cov_struct: str = "exchangeable", alpha: float | None = None, maxiter: int = 100,
                    ctol: float = 1e-6) -> GeeFit:
    """GEE of y on X (log or logit link of `family`; `alpha` the negative binomial's) clustered by `groups`.

    `cov_struct` is "exchangeable" or "independence". Warns (statsmodels' IterationLimitWarning) when the
    score norm is still >= ctol after maxiter steps. Returns a GeeFit.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import IterationLimitWarning

    if cov_struct not in ("exchangeable", "independence"):
        raise ValueError(f"working correlation {cov_struct!r} is not exchangeable or independence")
    fam = _family(family, alpha)
    y = np.asarray(y, float)
    X = np.asarray(X, float)
    nobs, p = X.shape
    ddof = p
    grp = _Groups(groups)
    ys, Xs = y[grp.order], X[grp.order]
    k = grp.sizes
    n_pairs = float(np.sum(0.5 * k * (k - 1)))
    params = np.asarray(sm.GLM(y, X, family=fam).fit().params, float).copy()  # statsmodels' starting values
    dep = 0.0
    exchangeable = cov_struct == "exchangeable"

    def pieces(params: np.ndarray):
        lpr = Xs @ params
        mu = fam.link.inverse(lpr)
        sdev = np.sqrt(fam.variance(mu))
        r1 = (ys - mu) / sdev  # Pearson residuals
        x1 = Xs * (fam.link.inverse_deriv(lpr) / sdev)[:, None]  # S^-1 D
        return r1, x1

    def solve_parts(r1: np.ndarray, x1: np.ndarray, dep: float):
        """Per-cluster D' V^-1 D pieces: (sum over rows part, per-cluster correction) for bmat; score terms."""
        c = dep / (1.0 - dep) / (1.0 + dep * (k - 1)) if exchangeable else np.zeros(len(k))
        u = grp.sum(x1)  # (clusters, p)
        w = grp.sum(r1)  # (clusters,)
        bmat = (x1.T @ x1) / (1.0 - dep) - u.T @ (c[:, None] * u)
        per_cluster = grp.sum(x1 * r1[:, None]) / (1.0 - dep) - (c * w)[:, None] * u  # D_g' V_g^-1 r_g
        return bmat, per_cluster

    r1, x1 = pieces(params)
    del_params, itr = -1.0, 0
    for itr in range(maxiter):  # noqa: B007 - the count is reported
        bmat, per_cluster = solve_parts(r1, x1, dep)
        score = per_cluster.sum(0)
        try:
            update = np.linalg.solve(bmat, score)
        except np.linalg.LinAlgError:
            update = np.linalg.pinv(bmat) @ score
        params = params + update
        r1, x1 = pieces(params)
        del_params = float(np.sqrt(np.sum(score ** 2)))
        if del_params < ctol and itr > 0:  # after at least one correlation update (statsmodels)
            break
        if exchangeable:  # the moment estimator of statsmodels' Exchangeable.update (unweighted)
            ssr = grp.sum(r1 * r1)
            tot = grp.sum(r1)
            scale = float(ssr.sum()) / (nobs * (nobs - ddof) / float(nobs))
            residsq_sum = float(np.sum((tot ** 2 - ssr) / 2)) / scale
            dep = residsq_sum / (n_pairs * (n_pairs - ddof) / float(n_pairs))
    if del_params >= ctol:
        warnings.warn("Iteration limit reached prior to convergence", IterationLimitWarning, stacklevel=2)
    bmat, per_cluster = solve_parts(r1, x1, dep)
    cmat = per_cluster.T @ per_cluster
    try:
        bmati = np.linalg.inv(bmat)
    except np.linalg.LinAlgError:  # statsmodels falls back to the pseudo-inverse silently; so does this
        bmati = np.linalg.pinv(bmat)
    return GeeFit(params=params, cov_robust=bmati @ cmat @ bmati, cov_naive=bmati, dep_param=float(dep),
                  converged=del_params < ctol, iterations=itr + 1, score_norm=del_params)
