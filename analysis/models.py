"""Outcome models per the analysis plan: `fit_outcome_model(data, outcome_spec, plan, study) -> OutcomeResult`.

Continuous outcomes: linear mixed model (REML), `score ~ arm * wave + covariates`, random intercepts for
households and persons within households and an uncorrelated random slope of time per person; marginal
means and change contrasts with Satterthwaite df (lmerTest/emmeans definitions); d against the pooled
baseline SD with Hedges' correction; a growth model (`arm * time`) for Feingold's d. A variance component
estimated at the boundary (or a fit that does not converge) triggers the plan's fallback rule: drop the
slope, then the household intercept (order from `defaults.fallback`), refit, and say so in `fallback`.

Binary and count outcomes: GEE (logit; negative binomial or Poisson log link) with exchangeable working
correlation within households and robust (sandwich) errors; contrasts as risk (or mean) differences with
delta-method CIs and as odds/rate ratios.

Input: the analysis dataset of Contract 5 (docs/design.md). Arms come from the plan, waves from the study.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np
import pandas as pd
from scipy import stats

from cohortflow.config.study import Study

from .design import DesignInfo, build_design
from .diagnostics import LmmResiduals, lmm_residuals, residual_summary
from .effects import hedges_j, pooled_sd, standardise
from .emmeans import _ci, change_contrasts, contrast_vectors, marginal_means
from .gee import GeeFit, fit_gee_grouped
from .lmm import LmmFit, RandomStructure, VarianceComponent, fit_lmm
from .plan import AnalysisPlan, OutcomeSpec, RandomEffects

DAYS_PER_MONTH = 30.4375
#: columns the household bootstrap adds to an outcome's contrasts (diff-in-change rows; NaN elsewhere)
BOOTSTRAP_COLUMNS = ["boot_se", "boot_lower", "boot_upper", "boot_d_lower", "boot_d_upper", "boot_resamples",
                     "boot_failed"]
CONTRAST_COLUMNS = ["outcome", "contrast", "kind", "arm", "arm2", "wave", "estimate", "se", "df", "t", "p", "p_adj",
                    "lower", "upper", "d", "d_lower", "d_upper", "d_denominator", "ratio", "ratio_lower",
                    "ratio_upper", "ratio_kind"]


class AnalysisDataError(ValueError):
    """The analysis dataset lacks a column or rows the plan needs; the message says what to do."""


@dataclass
class OutcomeResult:
    """Everything the report needs about one outcome of the plan."""

    outcome: str  # plan key
    name: str  # outcome column value
    family: str
    method: str
    counts: pd.DataFrame  # arm, wave, n_persons, n_households, n_obs, pct_retained
    fixed_effects: pd.DataFrame  # term, estimate, se, df, t, p
    variance_components: pd.DataFrame  # component, variance, sd
    loglik: float
    converged: bool
    warnings: list[str]
    fallback: str | None  # the fallback rule's steps and reasons, or None
    random_structure: str
    emms: pd.DataFrame  # arm, wave, emmean, se, df, lower, upper
    contrasts: pd.DataFrame  # CONTRAST_COLUMNS
    baseline: pd.DataFrame  # arm, n, mean, sd
    above_cutoff: pd.DataFrame  # arm, wave, n, n_above, pct
    clinical: pd.DataFrame  # arm, wave, n_paired, pct_improved, pct_deteriorated
    growth: pd.DataFrame = field(default_factory=pd.DataFrame)
    boundary: list[str] = field(default_factory=list)  # components at the boundary in the final model
    theta: np.ndarray | None = None  # lme4 variance parameters of the final mixed model (warm start for MI)
    engine: str | None = None  # which engine fitted the final mixed model (LmmFit.backend)
    direction: str | None = None
    rows_dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    residual_diagnostics: pd.DataFrame | None = None  # mixed models: diagnostics.residual_summary
    residuals: LmmResiduals | None = None  # mixed models: fitted values, conditional residuals, BLUPs (plots)
    bootstrap: pd.DataFrame | None = None  # household-bootstrap CIs per diff-in-change contrast (plan's bootstrap)


# --- data selection ------------------------------------------------------------------------------------------

REQUIRED = ["household_id", "person_id", "arm", "wave", "outcome", "score"]
# The model's response column per `OutcomeSpec.response` ("stopped" is derived from `score`, see derive_stopped).
RESPONSE_COLUMN = {"score": "score", "above_cutoff": "above_cutoff", "stopped": "stopped"}


def analysis_columns(plan: AnalysisPlan) -> list[str]:
    """Columns of the analysis dataset that `run_analysis` reads for `plan`: the keys, arm, wave, outcome,
    response and role columns, every outcome's covariates and random slope, the time column, the IPW and
    resilience covariates (in that order, each once). Derived from the plan, so a covariate added there is kept."""
    cols = [*REQUIRED, "role", "above_cutoff", plan.defaults.time_column]
    for spec in plan.outcomes:
        cols += plan.covariates_of(spec)
        re = plan.random_effects_of(spec)
        if re.slope:
            cols.append(re.slope)
    cols += plan.sensitivity.ipw.covariates
    if plan.resilience is not None:
        cols += plan.resilience.covariates
    return list(dict.fromkeys(c for c in cols if c))


def analysis_outcome_names(plan: AnalysisPlan) -> list[str]:
    """Values of the `outcome` column that `run_analysis` reads for `plan` (its outcomes and the resilience
    comparison's outcome), each once."""
    names = [o.name for o in plan.outcomes]
    if plan.resilience is not None:
        names.append(plan.resilience.outcome)
    return list(dict.fromkeys(names))


def analysis_frame(data: pd.DataFrame, plan: AnalysisPlan) -> pd.DataFrame:
    """The part of the analysis dataset `run_analysis` uses for `plan`: rows of its outcomes, the columns of
    `analysis_columns` present (in `data`'s order; absent ones are reported by the model steps), rows in
    `data`'s order with a fresh 0..n-1 index. A copy: `data` can be dropped afterwards.

    The model flow's workers then copy-on-write and select from this small frame, not the whole dataset
    (at factor 100: 23 M rows, 19 columns; the shipped plan reads about a tenth of the rows)."""
    keep = set(analysis_columns(plan))
    cols = [c for c in data.columns if c in keep]
    if "outcome" not in data.columns:
        return data[cols].reset_index(drop=True)
    rows = data["outcome"].isin(analysis_outcome_names(plan)).to_numpy()
    return data.loc[rows, cols].reset_index(drop=True)


def read_analysis_dataset(path, plan: AnalysisPlan) -> pd.DataFrame:  # noqa: ANN001 - str or Path
    """`analysis_frame` of the analysis dataset in the Parquet file at `path` (Contract 5), read without the
    rest: only the plan's columns, one row group at a time, each filtered on `outcome` before the next is read,
    so the whole dataset is never in memory. Same dtypes (categories in the same order), values and row order
    as `analysis_frame(pd.read_parquet(path), plan)`.

    Every row group of a categorical column carries the whole dictionary (all persons, at factor 100 ~40 MB):
    the row groups' equal dictionaries are replaced by the first one's, so one copy is kept, not one per row
    group (`pd.read_parquet` with `filters` peaked at 3.8 GB at factor 100 for a 0.2 GB result; this at ~0.7 GB)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    keep = set(analysis_columns(plan))
    source = pq.ParquetFile(path)
    cols = [c for c in source.schema_arrow.names if c in keep]
    names = pa.array(analysis_outcome_names(plan))
    dictionaries: dict[str, pa.Array] = {}
    parts = []
    for i in range(source.num_row_groups):
        part = source.read_row_group(i, columns=cols)
        if "outcome" in cols:
            part = part.filter(pc.is_in(part["outcome"], value_set=names))
        parts.append(_shared_dictionaries(part, dictionaries))
        del part
    table = pa.concat_tables(parts) if parts else source.schema_arrow.empty_table().select(cols)
    del parts
    frame = table.to_pandas()
    del table
    from cohortflow.warehouse.linkage import release_memory

    release_memory()  # Arrow's pool keeps what the row groups used
    return frame.reset_index(drop=True)


def _shared_dictionaries(table, seen: dict):  # noqa: ANN001, ANN202 - pyarrow Table in and out
    """`table` with each dictionary column's dictionary replaced by the one in `seen` (the first seen for that
    column) when equal; values, indices and types are unchanged."""
    import pyarrow as pa

    for j, name in enumerate(table.column_names):
        column = table.column(j)
        if not pa.types.is_dictionary(column.type):
            continue
        chunks = []
        for chunk in column.chunks:
            first = seen.setdefault(name, chunk.dictionary)
            if chunk.dictionary is not first and chunk.dictionary.equals(first):
                chunk = pa.DictionaryArray.from_arrays(chunk.indices, first)
            chunks.append(chunk)
        table = table.set_column(j, name, pa.chunked_array(chunks, type=column.type))
    return table


def _instrument_scale(name: str):
    """The instrument scale behind an outcome name `<instrument>.<scale>`, or None."""
    return _instrument_scale_cached(name)


@lru_cache(maxsize=1)
def _instruments():
    """The shipped instrument definitions, read once per process (parsing the YAML takes seconds)."""
    from cohortflow.instruments.registry import load_instruments

    return load_instruments()


@lru_cache(maxsize=64)
def _instrument_scale_cached(name: str):
    try:
        inst_code, scale_code = name.split(".", 1)
        return _instruments()[inst_code].scale(scale_code)
    except Exception:  # noqa: BLE001 - an outcome need not come from a shipped instrument
        return None


def select_outcome_rows(data: pd.DataFrame, spec: OutcomeSpec, plan: AnalysisPlan, study: Study,
                        covariates: list[str], extra: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows of one outcome in the cohort arms and study waves with complete response and covariates.

    Returns the frame (sorted by household, person, wave) and counts of rows dropped per reason.
    """
    missing = [c for c in [*REQUIRED, *covariates, *(extra or [])] if c not in data.columns]
    if missing:
        raise AnalysisDataError(
            f"analysis dataset: columns {missing} are missing (outcome {spec.id!r}); the plan needs them. "
            "Add them in linkage (Contract 5) or remove them from config/analysis.yaml.")
    df = data[data["outcome"] == spec.name]
    if spec.role is not None and "role" in df.columns:
        df = df[df["role"] == spec.role]
    if df.empty:
        raise AnalysisDataError(f"analysis dataset: no rows with outcome == {spec.name!r}"
                                f"{f' and role == {spec.role!r}' if spec.role else ''}; check the plan's outcome name.")
    dropped: dict[str, int] = {}
    n0 = len(df)
    df = df[df["arm"].isin(plan.cohort_arms) & df["wave"].isin(study.wave_codes)]
    dropped["not a cohort arm or study wave"] = n0 - len(df)
    response = "above_cutoff" if spec.response == "above_cutoff" else "score"
    if response not in df.columns:
        raise AnalysisDataError(f"analysis dataset: column {response!r} is missing for outcome {spec.id!r}.")
    n1 = len(df)
    df = df[df[response].notna()]
    dropped["response missing"] = n1 - len(df)
    n2 = len(df)
    df = df.dropna(subset=[*covariates, *(extra or [])])
    dropped["covariate missing"] = n2 - len(df)
    wave_order = {w: i for i, w in enumerate(_wave_order(study))}
    df = df.assign(_w=df["wave"].map(wave_order)).sort_values(["household_id", "person_id", "_w"]).drop(columns="_w")
    return df.reset_index(drop=True), dropped


