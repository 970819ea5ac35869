"""The typed instrument model: a questionnaire declared as data (instruments/definitions/*.yaml).

A definition states its items, how answers are coded and scored, how items aggregate into scales, the
missing-item rule of every scale, cut-offs and bands (which may depend on informant, age and sex),
reliability for reliable change, direction, age range, informant, licence and source, and for each fact
whether it was verified against the manual. Item wording is never stored: only short descriptions of our own.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cohortflow.config.study import Labels

Direction = Literal["higher_worse", "higher_better", "neutral"]


class Provenance(BaseModel):
    """Where a fact comes from, and whether it was checked against the instrument's manual."""

    model_config = ConfigDict(extra="forbid")
    verified: bool = False
    source: str | None = None


class ResponseOption(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: int = Field(description="the code as it arrives in the export")
    label: Labels
    score: float | None = Field(default=None, description="scored value; default the code itself")

    @property
    def scored(self) -> float:
        return float(self.code if self.score is None else self.score)


class ResponseScale(BaseModel):
    """The answer options of a set of items, e.g. 0-3 'not at all'..'often' scored 0/1/3/5 (CRIES)."""

    model_config = ConfigDict(extra="forbid")
    code: str
    options: list[ResponseOption] | None = Field(default=None, description="categorical answers")
    numeric: tuple[float, float] | None = Field(default=None, description="[min, max] for numeric answers")
    integer: bool = True
    provenance: Provenance = Field(default_factory=Provenance)

    @model_validator(mode="after")
    def _one_kind(self) -> ResponseScale:
        if (self.options is None) == (self.numeric is None):
            raise ValueError("give either options (categorical answers) or numeric: [min, max]")
        if self.options is not None:
            codes = [o.code for o in self.options]
            if len(set(codes)) != len(codes):
                raise ValueError(f"option codes must be unique, got {codes}")
        return self

    @property
    def codes(self) -> list[int]:
        return [o.code for o in self.options] if self.options else []

    @property
    def score_map(self) -> dict[int, float]:
        return {o.code: o.scored for o in self.options} if self.options else {}

    @property
    def score_range(self) -> tuple[float, float]:
        if self.options:
            s = [o.scored for o in self.options]
            return (min(s), max(s))
        assert self.numeric is not None
        return self.numeric


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[a-z0-9_]+$", description="unique within the instrument, e.g. '01' or 'partner_any'")
    label: Labels = Field(description="a short description of our own, never the item's wording")
    response: str | None = Field(default=None, description="response scale code; default the instrument's first")
    reversed: bool = False


class Condition(BaseModel):
    """When a cut-off or band applies: informant role, subject age at the wave date, sex."""

    model_config = ConfigDict(extra="forbid")
    roles: list[str] | None = None
    min_age_years: float | None = None
    max_age_years: float | None = None
    sex: Literal["male", "female"] | None = None


class Cutoff(BaseModel):
    """score >= threshold means 'above cut-off' (e.g. probable PTSD)."""

    model_config = ConfigDict(extra="forbid")
    threshold: float
    label: Labels
    when: Condition = Field(default_factory=Condition)
    provenance: Provenance = Field(default_factory=Provenance)


class Band(BaseModel):
    """A band [min, max] of the score with a label (e.g. SDQ 'close to average')."""

    model_config = ConfigDict(extra="forbid")
    code: str
    label: Labels
    min: float
    max: float


class BandSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    bands: list[Band] = Field(min_length=1)
    when: Condition = Field(default_factory=Condition)
    provenance: Provenance = Field(default_factory=Provenance)

    @model_validator(mode="after")
    def _ordered(self) -> BandSet:
        for a, b in zip(self.bands, self.bands[1:], strict=False):
            if b.min <= a.max - 1e-9 and not (b.min > a.min):
                raise ValueError(f"bands {a.code!r} and {b.code!r} overlap or are out of order")
        return self


class Reliability(BaseModel):
    """Reliability used for reliable change (Jacobson & Truax): r and the SD of the reference group."""

    model_config = ConfigDict(extra="forbid")
    value: float = Field(gt=0, lt=1)
    kind: Literal["test_retest", "alpha", "icc"]
    sd: float | None = Field(default=None, gt=0, description="reference SD; default the sample's baseline SD")
    provenance: Provenance = Field(default_factory=Provenance)


class Scale(BaseModel):
    """A score computed from items (or from other scales of the same instrument)."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[a-z0-9_]+$")
    label: Labels
    items: list[str] | None = Field(default=None, description="item codes")
    components: list[str] | None = Field(default=None, description="scale codes summed into this scale")
    aggregation: Literal["sum", "mean", "mean_times_n", "count_endorsed", "max", "any"] = "sum"
    endorsed_at: float | None = Field(default=None, description="count_endorsed/any: scored value counted as 'yes'")
    min_answered: int | None = Field(default=None, ge=0, description="items needed; default all")
    prorate: bool = Field(default=False, description="sum: scale the answered items' sum up to all items")
    rounding: Literal["none", "half_up"] = "none"
    direction: Direction = "higher_worse"
    cutoffs: list[Cutoff] = Field(default_factory=list)
    bands: list[BandSet] = Field(default_factory=list)
    reliability: Reliability | None = None
    provenance: Provenance = Field(default_factory=Provenance)

    @model_validator(mode="after")
    def _items_or_components(self) -> Scale:
        if (self.items is None) == (self.components is None):
            raise ValueError("give either items or components")
        if self.aggregation in ("count_endorsed", "any") and self.endorsed_at is None:
            raise ValueError(f"aggregation {self.aggregation!r} needs endorsed_at")
        return self


class Instrument(BaseModel):
    """One questionnaire or study-specific item block, as declared in a definitions YAML file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    version: str = Field(description="definition version; bump on any change that alters scores")
    construct_code: str = Field(alias="construct", description="the construct measured, e.g. child_ptss")
    label: Labels
    roles: list[str] = Field(min_length=1, description="study role codes that answer it (adult, parent, child)")
    age_range_years: tuple[float, float] | None = Field(default=None, description="subject age at the wave date")
    licence: str
    source: str
    provenance: Provenance = Field(default_factory=Provenance)
    user_supplied: bool = Field(default=False, description="licensed instrument whose key the user supplies")
    response_scales: list[ResponseScale] = Field(min_length=1)
    items: list[Item] = Field(min_length=1)
    scales: list[Scale] = Field(default_factory=list)
    notes: str | None = None

    @model_validator(mode="after")
    def _references(self) -> Instrument:
        rs = {r.code for r in self.response_scales}
        item_codes = [i.code for i in self.items]
        if len(set(item_codes)) != len(item_codes):
            raise ValueError("item codes must be unique")
        for it in self.items:
            if it.response is not None and it.response not in rs:
                raise ValueError(f"item {it.code!r}: unknown response scale {it.response!r}; known {sorted(rs)}")
        scale_codes: list[str] = []
        for sc in self.scales:
            for ic in sc.items or []:
                if ic not in item_codes:
                    raise ValueError(f"scale {sc.code!r}: unknown item {ic!r}")
            for cc in sc.components or []:
                if cc not in scale_codes:
                    raise ValueError(f"scale {sc.code!r}: component {cc!r} must be a scale defined before it")
            if sc.min_answered is not None and sc.items and sc.min_answered > len(sc.items):
                raise ValueError(f"scale {sc.code!r}: min_answered {sc.min_answered} > {len(sc.items)} items")
            scale_codes.append(sc.code)
        if len(set(scale_codes)) != len(scale_codes):
            raise ValueError("scale codes must be unique")
        return self

    # --- look-ups -----------------------------------------------------------------------------
    @cached_property
    def item_codes(self) -> list[str]:
        return [i.code for i in self.items]

    def item(self, code: str) -> Item:
        for it in self.items:
            if it.code == code:
                return it
        raise KeyError(f"{self.code}: unknown item {code!r}")

    def scale(self, code: str) -> Scale:
        for sc in self.scales:
            if sc.code == code:
                return sc
        raise KeyError(f"{self.code}: unknown scale {code!r}; known {[s.code for s in self.scales]}")

    def response_scale_of(self, item: Item | str) -> ResponseScale:
        it = self.item(item) if isinstance(item, str) else item
        code = it.response or self.response_scales[0].code
        return next(r for r in self.response_scales if r.code == code)

    def item_key(self, item_code: str) -> str:
        """The stable warehouse key of an item: '<instrument>_<item>'."""
        return f"{self.code}_{item_code}"
