"""Releasing quarantined rows after correction.

`release_quarantined(engine, quarantine_id, instruments, corrections=None, note=None)` re-checks the row
(ids present, item codes allowed, no other current answers for the same person/wave/role), loads it as a
response of its original batch and moves it from rows_quarantined to rows_loaded, in one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select, update

from cohortflow.ingest.checks import allowed_codes
from cohortflow.instruments.model import Instrument

from .db import take_write_lock
from .load import _insert_households_persons, _insert_item_values, _insert_responses
from .models import Batch, QuarantineRow, Response


class ReleaseError(ValueError):
    """The row cannot be released as it is; the message says what is still wrong."""


def _check(payload: dict[str, Any], items: dict[str, Any], instruments: dict[str, Instrument],
           missing_codes: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for c in ("household_id", "person_id", "subject_id", "arm", "site", "wave", "role"):
        if not payload.get(c):
            problems.append(f"{c} is missing")
    for key, v in items.items():
        if v is None or str(float(v)) in {str(float(c)) for c in missing_codes.get(key, {})}:
            continue
        ok, rng = allowed_codes(instruments, key)
        if ok is not None and float(v) not in ok:
            problems.append(f"{key} = {v} is not one of {sorted(ok)}")
        elif rng is not None and not rng[0] <= float(v) <= rng[1]:
            problems.append(f"{key} = {v} is outside {list(rng)}")
    return problems


def release_quarantined(engine: Engine, quarantine_id: int, instruments: dict[str, Instrument],
                        corrections: dict[str, float | None] | None = None, note: str | None = None) -> int:
    """Load quarantined row `quarantine_id` (with item corrections applied); returns the new response id."""
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            take_write_lock(conn)
            q = conn.execute(select(QuarantineRow).where(QuarantineRow.id == quarantine_id)).first()
            if q is None:
                raise ReleaseError(f"no quarantined row with id {quarantine_id}; list them with `cohortflow quarantine`")
            q = q[0] if not hasattr(q, "payload") else q
            if q.released_at is not None:
                raise ReleaseError(f"quarantined row {quarantine_id} was already released as response "
                                   f"{q.released_response_id}")
            payload = dict(q.payload)
            items = dict(payload.get("items", {}))
            missing = dict(payload.get("missing", {}))
            for k, v in (corrections or {}).items():
                if k not in items:
                    raise ReleaseError(f"row {quarantine_id} has no item {k!r}; items: {sorted(items)}")
                items[k] = v
                missing.pop(k, None)
                if v is None:
                    missing[k] = "system_missing"
            codes_map = payload.get("missing_codes", {})
            problems = _check(payload, items, instruments, codes_map)
            for k, v in items.items():  # declared missing codes count as missing
                if v is not None and k not in missing:
                    r = codes_map.get(k, {}).get(str(float(v)))
                    if r:
                        missing[k] = r
            if problems:
                raise ReleaseError(f"quarantined row {quarantine_id} (batch {q.batch_id}, row {q.row_number}) "
                                   f"still fails: {'; '.join(problems)}. Correct it with --set item=value.")
            same = conn.execute(select(Response.id).where(
                Response.superseded.is_(False), Response.person_id == payload["person_id"],
                Response.subject_id == payload["subject_id"], Response.role == payload["role"],
                Response.wave == payload["wave"], Response.arm == payload["arm"])).first()
            if same is not None:
                raise ReleaseError(f"response {same.id} already holds answers for this person, wave and role; "
                                   "release would load the same questionnaire twice")
            batch = conn.execute(select(Batch.status).where(Batch.id == q.batch_id)).scalar_one()
            row = {c: payload.get(c) for c in ("household_id", "person_id", "subject_id", "arm", "site", "wave",
                                                 "role", "subject_sex", "informant_sex")}
            row["row_number"] = q.row_number
            for c in ("response_date", "registration_date"):
                row[c] = pd.Timestamp(payload[c]) if payload.get(c) else pd.NaT
            for c in ("subject_birth_year", "informant_birth_year", "days_since_t0", "subject_age_months"):
                row[c] = payload.get(c) if payload.get(c) is not None else np.nan
            ld = pd.DataFrame([row])
            _insert_households_persons(conn, ld, q.batch_id)
            rid = (conn.execute(select(func.max(Response.id))).scalar() or 0) + 1
            _insert_responses(conn, ld, np.array([rid]), q.batch_id)
            conn.execute(update(Response).where(Response.id == rid).values(
                released_from=quarantine_id, superseded=batch == "superseded"))
            keys = sorted(items)
            codes = np.array([[np.nan if items[k] is None else float(items[k]) for k in keys]])
            reasons = np.array([[missing.get(k) for k in keys]], dtype=object)
            split = [k.split("_", 1) for k in keys]
            index = {i.item_key(c): (i.code, c) for i in instruments.values() for c in i.item_codes}
            inst = [index[k][0] if k in index else s[0] for k, s in zip(keys, split, strict=True)]
            item = [index[k][1] if k in index else s[1] for k, s in zip(keys, split, strict=True)]
            _insert_item_values(conn, np.array([rid]), inst, item, codes, reasons)
            conn.execute(update(QuarantineRow).where(QuarantineRow.id == quarantine_id).values(
                released_at=datetime.now(UTC).replace(tzinfo=None), released_response_id=rid,
                release_note=note or (f"corrected: {corrections}" if corrections else None)))
            conn.execute(update(Batch).where(Batch.id == q.batch_id).values(
                rows_loaded=Batch.rows_loaded + 1, rows_quarantined=Batch.rows_quarantined - 1,
                item_values=Batch.item_values + len(keys)))
    return rid
