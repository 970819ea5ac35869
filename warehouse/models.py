"""The warehouse tables (docs/design.md, Contract 3) as SQLAlchemy 2.0 models.

Long and instrument-agnostic: one `response` per loaded data row; its item answers are packed, one
`item_block` per (response, instrument) whose items are listed once in a shared `item_layout`.
Every row traces to its `batch` (file name, SHA-256, row number). Raw values are never changed after load;
a corrected export arrives as a new batch and marks the earlier batch's rows superseded.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PSEUDONYM = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Batch(Base):
    """One import of one file: what arrived, from which source version, and what became of every row."""

    __tablename__ = "batch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_name: Mapped[str] = mapped_column(String(500))
    file_path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    source_name: Mapped[str | None] = mapped_column(String(200))
    source_version: Mapped[str | None] = mapped_column(String(50))
    file_format: Mapped[str | None] = mapped_column(String(20))
    arm: Mapped[str | None] = mapped_column(String(50))
    site: Mapped[str | None] = mapped_column(String(50))
    wave: Mapped[str | None] = mapped_column(String(50))
    role: Mapped[str | None] = mapped_column(String(50))
    scope: Mapped[str | None] = mapped_column(String(300), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # loaded | refused | superseded
    rows_in: Mapped[int] = mapped_column(Integer, default=0)
    rows_loaded: Mapped[int] = mapped_column(Integer, default=0)
    rows_quarantined: Mapped[int] = mapped_column(Integer, default=0)
    rows_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    item_values: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    read_seconds: Mapped[float | None] = mapped_column(Float)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    code_version: Mapped[str | None] = mapped_column(String(50))
    message: Mapped[str | None] = mapped_column(Text)
    problems: Mapped[list | None] = mapped_column(JSON)
    supersedes: Mapped[list | None] = mapped_column(JSON)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("batch.id"))


class Household(Base):
    __tablename__ = "household"
    household_id: Mapped[str] = mapped_column(PSEUDONYM, primary_key=True)
    arm: Mapped[str] = mapped_column(String(50))
    site: Mapped[str] = mapped_column(String(50))
    registration_date: Mapped[date | None] = mapped_column(Date)
    first_batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"))


class Person(Base):
    __tablename__ = "person"
    person_id: Mapped[str] = mapped_column(PSEUDONYM, primary_key=True)
    household_id: Mapped[str] = mapped_column(ForeignKey("household.household_id"))  # no index: migration 0003
    sex: Mapped[str | None] = mapped_column(String(10))
    birth_year: Mapped[int | None] = mapped_column(Integer)
    first_batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"))


class Response(Base):
    """One loaded questionnaire (one data row of one file)."""

    __tablename__ = "response"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"))  # looked up by uq_response_batch_row: 0005
    row_number: Mapped[int] = mapped_column(Integer)
    household_id: Mapped[str] = mapped_column(ForeignKey("household.household_id"))  # no index: migration 0003
    person_id: Mapped[str] = mapped_column(ForeignKey("person.person_id"), index=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("person.person_id"), index=True)
    role: Mapped[str] = mapped_column(String(50))
    arm: Mapped[str] = mapped_column(String(50))
    site: Mapped[str] = mapped_column(String(50))
    wave: Mapped[str] = mapped_column(String(50))
    response_date: Mapped[date | None] = mapped_column(Date)
    registration_date: Mapped[date | None] = mapped_column(Date)
    days_since_t0: Mapped[int | None] = mapped_column(Integer)
    subject_age_months: Mapped[int | None] = mapped_column(Integer)
    subject_sex: Mapped[str | None] = mapped_column(String(10))
    superseded: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    released_from: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("batch_id", "row_number", name="uq_response_batch_row"),)


class ItemLayout(Base):
    """One ordered list of an instrument's item codes (JSON array text), shared by every block stored in it."""

    __tablename__ = "item_layout"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instrument: Mapped[str] = mapped_column(String(50), index=True)
    items: Mapped[str] = mapped_column(Text)


class ItemBlock(Base):
    """The item answers of one response to one instrument, packed: `codes` holds the raw codes as
    little-endian float64 in the order of the layout's items (NaN = missing); `reasons` is a JSON object
    {item: missing_reason} for the items that have a missing reason, NULL when none has.

    No foreign keys (migration 0005): blocks are written only by the loader, in their response's transaction,
    and nothing is deleted; `response_id` refers to response.id and `layout_id` to item_layout.id."""

    __tablename__ = "item_block"
    response_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instrument: Mapped[str] = mapped_column(String(50), primary_key=True)
    layout_id: Mapped[int] = mapped_column(Integer)
    codes: Mapped[bytes] = mapped_column(LargeBinary)
    reasons: Mapped[str | None] = mapped_column(Text)
    __table_args__ = ({"sqlite_with_rowid": False},)


class QuarantineRow(Base):
    """A row kept out of the analysis with every reason; its payload is pseudonymised."""

    __tablename__ = "quarantine_row"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"), index=True)
    row_number: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list] = mapped_column(JSON)
    payload: Mapped[dict] = mapped_column(JSON)
    released_at: Mapped[datetime | None] = mapped_column(DateTime)
    released_response_id: Mapped[int | None] = mapped_column(Integer)
    release_note: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("batch_id", "row_number", name="uq_quarantine_batch_row"),)


class ValidationResult(Base):
    __tablename__ = "validation_result"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"), index=True)
    rule: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(20))
    n_checked: Mapped[int] = mapped_column(Integer)
    n_failed: Mapped[int] = mapped_column(Integer)
    examples: Mapped[list | None] = mapped_column(JSON)


class Run(Base):
    """Every pipeline or model run: what ran, on which configuration and data, with which code."""

    __tablename__ = "run"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    data_snapshot: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    details: Mapped[dict | None] = mapped_column(JSON)


class Score(Base):
    __tablename__ = "score"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"))
    instrument: Mapped[str] = mapped_column(String(50))
    instrument_version: Mapped[str] = mapped_column(String(20))
    scale: Mapped[str] = mapped_column(String(50))
    score: Mapped[float | None] = mapped_column(Float)
    n_items: Mapped[int | None] = mapped_column(Integer)
    n_answered: Mapped[int | None] = mapped_column(Integer)
    prorated: Mapped[bool | None] = mapped_column(Boolean)
    above_cutoff: Mapped[bool | None] = mapped_column(Boolean)
    band: Mapped[str | None] = mapped_column(String(50))
    scoring_run: Mapped[str | None] = mapped_column(ForeignKey("run.run_id"))
    __table_args__ = (
        UniqueConstraint("response_id", "instrument", "instrument_version", "scale", name="uq_score_key"),
    )  # no (instrument, scale) index since migration 0004: nothing looks scores up by them
