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
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

_MISSING = "\x00NA"
_CHUNK_ROWS = 1_000_000  # rows gathered and hashed at a time


def _canonical(s: pd.Series) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(kind, values, text) of one column in canonical form.

    Kind `f`/`d`: `values` is float64 (datetimes as nanoseconds, one NaN, no negative zero), `text` None.
    Kind `s`: `values` are int64 codes into `text`, the sorted distinct texts (missing = `_MISSING`), so
    sorting by the codes sorts by the text.
    """
    if pd.api.types.is_datetime64_any_dtype(s):
        v = pd.to_datetime(s).dt.tz_localize(None) if getattr(s.dt, "tz", None) else pd.to_datetime(s)
        ns = v.astype("datetime64[ns]")
        return "d", np.where(ns.isna(), np.nan, ns.astype("int64").astype("float64")), None
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "biuf":  # plain numbers and booleans: one conversion
        arr = s.to_numpy(dtype=np.float64)
        return "f", np.where(arr == 0, 0.0, arr), None  # -0.0 -> 0.0 (NaN bit patterns are unified when hashed)
    if isinstance(s.array, pd.api.extensions.ExtensionArray) and hasattr(s.array, "_mask") and \
            s.dtype.kind in "biuf":  # nullable numbers and booleans: missing = NaN
        arr = s.array.to_numpy(dtype=np.float64, na_value=np.nan)
        return "f", np.where(arr == 0, 0.0, arr), None
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy()
        cats = s.cat.categories
        # text categories as they are (str() of a str is itself), without a Python loop over them
        texts = (cats.to_numpy(dtype=object).tolist() if pd.api.types.is_string_dtype(cats.dtype)
                 and not pd.api.types.is_object_dtype(cats.dtype) else [str(c) for c in cats])
    elif (pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s)):
        f = pd.to_numeric(s.astype("Float64") if str(s.dtype) == "boolean" else s, errors="coerce")
        arr = np.asarray(f.astype("Float64").to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
        return "f", np.where(arr == 0, 0.0, arr), None  # -0.0 -> 0.0
    else:
        txt = s if pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s) else s.astype(object)
        mask = txt.isna()
        if pd.api.types.is_object_dtype(txt):
            txt = txt.where(~mask, _MISSING).astype(str)  # text of mixed objects, as str() gives it
        codes, uniques = pd.factorize(txt, use_na_sentinel=True)
        texts = [str(u) for u in uniques]
    texts.append(_MISSING)  # last: code -1 (missing) indexes it
    distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return "s", inverse.astype(np.int64).ravel()[codes], distinct


def _dense_rank(kind: str, values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense rank (0..n-1, NaN last) of a canonical column and the number of distinct ranks (a hash
    factorisation and a sort of the distinct values only)."""
    if kind == "s":
        return values, int(values.max(initial=-1)) + 1
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=np.float64)
    rank = np.empty(len(uniques) + 1, dtype=np.int64)
    rank[np.argsort(uniques, kind="stable")] = np.arange(len(uniques))
    rank[-1] = len(uniques)  # NaN (code -1) after every number
    has_nan = bool((codes < 0).any())
    return rank[codes], len(uniques) + int(has_nan)


