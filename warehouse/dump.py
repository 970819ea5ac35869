"""A canonical dump of every warehouse table, for comparing two warehouses (tests, audits).

Volatile columns (timings, timestamps, file paths, code version) are left out; rows are sorted. Packed item
blocks are dumped readable and independent of layout numbering: the layout id becomes the layout's item list
and the codes a tuple of floats (None = missing); item layouts are dumped without their id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from .models import Base, ItemLayout
from .packed import layout_items, unpack_rows

VOLATILE = {"started_at", "finished_at", "read_seconds", "load_seconds", "released_at", "file_path",
            "code_version"}


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, dict | list):
        import json

        return json.dumps(v, sort_keys=True, default=str)
    return v


def _block(row: tuple, layouts: dict[int, str]) -> tuple:
    """(response_id, instrument, items text, codes as floats or None, reasons) of one item_block row."""
    rid, inst, lid, codes, reasons = row
    items = layouts[lid]
    values = tuple(None if v != v else round(v, 9) for v in unpack_rows([bytes(codes)], len(layout_items(items)))[0]
                   .tolist())
    return (rid, inst, items, values, reasons)


def canonical_dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every table as a sorted list of row tuples, without volatile columns."""
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        layouts = {r.id: r.items for r in conn.execute(select(ItemLayout.id, ItemLayout.items))}
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if c.name not in VOLATILE and (table.name, c.name) != ("item_layout", "id")]
            rows = [tuple(_norm(v) for v in r) for r in conn.execute(select(*cols))]
            if table.name == "item_block":
                rows = [_block(r, layouts) for r in rows]
            out[table.name] = sorted(rows, key=lambda r: tuple((x is None, str(x)) for x in r))
    return out
