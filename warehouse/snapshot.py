"""Content hashes of analysis datasets, so every result can be traced to the exact data it used.

`snapshot_hash(frame)` is deterministic and vectorised: every column is brought to a canonical form
(numbers, booleans and nullable numbers as float64 with one NaN and no negative zero; datetimes as int64
nanoseconds; everything else as text with one missing marker), columns are taken in name order, rows are
sorted by all columns, and SHA-256 is taken over the column names, kinds and values. Row order, column order,
the index and dtype details (int64 vs Int64 vs float, str vs object vs categorical) do not change the hash;
any value, column name or row count does.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

_MISSING = "\x00NA"


def _canonical(s: pd.Series) -> tuple[str, pd.Series]:
    """(kind, canonical series) of one column."""
    if pd.api.types.is_datetime64_any_dtype(s):
        v = pd.to_datetime(s).dt.tz_localize(None) if getattr(s.dt, "tz", None) else pd.to_datetime(s)
        ns = v.astype("datetime64[ns]")
        return "d", pd.Series(np.where(ns.isna(), np.nan, ns.astype("int64").astype("float64")), index=s.index)
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        f = pd.to_numeric(s.astype("Float64") if str(s.dtype) == "boolean" else s, errors="coerce")
        arr = np.asarray(f.astype("Float64").to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
        arr = np.where(arr == 0, 0.0, arr)  # -0.0 -> 0.0
        return "f", pd.Series(arr, index=s.index)
    txt = s.astype(object)
    mask = txt.isna()
    return "s", txt.where(~mask, _MISSING).astype(str)


def snapshot_hash(frame: pd.DataFrame) -> str:
    """SHA-256 hex of a frame's content, independent of row/column order and storage dtypes."""
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"snapshot_hash: column names must be unique, got duplicates in {sorted(names)}")
    f = frame.reset_index(drop=True)
    f.columns = names
    cols = sorted(names)
    kinds, canon = {}, {}
    for c in cols:
        kinds[c], canon[c] = _canonical(f[c])
    c_frame = pd.DataFrame(canon, columns=cols)
    if cols and len(c_frame):
        c_frame = c_frame.sort_values(cols, kind="mergesort", na_position="last", ignore_index=True)
    h = hashlib.sha256()
    h.update(f"rows={len(c_frame)};cols={len(cols)}".encode())
    for c in cols:
        h.update(b"\x1e" + c.encode("utf-8") + b"\x1f" + kinds[c].encode())
        v = c_frame[c]
        if kinds[c] == "s":
            h.update("\x1f".join(v.tolist()).encode("utf-8"))
        else:
            arr = v.to_numpy(dtype="float64").copy()
            arr[np.isnan(arr)] = np.nan  # one NaN bit pattern
            h.update(arr.astype("<f8").tobytes())
    return h.hexdigest()

def new_run_id(kind: str | None = None) -> str:
    """A sortable, unique run id: UTC timestamp, optional kind, 6 random hex digits (e.g. 20261123T2150Z-ab12cd)."""
    import uuid
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}" if kind else f"{stamp}-{uuid.uuid4().hex[:6]}"


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
