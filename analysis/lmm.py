"""Linear mixed models: the fit (REML; fast batched engine, statsmodels MixedLM as fallback) and Satterthwaite.

`fit_lmm(y, X, structure, reml=True) -> LmmFit` is the one place a model is fitted. By default the fast
engine (analysis/fastlmm_core.py: lme4's profiled criterion batched by block pattern) fits it and
`FastCriterion` gives Satterthwaite its deviance and vcov(beta); statsmodels MixedLM (refined on the sparse
`LmmCriterion`) is the fallback and the reference. `LmmFit.backend` says which engine fitted the model.

Random effects (`RandomStructure`):
* an optional block of correlated random effects per group (statsmodels `exog_re`; lme4 `(x1 + x2 | group)`),
* any number of scalar variance components, each a factor whose levels get independent random effects
  multiplied by a covariate (statsmodels `exog_vc`; lme4 `(0 + v | level)`). Person intercepts nested in
  households are the component "person" with value 1; an uncorrelated person slope is a component with the
  time column as value (lme4 `(1 | household) + (1 | person) + (0 + time | person)`).

Variance parameters follow lme4/lmerTest: `varpar = (theta..., sigma)`, theta the relative Cholesky factor
(random-effect SD / residual SD for scalar terms; lower triangle column by column for a block). The REML
(or ML) deviance and vcov(beta) as functions of varpar are evaluated with sparse matrices (`LmmCriterion`),
which gives Satterthwaite's degrees of freedom exactly as lmerTest defines them:
df = 2 (L'CL)^2 / (g' A g), g_i = L' dC/dvarpar_i L, A = 2 H^-1, H the Hessian of the deviance.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import splu

LOG2PI = float(np.log(2 * np.pi))


@dataclass
class VarianceComponent:
    """Independent random effects per level of a factor, times a covariate value (1 for an intercept)."""

    name: str
    levels: np.ndarray  # int codes 0..L-1, one per observation (unique across groups)
    values: np.ndarray  # float, one per observation


@dataclass
class RandomStructure:
    """Grouping factor with an optional correlated block (`exog_re`) plus scalar variance components."""

    groups: np.ndarray  # int codes, one per observation
    exog_re: np.ndarray | None = None  # (n, k) or None
    re_names: list[str] = field(default_factory=list)
    group_name: str = "group"
    components: list[VarianceComponent] = field(default_factory=list)

    @property
    def k_re(self) -> int:
        return 0 if self.exog_re is None else self.exog_re.shape[1]

    def varpar_names(self) -> list[str]:
        """Names of theta (lme4 order: block lower triangle column by column, then components) and sigma."""
        names = []
        k = self.k_re
        for j in range(k):
            for i in range(j, k):
                a, b = self.re_names[i], self.re_names[j]
                names.append(f"theta[{self.group_name}:{a}]" if i == j else f"theta[{self.group_name}:{a},{b}]")
        names += [f"theta[{c.name}]" for c in self.components]
        return [*names, "sigma"]


def _tri_from_theta(theta: np.ndarray, k: int) -> np.ndarray:
    T = np.zeros((k, k))
    idx = 0
    for j in range(k):
        for i in range(j, k):
            T[i, j] = theta[idx]
            idx += 1
    return T


def _theta_from_cov(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a (possibly singular) PSD matrix, as lme4's theta (column-wise lower tri)."""
    k = cov.shape[0]
    L = np.zeros((k, k))
    for j in range(k):
        d = cov[j, j] - np.sum(L[j, :j] ** 2)
        L[j, j] = np.sqrt(max(d, 0.0))
        for i in range(j + 1, k):
            L[i, j] = (cov[i, j] - np.sum(L[i, :j] * L[j, :j])) / L[j, j] if L[j, j] > 1e-12 else 0.0
    return np.array([L[i, j] for j in range(k) for i in range(j, k)])


