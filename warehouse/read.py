"""Read helpers: current (non-superseded) responses and item values as frames; batch and quarantine views."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select

from .models import Batch, ItemValue, Person, QuarantineRow, Response


def responses_frame(engine: Engine, include_superseded: bool = False) -> pd.DataFrame:
    """One row per loaded response: id, batch, row, pseudonyms, role, arm, site, wave, dates, age, sex."""
    q = select(Response.id.label("response_id"), Response.batch_id, Response.row_number, Response.household_id,
               Response.person_id, Response.subject_id, Response.role, Response.arm, Response.site, Response.wave,
               Response.response_date, Response.registration_date, Response.days_since_t0,
               Response.subject_age_months, Response.subject_sex, Person.birth_year.label("subject_birth_year"),
               Response.superseded).join(Person, Person.person_id == Response.subject_id).order_by(Response.id)
    if not include_superseded:
        q = q.where(Response.superseded.is_(False))
    with engine.connect() as conn:
        df = pd.read_sql(q, conn)
    for c in ("response_date", "registration_date"):
        df[c] = pd.to_datetime(df[c])
    df["subject_age_years"] = df["subject_age_months"] / 12.0
    return df


def item_values_frame(engine: Engine, instrument: str | None = None, include_superseded: bool = False) -> pd.DataFrame:
    """Long item values of current responses: response_id, instrument, item, item_key, value, missing_reason."""
    q = (select(ItemValue.response_id, ItemValue.instrument, ItemValue.item, ItemValue.value,
                ItemValue.missing_reason)
         .join(Response, Response.id == ItemValue.response_id).order_by(ItemValue.response_id, ItemValue.item))
    if instrument is not None:
        q = q.where(ItemValue.instrument == instrument)
    if not include_superseded:
        q = q.where(Response.superseded.is_(False))
    with engine.connect() as conn:
        df = pd.read_sql(q, conn)
    df["item_key"] = df["instrument"] + "_" + df["item"]
    return df


def batches_frame(engine: Engine) -> pd.DataFrame:
    """Every batch with its counts, status and message, ordered by arm, site, wave, role and id."""
    cols = [Batch.id, Batch.file_name, Batch.status, Batch.arm, Batch.site, Batch.wave, Batch.role,
            Batch.source_name, Batch.source_version, Batch.rows_in, Batch.rows_loaded, Batch.rows_quarantined,
            Batch.rows_duplicate, Batch.item_values, Batch.superseded_by, Batch.message, Batch.problems,
            Batch.sha256, Batch.size_bytes, Batch.started_at, Batch.finished_at, Batch.read_seconds,
            Batch.load_seconds, Batch.code_version]
    with engine.connect() as conn:
        df = pd.read_sql(select(*cols).order_by(Batch.arm, Batch.site, Batch.wave, Batch.role, Batch.id), conn)
    return df


def quarantine_frame(engine: Engine, include_released: bool = False) -> pd.DataFrame:
    """Quarantined rows with their file, row number, reasons and release state (payload left out)."""
    q = (select(QuarantineRow.id, QuarantineRow.batch_id, Batch.file_name, QuarantineRow.row_number,
                QuarantineRow.reasons, QuarantineRow.released_at, QuarantineRow.released_response_id)
         .join(Batch, Batch.id == QuarantineRow.batch_id).order_by(QuarantineRow.id))
    if not include_released:
        q = q.where(QuarantineRow.released_at.is_(None))
    with engine.connect() as conn:
        return pd.read_sql(q, conn)
