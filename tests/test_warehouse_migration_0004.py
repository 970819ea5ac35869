"""Migration 0004 drops the (instrument, scale) index of score and its downgrade restores it; rows stay as they
are both ways, on SQLite and PostgreSQL, and the compact score read gives the same frame with or without it."""

from __future__ import annotations

import pandas as pd
from alembic import command
from ingest_exports import build_rows, write_export
from sqlalchemy import inspect

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.store import score_warehouse
from cohortflow.warehouse.db import alembic_config, init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.load import ingest_file
from cohortflow.warehouse.read import scores_compact

INST = load_instruments()
INDEX = "ix_score_instrument_scale"


def _score_indexes(engine) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes("score")}


def _migrate(engine, step, target) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        step(cfg, target)


def _compact(engine) -> pd.DataFrame:
    frame = scores_compact(engine).astype({"instrument": str, "scale": str})
    return frame.sort_values(["response_id", "instrument", "scale"], ignore_index=True)


def test_score_index_dropped_and_restored(any_engine, tmp_path):
    engine = init_warehouse(any_engine)
    path = write_export(build_rows(INST, "vt", "VT01", "T0", "child", 5), tmp_path / "vt_VT01_T0_child.csv")
    rep = ingest_file(path, engine, load_sources(), load_study(), INST, b"migration-key-0123456789")
    assert rep.status == "loaded" and rep.rows_loaded == 5
    assert score_warehouse(engine, INST, "m4") > 0
    before, compact = canonical_dump(engine), _compact(engine)
    assert INDEX not in _score_indexes(engine)
    _migrate(engine, command.downgrade, "0003")
    assert INDEX in _score_indexes(engine)
    assert canonical_dump(engine) == before
    pd.testing.assert_frame_equal(_compact(engine), compact)
    _migrate(engine, command.upgrade, "head")
    assert INDEX not in _score_indexes(engine)
    assert canonical_dump(engine) == before
    pd.testing.assert_frame_equal(_compact(engine), compact)