def pack_sort_keys(columns: Iterable[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """Sort keys (first column most significant) packed into as few int64 arrays as fit in 62 bits each.

    `columns`: (non-negative codes, number of distinct codes) per column; an iterator is consumed one column at
    a time, so a caller can compute each column's codes lazily and hold only the packed keys and one column.
    """
    keys: list[np.ndarray] = []
    cur: np.ndarray | None = None
    used = 0
    for codes, n in columns:
        bits = max(int(n - 1).bit_length(), 1)
        if cur is None or used + bits > 62:
            if cur is not None:
                keys.append(cur)
            cur, used = codes.astype(np.int64, copy=True), bits
        else:
            cur <<= bits
            cur |= codes
            used += bits
        del codes  # before the iterator computes the next column
    if cur is not None:
        keys.append(cur)
    return keys


def _row_order(frame: pd.DataFrame, cols: list[str], by_name: dict[str, object]) -> np.ndarray:
    """Stable row order by all columns (`cols` order, first most significant): each column's dense rank is
    computed in turn and packed into as few int64 keys as fit, then one lexsort. Only the packed keys and one
    column's canonical form are held at a time."""
    def ranks() -> Iterator[tuple[np.ndarray, int]]:
        for c in cols:
            kind, values, _ = _canonical(frame[by_name[c]].reset_index(drop=True))
            rank = _dense_rank(kind, values)
            del values
            yield rank

    keys = pack_sort_keys(ranks())
    return np.lexsort(keys[::-1]) if keys else np.arange(0)


class _TextTable:
    """The UTF-8 bytes of a column's distinct texts, each followed by the \x1f separator, ready to be gathered
    for many rows at once: a fixed-width byte matrix when every text has the same length (pseudonyms), else an
    Arrow binary array (gathered by Arrow's `take`, which writes the chosen values one after the other)."""

    def __init__(self, texts: np.ndarray) -> None:
        enc = [str(t).encode("utf-8") + b"\x1f" for t in texts]
        widths = {len(e) for e in enc}
        self.fixed: np.ndarray | None = None
        self.binary = None
        if len(widths) == 1:
            width = widths.pop()
            self.fixed = np.frombuffer(b"".join(enc), dtype=f"V{width}")
        else:
            import pyarrow as pa

            self.binary = pa.array(enc, type=pa.large_binary())

    def gather(self, codes: np.ndarray, last: bool) -> np.ndarray:
        """`"\x1f".join(texts[codes])` as UTF-8 bytes plus a trailing separator (none when `last`), as a
        uint8 array: the same bytes as joining the Python strings, without making one object per row."""
        if self.fixed is not None:
            out = self.fixed.take(codes).view(np.uint8)
        else:
            import pyarrow as pa

            taken = self.binary.take(pa.array(codes))
            offsets = np.frombuffer(taken.buffers()[1], dtype=np.int64)[taken.offset:taken.offset + len(taken) + 1]
            data = taken.buffers()[2]
            out = (np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]] if data is not None
                   else np.empty(0, dtype=np.uint8))
        return out[:-1] if last and len(out) else out


def snapshot_hash(frame: pd.DataFrame) -> str:
    """SHA-256 hex of a frame's content, independent of row/column order and storage dtypes.

    Memory is a few int64 per row (text columns become codes into their sorted distinct values; one column
    is in canonical form at a time), so a 24 M-row analysis dataset with categorical text hashes without
    turning it into Python strings at once.
    """
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"snapshot_hash: column names must be unique, got duplicates in {sorted(names)}")
    by_name = dict(zip(names, frame.columns, strict=True))
    cols = sorted(names)
    n_rows = len(frame)
    order = _row_order(frame, cols, by_name) if cols and n_rows else np.arange(n_rows)
    h = hashlib.sha256()
    h.update(f"rows={n_rows};cols={len(cols)}".encode())
    step = _CHUNK_ROWS
    for c in cols:
        kind, values, texts = _canonical(frame[by_name[c]].reset_index(drop=True))
        h.update(b"\x1e" + c.encode("utf-8") + b"\x1f" + kind.encode())
        table = _TextTable(texts) if kind == "s" else None
        for lo in range(0, n_rows, step):
            part = values[order[lo:lo + step]]
            if table is not None:
                # the texts of the rows joined by \x1f over the whole column: each row's text and separator
                # from the table, the column's very last separator left out
                h.update(table.gather(part, last=lo + step >= n_rows))
            else:
                arr = np.asarray(part, dtype="float64").copy()
                arr[np.isnan(arr)] = np.nan  # one NaN bit pattern
                h.update(arr.astype("<f8").tobytes())
        del values, texts
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