def _wave_order(study: Study) -> list[str]:
    return [w.code for w in sorted(study.waves, key=lambda w: w.offset_days)]


# --- descriptives ---------------------------------------------------------------------------------------------

def describe_counts(df: pd.DataFrame, arms: list[str], waves: list[str], baseline: str) -> pd.DataFrame:
    """n persons, households, observations per arm x wave and % of the baseline persons retained."""
    rows = []
    for a in arms:
        base_persons = set(df.loc[(df["arm"] == a) & (df["wave"] == baseline), "person_id"])
        for w in waves:
            sub = df[(df["arm"] == a) & (df["wave"] == w)]
            kept = len(base_persons & set(sub["person_id"]))
            rows.append({"arm": a, "wave": w, "n_persons": sub["person_id"].nunique(),
                         "n_households": sub["household_id"].nunique(), "n_obs": len(sub),
                         "pct_retained": 100.0 * kept / len(base_persons) if base_persons else np.nan})
    return pd.DataFrame(rows)


def describe_baseline(df: pd.DataFrame, arms: list[str], baseline: str, column: str = "score") -> pd.DataFrame:
    rows = []
    for a in arms:
        x = df.loc[(df["arm"] == a) & (df["wave"] == baseline), column].astype(float)
        rows.append({"arm": a, "n": int(x.notna().sum()), "mean": float(x.mean()) if len(x) else np.nan,
                     "sd": float(x.std(ddof=1)) if len(x) > 1 else np.nan})
    return pd.DataFrame(rows)


def describe_above_cutoff(df: pd.DataFrame, arms: list[str], waves: list[str], cutoff: float | None) -> pd.DataFrame:
    """% above the clinical cut-off per arm x wave (from `above_cutoff`, else score >= cutoff)."""
    flag = df["above_cutoff"] if "above_cutoff" in df.columns else pd.Series(np.nan, index=df.index)
    if flag.isna().all() and cutoff is not None:
        flag = (df["score"] >= cutoff).astype(float).where(df["score"].notna())
    rows = []
    for a in arms:
        for w in waves:
            f = flag[(df["arm"] == a) & (df["wave"] == w)].dropna()
            rows.append({"arm": a, "wave": w, "n": len(f), "n_above": int(f.sum()),
                         "pct": 100.0 * f.mean() if len(f) else np.nan})
    return pd.DataFrame(rows)


def describe_reliable_change(df: pd.DataFrame, arms: list[str], waves: list[str], baseline: str,
                             reliability: float | None, sd: float, direction: str | None, z: float = 1.96
                             ) -> pd.DataFrame:
    """% reliably improved / deteriorated (Jacobson & Truax) per arm x follow-up wave among persons with both.

    RC = (x_w - x_0) / sqrt(2 SE^2), SE = SD sqrt(1 - r); |RC| > z is reliable; improvement is a decrease
    when higher is worse, an increase when higher is better.
    """
    cols = ["arm", "wave", "n_paired", "pct_improved", "pct_deteriorated", "threshold"]
    if reliability is None or not np.isfinite(sd) or direction not in ("higher_worse", "higher_better"):
        return pd.DataFrame(columns=cols)
    se = sd * np.sqrt(1 - reliability)
    thr = z * np.sqrt(2 * se**2)
    wide = df.pivot_table(index="person_id", columns="wave", values="score", aggfunc="first")
    arm_of = df.groupby("person_id")["arm"].first()
    sign = -1.0 if direction == "higher_worse" else 1.0
    rows = []
    for a in arms:
        persons = arm_of.index[arm_of == a]
        for w in waves:
            if w == baseline or w not in wide.columns or baseline not in wide.columns:
                continue
            diff = (wide.loc[wide.index.intersection(persons), w] - wide.loc[wide.index.intersection(persons), baseline]).dropna()
            n = len(diff)
            imp = float(np.mean(sign * diff > thr) * 100) if n else np.nan
            det = float(np.mean(-sign * diff > thr) * 100) if n else np.nan
            rows.append({"arm": a, "wave": w, "n_paired": n, "pct_improved": imp, "pct_deteriorated": det,
                         "threshold": thr})
    return pd.DataFrame(rows, columns=cols)


# --- random structure -------------------------------------------------------------------------------------------

def build_random_structure(df: pd.DataFrame, re: RandomEffects, dropped: set[str]) -> tuple[RandomStructure, str]:
    """statsmodels-ready random structure and its lme4 formula from the plan's random effects minus `dropped`."""
    household = re.household and "household" not in dropped
    person = re.person and "person" not in dropped
    slope = re.slope if re.slope and "slope" not in dropped else None
    hh = pd.factorize(df["household_id"])[0]
    pp = pd.factorize(df["person_id"])[0]
    comps: list[VarianceComponent] = []
    terms: list[str] = []
    if household:
        groups, group_name = hh, "household"
        terms.append("(1 | household_id)")
        if person:
            comps.append(VarianceComponent("person", pp, np.ones(len(df))))
            terms.append("(1 | person_id)")
    else:
        groups, group_name = pp, "person"
        if not person:
            raise ValueError("the random part needs at least a household or a person intercept")
        terms.append("(1 | person_id)")
    if slope is not None:
        comps.append(VarianceComponent("slope", pp, df[slope].to_numpy(float)))
        terms.append(f"(0 + {slope} | person_id)")
    s = RandomStructure(groups=groups, exog_re=np.ones((len(df), 1)), re_names=["(Intercept)"],
                        group_name=group_name, components=comps)
    return s, " + ".join(terms)


def _fallback_step(fit: LmmFit, plan: AnalysisPlan, re: RandomEffects, dropped: set[str]) -> tuple[str, str] | None:
    """The next fallback step and its reason, or None when the fit is acceptable."""
    boundary = set(fit.boundary)
    active = {"slope": bool(re.slope) and "slope" not in dropped,
              "household": re.household and "household" not in dropped,
              "person": re.person and "person" not in dropped}
    names = {"slope": "slope", "household": "household:(Intercept)", "person": "person"}
    for step in plan.defaults.fallback:
        if not active.get(step):
            continue
        if names[step] in boundary or (step == "person" and "person:(Intercept)" in boundary):
            return step, f"the {step} variance was estimated at the boundary (~0)"
        if not fit.converged:
            return step, "the model did not converge"
    return None


