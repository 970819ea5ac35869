"""Engine and schema helpers: `get_engine(url)` and `init_warehouse(engine)` (Alembic `upgrade head`).

URL: the argument, else `COHORTFLOW_DATABASE_URL`, else `sqlite:///<project>/data/cohortflow.sqlite`.
SQLite connections get WAL, foreign keys and a busy timeout; a connection opened with the execution
option `write_lock=True` starts its transaction with `BEGIN IMMEDIATE` (SQLite) or takes a transaction-level
advisory lock (PostgreSQL), so two writers never interleave.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text

PROJECT_DIR = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
WRITE_LOCK_KEY = 0x636F686F  # arbitrary constant for pg_advisory_xact_lock ("coho")


def default_url() -> str:
    """COHORTFLOW_DATABASE_URL, else the embedded SQLite file under <project>/data/."""
    url = os.environ.get("COHORTFLOW_DATABASE_URL")
    if url:
        return url
    data = PROJECT_DIR / "data"
    data.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data / 'cohortflow.sqlite'}"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 120000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get("write_lock"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def get_engine(url: str | None = None, **kwargs) -> Engine:
    """Create an engine for `url` (see module docstring for the default) with the warehouse's settings."""
    url = url or default_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def take_write_lock(conn: Connection) -> None:
    """Inside an open transaction: serialise writers (PostgreSQL advisory lock; SQLite has BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})


def alembic_config(engine: Engine):  # noqa: ANN201 - alembic.config.Config
    """An Alembic Config pointing at the shipped migrations, bound to `engine`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def init_warehouse(engine: Engine | str | None = None) -> Engine:
    """Create or upgrade the warehouse schema to the newest migration (`alembic upgrade head`)."""
    from alembic import command

    if not isinstance(engine, Engine):
        engine = get_engine(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        take_write_lock(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return engine
