"""Packed item storage (docs/design.md, Contract 3): one `item_block` per (response, instrument).

A block holds the raw codes of one response to one instrument as little-endian float64 bytes in the order of
its `item_layout` (the instrument's item codes as a JSON array, one row per distinct list, shared by every
batch that delivers the same items in the same order). NaN = missing; the missing reasons of a block are a
JSON object {item: reason} in `reasons`, NULL when no item of the block has one. An item with a missing
reason always has code NaN (as the long `item_value` table had value NULL).

Writers: `write_item_blocks` (loader, quarantine release). Readers: `warehouse.read`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import Connection, insert, select

from .models import ItemLayout

CODE_DTYPE = np.dtype("<f8")
BLOCK_COLUMNS = ["response_id", "instrument", "layout_id", "codes", "reasons"]


def layout_items(text: str) -> list[str]:
    """The item codes of a layout's `items` text."""
    return list(json.loads(text))


def layout_text(items: Sequence[str]) -> str:
    """The canonical `items` text of an ordered list of item codes."""
    return json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))


def layout_id(conn: Connection, instrument: str, items: Sequence[str]) -> int:
    """Id of the layout (instrument, ordered items), created when it is new (inside the caller's transaction)."""
    text = layout_text(items)
    found = conn.execute(select(ItemLayout.id).where(ItemLayout.instrument == instrument,
                                                     ItemLayout.items == text)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(insert(ItemLayout).values(instrument=instrument, items=text)).inserted_primary_key[0])


def layout_ids(conn: Connection, wanted: dict[str, Sequence[str]]) -> dict[str, int]:
    """Ids of the layouts {instrument: ordered items} (one query for all), new ones created (inside the
    caller's transaction)."""
    texts = {name: layout_text(items) for name, items in wanted.items()}
    found = {(r.instrument, r.items): int(r.id) for r in conn.execute(
        select(ItemLayout.id, ItemLayout.instrument, ItemLayout.items).where(ItemLayout.instrument.in_(sorted(texts))))}
    out: dict[str, int] = {}
    for name, text in texts.items():
        lid = found.get((name, text))
        if lid is None:
            lid = int(conn.execute(insert(ItemLayout).values(instrument=name, items=text)).inserted_primary_key[0])
        out[name] = lid
    return out


def pack_rows(codes: np.ndarray) -> list[bytes]:
    """One bytes value per row of a float64 matrix (n x k): the row's codes as little-endian float64."""
    n, k = codes.shape
    buf = np.ascontiguousarray(codes, dtype=CODE_DTYPE).tobytes()
    w = 8 * k
    return [buf[i:i + w] for i in range(0, n * w, w)]


def unpack_rows(blobs: Sequence[bytes], k: int) -> np.ndarray:
    """The float64 matrix (len(blobs) x k) of blocks stored in one layout of k items."""
    if not blobs:
        return np.empty((0, k), dtype=np.float64)
    out = np.frombuffer(b"".join(blobs), dtype=CODE_DTYPE).reshape(len(blobs), k)
    return out.astype(np.float64, copy=False) if out.dtype.isnative else out.astype(np.float64)


def reasons_texts(items: Sequence[str], reasons: np.ndarray) -> list[str | None]:
    """Per row of an object matrix of missing reasons (None/NaN = none): a JSON object {item: reason} (items
    in column order), or None when the row has no reason. Built from per-cell pieces (one text per distinct
    reason), not one dict and encoder call per row."""
    has = ~pd.isna(reasons)
    out: list[str | None] = [None] * len(reasons)
    rows, cols = np.nonzero(has)
    if not len(rows):
        return out
    keys = [json.dumps(str(it), ensure_ascii=False) + ":" for it in items]
    quoted: dict[object, str] = {}
    for v in set(reasons[rows, cols].tolist()):
        quoted[v] = json.dumps(str(v), ensure_ascii=False)
    pieces = [keys[j] + quoted[v] for j, v in zip(cols.tolist(), reasons[rows, cols].tolist(), strict=True)]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    for i, lo, hi in zip(rows[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
        out[i] = "{" + ",".join(pieces[lo:hi]) + "}"
    return out


def block_rows(conn: Connection, resp_ids: np.ndarray, inst: list[str], item: list[str], codes: np.ndarray,
               reasons: np.ndarray) -> np.ndarray:
    """The `item_block` rows (object array, rows x BLOCK_COLUMNS, primary-key order) of n responses whose
    k item answers are the columns of `codes` (float64, NaN = missing) and `reasons` (object, None = none);
    column j belongs to instrument inst[j], item item[j]. Layouts are looked up or created on `conn`."""
    n, k = codes.shape
    groups: dict[str, list[int]] = {}
    for j in range(k):
        groups.setdefault(inst[j], []).append(j)
    names = sorted(groups)
    rows = np.empty((n, len(names), len(BLOCK_COLUMNS)), dtype=object)
    ids = resp_ids.astype(object)
    lids = layout_ids(conn, {name: [item[j] for j in groups[name]] for name in names})
    for g, name in enumerate(names):
        cols = groups[name]
        items = [item[j] for j in cols]
        lid = lids[name]
        sub = codes[:, cols].astype(np.float64, copy=True)
        why = reasons[:, cols]
        sub[~pd.isna(why)] = np.nan  # an answer with a missing reason has no code
        rows[:, g, 0] = ids
        rows[:, g, 1] = name
        rows[:, g, 2] = lid
        rows[:, g, 3] = pack_rows(sub)
        rows[:, g, 4] = reasons_texts(items, why)
    return rows.reshape(n * len(names), len(BLOCK_COLUMNS))


def stored_answers(conn: Connection, response_id: int) -> dict[str, tuple[float | None, str | None]]:
    """The stored answers of one response: {instrument_item: (code or None when missing, missing reason)}."""
    from .models import ItemBlock

    q = (select(ItemBlock.instrument, ItemBlock.codes, ItemBlock.reasons, ItemLayout.items)
         .join(ItemLayout, ItemLayout.id == ItemBlock.layout_id).where(ItemBlock.response_id == response_id))
    out: dict[str, tuple[float | None, str | None]] = {}
    for r in conn.execute(q):
        items = layout_items(r.items)
        codes = unpack_rows([bytes(r.codes)], len(items))[0]
        why = json.loads(r.reasons) if r.reasons else {}
        for it, v in zip(items, codes.tolist(), strict=True):
            out[f"{r.instrument}_{it}"] = (None if np.isnan(v) else v, why.get(it))
    return out
