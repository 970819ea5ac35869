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
    unit: str | None = Field(default=None, description="numeric answers: unit, e.g. 'days since 1970-01-01'")
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
    """When a cut-off, band set or classification applies: informant role, subject age at the wave date, sex.

    Age bounds are in (fractional) years: `min_age_years <= age < max_age_years` (the upper bound is
    exclusive, so ages 4-17 are written 4 and 18). A condition that names a field the context lacks
    (no age, no sex) does not hold.
    """

    model_config = ConfigDict(extra="forbid")
    roles: list[str] | None = None
    min_age_years: float | None = None
    max_age_years: float | None = None
    sex: Literal["male", "female"] | None = None


class Cutoff(BaseModel):
    """`score <operator> threshold` means 'above cut-off' (e.g. probable PTSD); the default operator is >=.

    For scales where higher is better (e.g. quality of life) use `operator: "<="` to flag low scores.
    """

    model_config = ConfigDict(extra="forbid")
    threshold: float
    operator: Literal[">=", ">", "<=", "<"] = ">="
    label: Labels
    when: Condition = Field(default_factory=Condition)
    provenance: Provenance = Field(default_factory=Provenance)


class Band(BaseModel):
    """A band [min, max] of the score with a label (e.g. SDQ 'close to average').

    Scoring puts a score in the band with the largest `min <= score` (so a prorated 13.5 falls in 0-13
    when the next band starts at 14); scores below the lowest min or above the highest max get no band.
    """

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
        for b in self.bands:
            if b.min > b.max:
                raise ValueError(f"band {b.code!r}: min {b.min} is above max {b.max}")
        by_min = sorted(self.bands, key=lambda b: b.min)
        for a, b in zip(by_min, by_min[1:], strict=False):
            if b.min <= a.max:
                raise ValueError(f"bands {a.code!r} [{a.min}, {a.max}] and {b.code!r} [{b.min}, {b.max}] overlap")
        codes = [b.code for b in self.bands]
        if len(set(codes)) != len(codes):
            raise ValueError(f"band codes must be unique, got {codes}")
        return self


class Reliability(BaseModel):
    """Reliability used for reliable change (Jacobson & Truax): r and the SD of the reference group."""

    model_config = ConfigDict(extra="forbid")
    value: float = Field(gt=0, lt=1)
    kind: Literal["test_retest", "alpha", "icc"]
    sd: float | None = Field(default=None, gt=0, description="reference SD; default the sample's baseline SD")
    provenance: Provenance = Field(default_factory=Provenance)


class Scale(BaseModel):
    """A score computed from items (or from other scales of the same instrument).

    Aggregations over the answered items' scored values (after value maps and reversal):
    `sum` (with `prorate`: sum x n_items / n_answered), `mean`, `mean_times_n` (mean x n_items, the SDQ
    rule), `count_endorsed` (items scored >= `endorsed_at`), `any` (1 when any item is endorsed, which
    settles it even when other items are missing; 0 needs `min_answered` answered items), `max`.
    Components (earlier scales) are summed. A score needs `min_answered` answered items (default all);
    `rounding: half_up` applies floor(0.5 + x). `prorated` is reported when fewer than all items made a
    sum, mean or mean_times_n score.
    """

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


class ScaleTest(BaseModel):
    """`<scale> <operator> <value>`: one condition of a classification category, on a scale's score."""

    model_config = ConfigDict(extra="forbid")
    scale: str
    operator: Literal[">=", ">", "<=", "<", "==", "!="]
    value: float


class Category(BaseModel):
    """A category of a classification: it applies when all its tests hold (an empty list always holds)."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[a-z0-9_]+$")
    label: Labels
    all_of: list[ScaleTest] = Field(default_factory=list)
    positive: bool | None = Field(default=None, description="sets above_cutoff for this category (e.g. 'screen positive')")


class Classification(BaseModel):
    """A categorical result derived from one or more scales, e.g. thriving / struggling / suffering.

    Categories are tried in order and the first whose tests all hold is assigned; a response gets no
    category when any scale the classification uses is missing, or when no category's tests hold.
    The result is reported as a row with `scale` = the classification code, `band` = the category code.
    """

    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[a-z0-9_]+$")
    label: Labels
    categories: list[Category] = Field(min_length=2)
    when: Condition = Field(default_factory=Condition)
    provenance: Provenance = Field(default_factory=Provenance)

    @property
    def scales_used(self) -> list[str]:
        seen: list[str] = []
        for cat in self.categories:
            for t in cat.all_of:
                if t.scale not in seen:
                    seen.append(t.scale)
        return seen


class Instrument(BaseModel):
    """One questionnaire or study-specific item block, as declared in a definitions YAML file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    version: str = Field(description="definition version; bump on any change that alters scores")
    construct_code: str = Field(alias="construct", description="the construct measured, e.g. child_ptss")
    label: Labels
    roles: list[str] = Field(min_length=1, description="study role codes that answer it (adult, parent, child)")
    age_range_years: tuple[float, float] | None = Field(default=None, description="subject age at the wave date in years, [from, to): "
                                                          "from <= age < to, as for scoring conditions")
    licence: str
    source: str
    provenance: Provenance = Field(default_factory=Provenance)
    user_supplied: bool = Field(default=False, description="licensed instrument whose key the user supplies")
    response_scales: list[ResponseScale] = Field(min_length=1)
    items: list[Item] = Field(min_length=1)
    scales: list[Scale] = Field(default_factory=list)
    classifications: list[Classification] = Field(default_factory=list)
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
        for cl in self.classifications:
            if cl.code in scale_codes:
                raise ValueError(f"classification {cl.code!r}: a scale has the same code; codes must differ")
            for sc_code in cl.scales_used:
                if sc_code not in scale_codes:
                    raise ValueError(f"classification {cl.code!r}: unknown scale {sc_code!r}; known {scale_codes}")
        cl_codes = [c.code for c in self.classifications]
        if len(set(cl_codes)) != len(cl_codes):
            raise ValueError("classification codes must be unique")
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
