"""Scoring the warehouse: score every current response and store the scores, only when something changed.

Stored scores are stale when an instrument definition or the item values change; both are fingerprinted
(`definition_fingerprint`, `item_values_fingerprint`) and recorded on the scoring run, so an unchanged
warehouse is not scored again.

Built for large warehouses (factor 100: ~90 M item values, ~6 M score rows): item values are read in one
streamed pass over the packed item blocks straight into one float64 response x item matrix per instrument
(`warehouse.read.item_matrices`; no long frame), scoring is vectorised per instrument, and scores are written in
bulk. Into an empty `score` table (the pipeline's case) each row travels as three numbers (response id, code of
its combination of the low-cardinality columns, score) into a temporary table, and one INSERT ... SELECT
joins the combinations back (SQLite: executemany; PostgreSQL: binary COPY built by numpy). When scores exist:
PostgreSQL COPY into a temporary table merged with INSERT ... ON CONFLICT, SQLite an executemany upsert.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from itertools import chain

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
# secondary indexes of `score` (warehouse.models.Score; none since migration 0004 dropped (instrument, scale)):
# dropped before a bulk insert into an empty table and built afterwards (one sort instead of 23 M random B-tree
# inserts at factor 100); an index named here is handled only where it exists
_SECONDARY_INDEXES: dict[str, str] = {}


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
    wanted = np.unique(scores["response_id"].to_numpy(dtype=np.int64))
    if not len(wanted):
        return
    cur = conn.connection.driver_connection.cursor()  # the driver's rows: no SQLAlchemy row per response
    try:
        cur.execute("SELECT id FROM response")
        known = np.fromiter(chain.from_iterable(cur.fetchall()), dtype=np.int64)
    finally:
        cur.close()
    unknown = wanted[~np.isin(wanted, known)]
    if len(unknown):
        raise ValueError(f"store_scores_bulk: {len(unknown)} response id(s) of the scores frame are not in the "
                         f"warehouse's response table (first: {unknown[:5].tolist()}); score only loaded responses")


# Columns of a score row with few distinct values: on a bulk insert into an empty table their distinct
# combinations go into a small temporary table once, and each score row carries only its response id, the
# code of its combination and its score (see `_store_sqlite_empty`).
_COMBO_COLUMNS = ["instrument", "instrument_version", "scale", "band", "n_items", "n_answered", "prorated",
                  "above_cutoff"]


def _combinations(typed: dict[str, pd.Series], extra: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, first row of each code): rows with the same values in `_COMBO_COLUMNS` (missing =
    missing; plus any `extra` integer code arrays) share a code, numbered in order of first appearance."""
    n = len(typed["response_id"])
    key = np.zeros(n, dtype=np.int64)
    width = 1
    for codes in [*(pd.factorize(typed[c], use_na_sentinel=True)[0] for c in _COMBO_COLUMNS), *(extra or [])]:
        codes = np.asarray(codes, dtype=np.int64) + 1  # missing (-1) -> 0
        k = int(codes.max(initial=0)) + 1
        if width * k >= 2**62:  # renumber the combinations so far before the key would overflow
            key, uniq = pd.factorize(key)
            key, width = np.asarray(key, dtype=np.int64), len(uniq)
        key = key * k + codes
        width *= k
    code, uniq = pd.factorize(key)
    code = np.asarray(code, dtype=np.int64)
    _, first = np.unique(code, return_index=True)
    return code, first


def _store_sqlite(conn: Connection, scores: pd.DataFrame, run_id: str, empty: bool) -> None:
    if empty:
        _store_sqlite_empty(conn, scores, run_id)
        return
    cols = ", ".join(_DB_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _DB_COLUMNS if c not in _KEY)
    sql = (f"INSERT INTO score ({cols}) VALUES ({', '.join('?' * len(_DB_COLUMNS))}) "
           f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}")
    for rows in _row_chunks(scores, run_id):
        conn.exec_driver_sql(sql, rows)


