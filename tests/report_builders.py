"""Test helper for the report tests: an `AnalysisResult` built from a simulated dataset with simple numbers.

Marginal means are raw means per arm x wave (t intervals), differences in change are differences of raw
mean changes with independent-sample standard errors, d divides by the pooled baseline SD, the "MI" result is
the same contrast on complete cases. Nothing is hard-coded: every number comes from the simulated data, so
the report tests can recompute the cells they check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cohortflow.analysis.models import CONTRAST_COLUMNS, AnalysisResult, OutcomeResult
from cohortflow.analysis.plan import AnalysisPlan
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import Study

RC_THRESHOLD = 6.0  # reliable-change threshold in points used by the builder


def simple_plan(study: Study, threshold: int = 10, outcomes: list[dict] | None = None) -> AnalysisPlan:
    """A plan with the study's intervention arm against its comparison arms and two outcomes (two families)."""
    inter = next(a.code for a in study.cohort_arms if a.role == "intervention")
    comps = [a.code for a in study.cohort_arms if a.role == "comparison"]
    outcomes = outcomes or [
        {"name": "sim.total", "label": {"nl": "Klachten (sim)", "en": "Complaints (sim)"}, "primary": True,
         "direction": "higher_worse"},
        {"name": "sim.total", "key": "sim.above", "label": {"nl": "Boven afkappunt (sim)", "en": "Above cut-off (sim)"},
         "family": "binomial", "response": "above_cutoff", "direction": "higher_worse"},
    ]
    fams = [{"name": "primary", "outcomes": [outcomes[0].get("key", outcomes[0]["name"])]}]
    if len(outcomes) > 1:
        fams.append({"name": "secondary", "outcomes": [o.get("key", o["name"]) for o in outcomes[1:]]})
    return AnalysisPlan.model_validate({
        "intervention_arm": inter, "comparison_arms": comps, "outcomes": outcomes,
        "multiplicity": {"method": "bonferroni", "families": fams}, "small_cell_threshold": threshold})


def simulate(study: Study, plan: AnalysisPlan, effect: float = -4.0, scale: float = 0.6, seed: int = 3,
             sizes: dict[str, int] | None = None) -> pd.DataFrame:
    """A Contract-5 long frame for `sim.total` with the plan's arms and the study's waves."""
    spec = default_spec(plan.cohort_arms, [w.code for w in sorted(study.waves, key=lambda w: w.offset_days)],
                        effect=effect, scale=scale)
    if sizes:
        spec.households.update(sizes)
    return simulate_study(spec, seed=seed)


def _emm_rows(df: pd.DataFrame, arms: list[str], waves: list[str], col: str) -> pd.DataFrame:
    rows = []
    for a in arms:
        for w in waves:
            x = df.loc[(df.arm == a) & (df.wave == w), col].astype(float)
            n = len(x)
            m, se = x.mean(), x.std(ddof=1) / np.sqrt(n)
            q = stats.t.ppf(0.975, n - 1)
            rows.append({"arm": a, "wave": w, "emmean": m, "se": se, "df": n - 1, "lower": m - q * se,
                         "upper": m + q * se})
    return pd.DataFrame(rows)


def diff_in_change(df: pd.DataFrame, col: str, a: str, b: str, base: str, w: str) -> tuple[float, float]:
    """Raw difference in mean change (a minus b, base to w) and its independent-samples SE."""
    def cell(arm: str, wave: str) -> tuple[float, float]:
        x = df.loc[(df.arm == arm) & (df.wave == wave), col].astype(float)
        return x.mean(), x.var(ddof=1) / len(x)
    (m1, v1), (m0, v0), (c1, u1), (c0, u0) = cell(a, w), cell(a, base), cell(b, w), cell(b, base)
    return (m1 - m0) - (c1 - c0), float(np.sqrt(v1 + v0 + u1 + u0))


