"""Scoring the warehouse: score every current response and store the scores, only when something changed.

Stored scores are stale when an instrument definition or the item values change; both are fingerprinted
(`definition_fingerprint`, `item_values_fingerprint`) and recorded on the scoring run, so an unchanged
warehouse is not scored again.

Built for large warehouses (factor 100: ~90 M item values, ~6 M score rows): item values are read in one
streamed pass over the packed item blocks straight into one float64 response x item matrix per instrument
(`warehouse.read.item_matrices`; no long frame), scoring is vectorised per instrument, and scores are written in
chunks: PostgreSQL COPY (into `score` directly when it is empty, else into a temporary table merged with
INSERT ... ON CONFLICT), SQLite executemany of plain tuples (an upsert on the score key when scores exist).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, insert, select

from cohortflow.instruments.model import Instrument
from cohortflow.warehouse.db import take_write_lock
from cohortflow.warehouse.models import Run, Score
from cohortflow.warehouse.read import item_matrices, scoring_context
from cohortflow.warehouse.scores import SCORE_COLUMNS, ensure_run

from .engine import definition_fingerprint, item_values_fingerprint, score_all


def scoring_fingerprints(instruments: dict[str, Instrument], item_values) -> tuple[str, str]:
    """(definitions hash, data hash) that decide whether stored scores are current."""
    defs = hashlib.sha256("".join(f"{c}:{definition_fingerprint(instruments[c])};" for c in sorted(instruments))
                          .encode()).hexdigest()
    return defs, item_values_fingerprint(item_values)


def score_warehouse(engine: Engine, instruments: dict[str, Instrument], run_id: str, force: bool = False) -> int:
    """Score all current responses with every defined instrument and store the scores under `run_id`.

    Returns the number of score rows stored; 0 when definitions and item values are unchanged since the
    last completed scoring run (unless `force`). Instruments without a definition are skipped.
    """
    items = list(item_matrices(engine))  # wide per instrument: ~8 bytes per stored answer
    config_hash, data_hash = scoring_fingerprints(instruments, items)
    with engine.connect() as conn:
        last = conn.execute(select(Run.config_hash, Run.data_snapshot).where(Run.kind == "scoring",
                            Run.status == "completed").order_by(Run.started_at.desc())).first()
    if not force and last is not None and tuple(last) == (config_hash, data_hash):
        return 0
    started = datetime.now(UTC).replace(tzinfo=None)
    scores = score_all(items, scoring_context(engine), instruments, on_unknown="skip")
    del items
    with engine.begin() as conn:
        conn.execute(insert(Run).values(run_id=f"{run_id}-scoring", kind="scoring", started_at=started,
                                        config_hash=config_hash, data_snapshot=data_hash, status="running"))
    n = store_scores_bulk(engine, scores, f"{run_id}-scoring")
    with engine.begin() as conn:
        conn.execute(Run.__table__.update().where(Run.run_id == f"{run_id}-scoring")
                     .values(status="completed", finished_at=datetime.now(UTC).replace(tzinfo=None)))
    return n


_CHUNK = 200_000
_KEY = ["response_id", "instrument", "instrument_version", "scale"]
_DB_COLUMNS = [*SCORE_COLUMNS, "scoring_run"]
# secondary index of `score` (warehouse.models.Score): dropped before a bulk insert into an empty table and
# built afterwards (one sort instead of 23 M random B-tree inserts at factor 100)
_SECONDARY_INDEXES = {"ix_score_instrument_scale": "score (instrument, scale)"}


def _py_column(col: pd.Series) -> np.ndarray:
    """One scores column as an object array of plain Python values (None = NULL), built with numpy:
    categoricals through their categories, floats with NaN -> None, nullable ints/booleans with NA -> None."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.array([*(str(c) for c in col.cat.categories), None], dtype=object)
        return cats[np.asarray(col.cat.codes, dtype=np.int64)]  # code -1 (missing) picks the trailing None
    if isinstance(col.dtype, np.dtype) and col.dtype.kind == "f":
        arr = col.to_numpy(dtype=np.float64)
        out = arr.astype(object)
        out[np.isnan(arr)] = None
        return out
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iub":  # numpy ints and bools: no missing values
        return np.asarray(col.to_numpy().tolist(), dtype=object)
    if str(col.dtype) == "boolean" or pd.api.types.is_bool_dtype(col.dtype):
        return col.astype("boolean").to_numpy(dtype=object, na_value=None)
    if pd.api.types.is_numeric_dtype(col.dtype):
        if pd.api.types.is_integer_dtype(col.dtype):
            return col.to_numpy(dtype=object, na_value=None)
        arr = pd.to_numeric(col).to_numpy(dtype=np.float64, na_value=np.nan)
        out = arr.astype(object)
        out[np.isnan(arr)] = None
        return out
    out = col.astype(object).to_numpy(dtype=object).copy()
    out[pd.isna(out)] = None
    return out


