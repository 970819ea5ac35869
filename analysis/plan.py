"""The analysis plan as data (config/analysis.yaml): outcomes, model, contrasts, multiplicity, sensitivity.

`load_analysis_plan(path=None) -> AnalysisPlan` reads and checks the plan; `AnalysisPlan.check_against(study)`
verifies that the arms it names exist in the study. Code never names an arm or wave: the intervention and
comparison arms come from here, the baseline wave is `study.baseline_wave`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cohortflow.config.loading import ConfigError, load_model
from cohortflow.config.study import Labels, Study, config_dir

Family = Literal["gaussian", "binomial", "negative_binomial", "poisson"]
FallbackStep = Literal["slope", "household", "person"]


class FixedEffects(BaseModel):
    """Fixed part: arm x wave (always) plus baseline covariates (columns of the analysis dataset)."""

    model_config = ConfigDict(extra="forbid")
    covariates: list[str] = Field(default_factory=list)


class RandomEffects(BaseModel):
    """Random part: intercepts per household and per person (nested), optional uncorrelated person slope."""

    model_config = ConfigDict(extra="forbid")
    household: bool = True
    person: bool = True
    slope: str | None = Field(default=None, description="time column for an uncorrelated random slope per person")


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fixed_effects: FixedEffects = Field(default_factory=FixedEffects)
    random_effects: RandomEffects = Field(default_factory=RandomEffects)
    fallback: list[FallbackStep] = Field(default_factory=lambda: ["slope", "household"])
    boundary_tol: float = Field(default=1e-4, gt=0, lt=1)
    time_column: str = "months_since_t0"
    workers: int = Field(default=1, ge=1, le=64,
                         description="processes fitting outcomes side by side (1 = one after the other)")
    engine: Literal["fast", "statsmodels", "profiled"] = Field(
        default="fast",
        description="fast: lme4's criterion on the batched engine (statsmodels as fallback); statsmodels: MixedLM "
                    "then refined on lme4's criterion; profiled: lme4's criterion only (sparse)")


class OutcomeSpec(BaseModel):
    """One outcome of the plan: which rows of the analysis dataset, which response, which model family."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="value of the `outcome` column of the analysis dataset, e.g. cries13.total")
    key: str | None = Field(default=None, description="unique key in the plan; default `name`")
    label: Labels | None = None
    role: str | None = Field(default=None, description="informant role to select; default all rows")
    family: Family = "gaussian"
    response: Literal["score", "above_cutoff", "stopped"] = Field(
        default="score",
        description="score: the scale score; above_cutoff: the cut-off flag; stopped: 1 when the score was > 0 at "
                    "baseline and is 0 at the follow-up wave (persons with a score > 0 at baseline only; a binary "
                    "'any' scale gives 'violence stopped')")
    working_correlation: Literal["exchangeable", "independence"] = Field(
        default="exchangeable", description="GEE working correlation within households (binary and count outcomes)")
    primary: bool = False
    direction: Literal["higher_worse", "higher_better", "neutral"] | None = None
    fixed_effects: FixedEffects | None = None
    random_effects: RandomEffects | None = None
    cutoff: float | None = Field(default=None, description="cut-off if the dataset lacks above_cutoff")
    reliability: float | None = Field(default=None, gt=0, lt=1, description="r for reliable change")

    @property
    def id(self) -> str:
        return self.key or self.name

    @model_validator(mode="after")
    def _binary_response(self) -> OutcomeSpec:
        if self.response in ("above_cutoff", "stopped") and self.family != "binomial":
            raise ValueError(f"outcome {self.id!r}: response {self.response!r} is 0/1 and needs family: binomial "
                             f"(not {self.family!r})")
        return self


class Family_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    outcomes: list[str] = Field(min_length=1, description="outcome keys")
    kinds: list[Literal["within_change", "diff_in_change", "between_arm"]] = Field(
        default_factory=lambda: ["diff_in_change"]
    )


class Multiplicity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["holm", "fdr_bh", "bonferroni", "none"] = "holm"
    families: list[Family_] = Field(default_factory=list)


class IpwSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    covariates: list[str] = Field(default_factory=lambda: ["age_years", "sex", "baseline_score"])
    stabilised: bool = True
    trim_quantile: float = Field(default=0.01, ge=0, lt=0.5)


class MiSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    imputations: int = Field(default=20, ge=2)
    iterations: int = Field(default=10, ge=1)
    seed: int = 20241
    household: bool = Field(default=True, description="impute with the other household members' mean scores "
                                                      "(cluster-means approach); false = persons independent")


