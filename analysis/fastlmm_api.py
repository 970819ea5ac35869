"""``fit_mixed``: one formula interface over the fast blocked engine and statsmodels' MixedLM.

Structures (lme4 notation), with ``groups`` the outermost grouping column (the independent blocks):

* ``y ~ x + (re_formula | groups)``: ``fit_mixed("y ~ time * arm", df, "subject_id", re_formula="1 + time")``;
* persons nested in households, ``y ~ x + (1 | household) + (1 + time | household:person)``:
  ``fit_mixed(..., groups="household_id", re_formula="1", vc={"person_id": "1 + time"})``.

``engine="auto"`` fits with the fast engine (:mod:`cohortflow.analysis.fastlmm_core`) and falls back to
statsmodels when the fast fit fails or does not converge; ``engine="statsmodels"`` is the reference. Every
result says which engine fitted it (``LmmFit.engine``) and why a fallback happened (``LmmFit.warnings``).
"""

from __future__ import annotations

import math
import re
import time
import warnings as pywarnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import patsy
from scipy import linalg

from .fastlmm_core import SINGULAR_TOL, CovKind, FastLmmFit, LmmDesign, RETerm, fit_design

Engine = Literal["auto", "fast", "statsmodels"]

#: Blocks larger than this many random effects are left to statsmodels (dense q x q algebra per block).
MAX_BLOCK_Q = 200

#: statsmodels as the reference: BFGS with a tight gradient tolerance (its default L-BFGS stops near 1e-5).
STATSMODELS_FIT_KW: dict = {"method": ["bfgs", "lbfgs", "cg"], "gtol": 1e-10, "maxiter": 5000}