class LmmCriterion:
    """REML/ML deviance and vcov(beta) of a linear mixed model as functions of lme4's (theta, sigma).

    Built once from y, X and the random structure (cross-products precomputed); each evaluation costs one
    sparse factorisation of the q x q matrix Lambda'Z'Z Lambda + I.
    """

    def __init__(self, y: np.ndarray, X: np.ndarray, structure: RandomStructure, reml: bool = True):
        self.y = np.asarray(y, float)
        self.X = np.asarray(X, float)
        self.n, self.p = self.X.shape
        self.reml = reml
        self.s = structure
        blocks = []
        k = structure.k_re
        if k:
            g = structure.groups
            G = int(g.max()) + 1
            rows = np.repeat(np.arange(self.n), k)
            cols = (g[:, None] * k + np.arange(k)[None, :]).ravel()
            blocks.append(sp.csr_matrix((structure.exog_re.ravel(), (rows, cols)), shape=(self.n, G * k)))
            self.n_block_groups = G
        else:
            self.n_block_groups = 0
        self.comp_sizes = []
        for c in structure.components:
            L = int(c.levels.max()) + 1
            blocks.append(sp.csr_matrix((np.asarray(c.values, float), (np.arange(self.n), c.levels)), shape=(self.n, L)))
            self.comp_sizes.append(L)
        self.Z = sp.hstack(blocks, format="csc") if blocks else sp.csc_matrix((self.n, 0))
        self.q = self.Z.shape[1]
        self.ZtZ = (self.Z.T @ self.Z).tocsc()
        self.ZtX = np.asarray(self.Z.T @ self.X)
        self.Zty = np.asarray(self.Z.T @ self.y).ravel()
        self.XtX = self.X.T @ self.X
        self.Xty = self.X.T @ self.y
        self.yty = float(self.y @ self.y)
        self.n_theta = k * (k + 1) // 2 + len(structure.components)
        # Pattern of Z'Z + I in CSC form, to rebuild Lambda Z'Z Lambda + I by scaling its data (scalar terms).
        P = (self.ZtZ + sp.identity(self.q, format="csc")).tocsc()
        P.sort_indices()
        self._indptr, self._indices = P.indptr, P.indices
        self._cols = np.repeat(np.arange(self.q), np.diff(P.indptr))
        self._is_diag = (self._cols == P.indices).astype(float)
        self._ztz_data = P.data - self._is_diag

    def _lambda_diag(self, theta: np.ndarray) -> np.ndarray:
        """Diagonal of Lambda when every term is scalar (k_re <= 1)."""
        sizes = ([self.n_block_groups] if self.s.k_re else []) + self.comp_sizes
        return np.repeat(np.asarray(theta, float), sizes)

    def _lambda(self, theta: np.ndarray) -> sp.csc_matrix:
        k = self.s.k_re
        if k <= 1:
            return sp.diags(self._lambda_diag(theta), format="csc")
        parts = []
        nt = k * (k + 1) // 2
        if k:
            T = _tri_from_theta(theta[:nt], k)
            parts.append(sp.kron(sp.identity(self.n_block_groups, format="csc"), sp.csc_matrix(T), format="csc"))
        for i, L in enumerate(self.comp_sizes):
            parts.append(sp.identity(L, format="csc") * theta[nt + i])
        return sp.block_diag(parts, format="csc") if parts else sp.csc_matrix((0, 0))

    def _solve(self, theta: np.ndarray):
        """Return (logdet M, X'V0^-1 X, X'V0^-1 y, y'V0^-1 y) with V0 = I + Z Lambda Lambda' Z'."""
        if self.q == 0:
            return 0.0, self.XtX, self.Xty, self.yty
        if self.s.k_re <= 1:
            lam = self._lambda_diag(theta)
            data = self._ztz_data * lam[self._indices] * lam[self._cols] + self._is_diag
            M = sp.csc_matrix((data, self._indices, self._indptr), shape=(self.q, self.q))
            LZX = lam[:, None] * self.ZtX
            LZy = lam * self.Zty
        else:
            Lam = self._lambda(theta)
            M = (Lam.T @ self.ZtZ @ Lam + sp.identity(self.q, format="csc")).tocsc()
            LZX = Lam.T @ self.ZtX
            LZy = Lam.T @ self.Zty
        lu = splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        logdet = float(np.sum(np.log(np.abs(lu.U.diagonal()))))
        rhs = np.column_stack([LZX, LZy])
        sol = lu.solve(rhs)
        XVX = self.XtX - LZX.T @ sol[:, : self.p]
        XVy = self.Xty - LZX.T @ sol[:, self.p]
        yVy = self.yty - LZy @ sol[:, self.p]
        return logdet, XVX, XVy, float(yVy)

    def profiled(self, theta: np.ndarray) -> tuple[float, np.ndarray, float]:
        """Deviance profiled over beta and sigma at theta: (deviance, beta, sigma^2) as lme4 computes them."""
        logdet, XVX, XVy, yVy = self._solve(theta)
        beta = np.linalg.solve(XVX, XVy)
        rss = yVy - XVy @ beta
        nu = self.n - self.p if self.reml else self.n
        s2 = rss / nu
        dev = logdet + nu * (1 + np.log(2 * np.pi * s2))
        if self.reml:
            dev += np.linalg.slogdet(XVX)[1]
        return float(dev), beta, float(s2)

    def deviance(self, varpar: np.ndarray) -> float:
        """-2 x REML (or ML) log-likelihood at varpar = (theta..., sigma), as lmerTest's devfun_vp."""
        varpar = np.asarray(varpar, float)
        theta, s2 = varpar[:-1], varpar[-1] ** 2
        logdet, XVX, XVy, yVy = self._solve(theta)
        beta = np.linalg.solve(XVX, XVy)
        rss = yVy - XVy @ beta
        nu = self.n - self.p if self.reml else self.n
        dev = logdet + rss / s2 + nu * np.log(2 * np.pi * s2)
        if self.reml:
            dev += np.linalg.slogdet(XVX)[1]
        return float(dev)

    def cov_beta(self, varpar: np.ndarray) -> np.ndarray:
        """vcov(beta) = sigma^2 (X'V0^-1 X)^-1 at varpar."""
        varpar = np.asarray(varpar, float)
        _, XVX, _, _ = self._solve(varpar[:-1])
        return varpar[-1] ** 2 * np.linalg.inv(XVX)


