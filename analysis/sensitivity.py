"""Sensitivity analyses for continuous outcomes: inverse-probability weighting and multiple imputation.

* `ipw_analysis`: a multinomial logistic propensity model of arm membership on baseline covariates (one row
  per person with a baseline measurement), stabilised weights P(arm) / P(arm | x), trimmed at the plan's
  quantiles; balance (standardised mean differences) before and after weighting. statsmodels' MixedLM takes
  no weights, so the weighted analysis is weighted least squares of `score ~ arm * wave + covariates` with
  household-clustered robust (sandwich) errors; contrasts use the normal distribution. The propensity model's
  own uncertainty is not propagated (the robust errors are conservative for this).
* `mi_analysis`: multiple imputation by chained equations on the wide (person x wave) data, within each arm
  (so arm-specific change is preserved): each wave's score is drawn from a Bayesian linear regression on the
  other waves and the covariates (proper imputation: coefficients and residual variance drawn from their
  posterior). Households enter by the cluster-means approach: each person's imputation model also has the mean
  of the other household members' current scores at every wave and an 'alone in the household' indicator
  (`household_means`). Every imputed data set is analysed with the main mixed model; estimates are pooled by
  Rubin's rules with Barnard-Rubin degrees of freedom (complete-data df = the Satterthwaite df).
* `pool_rubin`: Rubin's rules for one scalar estimand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .design import build_design
from .effects import balance_table
from .emmeans import _ci, contrast_vectors
from .lmm import fit_lmm
from .plan import AnalysisPlan, RandomEffects


@dataclass
class SensitivityResult:
    """Difference-in-change estimates of one sensitivity analysis for one outcome."""

    method: str
    contrasts: pd.DataFrame  # contrast, arm, arm2, wave, estimate, se, df, lower, upper, p
    balance: pd.DataFrame | None = None
    notes: str = ""


# --- IPW ---------------------------------------------------------------------------------------------------------

def propensity_weights(persons: pd.DataFrame, arms: list[str], covariates: list[str], stabilised: bool = True,
                       trim_quantile: float = 0.01) -> pd.Series:
    """Stabilised inverse-probability weights from a multinomial logit of arm on covariates (index = persons)."""
    import statsmodels.api as sm

    Xp, info = build_design(persons.assign(_w="x"), arms[:1], ["x"], covariates, wave_col="_w")
    # arm -> its position in `arms` (the column may be categorical with more categories, e.g. a reference group's
    # that no row here holds: recoding such a Categorical is deprecated in pandas)
    a = pd.Index(arms).get_indexer(np.asarray(persons["arm"], dtype=object))
    res = sm.MNLogit(a, Xp).fit(disp=0, maxiter=200, method="newton")
    probs = np.asarray(res.predict(Xp))
    p_own = probs[np.arange(len(a)), a]
    marg = np.bincount(a, minlength=len(arms)) / len(a)
    w = (marg[a] if stabilised else 1.0) / p_own
    if trim_quantile > 0:
        lo, hi = np.quantile(w, [trim_quantile, 1 - trim_quantile])
        w = np.clip(w, lo, hi)
    return pd.Series(w, index=persons.index, name="weight")


def ipw_analysis(df: pd.DataFrame, plan: AnalysisPlan, arms: list[str], comparisons: list[str], waves: list[str],
                 baseline: str, covariates: list[str]) -> SensitivityResult:
    """Weighted difference in change (WLS, household-clustered robust SEs) with stabilised IPW."""
    import statsmodels.api as sm

    spec = plan.sensitivity.ipw
    ps_covs = [c for c in spec.covariates if c in df.columns]
    base = df[df["wave"] == baseline].drop_duplicates("person_id").set_index("person_id")
    base = base.dropna(subset=ps_covs)
    w = propensity_weights(base, arms, ps_covs, spec.stabilised, spec.trim_quantile)
    bal = balance_table(base, "arm", plan.intervention_arm, comparisons, ps_covs, weights=w)
    d = df[df["person_id"].isin(w.index)].reset_index(drop=True)
    X, info = build_design(d, arms, waves, covariates)
    weights = d["person_id"].map(w).to_numpy(float)
    groups = pd.factorize(d["household_id"])[0]
    res = sm.WLS(d["score"].to_numpy(float), X, weights=weights).fit(cov_type="cluster", cov_kwds={"groups": groups})
    params, cov = np.asarray(res.params), np.asarray(res.cov_params())
    rows = []
    for c in contrast_vectors(info, plan.intervention_arm, comparisons, baseline):
        if c["kind"] != "diff_in_change":
            continue
        e, se = float(c["L"] @ params), float(np.sqrt(c["L"] @ cov @ c["L"]))
        t, p, lo, hi = _ci(e, se, np.inf, plan.alpha)
        rows.append({"contrast": c["contrast"], "arm": c["arm"], "arm2": c["arm2"], "wave": c["wave"], "estimate": e,
                     "se": se, "df": np.inf, "lower": lo, "upper": hi, "p": p})
    method = ("Inverse-probability weighting: multinomial logistic propensity of arm on "
              f"{', '.join(ps_covs)} (baseline), stabilised weights trimmed at the {spec.trim_quantile:g}/"
              f"{1 - spec.trim_quantile:g} quantiles; weighted least squares of score ~ arm * wave"
              f"{' + ' + ' + '.join(covariates) if covariates else ''} with household-clustered robust SEs "
              f"(statsmodels MixedLM takes no weights). Persons without a baseline measurement are left out "
              f"({df['person_id'].nunique() - len(w)} of {df['person_id'].nunique()}).")
    return SensitivityResult("ipw", pd.DataFrame(rows), bal, method)


# --- multiple imputation -----------------------------------------------------------------------------------------

def pool_rubin(estimates: np.ndarray, variances: np.ndarray, df_complete: float) -> dict[str, float]:
    """Rubin's rules with Barnard-Rubin (1999) df: estimate, se, df, fmi (fraction of missing information)."""
    q = np.asarray(estimates, float)
    u = np.asarray(variances, float)
    m = len(q)
    qbar, ubar = q.mean(), u.mean()
    b = q.var(ddof=1)
    t = ubar + (1 + 1 / m) * b
    lam = (1 + 1 / m) * b / t if t > 0 else 0.0
    nu_old = (m - 1) / lam**2 if lam > 0 else np.inf
    if np.isfinite(df_complete):
        nu_obs = (df_complete + 1) / (df_complete + 3) * df_complete * (1 - lam)
        nu = 1 / (1 / nu_old + 1 / nu_obs)
    else:
        nu = nu_old
    return {"estimate": float(qbar), "se": float(np.sqrt(t)), "df": float(nu), "fmi": float(lam),
            "within": float(ubar), "between": float(b)}