@dataclass
class LmmFit:
    """A fitted linear mixed model, whichever engine fitted it.

    ``fe_params``/``bse``/``cov_params`` use the fixed-effect design's column names; ``cov_re`` is the
    covariance of the ``groups`` term (rows/columns in formula order, as lme4), ``cov_vc`` that of each
    nested term; ``varcorr`` is lme4's ``as.data.frame(VarCorr(fit))`` (grp, var1, var2, vcov, sdcor).
    ``cov_params`` is lme4's ``vcov()``: sigma^2 (X'V^-1X)^-1 at the estimates (``cov_method`` says so).
    ``deviance_at``/``reml_deviance``/``vcov_beta`` evaluate the model at other variance parameters
    (lmerTest's ``varpar = (theta, sigma)``), for Satterthwaite degrees of freedom by numerical derivatives.
    """

    fe_params: pd.Series
    bse: pd.Series
    cov_params: pd.DataFrame
    cov_re: pd.DataFrame
    cov_vc: dict[str, pd.DataFrame]
    varcorr: pd.DataFrame
    scale: float
    llf: float
    reml: bool
    converged: bool
    boundary: bool
    engine: str
    nobs: int
    n_groups: int
    seconds: float
    theta: np.ndarray | None
    warnings: list[str] = field(default_factory=list)
    cov_method: str = "lme4 vcov: sigma^2 (X'V^-1 X)^-1"
    n_patterns: int | None = None
    design: LmmDesign | None = field(default=None, repr=False)
    sm_result: object | None = field(default=None, repr=False)
    groups: str = ""
    row_index: np.ndarray | None = field(default=None, repr=False)  # positions of the fitted rows in data
    _evaluators: dict = field(default_factory=dict, repr=False)

    def drop_heavy(self) -> LmmFit:
        """The same result without the design arrays and statsmodels' result object (cheap to pickle)."""
        self.design = None
        self.sm_result = None
        self._evaluators = {}
        return self

    def _evaluator(self, reml: bool):
        """The design's deviance evaluator for REML or ML, built once (repeated calls are cheap)."""
        if reml not in self._evaluators:
            self._evaluators[reml] = self._need_design().evaluator(reml=reml)
        return self._evaluators[reml]

    @property
    def sigma(self) -> float:
        return math.sqrt(self.scale)

    @property
    def varpar(self) -> np.ndarray:
        """lmerTest's variance parameters: theta followed by the residual standard deviation."""
        if self.theta is None:
            raise ValueError("this fit has no theta (structure not covered by the fast engine)")
        return np.concatenate([self.theta, [self.sigma]])

    def theta_lme4(self) -> np.ndarray:
        """theta in lme4's order (``getME(fit, "theta")``): terms by decreasing number of levels."""
        d = self._need_design()
        order = sorted(range(len(d.terms)), key=lambda k: -int(d.n_levels[k]))
        return np.concatenate([self.theta[d.theta_slices[k]] for k in order])

    def _need_design(self) -> LmmDesign:
        if self.design is None:
            raise ValueError("deviance functions need the fast engine's design (not available for this structure)")
        return self.design

    def deviance_at(self, theta: np.ndarray, sigma: float | None = None, reml: bool | None = None) -> float:
        """-2 log-likelihood (REML criterion when reml) at theta; profiled over sigma when sigma is None."""
        ev = self._evaluator(self.reml if reml is None else reml)
        return float(ev.evaluate(np.asarray(theta, float), grad=False, sigma=sigma)["deviance"])

    def reml_deviance(self, theta: np.ndarray, sigma: float | None = None) -> float:
        """lme4's REML criterion at theta (and sigma, as lmerTest's ``devfun_vp``; profiled when None)."""
        return self.deviance_at(theta, sigma=sigma, reml=True)

    def vcov_beta(self, theta: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """sigma^2 (X'V(theta)^-1 X)^-1; sigma None means the sigma profiled at theta under this fit's method."""
        ev = self._evaluator(self.reml)
        r = ev.evaluate(np.asarray(theta, float), grad=False)
        s2 = r["r2"] / ev.n_eff if sigma is None else sigma * sigma
        p = self._need_design().p
        return s2 * linalg.cho_solve((r["chol_xx"], True), np.eye(p))

    def summary_frame(self) -> pd.DataFrame:
        """Fixed effects with standard errors and Wald z (the df belong to a Satterthwaite helper)."""
        return pd.DataFrame({"estimate": self.fe_params, "se": self.bse, "z": self.fe_params / self.bse})


@dataclass
class _Spec:
    """Design matrices of one model, rows with missing values dropped."""

    y: np.ndarray
    X: pd.DataFrame
    groups: np.ndarray
    terms: list[RETerm]
    frame: pd.DataFrame
    n_dropped: int
    groups_name: str = ""


def _categorise_text(data: pd.DataFrame, formulas: list[str]) -> pd.DataFrame:
    """Text columns named in the formulas as pandas categoricals (patsy reads those fast, text slowly)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", " ".join(formulas)))
    text = [
        c for c in data.columns
        if c in words and not isinstance(data[c].dtype, pd.CategoricalDtype)
        and (pd.api.types.is_string_dtype(data[c]) or data[c].dtype == object)
    ]
    if not text:
        return data
    data = data.copy(deep=False)
    for c in text:
        data[c] = data[c].astype("category")
    return data


def _design_matrix(formula: str, data: pd.DataFrame, what: str) -> pd.DataFrame:
    try:
        return patsy.dmatrix(formula, data, return_type="dataframe", NA_action="drop")
    except patsy.PatsyError as exc:
        raise ValueError(f"{what} formula {formula!r} cannot be built from the data: {exc}") from exc


def build_spec(
    formula: str,
    data: pd.DataFrame,
    groups: str,
    re_formula: str | None = "1",
    vc: dict[str, str] | None = None,
    re_cov: CovKind = "full",
    vc_cov: CovKind = "full",
) -> _Spec:
    """Build y, X and the random-effect terms from formulas; rows missing any used value are dropped.

    In: the model formula (patsy), the data, the block column, the random-effect formula of the blocks and
    the nested terms ``vc`` (column -> formula). Out: arrays ready for :class:`LmmDesign`.
    """
    for col in [groups, *(vc or {})]:
        if col not in data.columns:
            raise ValueError(f"grouping column {col!r} is not in the data (columns: {list(data.columns)[:20]})")
    data = _categorise_text(data, [formula, re_formula or "", *(vc or {}).values()]).reset_index(drop=True)
    try:
        ydf, xdf = patsy.dmatrices(formula, data, return_type="dataframe", NA_action="drop")
    except patsy.PatsyError as exc:
        raise ValueError(f"model formula {formula!r} cannot be built from the data: {exc}") from exc
    keep = ydf.index
    parts = {}
    if re_formula is not None:
        parts["re"] = _design_matrix(re_formula, data, "random-effect")
        keep = keep.intersection(parts["re"].index, sort=False)
    for name, f in (vc or {}).items():
        parts[name] = _design_matrix(f, data, f"nested term {name!r}")
        keep = keep.intersection(parts[name].index, sort=False)
    grp_cols = [groups, *(vc or {})]
    keep = keep[data.loc[keep, grp_cols].notna().all(axis=1).to_numpy()]
    n_dropped = len(data) - len(keep)
    if len(keep) < len(ydf):  # rebuild on the complete rows so categorical codings match the fitted rows
        frame = data.loc[keep]
        ydf, xdf = patsy.dmatrices(formula, frame, return_type="dataframe", NA_action="raise")
        if re_formula is not None:
            parts["re"] = _design_matrix(re_formula, frame, "random-effect")
        for name, f in (vc or {}).items():
            parts[name] = _design_matrix(f, frame, f"nested term {name!r}")
    frame = data.loc[keep]
    if len(frame) == 0:
        raise ValueError(f"no complete rows for {formula!r}: every row misses a value used by the model")
    terms: list[RETerm] = []
    if re_formula is not None:
        z = parts["re"].loc[keep]
        terms.append(RETerm(groups, z.to_numpy(float), tuple(z.columns), None, re_cov))
    for name in vc or {}:
        z = parts[name].loc[keep]
        terms.append(RETerm(name, z.to_numpy(float), tuple(z.columns), frame[name].to_numpy(), vc_cov))
    if not terms:
        raise ValueError("the model needs random effects: give re_formula and/or vc")
    return _Spec(
        y=ydf.loc[keep].to_numpy(float).ravel(),
        X=xdf.loc[keep],
        groups=frame[groups].to_numpy(),
        terms=terms,
        frame=frame,
        n_dropped=n_dropped,
        groups_name=groups,
    )


def _varcorr(terms: list[RETerm], covs: list[np.ndarray], scale: float, n_levels: list[int]) -> pd.DataFrame:
    """lme4's as.data.frame(VarCorr()): terms by decreasing number of levels, variances then covariances."""
    rows = []
    order = sorted(range(len(terms)), key=lambda k: -n_levels[k])
    for k in order:
        t, c = terms[k], covs[k]
        names = t.colnames
        for i in range(t.q):
            rows.append((t.name, names[i], None, c[i, i], math.sqrt(max(c[i, i], 0.0))))
        if t.cov == "full":
            for j in range(t.q):
                for i in range(j + 1, t.q):
                    den = math.sqrt(max(c[i, i], 0.0) * max(c[j, j], 0.0))
                    rows.append((t.name, names[j], names[i], c[i, j], c[i, j] / den if den > 0 else float("nan")))
    rows.append(("Residual", None, None, scale, math.sqrt(scale)))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def _result_from_fast(spec: _Spec, fit: FastLmmFit, t0: float) -> LmmFit:
    return _lmmfit_from_fast(
        fit, list(spec.X.columns), spec.terms, len(spec.y), spec.groups_name, spec.frame.index.to_numpy(),
        spec.n_dropped, t0
    )


def _lmmfit_from_fast(
    fit: FastLmmFit,
    xnames: list[str],
    terms: list[RETerm],
    nobs: int,
    groups: str,
    row_index: np.ndarray | None,
    n_dropped: int,
    t0: float,
) -> LmmFit:
    """The common result object from a fast-engine fit."""
    fe = pd.Series(fit.beta, index=xnames, name="estimate")
    covp = pd.DataFrame(fit.vcov_beta, index=xnames, columns=xnames)
    covs = [fit.cov_term(k) for k in range(len(terms))]
    frames = [pd.DataFrame(c, index=list(t.colnames), columns=list(t.colnames)) for c, t in zip(covs, terms, strict=True)]
    has_re = terms[0].levels is None
    cov_re = frames[0] if has_re else pd.DataFrame()
    cov_vc = {t.name: f for t, f in zip(terms, frames, strict=True) if t.levels is not None}
    warns = list(fit.warnings)
    if n_dropped:
        warns.append(f"{n_dropped} rows with missing values in model variables were dropped")
    return LmmFit(
        fe_params=fe,
        bse=pd.Series(np.sqrt(np.diag(fit.vcov_beta)), index=xnames, name="se"),
        cov_params=covp,
        cov_re=cov_re,
        cov_vc=cov_vc,
        varcorr=_varcorr(terms, covs, fit.sigma2, list(fit.design.n_levels)),
        scale=fit.sigma2,
        llf=fit.llf,
        reml=fit.reml,
        converged=fit.converged,
        boundary=fit.boundary,
        engine="fast",
        nobs=nobs,
        n_groups=fit.design.n_blocks,
        seconds=time.perf_counter() - t0,
        theta=fit.theta,
        warnings=warns,
        n_patterns=fit.design.n_patterns,
        design=fit.design,
        groups=groups,
        row_index=row_index,
    )


def _sm_vc_formula(vc: dict[str, str], spec: _Spec) -> dict[str, str]:
    """statsmodels' variance components for nested terms with independent effects (vc_cov="diag")."""
    out = {}
    for t in spec.terms:
        if t.levels is None:
            continue
        for c in t.colnames:
            if c == "Intercept":
                out[f"{t.name}|{c}"] = f"0 + C({t.name})"
            elif c.isidentifier() and c in spec.frame.columns:
                out[f"{t.name}|{c}"] = f"0 + C({t.name}):{c}"
            else:
                raise NotImplementedError(f"statsmodels cannot express nested random effect column {c!r}")
    return out


def _fit_statsmodels(
    formula: str, spec: _Spec, groups: str, re_formula: str | None, vc: dict[str, str] | None, reml: bool,
    re_cov: CovKind, vc_cov: CovKind, t0: float,
) -> LmmFit:
    from statsmodels.regression.mixed_linear_model import MixedLM

    nested_q = [t.q for t in spec.terms if t.levels is not None]
    if vc and vc_cov == "full" and any(q > 1 for q in nested_q):
        raise NotImplementedError(
            "statsmodels cannot fit correlated random effects of a nested factor; use vc_cov='diag' or engine='fast'"
        )
    frame = spec.frame
    vc_formula = _sm_vc_formula(vc, spec) if vc else {}
    re_diag = re_cov == "diag" and re_formula is not None and spec.terms[0].q > 1
    sm_re_formula = re_formula if re_formula is not None else "0"
    if re_diag:  # independent effects of the groups: one variance component per column
        sm_re_formula = "0"
        for c in spec.terms[0].colnames:
            if c == "Intercept":
                vc_formula[f"{groups}|{c}"] = "1"
            elif c.isidentifier() and c in frame.columns:
                vc_formula[f"{groups}|{c}"] = f"0 + {c}"
            else:
                raise NotImplementedError(f"statsmodels cannot express random effect column {c!r} as a component")
    model = MixedLM.from_formula(
        formula, data=frame, groups=groups, re_formula=sm_re_formula, vc_formula=vc_formula or None,
    )
    fit_kw = dict(STATSMODELS_FIT_KW)
    caught: list[str] = []
    with pywarnings.catch_warnings(record=True) as wlist:
        pywarnings.simplefilter("always")
        res = model.fit(reml=reml, **fit_kw)
    caught = sorted({f"statsmodels: {w.message}" for w in wlist})
    xnames = list(model.exog_names)
    fe = res.fe_params.copy()
    fe.index = xnames
    cov_re = pd.DataFrame()
    covs: list[np.ndarray] = []
    vc_names = list(model.exog_vc.names) if vc_formula else []
    if re_diag:
        names = list(spec.terms[0].colnames)
        d = np.array([float(res.vcomp[vc_names.index(f"{groups}|{c}")]) for c in names])
        cov_re = pd.DataFrame(np.diag(d), index=names, columns=names)
        covs.append(cov_re.to_numpy())
    elif re_formula is not None:
        names = list(spec.terms[0].colnames)
        cov_re = pd.DataFrame(np.asarray(res.cov_re), index=names, columns=names)
        covs.append(cov_re.to_numpy())
    cov_vc = {}
    for t in spec.terms:
        if t.levels is None:
            continue
        d = np.array([float(res.vcomp[vc_names.index(f"{t.name}|{c}")]) for c in t.colnames])
        cov_vc[t.name] = pd.DataFrame(np.diag(d), index=list(t.colnames), columns=list(t.colnames))
        covs.append(np.diag(d))
    scale = float(res.scale)
    # theta from the estimates (lower Cholesky of cov / scale), for the deviance functions
    theta = None
    design = None
    try:
        design = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms, xnames=xnames)
        parts = []
        for t, c in zip(spec.terms, covs, strict=True):
            lam = _chol_psd(c / scale)
            parts += [lam[i, j] for i, j in t.theta_positions()]
        theta = np.array(parts)
    except (ValueError, np.linalg.LinAlgError):
        design, theta = None, None
    cov_method = "statsmodels cov_params (observed information)"
    covp = res.cov_params().iloc[: len(xnames), : len(xnames)]
    covp = pd.DataFrame(np.asarray(covp), index=xnames, columns=xnames)
    if design is not None and theta is not None:
        ev = design.evaluator(reml=reml)
        r = ev.evaluate(theta, grad=False)
        covp = pd.DataFrame(scale * linalg.cho_solve((r["chol_xx"], True), np.eye(len(xnames))), index=xnames, columns=xnames)
        cov_method = "lme4 vcov: sigma^2 (X'V^-1 X)^-1 at statsmodels' estimates"
    boundary = any(np.diag(c).min() < SINGULAR_TOL**2 * scale for c in covs if c.size)
    if theta is not None and design is not None:  # lme4's rule: a diagonal element of theta below 1e-4
        diag = np.concatenate([np.diag(design.term_factor(theta, k)) for k in range(len(spec.terms))])
        boundary = bool((np.abs(diag) < SINGULAR_TOL).any())
    return LmmFit(
        fe_params=fe,
        bse=pd.Series(np.sqrt(np.diag(covp.to_numpy())), index=xnames, name="se"),
        cov_params=covp,
        cov_re=cov_re,
        cov_vc=cov_vc,
        varcorr=_varcorr(spec.terms, covs, scale, list(design.n_levels) if design else [0] * len(covs)),
        scale=scale,
        llf=float(res.llf),
        reml=reml,
        converged=bool(res.converged),
        boundary=bool(boundary),
        engine="statsmodels",
        nobs=int(res.nobs),
        n_groups=len(model.group_labels),
        seconds=time.perf_counter() - t0,
        theta=theta,
        warnings=caught + ([f"{spec.n_dropped} rows with missing values in model variables were dropped"] if spec.n_dropped else []),
        cov_method=cov_method,
        design=design,
        sm_result=res,
        groups=groups,
        row_index=spec.frame.index.to_numpy(),
    )