class FastCriterion:
    """`LmmCriterion`'s interface (profiled, deviance, cov_beta) on the fast engine's batched evaluator.

    Same REML/ML deviance as lme4 and lmerTest's devfun_vp, evaluated per pattern of block design
    (analysis/fastlmm_core.py) instead of one sparse factorisation: cheap enough for Satterthwaite's
    finite-difference Hessian and Jacobian on large studies.
    """

    def __init__(self, design, structure: RandomStructure, reml: bool = True):
        self.design = design
        self.s = structure
        self.reml = reml
        self.ev = design.evaluator(reml=reml)
        self.p = design.p
        self.n = design.n_obs
        self._eye = np.eye(self.p)

    def profiled(self, theta: np.ndarray) -> tuple[float, np.ndarray, float]:
        """(deviance profiled over beta and sigma, beta, sigma^2) at theta."""
        r = self.ev.evaluate(np.asarray(theta, float), grad=False)
        return float(r["deviance"]), r["beta"], float(r["r2"] / self.ev.n_eff)

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """Analytic gradient of the profiled deviance with respect to theta."""
        return self.ev.evaluate(np.asarray(theta, float))["grad"]

    def deviance(self, varpar: np.ndarray) -> float:
        """-2 x REML (or ML) log-likelihood at varpar = (theta..., sigma), as lmerTest's devfun_vp."""
        varpar = np.asarray(varpar, float)
        return float(self.ev.evaluate(varpar[:-1], grad=False, sigma=float(varpar[-1]))["deviance"])

    def cov_beta(self, varpar: np.ndarray) -> np.ndarray:
        """vcov(beta) = sigma^2 (X'V0^-1 X)^-1 at varpar."""
        from scipy import linalg

        varpar = np.asarray(varpar, float)
        r = self.ev.evaluate(varpar[:-1], grad=False)
        return varpar[-1] ** 2 * linalg.cho_solve((r["chol_xx"], True), self._eye)


def fast_design(y: np.ndarray, X: np.ndarray, structure: RandomStructure):
    """The fast engine's `LmmDesign` for a structure, or None when the engine does not cover it.

    Covered: a (possibly correlated) block per group plus scalar components whose levels are nested in the
    groups (person intercepts and uncorrelated person slopes within households; lme4
    `(1 | household) + (1 | person) + (0 + time | person)`). Theta comes out in `RandomStructure`'s order.
    """
    from .fastlmm_core import LmmDesign, RETerm

    if structure.exog_re is None:
        return None
    g = np.asarray(structure.groups)
    for c in structure.components:
        lev = np.asarray(c.levels)
        # nested: every level lies in exactly one group
        pairs = pd.unique(lev.astype(np.int64) * (int(g.max()) + 1) + g.astype(np.int64))
        if len(pairs) != len(pd.unique(lev)):
            return None
    k = structure.k_re
    terms = [RETerm(structure.group_name, np.asarray(structure.exog_re, float).reshape(len(g), k),
                    tuple(structure.re_names) or tuple(f"re{i}" for i in range(k)), None, "full")]
    for c in structure.components:
        terms.append(RETerm(c.name, np.asarray(c.values, float).reshape(-1, 1), (c.name,), np.asarray(c.levels), "diag"))
    return LmmDesign(y, X, g, terms)