FALLBACK_TEXT = {"slope": "dropped the random slope", "household": "dropped the household intercept",
                 "person": "dropped the person intercept"}


def fit_lmm_with_fallback(df: pd.DataFrame, X: np.ndarray, names: list[str], y: np.ndarray, plan: AnalysisPlan,
                          re: RandomEffects) -> tuple[LmmFit, str, str | None]:
    """Fit, apply the plan's fallback rule while needed; returns (fit, lme4 random formula, fallback text)."""
    return fit_lmm_with_fallback_structure(df, X, names, y, plan, re)[:3]


def fit_lmm_with_fallback_structure(df: pd.DataFrame, X: np.ndarray, names: list[str], y: np.ndarray,
                                    plan: AnalysisPlan, re: RandomEffects
                                    ) -> tuple[LmmFit, str, str | None, RandomStructure]:
    """`fit_lmm_with_fallback` plus the random structure of the final model (for BLUPs and residuals)."""
    dropped: set[str] = set()
    notes: list[str] = []
    while True:
        structure, formula = build_random_structure(df, re, dropped)
        fit = fit_lmm(y, X, structure, fe_names=names, reml=True, boundary_tol=plan.defaults.boundary_tol,
                      engine=plan.defaults.engine)
        step = _fallback_step(fit, plan, re, dropped)
        if step is None:
            break
        dropped.add(step[0])
        notes.append(f"{step[1]}: {FALLBACK_TEXT[step[0]]} and refitted")
    return fit, formula, ("; ".join(notes) if notes else None), structure


# --- the main entry point -------------------------------------------------------------------------------------

def _arms_present(df: pd.DataFrame, plan: AnalysisPlan) -> list[str]:
    present = set(df["arm"])
    return [a for a in plan.cohort_arms if a in present]


def _effect_sizes(contrasts: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Fill d, d_lower, d_upper, d_denominator from baseline SDs (pooled for two arms)."""
    b = baseline.set_index("arm")
    out = contrasts.copy()
    for col in ["d", "d_lower", "d_upper"]:
        out[col] = np.nan
    out["d_denominator"] = None
    for i, r in out.iterrows():
        if r["kind"] == "within_change":
            sd, n = b.loc[r["arm"], "sd"], b.loc[r["arm"], "n"]
            df = n - 1
            text = f"baseline SD of {r['arm']} ({sd:.3g}, n={n}); Hedges J={hedges_j(df):.4f}"
        else:
            s1, n1, s2, n2 = b.loc[r["arm"], "sd"], b.loc[r["arm"], "n"], b.loc[r["arm2"], "sd"], b.loc[r["arm2"], "n"]
            sd, df = pooled_sd(s1, n1, s2, n2), n1 + n2 - 2
            text = f"pooled baseline SD of {r['arm']} and {r['arm2']} ({sd:.3g}, n={n1}+{n2}); Hedges J={hedges_j(df):.4f}"
        d = standardise(r["estimate"], r["lower"], r["upper"], sd, df)
        out.loc[i, ["d", "d_lower", "d_upper"]] = d
        out.loc[i, "d_denominator"] = text
    return out


def fit_outcome_model(data: pd.DataFrame, outcome_spec: OutcomeSpec, plan: AnalysisPlan, study: Study
                      ) -> OutcomeResult:
    """Fit one outcome of the plan; return counts, model, marginal means, contrasts, d and descriptives."""
    import time

    t0 = time.perf_counter()
    spec = outcome_spec
    covariates = plan.covariates_of(spec)
    re = plan.random_effects_of(spec)
    extra = [re.slope] if (spec.family == "gaussian" and re.slope) else []
    time_col = plan.defaults.time_column
    if spec.family == "gaussian" and time_col in data.columns and time_col not in extra:
        extra.append(time_col)
    notes: list[str] = []
    if extra:
        data, filled = fill_planned_time(data, study, extra, spec)
        if filled:
            notes.append(f"{filled} row(s) without a response date: time set to the wave's planned offset")
    df, dropped = select_outcome_rows(data, spec, plan, study, covariates, extra)
    at_risk_base = None
    if spec.response == "stopped":
        df, at_risk_base, n_not = derive_stopped(df, study.baseline_wave)
        dropped["follow-up rows of persons without a score > 0 at baseline"] = n_not
        if df.empty:
            raise AnalysisDataError(f"outcome {spec.id!r}: no follow-up rows of persons with a score > 0 at the "
                                    f"baseline wave {study.baseline_wave!r}; 'stopped' cannot be defined.")
    constant = [c for c in covariates if df[c].nunique(dropna=True) < 2]
    if constant:
        notes.append(f"covariates {constant} are constant in this outcome's rows and were left out")
        covariates = [c for c in covariates if c not in constant]
    arms = _arms_present(df, plan)
    if plan.intervention_arm not in arms:
        raise AnalysisDataError(f"outcome {spec.id!r}: no rows for the intervention arm {plan.intervention_arm!r}.")
    comparisons = [a for a in plan.comparison_arms if a in arms]
    waves = [w for w in _wave_order(study) if w in set(df["wave"])]
    baseline = study.baseline_wave if study.baseline_wave in waves else None
    scale = _instrument_scale(spec.name)
    direction = spec.direction or (scale.direction if scale is not None else None)
    cutoff = spec.cutoff
    if cutoff is None and scale is not None and len(scale.cutoffs) == 1:
        cutoff = scale.cutoffs[0].threshold
    if at_risk_base is not None:
        # 'stopped': n per follow-up wave among the persons at risk (score > 0 at baseline), % of them retained
        counts = describe_counts(pd.concat([at_risk_base, df]), arms, [study.baseline_wave, *waves],
                                 study.baseline_wave)
        counts = counts[counts["wave"] != study.baseline_wave].reset_index(drop=True)
        base_desc = describe_baseline(at_risk_base, arms, study.baseline_wave).assign(mean=np.nan, sd=np.nan)
    else:
        counts = describe_counts(df, arms, waves, baseline or waves[0])
        base_desc = describe_baseline(df, arms, baseline or waves[0],
                                      "score" if "score" in df.columns else spec.response)
    above = describe_above_cutoff(df, arms, waves, cutoff)
    reliability = spec.reliability or (scale.reliability.value if scale is not None and scale.reliability else None)
    clinical = pd.DataFrame()
    if spec.family == "gaussian" and baseline is not None:
        b = df[df["wave"] == baseline]["score"]
        ref_sd = (scale.reliability.sd if scale is not None and scale.reliability and scale.reliability.sd
                  else float(b.std(ddof=1)))
        clinical = describe_reliable_change(df, arms, waves, baseline, reliability, ref_sd, direction,
                                            plan.clinical.reliable_change_z)
    X, info = build_design(df, arms, waves, covariates)
    if spec.family == "gaussian":
        y = df["score"].to_numpy(float)
        fit, re_formula, fallback, structure = fit_lmm_with_fallback_structure(df, X, info.columns, y, plan, re)
        try:
            resid = lmm_residuals(y, X, structure, fit, labels={
                "household": pd.factorize(df["household_id"])[1].to_numpy(),
                "person": pd.factorize(df["person_id"])[1].to_numpy(),
                "slope": pd.factorize(df["person_id"])[1].to_numpy()})
            diag = residual_summary(resid)
        except (ValueError, np.linalg.LinAlgError) as exc:
            resid, diag = None, None
            notes.append(f"residual diagnostics not computed ({exc})")
        emms = marginal_means(fit, info, plan.alpha)
        contrasts = change_contrasts(fit, info, plan.intervention_arm, comparisons, baseline, plan.alpha)
        contrasts = _effect_sizes(contrasts, base_desc)
        for c in ["ratio", "ratio_lower", "ratio_upper"]:
            contrasts[c] = np.nan
        contrasts["ratio_kind"] = None
        fe = fit.fixed_effects()
        cov_text = " + ".join(covariates)
        fixed = f"score ~ arm * wave{(' + ' + cov_text) if cov_text else ''}"
        growth = pd.DataFrame()
        if time_col in df.columns and baseline is not None:
            growth = fit_growth_model(df, plan, study, arms, comparisons, covariates, re, fallback, base_desc, time_col)
        method = (
            f"Linear mixed model, REML: {fixed} + {re_formula} (lme4 notation"
            + ("; random slope uncorrelated with the intercepts). " if "(0 +" in re_formula else "). ")
            + ("Fitted with statsmodels MixedLM and refined on lme4's profiled REML criterion (engine: statsmodels). "
               if fit.backend == "statsmodels" else
               "Fitted by minimising lme4's profiled REML criterion with cohortflow's batched mixed-model engine "
               f"(engine: {fit.backend}). " if fit.backend == "fast" else
               f"Fitted by minimising lme4's profiled REML criterion (engine: {fit.backend}). ")
            + (
            "Marginal means and contrasts as emmeans computes them (numeric covariates at their mean, factor "
            "covariates averaged with equal weights); Satterthwaite degrees of freedom as lmerTest computes them; "
            f"{100 * (1 - plan.alpha):.0f}% confidence intervals. Effect size d = difference in change / pooled "
            "baseline SD of the two arms (within-arm change: the arm's baseline SD), Hedges-corrected; "
            f"growth-model d (Feingold 2009) from a model with {time_col} as continuous time.")
            + (f" Fallback: {fallback}." if fallback else "")
        )
        return OutcomeResult(
            outcome=spec.id, name=spec.name, family=spec.family, method=method, counts=counts, fixed_effects=fe,
            variance_components=fit.variance_components, loglik=fit.loglik, converged=fit.converged,
            warnings=notes + list(fit.warnings), fallback=fallback, random_structure=re_formula, emms=emms,
            contrasts=_finish(contrasts, spec.id), baseline=base_desc, above_cutoff=above, clinical=clinical,
            growth=growth, boundary=list(fit.boundary), theta=fit.varpar[:-1].copy(), engine=fit.backend, direction=direction,
            rows_dropped=dropped, residual_diagnostics=diag, residuals=resid,
            seconds=time.perf_counter() - t0)
    res = _fit_gee_outcome(df, X, info, spec, plan, arms, comparisons, waves, baseline, counts, base_desc, above,
                           clinical, direction, dropped, t0)
    res.warnings = notes + res.warnings
    if spec.response == "stopped":
        res.method = (f"'Stopped' at a follow-up wave = 1 when {spec.name} was > 0 at {study.baseline_wave} and is 0 "
                      f"at that wave, 0 when it is still > 0; only persons with {spec.name} > 0 at "
                      f"{study.baseline_wave} are in the denominator, and the arms are compared at each follow-up "
                      "wave (between-arm contrasts: there is no baseline value of 'stopped'). " + res.method)
    return res


def derive_stopped(df: pd.DataFrame, baseline: str) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """'Stopped' at each follow-up wave: 1 when the score is 0 there, among persons with a score > 0 at baseline.

    In: one outcome's rows (score = e.g. any violence 0/1 or a frequency). Out: the follow-up rows of the
    persons at risk with a `stopped` column (0/1), their baseline rows, and the number of follow-up rows left
    out (persons with no baseline row or a baseline score of 0).
    """
    base = df[df["wave"] == baseline]
    at_risk = set(base.loc[base["score"] > 0, "person_id"])
    follow = df[df["wave"] != baseline]
    keep = follow["person_id"].isin(at_risk)
    out = follow[keep].assign(stopped=(follow.loc[keep, "score"] == 0).astype(float))
    return out.reset_index(drop=True), base[base["person_id"].isin(at_risk)], int((~keep).sum())


def _model_rows(data: pd.DataFrame, spec: OutcomeSpec, plan: AnalysisPlan, study: Study, covariates: list[str],
                extra: list[str]) -> tuple[pd.DataFrame, list[str], list[str], list[str], list[str]]:
    """An outcome's rows as its refits (bootstrap, IPW, MI) see them: (rows, covariates that vary, arms,
    comparison arms, waves present), time columns in `extra` filled from the planned wave offsets."""
    filled, _ = fill_planned_time(data, study, extra, spec)
    df, _ = select_outcome_rows(filled, spec, plan, study, covariates, extra)
    covariates = [c for c in covariates if df[c].nunique(dropna=True) >= 2]
    arms = _arms_present(df, plan)
    comparisons = [a for a in plan.comparison_arms if a in arms]
    waves = [w for w in _wave_order(study) if w in set(df["wave"])]
    return df, covariates, arms, comparisons, waves


def fill_planned_time(data: pd.DataFrame, study: Study, columns: list[str], spec: OutcomeSpec
                      ) -> tuple[pd.DataFrame, int]:
    """Missing time-since-T0 values of this outcome's rows -> the wave's planned offset (in months or days)."""
    rows = data["outcome"] == spec.name
    filled = 0
    out = data
    for col in columns:
        if col not in data.columns:
            continue
        miss = rows & data[col].isna() & data["wave"].isin(study.wave_codes)
        if miss.any():
            per = DAYS_PER_MONTH if col.startswith("months") else 1.0
            planned = data.loc[miss, "wave"].map({w.code: w.offset_days / per for w in study.waves})
            out = out.copy() if out is data else out
            out.loc[miss, col] = planned
            filled += int(miss.sum())
    return out, filled


def _finish(contrasts: pd.DataFrame, key: str) -> pd.DataFrame:
    out = contrasts.copy()
    out.insert(0, "outcome", key)
    if "p_adj" not in out.columns:
        out["p_adj"] = np.nan
    for c in CONTRAST_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[CONTRAST_COLUMNS]


def fit_growth_model(df: pd.DataFrame, plan: AnalysisPlan, study: Study, arms: list[str], comparisons: list[str],
                     covariates: list[str], re: RandomEffects, fallback: str | None, base_desc: pd.DataFrame,
                     time_col: str) -> pd.DataFrame:
    """Feingold's growth-model d per comparison: (slope difference x planned duration) / pooled baseline SD."""
    Xg, ig = build_design(df, arms, None, covariates, time=time_col)
    y = df["score"].to_numpy(float)
    fit, _, _ = fit_lmm_with_fallback(df, Xg, ig.columns, y, plan, re)
    waves = sorted(study.waves, key=lambda w: w.offset_days)
    present = set(df["wave"])
    waves = [w for w in waves if w.code in present]
    duration = (waves[-1].offset_days - waves[0].offset_days) / DAYS_PER_MONTH
    b = base_desc.set_index("arm")
    rows = []
    for comp in comparisons:
        L = (ig.row(arms[0], time_value=1.0) - ig.row(arms[0], time_value=0.0)) - (
            ig.row(comp, time_value=1.0) - ig.row(comp, time_value=0.0))
        if arms[0] != plan.intervention_arm:
            continue
        e, se, dfree = fit.contrast(L)
        _, p, lo, hi = _ci(e, se, dfree, plan.alpha)
        n1, n2 = b.loc[arms[0], "n"], b.loc[comp, "n"]
        sd = pooled_sd(b.loc[arms[0], "sd"], n1, b.loc[comp, "sd"], n2)
        d = standardise(e * duration, lo * duration, hi * duration, sd, n1 + n2 - 2)
        rows.append({"arm": arms[0], "arm2": comp, "slope_diff": e, "se": se, "df": dfree, "p": p, "lower": lo,
                     "upper": hi, "duration": duration, "time_unit": time_col, "d": d[0], "d_lower": d[1],
                     "d_upper": d[2], "d_denominator": f"pooled baseline SD ({sd:.3g}); duration {duration:.2f}"})
    return pd.DataFrame(rows)


