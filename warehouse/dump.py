"""A canonical dump of every warehouse table, for comparing two warehouses (tests, audits).

Volatile columns (timings, timestamps, file paths, code version) are left out; rows are sorted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from .models import Base

VOLATILE = {"started_at", "finished_at", "read_seconds", "load_seconds", "released_at", "file_path",
            "code_version"}


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, dict | list):
        import json

        return json.dumps(v, sort_keys=True, default=str)
    return v


def canonical_dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every table as a sorted list of row tuples, without volatile columns."""
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if c.name not in VOLATILE]
            rows = [tuple(_norm(v) for v in r) for r in conn.execute(select(*cols))]
            out[table.name] = sorted(rows, key=lambda r: tuple((x is None, str(x)) for x in r))
    return out
