"""Migration 0003 drops the household_id indexes of response and person and its downgrade restores them; rows
stay as they are both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from ingest_exports import build_rows, write_export
from sqlalchemy import inspect

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import alembic_config, init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.load import ingest_file

INST = load_instruments()
DROPPED = {("response", "ix_response_household_id"), ("person", "ix_person_household_id")}


def _indexes(engine) -> set[tuple[str, str]]:
    insp = inspect(engine)
    return {(t, ix["name"]) for t in ("response", "person") for ix in insp.get_indexes(t)}


def _migrate(engine, step, target) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        step(cfg, target)


def test_household_indexes_dropped_and_restored(any_engine, tmp_path):
    engine = init_warehouse(any_engine)
    path = write_export(build_rows(INST, "vt", "VT01", "T0", "child", 5), tmp_path / "vt_VT01_T0_child.csv")
    rep = ingest_file(path, engine, load_sources(), load_study(), INST, b"migration-key-0123456789")
    assert rep.status == "loaded" and rep.rows_loaded == 5
    before = canonical_dump(engine)
    at_head = _indexes(engine)
    assert not DROPPED & at_head
    assert {("response", "ix_response_person_id"), ("response", "ix_response_subject_id")} <= at_head
    _migrate(engine, command.downgrade, "0002")
    assert _indexes(engine) >= DROPPED
    assert canonical_dump(engine) == before
    _migrate(engine, command.upgrade, "head")
    assert _indexes(engine) == at_head
    assert canonical_dump(engine) == before