# --- binary and count outcomes: GEE ---------------------------------------------------------------------------

@dataclass
class GeeEstimator:
    """Fixed effects with robust covariance; contrasts use the normal distribution (df = inf).

    A variance L'VL below zero (a covariance that is not positive semi-definite, e.g. after separation) gives
    SE = NaN and is counted in `negative_variances`, never a silent `sqrt` of a negative number.
    """

    params: np.ndarray
    cov_params: np.ndarray
    negative_variances: int = 0

    def variance(self, L: np.ndarray) -> float:
        v = float(L @ self.cov_params @ L)
        if v >= 0:
            return v
        if v > -1e-12 * float(np.abs(L) @ np.abs(self.cov_params) @ np.abs(L)):
            return 0.0  # rounding of a zero variance
        self.negative_variances += 1
        return float("nan")

    def se(self, L: np.ndarray) -> float:
        return float(np.sqrt(self.variance(np.asarray(L, float))))

    def contrast(self, L: np.ndarray) -> tuple[float, float, float]:
        L = np.asarray(L, float)
        return float(L @ self.params), self.se(L), float("inf")


def fit_gee(y: np.ndarray, X: np.ndarray, groups: np.ndarray, family: str, cov_struct: str = "exchangeable",
            engine: str = "vectorised") -> tuple[GeeFit, list[str], float | None]:
    """GEE with an exchangeable (or independence) working correlation and robust SEs.

    Returns (GeeFit, warnings caught, NB alpha or None). The negative binomial's alpha comes from a negative
    binomial regression of y on X (statsmodels' GEE keeps alpha fixed). `engine` "vectorised" (default) runs
    statsmodels' GEE algorithm with cluster sums over household-sorted rows (analysis/gee.py); "statsmodels"
    runs `statsmodels.GEE` itself (its per-cluster Python loop: same equations, same iterations; the two agree
    to rounding, tests/test_analysis_gee_fast.py).
    """
    import statsmodels.api as sm

    caught: list[str] = []
    alpha = None
    with warnings.catch_warnings(record=True) as wl:
        warnings.simplefilter("always")
        if family == "negative_binomial":
            nb = sm.NegativeBinomial(y, X).fit(disp=0, maxiter=200)
            alpha = float(nb.params[-1])
        if engine == "vectorised":
            res = fit_gee_grouped(y, X, groups, family, cov_struct, alpha=alpha, maxiter=100)
        elif engine == "statsmodels":
            fam = {"binomial": sm.families.Binomial, "poisson": sm.families.Poisson}[family]() \
                if family != "negative_binomial" else sm.families.NegativeBinomial(alpha=alpha)
            cs = sm.cov_struct.Exchangeable() if cov_struct == "exchangeable" else sm.cov_struct.Independence()
            r = sm.GEE(y, X, groups=groups, family=fam, cov_struct=cs).fit(maxiter=100)
            res = GeeFit(params=np.asarray(r.params), cov_robust=np.asarray(r.cov_params()),
                         cov_naive=np.asarray(r.cov_naive),
                         dep_param=float(np.asarray(r.cov_struct.dep_params).ravel()[0])
                         if cov_struct == "exchangeable" else 0.0, converged=bool(r.converged),
                         iterations=len(r.fit_history["params"]), score_norm=float(r.score_norm))
        else:
            raise ValueError(f"GEE engine {engine!r} is not vectorised or statsmodels")
        caught += [f"{w.category.__name__}: {w.message}" for w in wl]
    return res, caught, alpha