class BootstrapSpec(BaseModel):
    """Household (cluster) bootstrap CIs of the difference in change and its d, beside the model-based CIs.

    Percentile intervals from `resamples` refits of the final mixed model (fast engine, households drawn with
    replacement; the baseline SDs behind d recomputed per resample). Continuous (gaussian) outcomes only.
    """

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    resamples: int = Field(default=1000, ge=200, le=100_000,
                           description="number of household resamples (at least 200 for 95% percentile limits)")
    seed: int = Field(default=20242, ge=0)
    workers: int = Field(default=1, ge=1, le=64, description="worker processes for the refits")
    outcomes: list[str] | None = Field(default=None, description="outcome keys; default the primary outcomes")
    method: Literal["percentile"] = "percentile"


class Sensitivity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ipw: IpwSpec = Field(default_factory=IpwSpec)
    multiple_imputation: MiSpec = Field(default_factory=MiSpec)
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec)
    change_rule: str = "significance or sign of the difference in change differs from the main analysis"


class Clinical(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reliable_change_z: float = 1.96


class Resilience(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str
    covariates: list[str] = Field(default_factory=lambda: ["age_years", "sex"])


class AnalysisPlan(BaseModel):
    """The whole analysis plan. Arms are codes from config/study.yaml."""

    model_config = ConfigDict(extra="forbid")
    version: str = "1.0"
    intervention_arm: str
    comparison_arms: list[str] = Field(min_length=1)
    reference_group: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    outcomes: list[OutcomeSpec] = Field(min_length=1)
    multiplicity: Multiplicity = Field(default_factory=Multiplicity)
    sensitivity: Sensitivity = Field(default_factory=Sensitivity)
    clinical: Clinical = Field(default_factory=Clinical)
    resilience: Resilience | None = None
    small_cell_threshold: int = Field(default=10, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    report_languages: list[Literal["nl", "en"]] = Field(default_factory=lambda: ["nl", "en"])
    covariate_labels: dict[str, Labels] = Field(
        default_factory=dict, description="label per covariate column in the report languages (footer, notes)")

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisPlan:
        keys = [o.id for o in self.outcomes]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"outcome keys {dup} are used twice; give each a distinct `key`")
        if self.intervention_arm in self.comparison_arms:
            raise ValueError("intervention_arm must not also be a comparison arm")
        for fam in self.multiplicity.families:
            unknown = [k for k in fam.outcomes if k not in keys]
            if unknown:
                raise ValueError(f"multiplicity family {fam.name!r} names unknown outcomes {unknown}; known {keys}")
        boot = self.sensitivity.bootstrap
        if boot.outcomes is not None:
            unknown = [k for k in boot.outcomes if k not in keys]
            if unknown:
                raise ValueError(f"sensitivity.bootstrap.outcomes names unknown outcomes {unknown}; known {keys}")
            fam_of = {o.id: o.family for o in self.outcomes}
            other = [k for k in boot.outcomes if fam_of[k] != "gaussian"]
            if other:
                raise ValueError(f"sensitivity.bootstrap.outcomes {other} are not gaussian (mixed-model) outcomes; "
                                 "the household bootstrap covers continuous outcomes only: remove them")
        return self

    # --- look-ups -----------------------------------------------------------------------------
    def outcome(self, key: str) -> OutcomeSpec:
        for o in self.outcomes:
            if o.id == key:
                return o
        raise KeyError(f"unknown outcome {key!r}; the plan has {[o.id for o in self.outcomes]}")

    def covariates_of(self, spec: OutcomeSpec) -> list[str]:
        return (spec.fixed_effects or self.defaults.fixed_effects).covariates

    def random_effects_of(self, spec: OutcomeSpec) -> RandomEffects:
        return spec.random_effects or self.defaults.random_effects

    def covariate_label(self, column: str, lang: str) -> str:
        """The covariate's label in `lang` (config `covariate_labels`), else the column name."""
        lab = self.covariate_labels.get(column)
        return lab.get(lang) if lab is not None else column

    def bootstrap_outcomes(self) -> list[str]:
        """Outcome keys to bootstrap when `sensitivity.bootstrap` is enabled (default: primary gaussian ones)."""
        boot = self.sensitivity.bootstrap
        if not boot.enabled:
            return []
        if boot.outcomes is not None:
            return list(boot.outcomes)
        return [o.id for o in self.outcomes if o.primary and o.family == "gaussian"]

    @property
    def cohort_arms(self) -> list[str]:
        return [self.intervention_arm, *self.comparison_arms]

    def check_against(self, study: Study, source: str | Path = "analysis.yaml") -> None:
        """Raise ConfigError if the plan names arms the study does not have."""
        known = set(study.arm_codes)
        bad = [a for a in [*self.cohort_arms, *([self.reference_group] if self.reference_group else [])]
               if a not in known]
        if bad:
            raise ConfigError(f"{source}: arms {bad} are not in the study's arms {sorted(known)}; fix the plan.")


def load_analysis_plan(path: Path | str | None = None) -> AnalysisPlan:
    """Load `analysis.yaml` (default: in config_dir()) into a checked AnalysisPlan."""
    return load_model(AnalysisPlan, Path(path) if path else config_dir() / "analysis.yaml")
