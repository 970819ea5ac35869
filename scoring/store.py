"""Scoring the warehouse: score every current response and store the scores, only when something changed.

Stored scores are stale when an instrument definition or the item values change; both are fingerprinted
(`definition_fingerprint`, `item_values_fingerprint`) and recorded on the scoring run, so an unchanged
warehouse is not scored again.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select

from cohortflow.instruments.model import Instrument
from cohortflow.warehouse.models import Run
from cohortflow.warehouse.read import item_values_frame, responses_frame
from cohortflow.warehouse.scores import store_scores

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
    items = item_values_frame(engine)
    config_hash, data_hash = scoring_fingerprints(instruments, items)
    with engine.connect() as conn:
        last = conn.execute(select(Run.config_hash, Run.data_snapshot).where(Run.kind == "scoring",
                            Run.status == "completed").order_by(Run.started_at.desc())).first()
    if not force and last is not None and tuple(last) == (config_hash, data_hash):
        return 0
    started = datetime.now(UTC).replace(tzinfo=None)
    context = responses_frame(engine).set_index("response_id")[["role", "subject_age_years", "subject_sex"]]
    scores = score_all(items, context, instruments, on_unknown="skip")
    with engine.begin() as conn:
        conn.execute(insert(Run).values(run_id=f"{run_id}-scoring", kind="scoring", started_at=started,
                                        config_hash=config_hash, data_snapshot=data_hash, status="running"))
    n = store_scores(engine, scores, f"{run_id}-scoring")
    with engine.begin() as conn:
        conn.execute(Run.__table__.update().where(Run.run_id == f"{run_id}-scoring")
                     .values(status="completed", finished_at=datetime.now(UTC).replace(tzinfo=None)))
    return n