def _bayes_draw(y: np.ndarray, X: np.ndarray, Xnew: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw imputations from a Bayesian linear regression (flat prior): beta, sigma^2 from the posterior."""
    n, p = X.shape
    XtX = X.T @ X + 1e-8 * np.eye(p)
    beta = np.linalg.solve(XtX, X.T @ y)
    resid = y - X @ beta
    dfree = max(n - p, 1)
    s2 = float(resid @ resid) / rng.chisquare(dfree)
    L = np.linalg.cholesky(np.linalg.inv(XtX) * s2)
    b = beta + L @ rng.standard_normal(p)
    return Xnew @ b + rng.normal(0, np.sqrt(s2), len(Xnew))


def household_means(vals: np.ndarray, households: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out household means per column and an 'alone' indicator.

    In: values (persons x columns, no NaN), household codes 0..H-1 per person. Out: the mean of the *other*
    members of each person's household per column (the column mean for persons alone in their household), and
    a (persons x 1) indicator of being alone. The manifest-cluster-mean predictors of two-level chained
    equations (Enders, Mistler & Keller 2016).
    """
    hh = np.asarray(households, int)
    cnt = np.bincount(hh)[hh].astype(float)
    k = vals.shape[1]
    # one bincount over (household, column) bins: each bin sums its values in row order, as a per-column
    # bincount does (same numbers)
    sums = np.bincount((hh[:, None] * k + np.arange(k)).ravel(), weights=vals.ravel(),
                       minlength=(int(hh.max()) + 1) * k if len(hh) else 0).reshape(-1, k)[hh]
    alone = cnt == 1
    loo = np.where(alone[:, None], vals.mean(axis=0)[None, :],
                   (sums - vals) / np.maximum(cnt - 1, 1)[:, None])
    return loo, alone[:, None].astype(float)


def impute_wide(wide: pd.DataFrame, score_cols: list[str], cov_matrix: np.ndarray, iterations: int,
                rng: np.random.Generator, households: np.ndarray | None = None) -> pd.DataFrame:
    """One chained-equations imputation of the score columns of `wide` (persons of one arm).

    Starts from each column's observed mean, then `iterations` rounds of Bayesian linear regression draws per
    incompletely observed column on the other columns, the covariates and, with `households` (one code per
    row), the other household members' current mean score at every wave plus an 'alone in the household'
    indicator (so household similarity carries into the imputations). numpy arrays throughout; a seed gives
    the same imputations.
    """
    vals = wide[score_cols].to_numpy(float, copy=True)
    miss = np.isnan(vals)
    for j, c in enumerate(score_cols):
        if miss[:, j].all():
            raise ValueError(f"no observed values of {c} in this arm: cannot impute")
        vals[miss[:, j], j] = vals[~miss[:, j], j].mean()
    ones = np.ones((len(vals), 1))
    cov_matrix = np.asarray(cov_matrix, float).reshape(len(vals), -1)
    hh = None
    if households is not None:
        hh = pd.factorize(np.asarray(households))[0]
        if np.bincount(hh).max() < 2:
            hh = None  # nobody shares a household: the household terms would be constant
    k = len(score_cols)
    n_cov = cov_matrix.shape[1]
    alone_any = hh is not None and bool((np.bincount(hh)[hh] == 1).any())
    # the predictors [1, other waves, covariates, (household means, alone)], filled in place each step
    X = np.empty((len(vals), 1 + (k - 1) + n_cov + ((k + alone_any) if hh is not None else 0)))
    X[:, 0] = ones[:, 0]
    X[:, k:k + n_cov] = cov_matrix
    for _ in range(iterations):
        for j in range(k):
            m = miss[:, j]
            if not m.any():
                continue
            X[:, 1:j + 1] = vals[:, :j]
            X[:, j + 1:k] = vals[:, j + 1:]
            if hh is not None:
                loo, alone = household_means(vals, hh)
                X[:, k + n_cov:2 * k + n_cov] = loo
                if alone_any:
                    X[:, 2 * k + n_cov] = alone[:, 0]
            yv = vals[:, j]
            vals[m, j] = _bayes_draw(yv[~m], X[~m], X[m], rng)
    out = wide.copy()
    out[score_cols] = vals
    return out


def mi_analysis(df: pd.DataFrame, plan: AnalysisPlan, arms: list[str], comparisons: list[str], waves: list[str],
                baseline: str, covariates: list[str], re: RandomEffects, imputations: int | None = None,
                seed: int | None = None, start_theta: np.ndarray | None = None,
                df_complete: dict[str, float] | None = None) -> SensitivityResult:
    """MI (chained equations within arm) + the main mixed model per imputed set, pooled by Rubin's rules.

    `start_theta` (the main model's variance parameters) warm-starts every fit; `df_complete` (contrast ->
    the main model's Satterthwaite df) is the complete-data df of Barnard-Rubin and spares the per-imputation
    Satterthwaite computation. Without it each imputed fit's own Satterthwaite df is used (median over sets).
    """
    spec = plan.sensitivity.multiple_imputation
    household = spec.household
    m = imputations or spec.imputations
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    time_col = re.slope
    person = df.drop_duplicates("person_id").set_index("person_id")
    wide = df.pivot_table(index="person_id", columns="wave", values="score", aggfunc="first").reindex(columns=waves)
    wide.columns = [f"score@{w}" for w in waves]
    score_cols = list(wide.columns)
    times = None
    if time_col:
        times = df.pivot_table(index="person_id", columns="wave", values=time_col, aggfunc="first").reindex(columns=waves)
        times = times.fillna(times.mean())  # an unobserved wave's time: the wave's mean time
    Xcov, _ = build_design(person.loc[wide.index].assign(_w="x"), ["__none__"], ["x"], covariates, wave_col="_w")
    Xcov = Xcov[:, 1:]
    per_contrast: dict[str, dict[str, list]] = {}
    meta: dict[str, dict] = {}
    design = None
    # the fast engine's design, built for the first imputation, its response swapped after; the first fit's
    # inverse Hessian starts the next fits' quasi-Newton steps (fit_lmm's design_cache)
    design_cache: dict = {"warm_hessian": True}
    for _ in range(m):
        parts = []
        for a in arms:
            idx = person.loc[wide.index, "arm"].to_numpy() == a
            parts.append(impute_wide(wide[idx], score_cols, Xcov[idx], spec.iterations, rng,
                                     households=person.loc[wide.index[idx], "household_id"].to_numpy()
                                     if household else None))
        imp = pd.concat(parts)
        if design is None:
            # The long frame, design matrix and random structure are the same for every imputation (all
            # persons x all waves); build them once and map each imputation's wide scores onto the rows.
            long = imp.reset_index().melt(id_vars="person_id", var_name="wave", value_name="score")
            long["wave"] = long["wave"].str.replace("score@", "", regex=False)
            keep = ["household_id", "arm", *covariates]
            long = long.join(person[keep], on="person_id")
            if times is not None:
                tl = times.reset_index().melt(id_vars="person_id", var_name="wave", value_name=time_col)
                long = long.merge(tl, on=["person_id", "wave"], how="left")
            order = {w: i for i, w in enumerate(waves)}
            long = (long.assign(_o=long["wave"].map(order)).sort_values(["household_id", "person_id", "_o"])
                    .reset_index(drop=True))
            X, info = build_design(long, arms, waves, covariates)
            from .models import build_random_structure

            structure, _ = build_random_structure(long, re, set())
            person_order = imp.index
            rows = person_order.get_indexer(long["person_id"])
            cols = long["_o"].to_numpy()
            design = (X, info, structure)
        X, info, structure = design
        if not imp.index.equals(person_order):
            raise RuntimeError("imputed persons came back in a different order; cannot reuse the design")
        y = imp[score_cols].to_numpy(float)[rows, cols]
        engine = "fast"
        if start_theta is not None and len(start_theta) == len(structure.varpar_names()) - 1:
            def engine(*_args, _t=np.asarray(start_theta, float)):  # noqa: ANN001
                return _t
        fit = fit_lmm(y, X, structure, fe_names=info.columns, engine=engine,
                      boundary_tol=plan.defaults.boundary_tol, satterthwaite=df_complete is None,
                      design_cache=design_cache)
        for c in contrast_vectors(info, plan.intervention_arm, comparisons, baseline):
            if c["kind"] != "diff_in_change":
                continue
            e, se, dfc = fit.contrast(c["L"])
            if df_complete is not None:
                dfc = df_complete.get(c["contrast"], np.inf)
            d = per_contrast.setdefault(c["contrast"], {"e": [], "v": [], "df": []})
            d["e"].append(e)
            d["v"].append(se**2)
            d["df"].append(dfc)
            meta[c["contrast"]] = {"arm": c["arm"], "arm2": c["arm2"], "wave": c["wave"]}
    rows = []
    for name, d in per_contrast.items():
        pooled = pool_rubin(np.array(d["e"]), np.array(d["v"]), float(np.median(d["df"])))
        t, p, lo, hi = _ci(pooled["estimate"], pooled["se"], pooled["df"], plan.alpha)
        rows.append({"contrast": name, **meta[name], "estimate": pooled["estimate"], "se": pooled["se"],
                     "df": pooled["df"], "lower": lo, "upper": hi, "p": p, "fmi": pooled["fmi"]})
    method = (f"Multiple imputation: {m} imputations by chained equations within each arm (Bayesian linear "
              f"regression of each wave's score on the other waves and {', '.join(covariates) or 'no covariates'}"
              + ("; households by the cluster-means approach: the mean score of the other members of the "
                 "household at every wave (current imputations) and an indicator of being alone in the household "
                 "as predictors" if household else "; households not modelled")
              + f", {spec.iterations} iterations), each analysed with the main mixed model "
              "(lme4's profiled REML criterion), pooled by Rubin's rules with Barnard-Rubin df"
              + (" (complete-data df: the main model's Satterthwaite df)." if df_complete is not None else "."))
    return SensitivityResult("mi", pd.DataFrame(rows), None, method)


def conclusion_changes(main: pd.DataFrame, sens: pd.DataFrame, alpha: float) -> pd.Series:
    """Per sensitivity row: True when significance (p < alpha) or the sign differs from the main estimate."""
    m = main.set_index("contrast")
    out = []
    for _, r in sens.iterrows():
        if r["contrast"] not in m.index:
            out.append(np.nan)
            continue
        mr = m.loc[r["contrast"]]
        out.append(bool(((mr["p"] < alpha) != (r["p"] < alpha)) or (np.sign(mr["estimate"]) != np.sign(r["estimate"]))))
    return pd.Series(out, index=sens.index, dtype=object)

