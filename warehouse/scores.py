"""Scores in the warehouse: `store_scores(engine, scores_frame, run_id)` and `scores_frame(engine)`.

Scores are keyed to response ids; storing is idempotent per (response, instrument, instrument_version,
scale): a re-run replaces the earlier values of the same key and adds new keys.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, select, tuple_

from .db import take_write_lock
from .models import Response, Run, Score

SCORE_COLUMNS = ["response_id", "instrument", "instrument_version", "scale", "score", "n_items", "n_answered",
                 "prorated", "above_cutoff", "band"]


def _clean(v):  # noqa: ANN001, ANN202
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def ensure_run(conn, run_id: str, kind: str) -> None:  # noqa: ANN001 - a Connection inside a transaction
    """Record `run_id` in the run table (completed now) unless it is there already."""
    if conn.execute(select(Run.run_id).where(Run.run_id == run_id)).first() is None:
        now = datetime.now(UTC).replace(tzinfo=None)
        conn.execute(insert(Run).values(run_id=run_id, kind=kind, started_at=now, finished_at=now,
                                        status="completed"))


def store_scores(engine: Engine, scores: pd.DataFrame, run_id: str, kind: str = "scoring") -> int:
    """Store a Contract 4 scores frame under `run_id` (created in `run` if absent); returns rows stored."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores frame lacks columns {missing}; expected {SCORE_COLUMNS}")
    rows = [{c: _clean(v) for c, v in zip(SCORE_COLUMNS, rec, strict=True)}
            for rec in scores[SCORE_COLUMNS].itertuples(index=False, name=None)]
    for r in rows:
        r["response_id"] = int(r["response_id"])
        for b in ("prorated", "above_cutoff"):
            r[b] = None if r[b] is None else bool(r[b])
        for i in ("n_items", "n_answered"):
            r[i] = None if r[i] is None else int(r[i])
        r["scoring_run"] = run_id
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            take_write_lock(conn)
            ensure_run(conn, run_id, kind)
            keys = [(r["response_id"], r["instrument"], r["instrument_version"], r["scale"]) for r in rows]
            cols = tuple_(Score.response_id, Score.instrument, Score.instrument_version, Score.scale)
            for i in range(0, len(keys), 500):
                conn.execute(delete(Score).where(cols.in_(keys[i:i + 500])))
            for i in range(0, len(rows), 5000):
                conn.execute(insert(Score), rows[i:i + 5000])
    return len(rows)


def scores_frame(engine: Engine, include_superseded: bool = False) -> pd.DataFrame:
    """Stored scores (of current responses unless asked otherwise) with their scoring run."""
    q = (select(Score.response_id, Score.instrument, Score.instrument_version, Score.scale, Score.score,
                Score.n_items, Score.n_answered, Score.prorated, Score.above_cutoff, Score.band,
                Score.scoring_run).join(Response, Response.id == Score.response_id)
         .order_by(Score.response_id, Score.instrument, Score.scale))
    if not include_superseded:
        q = q.where(Response.superseded.is_(False))
    with engine.connect() as conn:
        return pd.read_sql(q, conn)