def separated_cells(df: pd.DataFrame, response: str, family: str, arms: list[str], waves: list[str]
                    ) -> list[dict]:
    """Arm x wave cells where the model's cell parameter does not exist (separation).

    Binary: every response 0 or every response 1 (the logit of 0% or 100% is infinite); counts: every
    response 0 (the log of a zero rate). Returns arm, wave, n, events per such cell.
    """
    out = []
    for a in arms:
        for w in waves:
            y = df.loc[(df["arm"] == a) & (df["wave"] == w), response].to_numpy(float)
            if not len(y):
                continue
            ev = float(y.sum())
            if ev == 0 or (family == "binomial" and ev == len(y)):
                out.append({"arm": a, "wave": w, "n": len(y), "events": int(ev)})
    return out


def cell_means_design(df: pd.DataFrame, info: DesignInfo, X: np.ndarray, cells: list[tuple[str, str]]
                      ) -> tuple[np.ndarray, list[str], dict[tuple[str, str], np.ndarray]]:
    """Cell-means coding of `arm * wave + covariates`: one indicator per (arm, wave) cell plus the covariates.

    The same column space as the treatment coding of `build_design` (so the same fit) when every cell is
    present; cells left out (separated cells, whose rows the caller drops) simply get no column. Returns the
    design, its column names and the reference-grid row L per cell (covariate part as `info.row` has it).
    """
    cov_names = [c for c in [*info.numeric, *[f"{f}{lev}" for f, levs in info.factors.items() for lev in levs[1:]]]
                 if c in info.columns]
    cov_idx = [info.columns.index(c) for c in cov_names]
    arm, wave = df["arm"].astype(str).to_numpy(), df["wave"].astype(str).to_numpy()
    k = len(cells)
    Xc = np.column_stack([*[((arm == a) & (wave == w)).astype(float) for a, w in cells], X[:, cov_idx]]) \
        if len(df) else np.zeros((0, k + len(cov_idx)))
    names = [f"cell[{a}:{w}]" for a, w in cells] + cov_names
    rows = {}
    for j, (a, w) in enumerate(cells):
        L = np.zeros(k + len(cov_idx))
        L[j] = 1.0
        L[k:] = info.row(a, w)[cov_idx]
        rows[(a, w)] = L
    return Xc, names, rows


def _link_functions(family: str):
    """(inverse link, its derivative) of the GEE family, overflow-free."""
    from scipy.special import expit

    if family == "binomial":
        return expit, (lambda e: expit(e) * expit(-e))
    return np.exp, np.exp


def _fit_gee_outcome(df, X, info: DesignInfo, spec: OutcomeSpec, plan: AnalysisPlan, arms, comparisons, waves,
                     baseline, counts, base_desc, above, clinical, direction, dropped, t0) -> OutcomeResult:
    import time

    response = RESPONSE_COLUMN[spec.response]
    notes: list[str] = []
    sep = separated_cells(df, response, spec.family, arms, waves)
    sep_cells = {(c["arm"], c["wave"]) for c in sep}
    if sep:
        # The cell's parameter is infinite: its rows drop out of the estimating equations in the limit
        # (their derivative and residual vanish), so the GEE on the other cells is fitted without them, in
        # cell-means coding. The separated cell's proportion is reported as observed with an exact CI.
        keep = ~pd.Series(list(zip(df["arm"], df["wave"], strict=True))).isin(sep_cells).to_numpy()
        cells = [(a, w) for a in arms for w in waves if info.estimable(a, w) and (a, w) not in sep_cells
                 and ((df["arm"] == a) & (df["wave"] == w)).any()]
        X_fit, names, L_rows = cell_means_design(df[keep], info, X[keep], cells)
        d_fit = df[keep]
        what = "no events" if spec.family != "binomial" else "0% or 100% of responses"
        notes.append("separation: " + ", ".join(f"{c['arm']} at {c['wave']} ({c['events']} of {c['n']})"
                                              for c in sep)
                     + f" ({what}); the model's parameter for such a cell does not exist, so these rows were left "
                       "out of the GEE (cell-means coding), the cell is reported as observed with an exact "
                       "(Clopper-Pearson) CI and contrasts involving it are not estimated")
    else:
        X_fit, names, d_fit = X, list(info.columns), df
        L_rows = {(a, w): info.row(a, w) for a in arms for w in waves if info.estimable(a, w)}
    y = d_fit[response].to_numpy(float)
    groups = pd.factorize(d_fit["household_id"])[0]
    res, caught, alpha = fit_gee(y, X_fit, groups, spec.family, spec.working_correlation)
    est = GeeEstimator(np.asarray(res.params), np.asarray(res.cov_params()))
    inv, dinv = _link_functions(spec.family)
    q = stats.norm.ppf(1 - plan.alpha / 2)
    # Marginal means: the linear predictor at the reference grid, its CI on the link scale back-transformed
    # (so a probability's CI stays inside 0-1), SE on the response scale by the delta method.
    emm_rows = []
    grad_of: dict[tuple[str, str], np.ndarray] = {}
    mean_of: dict[tuple[str, str], float] = {}
    for a in arms:
        for w in waves:
            if (a, w) in sep_cells:
                c = next(c for c in sep if (c["arm"], c["wave"]) == (a, w))
                m = c["events"] / c["n"]
                lo, hi = _exact_ci(c["events"], c["n"], plan.alpha) if spec.family == "binomial" else (0.0, np.nan)
                emm_rows.append({"arm": a, "wave": w, "emmean": m, "se": np.nan, "df": np.inf, "lower": lo,
                                 "upper": hi, "note": "observed (separation), exact CI"})
                continue
            if (a, w) not in L_rows:
                continue
            L = L_rows[(a, w)]
            eta = float(L @ est.params)
            se_eta = est.se(L)
            m, g = float(inv(eta)), float(dinv(eta)) * L
            mean_of[(a, w)], grad_of[(a, w)] = m, g
            emm_rows.append({"arm": a, "wave": w, "emmean": m, "se": float(dinv(eta)) * se_eta, "df": np.inf,
                             "lower": float(inv(eta - q * se_eta)), "upper": float(inv(eta + q * se_eta)),
                             "link": eta, "link_se": se_eta})
    rows = []
    skipped = []
    for c in contrast_vectors(info, plan.intervention_arm, comparisons, baseline):
        cells_c = _cells_of(c, baseline)
        base = {k: v for k, v in c.items() if k != "L"}
        if any(cell not in mean_of for _, cell in cells_c):
            skipped.append(c["contrast"])
            rows.append(base | {"estimate": np.nan, "se": np.nan, "df": np.inf, "t": np.nan, "p": np.nan,
                                "lower": np.nan, "upper": np.nan, "ratio": np.nan, "ratio_lower": np.nan,
                                "ratio_upper": np.nan, "ratio_kind": None})
            continue
        e = sum(sgn * mean_of[cell] for sgn, cell in cells_c)
        g = sum(sgn * grad_of[cell] for sgn, cell in cells_c)
        se = est.se(g)
        t, p, lo, hi = _ci(e, se, np.inf, plan.alpha)
        Ll = sum(sgn * L_rows[cell] for sgn, cell in cells_c)
        le, lse, _ = est.contrast(Ll)
        rows.append(base | {
            "estimate": e, "se": se, "df": np.inf, "t": t, "p": p, "lower": lo, "upper": hi,
            "ratio": np.exp(le), "ratio_lower": np.exp(le - q * lse), "ratio_upper": np.exp(le + q * lse),
            "ratio_kind": "odds ratio" if spec.family == "binomial" else "rate ratio"})
    if skipped:
        notes.append(f"not estimated (a cell is separated): {'; '.join(skipped)}")
    contrasts = _finish(pd.DataFrame(rows), spec.id)
    fe_se = np.array([est.se(np.eye(len(est.params))[i]) for i in range(len(est.params))])
    fe = pd.DataFrame({"term": names, "estimate": est.params, "se": fe_se, "df": np.inf,
                       "t": np.divide(est.params, fe_se, out=np.full(len(fe_se), np.nan), where=fe_se > 0)})
    fe["p"] = 2 * stats.norm.sf(np.abs(fe["t"]))
    eig = np.linalg.eigvalsh((est.cov_params + est.cov_params.T) / 2)
    if eig.min() < -1e-8 * max(eig.max(), 1e-300) or est.negative_variances:
        notes.append(f"the robust covariance is not positive semi-definite (smallest eigenvalue {eig.min():.3g}); "
                     f"{est.negative_variances} standard error(s) set to missing")
    link = {"binomial": "logit link (binomial)", "negative_binomial": f"log link (negative binomial, alpha={alpha:.4g})"
            if alpha is not None else "log link (negative binomial)", "poisson": "log link (Poisson)"}[spec.family]
    measure = "risk differences and odds ratios" if spec.family == "binomial" else "mean differences and rate ratios"
    cov_text = " + ".join(info.covariates)
    wc = ("exchangeable working correlation within households (every pair of observations in a household, "
          "persons and waves alike, equally correlated)" if spec.working_correlation == "exchangeable"
          else "independence working correlation")
    method = (f"GEE, {link}: {response} ~ arm * wave{(' + ' + cov_text) if cov_text else ''}; {wc}, robust "
              "(sandwich) standard errors clustered by household (statsmodels' GEE algorithm). Marginal "
              f"{'probabilities' if spec.family == 'binomial' else 'means'} at the reference grid (numeric "
              "covariates at their mean, factor covariates averaged on the link scale), with CIs computed on the "
              f"link scale and back-transformed; contrasts as {measure} (differences of marginal "
              f"{'probabilities' if spec.family == 'binomial' else 'means'} with delta-method standard errors; "
              f"ratios from the link-scale contrast), {100 * (1 - plan.alpha):.0f}% CIs.")
    vc = pd.DataFrame([{"component": f"working correlation ({spec.working_correlation})",
                       "variance": res.dep_param if spec.working_correlation == "exchangeable" else 0.0,
                       "sd": np.nan}])
    return OutcomeResult(
        outcome=spec.id, name=spec.name, family=spec.family, method=method, counts=counts, fixed_effects=fe,
        variance_components=vc, loglik=np.nan, converged=res.converged,
        warnings=notes + caught, fallback=None, random_structure="GEE cluster: household",
        emms=pd.DataFrame(emm_rows), contrasts=contrasts, baseline=base_desc, above_cutoff=above, clinical=clinical,
        direction=direction, rows_dropped=dropped, seconds=time.perf_counter() - t0)