def _outcome(df: pd.DataFrame, key: str, family: str, plan: AnalysisPlan, waves: list[str], direction: str
             ) -> tuple[OutcomeResult, list[dict]]:
    arms, base = plan.cohort_arms, waves[0]
    col = "above_cutoff" if family == "binomial" else "score"
    counts = []
    for a in arms:
        base_p = set(df.loc[(df.arm == a) & (df.wave == base), "person_id"])
        for w in waves:
            sub = df[(df.arm == a) & (df.wave == w)]
            counts.append({"arm": a, "wave": w, "n_persons": sub.person_id.nunique(),
                           "n_households": sub.household_id.nunique(), "n_obs": len(sub),
                           "pct_retained": 100 * len(base_p & set(sub.person_id)) / len(base_p)})
    b = df[df.wave == base]
    baseline = pd.DataFrame([{"arm": a, "n": int((b.arm == a).sum()), "mean": b.loc[b.arm == a, "score"].mean(),
                              "sd": b.loc[b.arm == a, "score"].std(ddof=1)} for a in arms])
    above = pd.DataFrame([{"arm": a, "wave": w, "n": int(((df.arm == a) & (df.wave == w)).sum()),
                           "n_above": int(df.loc[(df.arm == a) & (df.wave == w), "above_cutoff"].sum()),
                           "pct": 100 * df.loc[(df.arm == a) & (df.wave == w), "above_cutoff"].mean()}
                          for a in arms for w in waves])
    wide = df.pivot_table(index="person_id", columns="wave", values="score", aggfunc="first")
    arm_of = df.groupby("person_id")["arm"].first()
    clinical = []
    if family == "gaussian":
        for a in arms:
            for w in waves[1:]:
                d = (wide.loc[arm_of[arm_of == a].index, w] - wide.loc[arm_of[arm_of == a].index, base]).dropna()
                clinical.append({"arm": a, "wave": w, "n_paired": len(d),
                                 "pct_improved": 100 * float(np.mean(-d > RC_THRESHOLD)),
                                 "pct_deteriorated": 100 * float(np.mean(d > RC_THRESHOLD)),
                                 "threshold": RC_THRESHOLD})
    complete = df[df.person_id.isin(wide.dropna().index)]
    contrasts, sens = [], []
    for comp in plan.comparison_arms:
        for w in waves[1:]:
            est, se = diff_in_change(df, col, plan.intervention_arm, comp, base, w)
            lo, hi = est - 1.96 * se, est + 1.96 * se
            p = 2 * stats.norm.sf(abs(est / se))
            s1, s2 = baseline.set_index("arm").loc[[plan.intervention_arm, comp], "sd"]
            sd = float(np.sqrt((s1**2 + s2**2) / 2))
            row = {"outcome": key, "contrast": f"{plan.intervention_arm} - {comp}: change {base} to {w}",
                   "kind": "diff_in_change", "arm": plan.intervention_arm, "arm2": comp, "wave": w, "estimate": est,
                   "se": se, "df": np.inf, "t": est / se, "p": p, "p_adj": np.nan, "lower": lo, "upper": hi}
            if family == "gaussian":
                row |= {"d": est / sd, "d_lower": lo / sd, "d_upper": hi / sd, "d_denominator": f"pooled SD {sd:.3g}"}
            else:
                row |= {"ratio": np.exp(est * 4), "ratio_lower": np.exp(lo * 4), "ratio_upper": np.exp(hi * 4),
                        "ratio_kind": "odds ratio"}
            contrasts.append(row)
            if family == "gaussian":
                mest, mse = diff_in_change(complete, col, plan.intervention_arm, comp, base, w)
                mp = 2 * stats.norm.sf(abs(mest / mse))
                sens.append({"outcome": key, "contrast": row["contrast"], "arm": plan.intervention_arm, "arm2": comp,
                             "wave": w, "main_estimate": est, "main_p": p, "mi_estimate": mest, "mi_se": mse,
                             "mi_lower": mest - 1.96 * mse, "mi_upper": mest + 1.96 * mse, "mi_p": mp,
                             "conclusion_changes": bool((p < 0.05) != (mp < 0.05) or np.sign(est) != np.sign(mest))})
    c = pd.DataFrame(contrasts).reindex(columns=CONTRAST_COLUMNS)
    res = OutcomeResult(
        outcome=key, name="sim.total", family=family, method=f"raw means ({family}) built by the test",
        counts=pd.DataFrame(counts),
        fixed_effects=pd.DataFrame({"term": ["(Intercept)"], "estimate": [df[col].mean()], "se": [np.nan],
                                    "df": [np.nan], "t": [np.nan], "p": [np.nan]}),
        variance_components=pd.DataFrame({"component": ["residual"], "variance": [df[col].var()],
                                          "sd": [df[col].std()]}),
        loglik=float("nan"), converged=True, warnings=[], fallback=None, random_structure="(none)",
        emms=_emm_rows(df, arms, waves, col), contrasts=c, baseline=baseline, above_cutoff=above,
        clinical=pd.DataFrame(clinical), direction=direction)
    return res, sens


def build_result(df: pd.DataFrame, plan: AnalysisPlan, study: Study) -> AnalysisResult:
    """An AnalysisResult for `simple_plan`'s outcomes computed with raw means from `df`."""
    waves = [w.code for w in sorted(study.waves, key=lambda w: w.offset_days) if w.code in set(df.wave)]
    outcomes, sens = {}, []
    for spec in plan.outcomes:
        r, s = _outcome(df, spec.id, spec.family, plan, waves, spec.direction or "higher_worse")
        outcomes[spec.id] = r
        sens += s
    allc = pd.concat([r.contrasts for r in outcomes.values()], ignore_index=True)
    n = len(allc)  # Bonferroni over all diff-in-change contrasts of one family
    for fam in plan.multiplicity.families:
        m = allc["outcome"].isin(fam.outcomes)
        allc.loc[m, "p_adj"] = np.minimum(1.0, allc.loc[m, "p"] * m.sum())
    for k, r in outcomes.items():
        r.contrasts = allc[allc["outcome"] == k].reset_index(drop=True)
    _ = n
    return AnalysisResult(outcomes=outcomes, contrasts=allc, sensitivity=pd.DataFrame(sens), balance=pd.DataFrame(),
                          resilience=None, methods={k: r.method for k, r in outcomes.items()}, failures={},
                          multiplicity="bonferroni within families", small_cell_threshold=plan.small_cell_threshold)
