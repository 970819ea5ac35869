"""The study as data: arms, sites, reference groups, waves and respondent roles (config/study.yaml)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .loading import CONFIG_DIR, load_model

Code = Field(pattern=r"^[a-z][a-z0-9_]*$", description="lowercase code: letters, digits, underscores")


class Labels(BaseModel):
    """A label in the report languages."""

    model_config = ConfigDict(extra="forbid")
    nl: str
    en: str

    def get(self, lang: str) -> str:
        return getattr(self, lang, self.en)


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    label: str | None = None


class Arm(BaseModel):
    """A cohort arm (intervention or comparison) or a reference group measured once."""

    model_config = ConfigDict(extra="forbid")
    code: str = Code
    label: Labels
    role: Literal["intervention", "comparison", "reference"]
    target_households: int | None = Field(default=None, ge=1)
    target_respondents: int | None = Field(default=None, ge=1)
    sites: list[Site] = Field(default_factory=list)
    waves: list[str] | None = Field(default=None, description="waves this arm is measured at; default all")


class Wave(BaseModel):
    """A measurement wave, anchored at the registration (T0) date by an offset and an admissible window."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    label: Labels
    offset_days: int = Field(ge=0, description="planned days after registration")
    window_days: tuple[int, int] = Field(description="admissible [earliest, latest] days after registration")

    @model_validator(mode="after")
    def _window_contains_offset(self) -> Wave:
        lo, hi = self.window_days
        if not lo <= self.offset_days <= hi:
            raise ValueError(f"window_days {list(self.window_days)} must contain offset_days {self.offset_days}")
        return self


class Role(BaseModel):
    """Who answers a questionnaire about whom, with the age rules that apply at the wave date."""

    model_config = ConfigDict(extra="forbid")
    code: str = Code
    label: Labels
    informant: Literal["self", "parent"]
    subject: Literal["adult", "child"]
    min_age_years: float | None = Field(default=None, ge=0, description="subject's minimum age at the wave date")
    max_age_years: float | None = Field(default=None, ge=0, description="subject's maximum age at the wave date")


class Study(BaseModel):
    """The whole study design. Code never names an arm, wave or role: it reads them from here."""

    model_config = ConfigDict(extra="forbid")
    name: str
    short_name: str = Code
    arms: list[Arm] = Field(min_length=1)
    waves: list[Wave] = Field(min_length=1)
    roles: list[Role] = Field(min_length=1)

    @field_validator("arms", "waves", "roles")
    @classmethod
    def _unique_codes(cls, v: list) -> list:
        seen: set[str] = set()
        for item in v:
            if item.code in seen:
                raise ValueError(f"code {item.code!r} is used twice; codes must be unique")
            seen.add(item.code)
        return v

    @model_validator(mode="after")
    def _arm_waves_known(self) -> Study:
        known = {w.code for w in self.waves}
        for arm in self.arms:
            for w in arm.waves or []:
                if w not in known:
                    raise ValueError(f"arm {arm.code!r} names wave {w!r}, which is not among waves {sorted(known)}")
        if not any(a.role == "intervention" for a in self.arms):
            raise ValueError("at least one arm must have role 'intervention'")
        return self

    # --- look-ups -----------------------------------------------------------------------------
    @cached_property
    def arm_codes(self) -> list[str]:
        return [a.code for a in self.arms]

    @cached_property
    def cohort_arms(self) -> list[Arm]:
        """Arms followed over waves (intervention and comparison), not reference groups."""
        return [a for a in self.arms if a.role != "reference"]

    @cached_property
    def wave_codes(self) -> list[str]:
        return [w.code for w in self.waves]

    @property
    def baseline_wave(self) -> str:
        return min(self.waves, key=lambda w: w.offset_days).code

    def arm(self, code: str) -> Arm:
        for a in self.arms:
            if a.code == code:
                return a
        raise KeyError(f"unknown arm {code!r}; the study has {self.arm_codes}")

    def wave(self, code: str) -> Wave:
        for w in self.waves:
            if w.code == code:
                return w
        raise KeyError(f"unknown wave {code!r}; the study has {self.wave_codes}")

    def role(self, code: str) -> Role:
        for r in self.roles:
            if r.code == code:
                return r
        raise KeyError(f"unknown role {code!r}; the study has {[r.code for r in self.roles]}")

    def waves_of(self, arm: str) -> list[str]:
        a = self.arm(arm)
        return a.waves if a.waves else self.wave_codes


def config_dir() -> Path:
    """The configuration folder: COHORTFLOW_CONFIG_DIR, else the one shipped in the repository."""
    return Path(os.environ.get("COHORTFLOW_CONFIG_DIR", CONFIG_DIR))


def load_study(path: Path | None = None) -> Study:
    """Load `study.yaml` (default: in config_dir()) into a checked Study."""
    return load_model(Study, Path(path) if path else config_dir() / "study.yaml")