def _exact_ci(events: int, n: int, alpha: float) -> tuple[float, float]:
    """Clopper-Pearson interval of a proportion."""
    lo = 0.0 if events == 0 else float(stats.beta.ppf(alpha / 2, events, n - events + 1))
    hi = 1.0 if events == n else float(stats.beta.ppf(1 - alpha / 2, events + 1, n - events))
    return lo, hi


def _cells_of(c: dict, baseline: str | None) -> list[tuple[float, tuple[str, str]]]:
    """Signed arm x wave cells of a contrast (for response-scale differences)."""
    if c["kind"] == "within_change":
        return [(1.0, (c["arm"], c["wave"])), (-1.0, (c["arm"], baseline))]
    if c["kind"] == "diff_in_change":
        return [(1.0, (c["arm"], c["wave"])), (-1.0, (c["arm"], baseline)),
                (-1.0, (c["arm2"], c["wave"])), (1.0, (c["arm2"], baseline))]
    return [(1.0, (c["arm"], c["wave"])), (-1.0, (c["arm2"], c["wave"]))]


# --- all outcomes: multiplicity and sensitivity analyses -----------------------------------------------------

@dataclass
class AnalysisResult:
    """All outcomes of the plan, contrasts with multiplicity-adjusted p, and the sensitivity analyses."""

    outcomes: dict[str, OutcomeResult]
    contrasts: pd.DataFrame  # CONTRAST_COLUMNS + family
    sensitivity: pd.DataFrame  # per diff-in-change: main, ipw and mi estimates side by side + change flags
    balance: pd.DataFrame  # outcome, covariate, level, comparison, smd, smd_weighted
    resilience: pd.DataFrame | None
    methods: dict[str, str]  # outcome -> method text (incl. sensitivity methods)
    failures: dict[str, str]  # outcome -> error message (the run continues with the other outcomes)
    multiplicity: str = ""
    small_cell_threshold: int = 10
    job_seconds: dict[str, float] = field(default_factory=dict)  # outcome id -> seconds of main, IPW and MI


def apply_multiplicity(contrasts: pd.DataFrame, plan: AnalysisPlan) -> tuple[pd.DataFrame, str]:
    """Fill p_adj per multiplicity family of the plan (default: per outcome, the diff-in-change contrasts)."""
    out = contrasts.copy()
    out["p_adj"] = np.nan
    out["family"] = None
    method = plan.multiplicity.method
    from .effects import adjust_p

    fams = plan.multiplicity.families
    if fams:
        for fam in fams:
            mask = out["outcome"].isin(fam.outcomes) & out["kind"].isin(fam.kinds)
            out.loc[mask, "p_adj"] = adjust_p(out.loc[mask, "p"].to_numpy(), method)
            out.loc[mask, "family"] = fam.name
        text = (f"{method} adjustment within the families "
                + "; ".join(f"{f.name} ({', '.join(f.outcomes)}: {', '.join(f.kinds)})" for f in fams)
                + "; contrasts outside a family are not adjusted (p_adj empty).")
    else:
        for key in out["outcome"].unique():
            mask = (out["outcome"] == key) & (out["kind"] == "diff_in_change")
            out.loc[mask, "p_adj"] = adjust_p(out.loc[mask, "p"].to_numpy(), method)
            out.loc[mask, "family"] = key
        text = f"{method} adjustment per outcome over its difference-in-change contrasts."
    return out, text


def resilience_vs_reference(data: pd.DataFrame, plan: AnalysisPlan, study: Study) -> pd.DataFrame | None:
    """Cohort children's baseline resilience vs the reference group, OLS adjusted for the plan's covariates.

    Household-clustered robust SEs for the cohort part. Returns one row per cohort arm and one for all cohort
    arms together (difference cohort - reference, CI, p, n and raw means), or None without reference rows.
    """
    import statsmodels.api as sm

    spec = plan.resilience
    if spec is None or plan.reference_group is None:
        return None
    d = data[(data["outcome"] == spec.outcome) & data["score"].notna()]
    ref = d[d["arm"] == plan.reference_group]
    coh = d[d["arm"].isin(plan.cohort_arms) & (d["wave"] == study.baseline_wave)]
    if ref.empty or coh.empty:
        return None
    rows = []
    for label, arms in [("all cohort arms", plan.cohort_arms), *[(a, [a]) for a in plan.cohort_arms]]:
        c = coh[coh["arm"].isin(arms)]
        if c.empty:
            continue
        both = pd.concat([c.assign(_grp="cohort"), ref.assign(_grp="reference")]).dropna(subset=spec.covariates)
        X, info = build_design(both.assign(_w="x"), ["reference", "cohort"], ["x"], spec.covariates,
                               arm_col="_grp", wave_col="_w")
        groups = pd.factorize(both["household_id"].fillna(both["person_id"]))[0]
        res = sm.OLS(both["score"].to_numpy(float), X).fit(cov_type="cluster", cov_kwds={"groups": groups})
        j = info.columns.index("armcohort")
        e, se = float(res.params[j]), float(res.bse[j])
        t, p, lo, hi = _ci(e, se, np.inf, plan.alpha)
        rows.append({"outcome": spec.outcome, "cohort": label, "n_cohort": int((both["_grp"] == "cohort").sum()),
                     "n_reference": int((both["_grp"] == "reference").sum()),
                     "mean_cohort": float(both.loc[both["_grp"] == "cohort", "score"].mean()),
                     "mean_reference": float(both.loc[both["_grp"] == "reference", "score"].mean()),
                     "adjusted_difference": e, "se": se, "lower": lo, "upper": hi, "p": p,
                     "adjusted_for": ", ".join(spec.covariates)})
    return pd.DataFrame(rows)


def _dropped_by_fallback(fallback: str | None) -> set[str]:
    """The random-effect parts the fallback rule dropped, from OutcomeResult.fallback's text."""
    if not fallback:
        return set()
    return {step for step, text in FALLBACK_TEXT.items() if text in fallback}


