"""The generator's configuration: synth/model.yaml (true effects, nuisance structure) and
synth/questionnaires.yaml (which instruments each role answers, export formats per arm)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cohortflow.config.loading import load_model
from cohortflow.config.study import Arm

SYNTH_DIR = Path(__file__).resolve().parent


class ConstructEffects(BaseModel):
    """Latent 'problem' level at baseline per arm (+ = worse) and improvement per arm and wave (+ = better)."""

    model_config = ConfigDict(extra="forbid")
    baseline: dict[str, float] = Field(default_factory=dict)
    improvement: dict[str, dict[str, float]] = Field(default_factory=dict)


class Variance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    household_sd: float = Field(ge=0)
    person_sd: float = Field(ge=0)
    slope_sd_per_year: float = Field(ge=0)
    occasion_sd: float = Field(ge=0)


class ItemModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    discrimination: tuple[float, float]
    threshold_spacing: float = Field(gt=0)
    location_sd: float = Field(ge=0)
    not_answered: float = Field(ge=0, lt=1)
    dont_know_items: int = Field(ge=0)
    dont_know: float = Field(ge=0, lt=1)
    instrument_discrimination: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per instrument: range of a (default `discrimination`)")
    instrument_location: dict[str, float] = Field(
        default_factory=dict, description="per instrument: shift of all thresholds (+ = lower scale scores)")


class Households(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registration_start: dt.date
    registration_span_days: int = Field(gt=0)
    two_adults: float = Field(ge=0, le=1)
    children: list[float] = Field(min_length=1)
    site_concentration: float = Field(gt=0)
    baseline_response: float = Field(ge=0, le=1)
    followup_person_response: float = Field(ge=0, le=1)
    second_parent_report: float = Field(ge=0, le=1)


class Attrition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention: dict[str, float]
    severity_log_odds: float
    default_step: float = Field(gt=0, le=1)


class TruthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    persons_per_arm: int = Field(ge=1000)


class SynthModel(BaseModel):
    """synth/model.yaml."""

    model_config = ConfigDict(extra="forbid")
    constructs: dict[str, ConstructEffects]
    default: ConstructEffects
    variance: Variance
    items: ItemModel
    households: Households
    attrition: Attrition
    truth: TruthSettings

    def _lookup(self, table_of: str, construct: str, arm: Arm) -> object:
        for effects in (self.constructs.get(construct), self.default):
            if effects is None:
                continue
            table = getattr(effects, table_of)
            for key in (arm.code, arm.role):
                if key in table:
                    return table[key]
        return None

    def baseline(self, construct: str, arm: Arm) -> float:
        """Latent problem level (+ = worse) of `arm` at baseline for `construct`."""
        v = self._lookup("baseline", construct, arm)
        return float(v) if v is not None else 0.0

    def improvement(self, construct: str, arm: Arm, wave: str) -> float:
        """True latent improvement (+ = better) of `arm` at `wave` relative to baseline."""
        v = self._lookup("improvement", construct, arm)
        return float(v.get(wave, 0.0)) if isinstance(v, dict) else 0.0


class ReferenceQuestionnaires(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: dict[str, list[str]]
    child_age_years: tuple[float, float]


class Questionnaires(BaseModel):
    """synth/questionnaires.yaml."""

    model_config = ConfigDict(extra="forbid")
    roles: dict[str, list[str]]
    reference: ReferenceQuestionnaires
    formats: dict[str, str] = Field(default_factory=dict)

    def format_of(self, arm: str) -> str:
        fmt = self.formats.get(arm, "csv")
        if fmt not in ("sav", "xlsx", "csv"):
            raise ValueError(f"synth/questionnaires.yaml: formats.{arm}: {fmt!r} is not one of sav, xlsx, csv")
        return fmt

    def instruments_for(self, arm: Arm, role: str) -> list[str]:
        table = self.reference.roles if arm.role == "reference" else self.roles
        return list(table.get(role, []))


def load_synth_model(path: Path | None = None) -> SynthModel:
    """Load the generating model (default synth/model.yaml)."""
    return load_model(SynthModel, path or SYNTH_DIR / "model.yaml")


def load_questionnaires(path: Path | None = None) -> Questionnaires:
    """Load the role -> instruments table (default synth/questionnaires.yaml)."""
    return load_model(Questionnaires, path or SYNTH_DIR / "questionnaires.yaml")
