"""The warehouse schema: Alembic creates every Contract 3 table, idempotently, on SQLite and PostgreSQL."""

from sqlalchemy import inspect, text

from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.models import Base

CONTRACT_TABLES = {"batch", "household", "person", "response", "item_layout", "item_block", "quarantine_row",
                   "validation_result", "score", "run"}


def test_init_creates_all_tables_and_is_idempotent(any_engine):
    init_warehouse(any_engine)
    init_warehouse(any_engine)  # second upgrade is a no-op
    names = set(inspect(any_engine).get_table_names())
    assert names >= CONTRACT_TABLES
    assert "alembic_version" in names
    # the migration matches the models column for column
    insp = inspect(any_engine)
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}, table.name


def test_sqlite_has_wal_and_foreign_keys(tmp_path):
    engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'w.sqlite'}"))
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_default_url_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COHORTFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    engine = get_engine()
    assert engine.url.database == str(tmp_path / "env.sqlite")
    assert get_engine("postgresql://u:p@localhost/db").dialect.driver == "psycopg"
