"""Migration 0005 drops item_block's foreign keys and response's batch_id index, and its downgrade restores
both; rows stay as they are both ways, on SQLite (where item_block is rebuilt, still WITHOUT ROWID) and
PostgreSQL. Without the keys, every block still has its response and its layout after loading."""

from __future__ import annotations

from alembic import command
from ingest_exports import build_rows, write_export
from sqlalchemy import inspect, text

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.batch_ingest import ingest_files
from cohortflow.warehouse.db import alembic_config, init_warehouse
from cohortflow.warehouse.dump import canonical_dump

INST = load_instruments()
KEYS = {"fk_item_block_layout_id_item_layout", "fk_item_block_response_id_response"}
ORPHANS = ("SELECT count(*) FROM item_block b LEFT JOIN response r ON r.id = b.response_id "
           "LEFT JOIN item_layout l ON l.id = b.layout_id WHERE r.id IS NULL OR l.id IS NULL")


def _migrate(engine, step, target) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        step(cfg, target)


def _state(engine) -> tuple[set[str], bool]:
    insp = inspect(engine)
    keys = {fk["name"] for fk in insp.get_foreign_keys("item_block")}
    return keys, "ix_response_batch_id" in {ix["name"] for ix in insp.get_indexes("response")}


def _without_rowid(engine) -> bool:
    with engine.connect() as conn:
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'item_block'")).scalar_one()
    return "WITHOUT ROWID" in sql.upper()


def test_item_block_keys_dropped_and_restored(any_engine, tmp_path):
    engine = init_warehouse(any_engine)
    files = [write_export(build_rows(INST, "vt", site, w, "child", 6, seed=i), tmp_path / f"vt_{site}_{w}_child.csv")
             for i, (site, w) in enumerate([("VT01", "T0"), ("VT01", "T1"), ("VT02", "T0")])]
    reports = ingest_files(files, engine, load_sources(), load_study(), INST, b"migration-key-0123456789",
                           data_docs="none")
    assert [r.status for r in reports] == ["loaded"] * 3
    with engine.connect() as conn:
        blocks = conn.execute(text("SELECT count(*) FROM item_block")).scalar_one()
        assert blocks > 0 and conn.execute(text(ORPHANS)).scalar_one() == 0
    before = canonical_dump(engine)
    assert _state(engine) == (set(), False)
    _migrate(engine, command.downgrade, "0004")
    assert _state(engine) == (KEYS, True)
    assert canonical_dump(engine) == before
    _migrate(engine, command.upgrade, "head")
    assert _state(engine) == (set(), False)
    assert canonical_dump(engine) == before
    if engine.dialect.name == "sqlite":
        assert _without_rowid(engine)
    with engine.connect() as conn:  # the unique batch/row key serves look-ups by batch
        assert conn.execute(text("SELECT count(*) FROM response WHERE batch_id = :b"),
                            {"b": reports[0].batch_id}).scalar_one() == reports[0].rows_loaded