def _store_sqlite_empty(conn: Connection, scores: pd.DataFrame, run_id: str) -> None:
    """Bulk insert into an empty `score` table on SQLite, with the same rows and ids as an executemany of
    whole rows in key order: the distinct combinations of `_COMBO_COLUMNS` go into a temporary table, the
    rows (key order) as (response id, combination, score) into another (three parameters per row instead
    of eleven, numbers only), then one INSERT ... SELECT joins them into `score` in that order. The
    secondary index is dropped before and built once afterwards."""
    typed = _typed_columns(scores)
    order = _key_order(scores)
    code, first = _combinations(typed)
    combo_values = [_py_column(typed[c].iloc[first].reset_index(drop=True)) for c in _COMBO_COLUMNS]
    dropped = [name for name in _SECONDARY_INDEXES
               if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                                       (name,)).first()]
    for name in dropped:
        conn.exec_driver_sql(f"DROP INDEX {name}")
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp.cf_score_combo")
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp.cf_score_rows")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE cf_score_combo (code INTEGER PRIMARY KEY, "
                         f"{', '.join(_COMBO_COLUMNS)})")
    conn.exec_driver_sql(f"INSERT INTO temp.cf_score_combo VALUES ({', '.join('?' * (len(_COMBO_COLUMNS) + 1))})",
                         list(zip(range(len(first)), *combo_values, strict=True)))
    conn.exec_driver_sql("CREATE TEMPORARY TABLE cf_score_rows (response_id INTEGER, code INTEGER, score REAL)")
    ids = typed["response_id"].to_numpy(dtype=np.int64)
    for lo in range(0, len(order), _CHUNK):
        idx = order[lo:lo + _CHUNK]
        score = _py_column(typed["score"].iloc[idx].reset_index(drop=True))
        conn.exec_driver_sql("INSERT INTO temp.cf_score_rows VALUES (?, ?, ?)",
                             list(zip(ids[idx].tolist(), code[idx].tolist(), score.tolist(), strict=True)))
    picked = ", ".join(f"c.{c}" for c in _COMBO_COLUMNS)
    # CROSS JOIN keeps the row table as the outer loop: rows come in its rowid (= key) order, no sort
    conn.exec_driver_sql(
        f"INSERT INTO score (response_id, {', '.join(_COMBO_COLUMNS)}, score, scoring_run) "
        f"SELECT t.response_id, {picked}, t.score, ? FROM temp.cf_score_rows t "
        "CROSS JOIN temp.cf_score_combo c ON c.code = t.code ORDER BY t.rowid", (run_id,))
    conn.exec_driver_sql("DROP TABLE temp.cf_score_rows")
    conn.exec_driver_sql("DROP TABLE temp.cf_score_combo")
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
    if empty:
        _copy_postgresql_empty(conn, scores, run_id)
    else:
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            for rows in _row_chunks(scores, run_id):
                for row in rows:
                    cp.write_row(row)
    for ddl in rebuild:
        conn.exec_driver_sql(ddl)
    if not empty:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _DB_COLUMNS if c not in _KEY)
        conn.exec_driver_sql(f"INSERT INTO score ({cols}) SELECT {cols} FROM {table} "
                             f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}")


_PG_ARRAY_TYPES = {"instrument": "text", "instrument_version": "text", "scale": "text", "band": "text",
                   "n_items": "int", "n_answered": "int", "prorated": "boolean", "above_cutoff": "boolean"}
_PG_ROW = np.dtype([("nfields", ">i2"), ("len_id", ">i4"), ("response_id", ">i8"), ("len_code", ">i4"),
                    ("code", ">i4"), ("len_score", ">i4"), ("score", ">f8")])


def _copy_postgresql_empty(conn: Connection, scores: pd.DataFrame, run_id: str) -> None:
    """Bulk insert into an empty `score` table on PostgreSQL with the same rows (and ids, in key order)
    as a COPY of whole rows: each row goes as (response id, combination code, score) in COPY's binary
    format, built by numpy without a Python object per value, into a temporary table; one INSERT ...
    SELECT then takes the combination columns from arrays passed as parameters (a scan, no join)."""
    typed = _typed_columns(scores)
    order = _key_order(scores)
    score = typed["score"].to_numpy(dtype=np.float64)
    missing = np.isnan(score)
    code, first = _combinations(typed, extra=[missing.astype(np.int64)])
    if len(first) >= 2**31 - 1:
        raise ValueError(f"store_scores_bulk: {len(first)} distinct score combinations do not fit an int4 code")
    params = {c: _py_column(typed[c].iloc[first].reset_index(drop=True)).tolist() for c in _COMBO_COLUMNS}
    params["missing"] = missing[first].tolist()
    conn.exec_driver_sql("CREATE TEMPORARY TABLE cf_score_rows (response_id bigint, code integer, score "
                         "double precision) ON COMMIT DROP")
    ids = typed["response_id"].to_numpy(dtype=np.int64)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy("COPY cf_score_rows FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
        for lo in range(0, len(order), _CHUNK):
            idx = order[lo:lo + _CHUNK]
            rows = np.empty(len(idx), dtype=_PG_ROW)
            rows["nfields"], rows["len_id"], rows["len_code"], rows["len_score"] = 3, 8, 4, 8
            rows["response_id"] = ids[idx]
            rows["code"] = code[idx] + 1  # SQL arrays count from 1
            rows["score"] = np.where(missing[idx], 0.0, score[idx])  # NULL by the combination's flag
            cp.write(rows.tobytes())
        cp.write((-1).to_bytes(2, "big", signed=True))
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE cf_score_combo (code integer PRIMARY KEY, "
                         f"{', '.join(f'{c} {_PG_ARRAY_TYPES[c]}' for c in _COMBO_COLUMNS)}, missing boolean) "
                         "ON COMMIT DROP")
    with raw.cursor() as cur:
        cur.executemany(f"INSERT INTO cf_score_combo VALUES ({', '.join(['%s'] * (len(_COMBO_COLUMNS) + 2))})",
                        list(zip(range(1, len(first) + 1), *params.values(), strict=True)))
    conn.exec_driver_sql("ANALYZE cf_score_combo")
    conn.exec_driver_sql("ANALYZE cf_score_rows")
    picked = ", ".join(f"c.{c}" for c in _COMBO_COLUMNS)
    conn.exec_driver_sql(
        f"INSERT INTO score (response_id, {', '.join(_COMBO_COLUMNS)}, score, scoring_run) "
        f"SELECT t.response_id, {picked}, CASE WHEN c.missing THEN NULL ELSE t.score END, "
        "%(run_id)s FROM cf_score_rows t JOIN cf_score_combo c ON c.code = t.code", {"run_id": run_id})
    conn.exec_driver_sql("DROP TABLE cf_score_rows")
