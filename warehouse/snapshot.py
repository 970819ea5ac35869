"""Content hashes of analysis datasets, so every result can be traced to the exact data it used.

`snapshot_hash(frame)` is deterministic: columns sorted by name, rows sorted by all columns, values written
in a stable text form (floats by `repr` of the Python float, missing values as one marker, datetimes as ISO
8601), then SHA-256 of the whole. Row order, column order, the index and dtype details (int64 vs Int64,
str vs object, categorical vs plain) do not change the hash; any value, column name or row count does.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

_MISSING = "\x00NA"


def _cell(v: object) -> str:
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return _MISSING
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, int):
        return repr(float(v)) if abs(v) < 2**53 else str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


def canonical_text(frame: pd.DataFrame) -> str:
    """The stable text form hashed by `snapshot_hash`: header line, then one line per sorted row."""
    cols = sorted(str(c) for c in frame.columns)
    if len(set(cols)) != len(cols):
        raise ValueError(f"snapshot_hash: column names must be unique, got duplicates in {cols}")
    f = frame.reset_index(drop=True)
    f.columns = [str(c) for c in f.columns]
    text_cols = {c: [_cell(v) for v in f[c].astype(object).tolist()] for c in cols}
    rows = sorted(zip(*(text_cols[c] for c in cols), strict=True)) if cols else []
    lines = ["\x1f".join(cols)] + ["\x1f".join(r) for r in rows]
    return "\x1e".join(lines)


def snapshot_hash(frame: pd.DataFrame) -> str:
    """SHA-256 hex of a frame's content, independent of row/column order and storage dtypes."""
    return hashlib.sha256(canonical_text(frame).encode("utf-8")).hexdigest()


def record_run(engine, run_id: str, kind: str, data_snapshot: str, config_hash: str | None = None,  # noqa: ANN001
               details: dict | None = None, status: str = "completed") -> None:
    """Record (or update) a `run` row carrying the data snapshot hash it used, so results trace to data."""
    from datetime import UTC, datetime

    from sqlalchemy import select, update

    from .load import code_version
    from .models import Run

    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        if conn.execute(select(Run.run_id).where(Run.run_id == run_id)).first() is None:
            conn.execute(Run.__table__.insert().values(
                run_id=run_id, kind=kind, started_at=now, finished_at=now, config_hash=config_hash,
                data_snapshot=data_snapshot, code_version=code_version(), status=status, details=details))
        else:
            conn.execute(update(Run).where(Run.run_id == run_id).values(
                data_snapshot=data_snapshot, finished_at=now, status=status,
                **({"config_hash": config_hash} if config_hash else {}), **({"details": details} if details else {})))
