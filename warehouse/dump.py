"""A canonical dump of every warehouse table, for comparing two warehouses (tests, audits).

Volatile columns (timings, timestamps, file paths, code version) are left out; rows are sorted. Packed item
blocks are dumped readable and independent of layout numbering: the layout id becomes the layout's item list
and the codes a tuple of floats (None = missing); item layouts are dumped without their id. Integer surrogate
ids (and the columns that refer to them) are renumbered 1, 2, ... in id order: PostgreSQL's sequences are not
transactional, so a transaction rolled back (or a killed loader) leaves a gap that an uninterrupted run does
not have; what is compared is the order of the rows and what refers to what, not the numbers themselves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from .models import Base, ItemLayout
from .packed import layout_items, unpack_rows

# ids of another table held without a foreign key: a JSON list of superseded batches, the quarantined row a
# released response came from, the response of an item block (migration 0005)
ID_REFERENCES = {("batch", "supersedes"): "batch", ("response", "released_from"): "quarantine_row",
                 ("item_block", "response_id"): "response"}
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
    """Every table as a sorted list of row tuples, without volatile columns; all tables from one snapshot
    (PostgreSQL: one REPEATABLE READ transaction, so a commit landing during the dump is in all tables or in
    none; SQLite's read transaction already is one)."""
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        layouts = {r.id: r.items for r in conn.execute(select(ItemLayout.id, ItemLayout.items))}
        ranks: dict[str, dict[int, int]] = {}  # table -> surrogate id -> its rank in id order
        for table in Base.metadata.sorted_tables:  # referenced tables come first
            if table.name != "item_layout" and "id" in table.columns and _is_integer(table.columns["id"]):
                ids = sorted(v for (v,) in conn.execute(select(table.columns["id"])))
                ranks[table.name] = {v: k for k, v in enumerate(ids, 1)}
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if c.name not in VOLATILE and (table.name, c.name) != ("item_layout", "id")]
            maps = [_id_map(c, table.name, ranks) for c in cols]
            rows = [tuple(_norm(_renumber(v, m)) for v, m in zip(r, maps, strict=True))
                    for r in conn.execute(select(*cols))]
            if table.name == "item_block":
                rows = [_block(r, layouts) for r in rows]
            out[table.name] = sorted(rows, key=lambda r: tuple((x is None, str(x)) for x in r))
    return out


def _is_integer(column: Any) -> bool:
    try:
        return column.type.python_type is int
    except NotImplementedError:
        return False


def _id_map(column: Any, table: str, ranks: dict[str, dict[int, int]]) -> dict[int, int] | None:
    """The renumbering of a column's values: its own table's for `id`, the referred table's for a foreign key
    to an integer id; None for every other column."""
    if column.name == "id" and table in ranks:
        return ranks[table]
    if (table, column.name) in ID_REFERENCES:
        return ranks.get(ID_REFERENCES[(table, column.name)])
    for fk in column.foreign_keys:
        target = fk.column
        if target.name == "id" and target.table.name in ranks:
            return ranks[target.table.name]
    return None


def _renumber(value: Any, ranks: dict[int, int] | None) -> Any:
    if ranks is None or value is None:
        return value
    if isinstance(value, list):
        return [ranks.get(v, v) for v in value]
    return ranks.get(value, value)