def _steps(x: np.ndarray, rel: float) -> np.ndarray:
    return rel * np.maximum(np.abs(x), 0.05)


def numeric_hessian(f, x: np.ndarray, rel: float = 2e-3, richardson: bool = True) -> np.ndarray:
    """Central-difference Hessian with one Richardson extrapolation step (error O(h^4)) unless switched off."""
    x = np.asarray(x, float)
    k = len(x)

    def hess(h: np.ndarray) -> np.ndarray:
        H = np.zeros((k, k))
        f0 = f(x)
        for i in range(k):
            ei = np.zeros(k)
            ei[i] = h[i]
            H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / h[i] ** 2
            for j in range(i + 1, k):
                ej = np.zeros(k)
                ej[j] = h[j]
                H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
        return H

    h = _steps(x, rel)
    if not richardson:
        return hess(h)
    return (4 * hess(h / 2) - hess(h)) / 3


def numeric_jacobian_matrix(f, x: np.ndarray, rel: float = 2e-3) -> list[np.ndarray]:
    """d f(x) / d x_i for a matrix-valued f, central differences with one Richardson step."""
    x = np.asarray(x, float)
    out = []
    for i, hi in enumerate(_steps(x, rel)):
        def d(h: float, i: int = i) -> np.ndarray:
            e = np.zeros(len(x))
            e[i] = h
            return (f(x + e) - f(x - e)) / (2 * h)
        out.append((4 * d(hi / 2) - d(hi)) / 3)
    return out


@dataclass
class LmmFit:
    """A fitted linear mixed model with everything the marginal means, contrasts and df need."""

    fe_names: list[str]
    params: np.ndarray
    cov_params: np.ndarray
    varpar: np.ndarray
    varpar_names: list[str]
    variance_components: pd.DataFrame  # component, variance, sd (absolute scale)
    loglik: float
    reml: bool
    converged: bool
    warnings: list[str]
    boundary: list[str]
    n_obs: int
    vcov_varpar: np.ndarray | None = None
    jac_cov: list[np.ndarray] | None = None
    backend: str = "statsmodels"
    seconds: float = 0.0
    hessian_negative: int = 0

    def fixed_effects(self) -> pd.DataFrame:
        """Estimate, SE, Satterthwaite df, t, p per fixed effect."""
        from scipy import stats

        rows = []
        for i, name in enumerate(self.fe_names):
            L = np.zeros(len(self.params))
            L[i] = 1.0
            est, se, df = self.contrast(L)
            t = est / se if se > 0 else np.nan
            rows.append({"term": name, "estimate": est, "se": se, "df": df, "t": t,
                         "p": float(2 * stats.t.sf(abs(t), df)) if np.isfinite(df) else np.nan})
        return pd.DataFrame(rows)

    def satterthwaite_df(self, L: np.ndarray) -> float:
        """Satterthwaite df of L'beta as lmerTest computes it (inf without variance-parameter pieces)."""
        L = np.asarray(L, float)
        var = float(L @ self.cov_params @ L)
        if self.vcov_varpar is None or self.jac_cov is None:
            return float("inf")
        g = np.array([L @ J @ L for J in self.jac_cov])
        denom = float(g @ self.vcov_varpar @ g)
        return float(2 * var**2 / denom) if denom > 0 else float("inf")

    def contrast(self, L: np.ndarray) -> tuple[float, float, float]:
        """(estimate, SE, Satterthwaite df) of L'beta."""
        L = np.asarray(L, float)
        return float(L @ self.params), float(np.sqrt(L @ self.cov_params @ L)), self.satterthwaite_df(L)


def _statsmodels_vc(structure: RandomStructure):
    """statsmodels' VCSpec (per component, per group in sorted group order) from global level codes."""
    from statsmodels.regression.mixed_linear_model import VCSpec

    groups = structure.groups
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    idx_by_group = np.split(order, bounds)
    names, colnames, mats = [], [], []
    for c in structure.components:
        cm, cn = [], []
        for idx in idx_by_group:
            lev = c.levels[idx]
            uniq, inv = np.unique(lev, return_inverse=True)
            m = np.zeros((len(idx), len(uniq)))
            m[np.arange(len(idx)), inv] = c.values[idx]
            cm.append(m)
            cn.append([f"{c.name}[{u}]" for u in uniq])
        names.append(c.name)
        colnames.append(cn)
        mats.append(cm)
    return VCSpec(names, colnames, mats)