def _chol_psd(c: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero columns where the variance is 0)."""
    q = c.shape[0]
    lam = np.zeros((q, q))
    for j in range(q):
        d = c[j, j] - lam[j, :j] @ lam[j, :j]
        lam[j, j] = math.sqrt(max(d, 0.0))
        for i in range(j + 1, q):
            lam[i, j] = (c[i, j] - lam[i, :j] @ lam[j, :j]) / lam[j, j] if lam[j, j] > 1e-12 else 0.0
    return lam


def fit_mixed(
    formula: str,
    data: pd.DataFrame,
    groups: str,
    re_formula: str | None = "1",
    vc: dict[str, str] | None = None,
    reml: bool = True,
    engine: Engine = "auto",
    re_cov: CovKind = "full",
    vc_cov: CovKind = "full",
    start: np.ndarray | None = None,
) -> LmmFit:
    """Fit a linear mixed model; say which engine fitted it.

    In: ``formula`` (patsy, fixed part), ``data``, ``groups`` (outermost grouping column: the independent
    blocks), ``re_formula`` (random effects per group, correlated unless ``re_cov="diag"``; None for none),
    ``vc`` (nested factor column -> random-effect formula, e.g. ``{"person_id": "1 + time"}`` is lme4's
    ``(1 + time | household:person)``), ``reml``, ``engine``, ``start`` (theta, warm start).
    Out: :class:`LmmFit`. R: ``lmer(y ~ time * arm + (1 | household) + (1 + time | household:person))``.
    """
    if engine not in ("auto", "fast", "statsmodels"):
        raise ValueError(f"engine must be 'auto', 'fast' or 'statsmodels', not {engine!r}")
    t0 = time.perf_counter()
    spec = build_spec(formula, data, groups, re_formula, vc, re_cov, vc_cov)
    if engine == "statsmodels":
        return _fit_statsmodels(formula, spec, groups, re_formula, vc, reml, re_cov, vc_cov, t0)
    reason = ""
    try:
        design = LmmDesign(spec.y, spec.X.to_numpy(float), spec.groups, spec.terms, xnames=list(spec.X.columns))
        qmax = max(lay.q for lay in design.layouts)
        if qmax > MAX_BLOCK_Q:
            raise NotImplementedError(f"a block has {qmax} random effects (more than {MAX_BLOCK_Q})")
        fast = fit_design(design, reml=reml, start=start)
        if fast.converged or engine == "fast":
            return _result_from_fast(spec, fast, t0)
        reason = f"fast engine did not converge ({fast.message}; {'; '.join(fast.warnings)})"
    except (NotImplementedError, FloatingPointError, np.linalg.LinAlgError) as exc:
        if engine == "fast":
            raise
        reason = f"fast engine could not fit: {exc}"
    res = _fit_statsmodels(formula, spec, groups, re_formula, vc, reml, re_cov, vc_cov, t0)
    res.warnings.insert(0, f"fell back to statsmodels: {reason}")
    return res