def _typed_columns(scores: pd.DataFrame) -> dict[str, pd.Series]:
    """The scores columns in the types the database takes: ids int64, counts nullable Int64, flags
    nullable boolean, score float64 (NaN = NULL), text as given (categorical or str)."""
    out = {c: scores[c] for c in SCORE_COLUMNS}
    out["response_id"] = scores["response_id"].astype(np.int64)
    out["score"] = pd.Series(pd.to_numeric(scores["score"]).to_numpy(dtype=np.float64, na_value=np.nan))
    for c in ("n_items", "n_answered"):
        if scores[c].dtype.kind not in "iu":
            out[c] = pd.to_numeric(scores[c]).astype("Int64")
    for c in ("prorated", "above_cutoff"):
        if scores[c].dtype.kind != "b":
            out[c] = scores[c].astype("boolean")
    return out


def _key_order(scores: pd.DataFrame) -> np.ndarray:
    """Row order by the score key (response id, then instrument, version and scale as text): a bulk insert
    in key order appends to the unique key's B-tree instead of inserting at random."""
    keys = []
    for c in reversed(_KEY[1:]):
        col = scores[c]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype("category")
        cats = np.asarray([str(x) for x in col.cat.categories], dtype=object)
        rank = np.empty(len(cats) + 1, dtype=np.int64)
        rank[np.argsort(cats, kind="stable")] = np.arange(len(cats))
        rank[-1] = -1
        keys.append(rank[np.asarray(col.cat.codes, dtype=np.int64)])
    keys.append(scores["response_id"].to_numpy(dtype=np.int64))
    return np.lexsort(keys)


def _row_chunks(scores: pd.DataFrame, run_id: str, order: np.ndarray | None = None):
    """Yield lists of row tuples (`_DB_COLUMNS` order, plain Python values) of at most `_CHUNK` rows,
    in `order` when given."""
    typed = _typed_columns(scores)
    n = len(scores)
    for lo in range(0, n, _CHUNK):
        idx = order[lo:lo + _CHUNK] if order is not None else slice(lo, min(lo + _CHUNK, n))
        cols = [_py_column(typed[c].iloc[idx].reset_index(drop=True)) for c in SCORE_COLUMNS]
        m = len(cols[0])
        yield list(zip(*cols, [run_id] * m, strict=True))