def fit_lmm(
    y: np.ndarray,
    X: np.ndarray,
    structure: RandomStructure,
    fe_names: list[str] | None = None,
    reml: bool = True,
    satterthwaite: bool = True,
    boundary_tol: float = 1e-4,
    engine: str | Callable[[np.ndarray, np.ndarray, RandomStructure, bool], np.ndarray] = "fast",
    design_cache: dict | None = None,
) -> LmmFit:
    """Fit a linear mixed model (REML by default) and attach Satterthwaite pieces.

    In: response y (n,), fixed-effects design X (n, p), the random structure. Out: LmmFit with fixed effects,
    vcov(beta), variance parameters (lme4 theta, sigma), variance components, log-likelihood (lme4's
    definition), convergence flag, warnings and components at the boundary (variance < boundary_tol x
    residual variance). `LmmFit.backend` records which engine fitted the model.

    engine "fast" (default): lme4's profiled criterion minimised by the batched engine of
    analysis/fastlmm_core.py (analytic gradient, Newton polish; Satterthwaite pieces on the same engine).
    Structures it does not cover (component levels not nested in the groups), a failure or a fit that does
    not converge fall back to "statsmodels", with the reason in the warnings. Engine "statsmodels": statsmodels
    MixedLM fits first, then its variance parameters are refined on lme4's profiled criterion (statsmodels'
    L-BFGS can stop early or at a false boundary); the reference path. Engine "profiled": skip statsmodels
    and minimise lme4's profiled criterion (sparse matrices) from lme4's start. Models with a correlated block
    of more than one random effect start "profiled" from statsmodels. A callable engine
    `(y, X, structure, reml) -> theta` (lme4's parameterisation) gives start values (warm starts, another
    fitter); the optimum is then found from it on the same criterion (the fast engine where it applies), and
    the backend is the callable's name. `design_cache`: a dict kept across fits of the same X and structure
    with other responses (multiple imputation): the fast engine's design is then built once and only its
    response part is computed again (`LmmDesign.with_response`; same numbers). With `warm_hessian: True` in
    the dict, the inverse Hessian of the first fit's deviance also starts the next fits' quasi-Newton steps
    instead of L-BFGS-B (then the same Newton polish: the same optimum to about 1e-10, in 2-3x fewer
    deviance evaluations; tests/test_analysis_lmm.py).
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    t0 = time.perf_counter()
    y = np.asarray(y, float)
    X = np.asarray(X, float)
    n, p = X.shape
    fe_names = fe_names or [f"x{i}" for i in range(p)]
    exog_re = structure.exog_re
    if exog_re is None:
        # statsmodels needs at least one random effect per group; a zero-variance-free stand-in is not
        # possible, so models without a group block use the first component's grouping instead.
        raise ValueError("fit_lmm needs a random block per group (exog_re); use an intercept per group")
    caught: list[str] = []
    crit: LmmCriterion | FastCriterion | None = None
    converged = True
    start: np.ndarray | None = None
    theta: np.ndarray | None = None
    backend = engine
    if callable(engine):
        start = np.asarray(engine(y, X, structure, reml), float)
        backend = getattr(engine, "__name__", "custom")
        engine = "fast"
    elif engine not in ("fast", "statsmodels", "profiled"):
        raise ValueError(f"unknown engine {engine!r}; use 'fast', 'statsmodels', 'profiled' or a callable")
    if engine == "fast":
        theta, crit, note = _fit_fast(y, X, structure, reml, start, design_cache)
        if theta is None:
            caught.append(f"fast engine not used ({note}); fitted with statsmodels MixedLM instead")
            engine = backend = "statsmodels"
        else:
            grad_max = note
    if engine == "profiled" and structure.k_re > 1:
        engine = backend = "statsmodels"  # correlated blocks: the profiled optimiser alone can stop in a mirrored basin
    if engine in ("statsmodels", "profiled"):
        crit = LmmCriterion(y, X, structure, reml=reml)
    if engine == "statsmodels":
        vc = _statsmodels_vc(structure) if structure.components else None
        model = MixedLM(y, X, groups=structure.groups, exog_re=exog_re, exog_vc=vc)
        try:
            with warnings.catch_warnings(record=True) as wlist:
                warnings.simplefilter("always")
                res = model.fit(reml=reml, method=["lbfgs"], maxiter=200)
                caught += [f"{w.category.__name__}: {w.message}" for w in wlist]
            converged = bool(getattr(res, "converged", True))
            sm_scale = float(res.scale)
            sm_cov_re = np.atleast_2d(np.asarray(res.cov_re, float))
            sm_vcomp = np.asarray(res.vcomp, float) if structure.components else np.zeros(0)
            start = np.concatenate([_theta_from_cov(sm_cov_re / sm_scale),
                                    np.sqrt(np.maximum(sm_vcomp, 0) / sm_scale)])
        except (np.linalg.LinAlgError, ValueError) as exc:
            caught.append(f"statsmodels MixedLM failed ({type(exc).__name__}: {exc}); "
                          "fitted on lme4's profiled criterion from lme4's start instead")
            start = default_start(structure)
    if engine == "profiled":
        start = default_start(structure)
    if theta is None:
        theta, refined = refine_theta(crit, start)
        if refined and engine == "statsmodels":
            caught.append(f"refined: the lme4 criterion improved on statsmodels' optimum by {refined:.3g}")
        if not converged:
            caught.append("statsmodels reported no convergence; the refined optimum is checked by its gradient")
        grad_max = optimum_gradient(crit, theta)
    converged = grad_max < 1e-2
    if not converged:
        caught.append(f"largest gradient of the deviance at the optimum is {grad_max:.3g} (> 0.01): not converged")
    # Fixed effects, sigma and vcov(beta) at the variance parameters (GLS), as lme4 reports them.
    dev, beta, s2 = crit.profiled(theta)
    scale = s2
    T = _tri_from_theta(theta[: structure.k_re * (structure.k_re + 1) // 2], structure.k_re)
    cov_re = np.atleast_2d(T @ T.T * s2) if structure.k_re else np.zeros((0, 0))
    vcomp = theta[structure.k_re * (structure.k_re + 1) // 2:] ** 2 * s2
    varpar = np.concatenate([theta, [np.sqrt(s2)]])
    names = structure.varpar_names()
    cov_beta = crit.cov_beta(varpar)
    comp_rows = []
    k = structure.k_re
    for i in range(k):
        comp_rows.append({"component": f"{structure.group_name}:{structure.re_names[i]}", "variance": cov_re[i, i],
                          "sd": np.sqrt(max(cov_re[i, i], 0))})
    for i in range(k):
        for j in range(i):
            comp_rows.append({"component": f"{structure.group_name}:cov({structure.re_names[i]},{structure.re_names[j]})",
                              "variance": cov_re[i, j], "sd": np.nan})
    for c, v in zip(structure.components, vcomp, strict=True):
        comp_rows.append({"component": c.name, "variance": v, "sd": np.sqrt(max(v, 0))})
    comp_rows.append({"component": "residual", "variance": scale, "sd": np.sqrt(scale)})
    # A component is at the boundary when its contribution to the variance at typical covariate values
    # (variance x mean square of its covariate) is below boundary_tol x the residual variance.
    msq = {f"{structure.group_name}:{structure.re_names[i]}": float(np.mean(structure.exog_re[:, i] ** 2))
           for i in range(k)}
    msq.update({c.name: float(np.mean(np.asarray(c.values, float) ** 2)) for c in structure.components})
    boundary = [r["component"] for r in comp_rows
                if r["component"] in msq and r["variance"] * msq[r["component"]] < boundary_tol * scale]
    fit = LmmFit(
        fe_names=list(fe_names), params=beta, cov_params=cov_beta, varpar=varpar, varpar_names=names,
        variance_components=pd.DataFrame(comp_rows), loglik=-dev / 2, reml=reml,
        converged=converged, warnings=caught, boundary=boundary, n_obs=n, backend=str(backend),
    )
    if satterthwaite:
        attach_satterthwaite(fit, crit)
    fit.seconds = time.perf_counter() - t0
    return fit


def _fit_fast(y: np.ndarray, X: np.ndarray, structure: RandomStructure, reml: bool,
              start: np.ndarray | None, design_cache: dict | None = None,
              ) -> tuple[np.ndarray | None, FastCriterion | None, float | str]:
    """Fit with the fast engine: (theta, criterion, largest free gradient) or (None, None, reason).
    `design_cache` (see fit_lmm) keeps the design of the first fit for the next responses."""
    from .fastlmm_core import fit_design

    try:
        template = design_cache.get("design") if design_cache is not None else None
        if template is not None and template.n_obs == len(y):
            design = template.with_response(y)
        else:
            design = fast_design(y, X, structure)
            if design_cache is not None and design is not None:
                design_cache["design"] = design
    except ValueError as exc:
        return None, None, f"{exc}"
    if design is None:
        return None, None, "the component levels are not nested in the groups"
    x0 = default_start(structure) if start is None or not np.all(np.isfinite(start)) else start
    warm = design_cache is not None and bool(design_cache.get("warm_hessian"))
    hess_inv = design_cache.get("hess_inv") if warm else None
    try:
        ff = fit_design(design, reml=reml, start=x0, hess_inv=hess_inv)
        if warm and "hess_inv" not in design_cache and ff.converged:
            design_cache["hess_inv"] = _warm_hess_inv(design, reml, ff.theta)
    except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    crit = FastCriterion(design, structure, reml=reml)
    k = structure.k_re
    diag = np.array([i == j for j in range(k) for i in range(j, k)] + [True] * len(structure.components))
    theta = np.where(diag & (ff.theta < 1e-6), 0.0, np.asarray(ff.theta, float))
    g = crit.gradient(theta)
    free = ~(diag & (theta <= 1e-6))
    grad_max = float(np.max(np.abs(g[free]))) if free.any() else 0.0
    if not ff.converged or grad_max >= 1e-2:
        return None, None, f"no convergence (largest gradient {grad_max:.3g}; {ff.message})"
    return theta, crit, grad_max


def _warm_hess_inv(design, reml: bool, theta: np.ndarray) -> np.ndarray | None:  # noqa: ANN001
    """Inverse Hessian of the deviance in theta at a fit's optimum (differences of the analytic gradient), for
    the quasi-Newton start of refits of the same design with another response (MI); None when a variance is
    at its bound or the Hessian is not positive definite (refits then use L-BFGS-B from the start)."""
    from .fastlmm_core import single_threaded_blas, theta_hessian

    theta = np.asarray(theta, float)
    if np.any((design.theta_lower == 0.0) & (theta <= 1e-6)):
        return None
    try:
        with single_threaded_blas():
            h = theta_hessian(design.evaluator(reml=reml), theta)
        if not np.all(np.linalg.eigvalsh(h) > 0):
            return None
        return np.linalg.inv(h)
    except (FloatingPointError, np.linalg.LinAlgError):
        return None


def default_start(structure: RandomStructure) -> np.ndarray:
    """lme4's start (theta = 1 on the diagonal, 0 off it), divided by the RMS of each component's values."""
    k = structure.k_re
    block = []
    for j in range(k):
        for i in range(j, k):
            rms = float(np.sqrt(np.mean(structure.exog_re[:, i] ** 2))) if i == j else 1.0
            block.append(1.0 / rms if i == j and rms > 0 else 0.0)
    comps = [1.0 / max(float(np.sqrt(np.mean(np.asarray(c.values, float) ** 2))), 1e-12) for c in structure.components]
    return np.array(block + comps)


def refine_theta(crit: LmmCriterion, start: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimise lme4's profiled deviance over theta from `start` and from lme4's default start.

    Diagonal elements of theta are bounded below by 0 (as in lme4). Returns the best theta and by how much
    it lowered the deviance relative to `start` (0 when `start` was already the optimum to 1e-6).
    """
    from scipy.optimize import minimize

    k = crit.s.k_re
    lower = []
    for j in range(k):
        for i in range(j, k):
            lower.append(0.0 if i == j else None)
    lower += [0.0] * len(crit.s.components)
    bounds = [(lo, None) for lo in lower]
    default = default_start(crit.s)
    f = lambda th: crit.profiled(th)[0]  # noqa: E731
    f_start = f(np.where(np.isfinite(start), start, default))
    best, f_best = np.asarray(start, float), f_start
    starts = [start]
    if np.any(np.asarray(start)[[lo == 0.0 for lo in lower]] < 1e-4) or not np.all(np.isfinite(start)):
        starts.append(default)  # statsmodels stopped at (or near) the boundary: also try lme4's start
    start = np.where(np.isfinite(start), start, default)
    diag = np.array([lo == 0.0 for lo in lower])

    # Optimise over u: u = theta^2 on the diagonal (so the gradient at a zero variance is not forced to 0 by
    # symmetry, as it is in theta), u = theta off the diagonal.
    def to_theta(u: np.ndarray) -> np.ndarray:
        return np.where(diag, np.sqrt(np.maximum(u, 0.0)), u)

    fu = lambda u: f(to_theta(u))  # noqa: E731

    def grad_u(u: np.ndarray) -> np.ndarray:
        g = np.zeros(len(u))
        f0 = None
        for i in range(len(u)):
            h = 1e-6 * max(abs(u[i]), 1e-3)
            e = np.zeros(len(u))
            e[i] = h
            if diag[i] and u[i] < h:
                f0 = fu(u) if f0 is None else f0
                g[i] = (fu(u + e) - f0) / h
            else:
                g[i] = (fu(u + e) - fu(u - e)) / (2 * h)
        return g

    def grad(th: np.ndarray) -> np.ndarray:
        g = np.zeros(len(th))
        for i in range(len(th)):
            h = 1e-6 * max(abs(th[i]), 1e-2)
            e = np.zeros(len(th))
            e[i] = h
            g[i] = (f(th + e) - f(th - e)) / (2 * h)
        return g

    for x0 in starts:
        x0 = np.where(diag, np.maximum(x0, 1e-3), x0)
        u0 = np.where(diag, x0**2, x0)
        r = minimize(fu, u0, jac=grad_u, method="L-BFGS-B", bounds=bounds,
                     options={"ftol": 1e-10, "gtol": 1e-6, "maxiter": 1000})
        if r.fun < f_best - 1e-12:
            best, f_best = to_theta(r.x), float(r.fun)
    # Newton polish on the interior parameters (quadratic convergence where L-BFGS-B stops early).
    free = np.array([lo is None or best[i] > 1e-4 for i, lo in enumerate(lower)])
    for _ in range(6):
        if not free.any():
            break
        x = best.copy()
        fsub = lambda z, x=x: f(np.where(free, _embed(free, z, x), x))  # noqa: E731
        z0 = x[free]
        H = numeric_hessian(fsub, z0, rel=1e-3, richardson=False)
        g = grad(best)[free]
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        cand = best.copy()
        cand[free] = z0 - step
        if np.all(np.array([lo is None or cand[i] >= 0 for i, lo in enumerate(lower)])):
            fc = f(cand)
            if fc < f_best:
                best, f_best = cand, fc
                continue
        break
    best = np.where(np.array([lo == 0.0 for lo in lower]) & (best < 1e-6), 0.0, best)
    f_best = min(f_best, f(best))
    gain = f_start - f_best
    return best, (gain if gain > 1e-6 else 0.0)


