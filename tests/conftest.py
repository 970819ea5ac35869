"""Shared fixtures: a temporary SQLite warehouse engine and a PostgreSQL one with a clean schema per test.

PostgreSQL tests read COHORTFLOW_TEST_DATABASE_URL (e.g.
postgresql+psycopg://cohortflow:cohortflow@localhost/cohortflow_test) and are skipped without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# Flow-running tests use their own Prefect home (kept between runs: its database migrations cost ~8 s once).
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parents[1] / "data" / "test-prefect-home"))
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # prefect makes only the last level
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

PG_ENV = "COHORTFLOW_TEST_DATABASE_URL"
# CI sets COHORTFLOW_REQUIRE_POSTGRES=1: there a missing or unreachable PostgreSQL fails the tests.
REQUIRE_PG = os.environ.get("COHORTFLOW_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def sqlite_engine(tmp_path):
    """An engine on an empty SQLite file in tmp_path (schema not created)."""
    from cohortflow.warehouse.db import get_engine

    engine = get_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    yield engine
    engine.dispose()


def reset_postgres(url: str) -> None:
    """Drop and recreate the public schema of the test database."""
    from sqlalchemy import text

    from cohortflow.warehouse.db import get_engine

    eng = get_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture
def pg_engine():
    """An engine on the PostgreSQL test database with a clean (empty) public schema."""
    url = os.environ.get(PG_ENV)
    if not url:
        if REQUIRE_PG:
            pytest.fail(f"COHORTFLOW_REQUIRE_POSTGRES=1 but {PG_ENV} is not set")
        pytest.skip(f"PostgreSQL test: set {PG_ENV} to run it")
    from cohortflow.warehouse.db import get_engine

    reset_postgres(url)
    engine = get_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request, tmp_path):
    """Both backends: the SQLite engine always, PostgreSQL when configured (skipped otherwise)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_engine")
    else:
        yield request.getfixturevalue("pg_engine")