def bootstrap_outcome(data: pd.DataFrame, spec: OutcomeSpec, plan: AnalysisPlan, study: Study, res: OutcomeResult,
                      resamples: int | None = None, seed: int | None = None, workers: int | None = None
                      ) -> pd.DataFrame:
    """Household-bootstrap percentile CIs of an outcome's differences in change and their d.

    In: the analysis dataset, the outcome's spec, the plan (its `sensitivity.bootstrap` gives resamples,
    seed and workers unless passed), the study and the outcome's main result (final random structure after
    the fallback rule, theta for warm starts). Households are drawn with replacement; each resample refits
    the final mixed model (fast engine, block weights) and recomputes the arms' baseline SDs and Hedges' J
    behind d. Out: one row per diff-in-change contrast with `contrast`, BOOTSTRAP_COLUMNS and the full-data
    `estimate`/`d` (equal to the main analysis's).
    """
    from .effects import hedges_j as _j
    from .fastlmm_boot import bootstrap_design
    from .lmm import fast_design

    boot = plan.sensitivity.bootstrap
    resamples = resamples or boot.resamples
    seed = boot.seed if seed is None else seed
    workers = workers or boot.workers
    if spec.family != "gaussian" or res.theta is None:
        raise ValueError(f"outcome {spec.id!r}: the household bootstrap needs a fitted mixed model (gaussian outcome)")
    covariates = plan.covariates_of(spec)
    re = plan.random_effects_of(spec)
    extra = [re.slope] if re.slope else []
    time_col = plan.defaults.time_column
    if time_col in data.columns and time_col not in extra:
        extra.append(time_col)
    df, covariates, arms, comparisons, waves = _model_rows(data, spec, plan, study, covariates, extra)
    baseline = study.baseline_wave if study.baseline_wave in waves else None
    X, info = build_design(df, arms, waves, covariates)
    cvs = [c for c in contrast_vectors(info, plan.intervention_arm, comparisons, baseline)
           if c["kind"] == "diff_in_change"]
    if not cvs:
        raise ValueError(f"outcome {spec.id!r}: no difference-in-change contrast to bootstrap")
    y = df["score"].to_numpy(float)
    structure, _ = build_random_structure(df, re, _dropped_by_fallback(res.fallback))
    design = fast_design(y, X, structure)
    if design is None or design.n_theta != len(res.theta):
        raise ValueError(f"outcome {spec.id!r}: the fast engine does not cover the final random structure")
    L = np.array([c["L"] for c in cvs])
    score = df["score"].to_numpy(float)
    at_base = (df["wave"] == baseline).to_numpy()
    base_rows = {a: np.flatnonzero(at_base & (df["arm"] == a).to_numpy()) for a in arms}

    def sd_n(a: str, w: np.ndarray) -> tuple[float, float]:
        rows = base_rows[a]
        ww, x = w[rows], score[rows]
        n = ww.sum()
        if n < 2:
            return float("nan"), n
        m = ww @ x / n
        return float(np.sqrt(ww @ (x - m) ** 2 / (n - 1))), n

    def statistic(beta: np.ndarray, w: np.ndarray) -> np.ndarray:
        est = L @ beta
        ds = []
        for c, e in zip(cvs, est, strict=True):
            s1, n1 = sd_n(c["arm"], w)
            s2, n2 = sd_n(c["arm2"], w)
            sd = pooled_sd(s1, n1, s2, n2)
            ds.append(e / sd * _j(n1 + n2 - 2) if np.isfinite(sd) and sd > 0 else np.nan)
        return np.concatenate([est, ds])

    names = [c["contrast"] for c in cvs]
    br = bootstrap_design(design, res.theta, df["household_id"].to_numpy(), statistic,
                          [*names, *[f"d:{n}" for n in names]], n=resamples, seed=seed, reml=True, n_jobs=workers)
    a = plan.alpha / 2
    reps = br.replicates
    lo, hi = reps.quantile(a), reps.quantile(1 - a)
    k = len(names)
    out = pd.DataFrame({
        "contrast": names, "estimate": br.estimate.iloc[:k].to_numpy(), "d": br.estimate.iloc[k:].to_numpy(),
        "boot_se": reps.iloc[:, :k].std(ddof=1).to_numpy(), "boot_lower": lo.iloc[:k].to_numpy(),
        "boot_upper": hi.iloc[:k].to_numpy(), "boot_d_lower": lo.iloc[k:].to_numpy(),
        "boot_d_upper": hi.iloc[k:].to_numpy(), "boot_resamples": len(reps), "boot_failed": br.n_failed})
    out.attrs["seconds"] = br.seconds
    out.attrs["n_households"] = br.n_clusters
    return out


def _attach_bootstrap(res: OutcomeResult, boot: pd.DataFrame, plan: AnalysisPlan) -> str:
    """Store the bootstrap on the result, add its columns to the contrasts; return the method sentence."""
    main = res.contrasts.set_index("contrast")
    merged = boot.set_index("contrast")
    common = merged.index.intersection(main.index)
    gap = (merged.loc[common, "estimate"] - main.loc[common, "estimate"]).abs().max() if len(common) else 0.0
    scale = main.loc[common, "estimate"].abs().max() if len(common) else 1.0
    if not gap <= 1e-6 * max(scale, 1e-12) + 1e-10:
        raise ValueError(f"bootstrap full-data estimates differ from the main analysis by {gap:.3g}: "
                         "the bootstrap rebuilt a different model; not reported")
    res.bootstrap = boot
    res.contrasts = res.contrasts.merge(boot[["contrast", *BOOTSTRAP_COLUMNS]], on="contrast", how="left")
    n_used = int(boot["boot_resamples"].iloc[0])
    failed = int(boot["boot_failed"].iloc[0])
    return (f"Household bootstrap: {n_used} resamples of the {boot.attrs.get('n_households', '?')} households "
            f"(drawn with replacement, seed {plan.sensitivity.bootstrap.seed}"
            + (f"; {failed} refit(s) failed and were left out" if failed else "")
            + f"); each refits the final mixed model and recomputes the baseline SDs behind d; "
            f"{100 * (1 - plan.alpha):.0f}% percentile intervals of the difference in change and of d beside "
            "the model-based ones.")


def _analyse_outcome(data: pd.DataFrame, spec: OutcomeSpec, plan: AnalysisPlan, study: Study, sensitivity: bool,
                     imputations: int | None) -> dict:
    """Main model and (for continuous outcomes) IPW and MI of one outcome; a dict of run_analysis's pieces."""
    import time

    from .sensitivity import conclusion_changes, ipw_analysis, mi_analysis

    t0 = time.perf_counter()
    out: dict = {"result": None, "methods": {}, "failures": {}, "side": None, "balance": [], "seconds": 0.0}
    # This outcome's rows once (every step below selects them again, and filling planned times copied the
    # whole long frame per step: ~2 GB per copy at factor 100); same rows in the same order.
    if "outcome" in data.columns:
        data = data[data["outcome"] == spec.name]
    try:
        res = fit_outcome_model(data, spec, plan, study)
    except Exception as exc:  # noqa: BLE001 - report and continue with the other outcomes
        out["failures"][spec.id] = f"{type(exc).__name__}: {exc}"
        out["seconds"] = time.perf_counter() - t0
        return out
    out["result"] = res
    out["methods"][spec.id] = res.method
    main = res.contrasts[res.contrasts["kind"] == "diff_in_change"]
    if not (sensitivity and spec.family == "gaussian" and not main.empty):
        out["seconds"] = time.perf_counter() - t0
        return out
    covariates = plan.covariates_of(spec)
    re = plan.random_effects_of(spec)
    # the random part after the main model's fallback
    if res.fallback:
        re = re.model_copy(update={
            "slope": None if "random slope" in res.fallback else re.slope,
            "household": re.household and "household intercept" not in res.fallback,
            "person": re.person and "person intercept" not in res.fallback})
    extra = [c for c in [re.slope] if c]
    df, covariates, arms, comparisons, waves = _model_rows(data, spec, plan, study, covariates, extra)
    side = main[["outcome", "contrast", "arm", "arm2", "wave", "estimate", "lower", "upper", "p"]].rename(
        columns={"estimate": "main_estimate", "lower": "main_lower", "upper": "main_upper", "p": "main_p"})
    analyses = []
    if plan.sensitivity.ipw.enabled:
        analyses.append(("ipw", partial(ipw_analysis, df, plan, arms, comparisons, waves, study.baseline_wave,
                                        covariates)))
    if plan.sensitivity.multiple_imputation.enabled:
        analyses.append(("mi", partial(mi_analysis, df, plan, arms, comparisons, waves, study.baseline_wave,
                                       covariates, re, imputations=imputations, start_theta=res.theta,
                                       df_complete=dict(zip(main["contrast"], main["df"], strict=True)))))
    for name, run in analyses:
        try:
            sr = run()
        except Exception as exc:  # noqa: BLE001
            out["failures"][f"{spec.id}:{name}"] = f"{type(exc).__name__}: {exc}"
            continue
        out["methods"][f"{spec.id}:{name}"] = sr.notes
        c = sr.contrasts.copy()
        c[f"{name}_changes"] = conclusion_changes(main, c, plan.alpha)
        c = c.rename(columns={k: f"{name}_{k}" for k in ["estimate", "se", "df", "lower", "upper", "p", "fmi"]})
        side = side.merge(c.drop(columns=["arm", "arm2", "wave"]), on="contrast", how="left")
        if sr.balance is not None:
            out["balance"].append(sr.balance.assign(outcome=spec.id))
    out["side"] = side
    out["seconds"] = time.perf_counter() - t0
    return out


