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


def _column_lists(scores: pd.DataFrame, lo: int, hi: int, run_id: str) -> list[list]:
    """Rows lo..hi of a Contract 4 scores frame as per-column Python lists for the driver (None = NULL)."""
    part = scores.iloc[lo:hi]
    out: list[list] = [part["response_id"].to_numpy(dtype=np.int64).tolist()]
    for c in ("instrument", "instrument_version", "scale"):
        out.append(part[c].astype(object).where(part[c].notna(), None).tolist())
    score = part["score"].to_numpy(dtype=np.float64, na_value=np.nan)
    out.append(np.where(np.isnan(score), None, score).tolist())
    for c in ("n_items", "n_answered"):
        v = pd.to_numeric(part[c]).astype("Int64")
        out.append(v.astype(object).where(v.notna(), None).tolist())
    for c in ("prorated", "above_cutoff"):
        v = part[c].astype("boolean")
        out.append(v.astype(object).where(v.notna(), None).tolist())
    out.append(part["band"].astype(object).where(part["band"].notna(), None).tolist())
    out.append([run_id] * (hi - lo))
    return out


def store_scores_bulk(engine: Engine, scores: pd.DataFrame, run_id: str, kind: str = "scoring") -> int:
    """Store a Contract 4 scores frame under `run_id` (created in `run` if absent); returns rows stored.

    Same result as `warehouse.scores.store_scores` (a stored (response, instrument, version, scale) is
    replaced, new keys are added) in one transaction, but chunked and bulk: suitable for millions of rows.
    """
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores frame lacks columns {missing}; expected {SCORE_COLUMNS}")
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            take_write_lock(conn)
            ensure_run(conn, run_id, kind)
            empty = conn.execute(select(Score.id).limit(1)).first() is None
            if conn.dialect.name == "postgresql":
                _store_postgresql(conn, scores, run_id, empty)
            else:
                _store_sqlite(conn, scores, run_id, empty)
    return len(scores)


def _store_sqlite(conn: Connection, scores: pd.DataFrame, run_id: str, empty: bool) -> None:
    cols = ", ".join(_DB_COLUMNS)
    sql = f"INSERT INTO score ({cols}) VALUES ({', '.join('?' * len(_DB_COLUMNS))})"
    if not empty:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _DB_COLUMNS if c not in _KEY)
        sql += f" ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}"
    for lo in range(0, len(scores), _CHUNK):
        hi = min(lo + _CHUNK, len(scores))
        conn.exec_driver_sql(sql, list(zip(*_column_lists(scores, lo, hi, run_id), strict=True)))


def _store_postgresql(conn: Connection, scores: pd.DataFrame, run_id: str, empty: bool) -> None:
    raw = conn.connection.driver_connection
    table = "score"
    cols = ", ".join(_DB_COLUMNS)
    if not empty:
        table = "score_incoming"
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {table} (LIKE score INCLUDING DEFAULTS) ON COMMIT DROP")
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
        for lo in range(0, len(scores), _CHUNK):
            hi = min(lo + _CHUNK, len(scores))
            for row in zip(*_column_lists(scores, lo, hi, run_id), strict=True):
                cp.write_row(row)
    if not empty:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _DB_COLUMNS if c not in _KEY)
        conn.exec_driver_sql(f"INSERT INTO score ({cols}) SELECT {cols} FROM {table} "
                             f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}")