def store_scores_bulk(engine: Engine, scores: pd.DataFrame, run_id: str, kind: str = "scoring") -> int:
    """Store a Contract 4 scores frame under `run_id` (created in `run` if absent); returns rows stored.

    Same result as `warehouse.scores.store_scores` (a stored (response, instrument, version, scale) is
    replaced, new keys are added) in one transaction, but chunked and bulk: suitable for millions of rows.
    Into an empty `score` table rows go in key order, on SQLite with the secondary index built afterwards
    and the response foreign key checked once for the whole frame instead of per row.
    """
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores frame lacks columns {missing}; expected {SCORE_COLUMNS}")
    scores = scores.reset_index(drop=True)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.driver_connection if sqlite else None
        if sqlite:  # only outside a transaction can SQLite's foreign-key checks be switched
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            conn.execution_options(write_lock=True)
            with conn.begin():
                take_write_lock(conn)
                ensure_run(conn, run_id, kind)
                empty = conn.execute(select(Score.response_id).limit(1)).first() is None
                if sqlite:
                    _check_response_ids(conn, scores)
                    _store_sqlite(conn, scores, run_id, empty)
                else:
                    _store_postgresql(conn, scores, run_id, empty)
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys = ON")
    return len(scores)


def _check_response_ids(conn: Connection, scores: pd.DataFrame) -> None:
    """The `score.response_id -> response.id` foreign key, checked for the whole frame at once."""
    from sqlalchemy import text

    wanted = np.unique(scores["response_id"].to_numpy(dtype=np.int64))
    if not len(wanted):
        return
    known = np.fromiter((r[0] for r in conn.execute(text("SELECT id FROM response"))), dtype=np.int64)
    unknown = wanted[~np.isin(wanted, known)]
    if len(unknown):
        raise ValueError(f"store_scores_bulk: {len(unknown)} response id(s) of the scores frame are not in the "
                         f"warehouse's response table (first: {unknown[:5].tolist()}); score only loaded responses")


def _store_sqlite(conn: Connection, scores: pd.DataFrame, run_id: str, empty: bool) -> None:
    cols = ", ".join(_DB_COLUMNS)
    sql = f"INSERT INTO score ({cols}) VALUES ({', '.join('?' * len(_DB_COLUMNS))})"
    if not empty:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _DB_COLUMNS if c not in _KEY)
        sql += f" ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}"
    dropped = []
    if empty:
        for name in _SECONDARY_INDEXES:
            if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                                    (name,)).first():
                conn.exec_driver_sql(f"DROP INDEX {name}")
                dropped.append(name)
    for rows in _row_chunks(scores, run_id, _key_order(scores)):
        conn.exec_driver_sql(sql, rows)
    for name in dropped:
        conn.exec_driver_sql(f"CREATE INDEX {name} ON {_SECONDARY_INDEXES[name]}")


def _store_postgresql(conn: Connection, scores: pd.DataFrame, run_id: str, empty: bool) -> None:
    raw = conn.connection.driver_connection
    table = "score"
    cols = ", ".join(_DB_COLUMNS)
    rebuild: list[str] = []
    if not empty:
        table = "score_incoming"
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {table} (LIKE score INCLUDING DEFAULTS) ON COMMIT DROP")
    else:  # empty table: key and foreign-key constraints and the index are built once afterwards (a sort and
        # one join each, instead of per-row index inserts and per-row foreign-key triggers)
        found = {r[0] for r in conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'score'")}
        for name, spec in _SECONDARY_INDEXES.items():
            if name in found:
                conn.exec_driver_sql(f"DROP INDEX {name}")
                rebuild.append(f"CREATE INDEX {name} ON {spec}")
        constraints = conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'score'::regclass "
            "AND contype IN ('u', 'f') ORDER BY contype DESC, conname").all()
        for name, _ in constraints:
            conn.exec_driver_sql(f'ALTER TABLE score DROP CONSTRAINT "{name}"')
        rebuild[:0] = [f'ALTER TABLE score ADD CONSTRAINT "{name}" {definition}' for name, definition in constraints]
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
        for rows in _row_chunks(scores, run_id, _key_order(scores) if empty else None):
            for row in rows:
                cp.write_row(row)
    for ddl in rebuild:
        conn.exec_driver_sql(ddl)
    if not empty:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _DB_COLUMNS if c not in _KEY)
        conn.exec_driver_sql(f"INSERT INTO score ({cols}) SELECT {cols} FROM {table} "
                             f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}")