#: state shared with forked outcome workers (data, plan, study, options), set by run_analysis
_RUN_STATE: dict = {}


def _analyse_outcome_job(i: int) -> dict:
    """Worker entry: outcome i of the plan in _RUN_STATE (forked inside run_analysis: one BLAS thread)."""
    st = _RUN_STATE
    return _analyse_outcome(st["data"], st["plan"].outcomes[i], st["plan"], st["study"], st["sensitivity"],
                            st["imputations"])


def _analyse_all(data: pd.DataFrame, plan: AnalysisPlan, study: Study, sensitivity: bool, imputations: int | None,
                 workers: int) -> Iterator[tuple[str, dict]]:
    """(outcome id, pieces) in plan order as each is done: one after the other, or over `workers` forked processes."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    n = len(plan.outcomes)
    from cohortflow.warehouse.memory import can_fork_workers

    if workers <= 1 or n <= 1 or not can_fork_workers():  # e.g. inside a Dask worker: one after the other
        for spec in plan.outcomes:
            yield spec.id, _analyse_outcome(data, spec, plan, study, sensitivity, imputations)
        return
    # Everything the workers need is read and imported once, before forking: the children then share it, and
    # no child waits on an import lock another thread of the parent (e.g. a Prefect worker) held at the fork.
    import gc

    import statsmodels.api  # noqa: F401 - IPW and GEE

    from cohortflow.warehouse.linkage import release_memory

    from . import sensitivity  # noqa: F401

    _instruments()
    _RUN_STATE.update(data=data, plan=plan, study=study, sensitivity=sensitivity, imputations=imputations)
    # Freed heap goes back to the system before the fork (the children start from a smaller image), and the
    # objects alive now are frozen out of the cyclic collector, whose passes in a child would otherwise write
    # to (and so copy) every page holding a Python object of the parent.
    release_memory()
    gc.collect()
    gc.freeze()
    try:
        with ProcessPoolExecutor(max_workers=min(workers, n), mp_context=mp.get_context("fork")) as pool:
            # longest outcomes first (fewer idle minutes at the end); results still come in plan order
            futures = {i: pool.submit(_analyse_outcome_job, i) for i in _longest_first(data, plan, sensitivity)}
            for i, spec in enumerate(plan.outcomes):
                yield spec.id, futures[i].result()
    finally:
        gc.unfreeze()
        _RUN_STATE.clear()


def _longest_first(data: pd.DataFrame, plan: AnalysisPlan, sensitivity: bool) -> list[int]:
    """Plan positions of the outcomes, most expensive first (a guess: the outcome's rows, times 4 for a
    continuous outcome with IPW/MI sensitivity analyses, times 2 for a negative binomial GEE; measured costs
    at factor 10 in benchmarks/RESULTS.md), ties in plan order. Only the order of work changes, not results."""
    rows = data["outcome"].value_counts() if "outcome" in data.columns else pd.Series(dtype=float)
    sens = sensitivity and (plan.sensitivity.ipw.enabled or plan.sensitivity.multiple_imputation.enabled)

    def cost(i: int) -> float:
        spec = plan.outcomes[i]
        weight = 4.0 if (spec.family == "gaussian" and sens) else 2.0 if spec.family == "negative_binomial" else 1.0
        return weight * float(rows.get(spec.name, 0))

    return sorted(range(len(plan.outcomes)), key=lambda i: (-cost(i), i))


def run_analysis(data: pd.DataFrame, plan: AnalysisPlan, study: Study, sensitivity: bool = True,
                 imputations: int | None = None, workers: int | None = None,
                 bootstrap: bool | None = None,
                 progress: Callable[[str], object] | None = None) -> AnalysisResult:
    """Fit every outcome of the plan, adjust p per multiplicity family, run IPW and MI side by side.

    `progress(outcome_id)` is called as each outcome's fits (main, IPW, MI) are done (e.g. a progress bar).

    `data` is the analysis dataset (Contract 5); only `analysis_frame(data, plan)` (the plan's outcomes and
    columns) is used, so a caller short of memory can pass that, or `read_analysis_dataset(path, plan)`.
    `workers` (default the plan's `defaults.workers`) processes fit outcomes side by side (each outcome's
    main model, IPW and MI in one process; same results as one after the other). `bootstrap` (default the
    plan's `sensitivity.bootstrap.enabled`) adds household-bootstrap CIs of the differences in change and d
    to the selected outcomes' contrasts. A failing outcome is recorded in `failures` with its message; the
    others still run. BLAS runs on one thread per process (`single_threaded_blas`): same digits whatever the
    number of workers or cores.
    """
    from .fastlmm_core import single_threaded_blas

    with single_threaded_blas():
        return _run_analysis(data, plan, study, sensitivity, imputations, workers, bootstrap, progress)


def _run_analysis(data: pd.DataFrame, plan: AnalysisPlan, study: Study, sensitivity: bool, imputations: int | None,
                  workers: int | None, bootstrap: bool | None,
                  progress: Callable[[str], object] | None) -> AnalysisResult:
    plan.check_against(study)
    workers = plan.defaults.workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    # Only the plan's rows and columns from here on (same rows in the same order): the forked workers select
    # from (and copy) this, not the whole dataset; a caller that drops its own frame frees the rest.
    data = analysis_frame(data, plan)
    results: dict[str, OutcomeResult] = {}
    failures: dict[str, str] = {}
    methods: dict[str, str] = {}
    sens_rows: list[pd.DataFrame] = []
    balance: list[pd.DataFrame] = []
    job_seconds: dict[str, float] = {}
    for outcome_id, piece in _analyse_all(data, plan, study, sensitivity, imputations, workers):
        job_seconds[outcome_id] = round(float(piece.get("seconds", 0.0)), 2)
        failures.update(piece["failures"])
        methods.update(piece["methods"])
        if piece["result"] is not None:
            results[piece["result"].outcome] = piece["result"]
        if piece["side"] is not None:
            sens_rows.append(piece["side"])
        balance += piece["balance"]
        if progress is not None:
            progress(outcome_id)
    boot_on = plan.sensitivity.bootstrap.enabled if bootstrap is None else bootstrap
    if boot_on:
        keys = plan.bootstrap_outcomes() or [o.id for o in plan.outcomes if o.primary and o.family == "gaussian"]
        for key in keys:
            if key not in results:
                continue
            try:
                boot = bootstrap_outcome(data, plan.outcome(key), plan, study, results[key])
                text = _attach_bootstrap(results[key], boot, plan)
                methods[f"{key}:bootstrap"] = text
                results[key].method = (f"{results[key].method} Household-bootstrap percentile CIs of the "
                                       "differences in change and of d are given beside the model-based ones.")
                methods[key] = results[key].method
            except Exception as exc:  # noqa: BLE001 - the main results stand without the bootstrap
                failures[f"{key}:bootstrap"] = f"{type(exc).__name__}: {exc}"
    all_contrasts = pd.concat([r.contrasts for r in results.values()], ignore_index=True) if results else \
        pd.DataFrame(columns=CONTRAST_COLUMNS)
    all_contrasts, mult_text = apply_multiplicity(all_contrasts, plan)
    for key, r in results.items():
        own = all_contrasts[all_contrasts["outcome"] == key].drop(columns="family").reset_index(drop=True)
        r.contrasts = own[CONTRAST_COLUMNS + (BOOTSTRAP_COLUMNS if r.bootstrap is not None else [])]
    sens = pd.concat(sens_rows, ignore_index=True) if sens_rows else pd.DataFrame()
    flags = [c for c in sens.columns if c.endswith("_changes")]
    if flags:
        sens["conclusion_changes"] = sens[flags].fillna(False).astype(bool).any(axis=1)
    return AnalysisResult(
        outcomes=results, contrasts=all_contrasts, sensitivity=sens,
        balance=pd.concat(balance, ignore_index=True) if balance else pd.DataFrame(),
        resilience=resilience_vs_reference(data, plan, study), methods=methods, failures=failures,
        multiplicity=mult_text, small_cell_threshold=plan.small_cell_threshold, job_seconds=job_seconds)
