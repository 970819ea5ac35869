"""Operations configuration (`config/operations.yaml`): schedules per source, inbox, Dask address.

`load_operations(path=None) -> Operations` reads and checks the file; errors name the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .loading import load_yaml, parse_model
from .study import config_dir


class IngestionSchedule(BaseModel):
    """When one source's exports are ingested: a 5-field cron expression in the configured time zone."""

    model_config = ConfigDict(extra="forbid")
    cron: str
    active: bool = True

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("expected a cron expression with 5 fields (minute hour day month weekday), "
                             "e.g. '0 6 * * 1-5'")
        return v


class Operations(BaseModel):
    """How the flows are deployed and run."""

    model_config = ConfigDict(extra="forbid")
    timezone: str = "Europe/Amsterdam"
    inbox: Path = Path("data/inbox")
    outputs: Path = Path("data/outputs")
    database_url: str | None = None
    ingestion: dict[str, IngestionSchedule] = Field(default_factory=dict)
    score_after_ingest: bool = True
    data_docs: bool = True
    dask_address: str | None = None
    work_pool: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name such as 'Europe/Amsterdam'") from None
        return v

    @field_validator("dask_address")
    @classmethod
    def _dask_scheme(cls, v: str | None) -> str | None:
        if v and "://" not in v:
            raise ValueError("expected a Dask scheduler address with its scheme, e.g. 'tcp://10.0.0.5:8786'")
        return v


def load_operations(path: Path | str | None = None) -> Operations:
    """Read `operations.yaml` in config_dir() (or `path`) into `Operations`; raises ConfigError naming bad fields."""
    p = Path(path) if path else config_dir() / "operations.yaml"
    return parse_model(Operations, load_yaml(p) or {}, p)
