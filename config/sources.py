"""Source definitions (config/sources/*.yaml): how one export layout maps onto the study's items.

A survey-tool change is a new source file or a new `version` of one, never a code change. A definition says
which files it reads (glob pattern and a file-name regex whose named groups can give arm/site/wave/role),
the format and its options, where arm/site/wave/role come from (fixed, a file-name group, or a column with an
optional code map), which columns hold the household/person/subject identifiers, the dates and sex, which
columns are direct identifiers to drop, how item columns map to item keys (`<instrument>_<item>`), and the
code -> value and code -> missing-reason maps.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .loading import ConfigError, load_model
from .study import config_dir


class CsvOptions(BaseModel):
    """CSV options; `auto` is detected from the file (BOM, encoding, delimiter, decimal comma)."""

    model_config = ConfigDict(extra="forbid")
    delimiter: str = "auto"
    decimal: str = "auto"
    encoding: str = "auto"


class FieldSource(BaseModel):
    """Where a file-level or row-level field comes from: a fixed value, a file-name group or a column."""

    model_config = ConfigDict(extra="forbid")
    value: str | None = None
    filename_group: str | None = None
    column: str | None = None
    map: dict[str, str] | None = Field(default=None, description="column code -> study code")

    @model_validator(mode="after")
    def _exactly_one(self) -> FieldSource:
        given = [x for x in (self.value, self.filename_group, self.column) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, filename_group or column")
        return self


class Identifiers(BaseModel):
    """Raw identifier columns; they are pseudonymised at the door and never stored raw."""

    model_config = ConfigDict(extra="forbid")
    household: str
    person: str
    subject: str | None = Field(default=None, description="column of the person reported on; empty = self")
    person_pattern: str | None = Field(
        default=None,
        description="regex a person (and subject) id must match; {household} stands for the row's household id",
    )
    household_from_person: str | None = Field(
        default=None, description="regex with group 'household' deriving the household id from the person id"
    )


class Demographics(BaseModel):
    """Columns for dates and sex. Lists are tried in order: the first column present in the file wins."""

    model_config = ConfigDict(extra="forbid")
    response_date: list[str] = Field(default_factory=list)
    registration_date: list[str] = Field(default_factory=list)
    subject_birth_date: list[str] = Field(default_factory=list)
    subject_sex: list[str] = Field(default_factory=list)
    informant_birth_date: list[str] = Field(default_factory=list)
    informant_sex: list[str] = Field(default_factory=list)
    sex_codes: dict[str, Literal["male", "female"]] = Field(default_factory=lambda: {"1": "male", "2": "female"})
    date_format: str | None = Field(default=None, description="strptime format for text dates, e.g. %d-%m-%Y")


class SourceDefinition(BaseModel):
    """One export layout (one YAML file in config/sources)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str
    description: str | None = None
    tool: str | None = Field(default=None, description="survey tool that produced the export")
    file_pattern: str = Field(description="glob on the file name, e.g. 'proeftuin_*.sav'")
    filename_regex: str | None = Field(default=None, description="named groups arm/site/wave/role")
    format: Literal["sav", "csv", "xlsx", "dta"]
    csv: CsvOptions = Field(default_factory=CsvOptions)
    sheet: str | int | None = Field(default=None, description="xlsx sheet name or index; default the first")
    arm: FieldSource
    site: FieldSource
    wave: FieldSource
    role: FieldSource
    identifiers: Identifiers
    demographics: Demographics = Field(default_factory=Demographics)
    direct_identifiers: list[str] = Field(default_factory=list, description="columns dropped at the door")
    ignore_columns: list[str] = Field(default_factory=list, description="known columns deliberately not used")
    item_columns: Literal["explicit", "instrument_item_upper"] = Field(
        default="explicit",
        description="instrument_item_upper: columns named <INSTRUMENT>_<ITEM> map to items automatically",
    )
    columns: dict[str, str] = Field(default_factory=dict, description="column -> item key <instrument>_<item>")
    checkboxes: dict[str, str] = Field(
        default_factory=dict,
        description="REDCap checkbox group field -> item key: columns field___<code> (0/1) collapse into one "
        "item whose value is the ticked code (none ticked = not answered, several = quarantined)",
    )
    checkbox_separator: str = Field(default="___", description="REDCap checkbox columns field___code")
    value_maps: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="item key or instrument code -> {code: value} applied on read"
    )
    missing_codes: dict[str, str] = Field(
        default_factory=dict, description="code -> missing reason (e.g. '-9': not_answered)"
    )
    required_columns: list[str] = Field(default_factory=list, description="columns that must be present")

    @model_validator(mode="after")
    def _regex_compiles(self) -> SourceDefinition:
        if self.filename_regex:
            try:
                rx = re.compile(self.filename_regex)
            except re.error as exc:
                raise ValueError(f"filename_regex does not compile: {exc}") from None
            for f in ("arm", "site", "wave", "role"):
                g = getattr(self, f).filename_group
                if g and g not in rx.groupindex:
                    raise ValueError(f"{f}.filename_group {g!r} is not a named group of filename_regex")
        elif any(getattr(self, f).filename_group for f in ("arm", "site", "wave", "role")):
            raise ValueError("a filename_group needs filename_regex")
        return self

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def matches(self, file_name: str) -> bool:
        """Whether the file name fits the glob pattern (and the regex when given)."""
        if not fnmatch.fnmatch(file_name, self.file_pattern):
            return False
        return not self.filename_regex or re.fullmatch(self.filename_regex, file_name) is not None

    def missing_reason_of(self, code: float) -> str | None:
        """The declared missing reason of a numeric code, or None."""
        for k, reason in self.missing_codes.items():
            try:
                if float(k) == float(code):
                    return reason
            except ValueError:
                continue
        return None


def sources_dirs() -> list[Path]:
    """config_dir()/sources, then folders in COHORTFLOW_SOURCE_DIRS (os.pathsep-separated)."""
    extra = [Path(p) for p in os.environ.get("COHORTFLOW_SOURCE_DIRS", "").split(os.pathsep) if p]
    return [config_dir() / "sources", *extra]


def load_source_definitions(dirs: list[Path] | Path | None = None) -> list[SourceDefinition]:
    """Load every `*.yaml` source definition; a (name, version) pair may occur only once."""
    if isinstance(dirs, str | Path):
        dirs = [Path(dirs)]
    found: list[SourceDefinition] = []
    seen: dict[tuple[str, str], Path] = {}
    for d in dirs if dirs is not None else sources_dirs():
        for path in sorted(Path(d).glob("*.yaml")):
            src = load_model(SourceDefinition, path)
            key = (src.name, src.version)
            if key in seen:
                raise ConfigError(f"{path}: source {src.name!r} version {src.version} is already defined in {seen[key]}")
            seen[key] = path
            found.append(src)
    return found