def optimum_gradient(crit: LmmCriterion, theta: np.ndarray) -> float:
    """Largest |d deviance / d theta| over parameters not at a zero bound (central differences)."""
    k = crit.s.k_re
    diag = np.array([i == j for j in range(k) for i in range(j, k)] + [True] * len(crit.s.components))
    worst = 0.0
    for i in range(len(theta)):
        if diag[i] and theta[i] <= 1e-6:
            continue
        h = 1e-6 * max(abs(theta[i]), 1e-2)
        e = np.zeros(len(theta))
        e[i] = h
        g = (crit.profiled(theta + e)[0] - crit.profiled(theta - e)[0]) / (2 * h)
        worst = max(worst, abs(g))
    return worst


def _embed(mask: np.ndarray, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[mask] = z
    return out


def attach_satterthwaite(fit: LmmFit, crit: LmmCriterion) -> LmmFit:
    """Add vcov of the variance parameters (2 H^-1, positive eigenvalues only) and dC/dvarpar to `fit`."""
    H = numeric_hessian(crit.deviance, fit.varpar)
    evals, evecs = np.linalg.eigh(H)
    tol = 1e-8 * max(1.0, float(np.max(np.abs(evals))))
    pos = evals > tol
    fit.hessian_negative = int(np.sum(evals < -tol))
    if fit.hessian_negative:
        fit.warnings.append(f"Hessian of the deviance has {fit.hessian_negative} negative eigenvalue(s)")
    fit.vcov_varpar = 2 * (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T
    fit.jac_cov = numeric_jacobian_matrix(crit.cov_beta, fit.varpar)
    return fit
