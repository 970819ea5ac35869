"""Faster start of a pipeline run: Prefect's temporary API server started early, heavy imports done meanwhile.

No Prefect import at module level: `prestart_prefect_server()` imports Prefect in its background thread, so
even that import overlaps the caller's work.
"""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from pathlib import Path


def prestart_prefect_server(timeout: int = 90) -> threading.Thread | None:
    """Start Prefect's temporary API server (a subprocess) in a background thread, so its start-up (~6-15 s,
    more under load) overlaps other work (generating a study, importing the stages' libraries) instead of
    delaying the first flow run. Returns the thread to `join` before the flow starts (a flow run finds the
    server already running), or None when a server URL is configured or temporary servers are disabled.
    A failure is left for the flow run itself to report."""
    if os.environ.get("PREFECT_API_URL"):
        return None

    def start() -> None:
        with suppress(Exception):  # the flow run starts (and reports) it again
            from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

            if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
                return
            db = local_prefect_database()
            seeded = seed_prefect_database(db) if db is not None else False
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start(timeout=timeout)
            if db is not None and not seeded:
                save_prefect_template(db)

    thread = threading.Thread(target=start, daemon=True, name="prefect-server-start")
    thread.start()
    return thread


def warm_imports() -> None:
    """Import the stages' heavy libraries (Great Expectations, statsmodels/scipy, matplotlib) now, e.g. while
    the Prefect server starts in its own process, rather than inside the first task that needs them."""
    import importlib

    for name in ("great_expectations", "cohortflow.warehouse.batch_ingest", "cohortflow.flows.commands_validation",
                 "cohortflow.scoring.store", "cohortflow.warehouse.linkage", "cohortflow.analysis.models",
                 "cohortflow.analysis.report"):
        with suppress(ImportError):  # optional pieces; the task that needs one reports a real problem
            importlib.import_module(name)


def use_demo_prefect_home(data_dir: Path, startup_timeout: int = 90) -> None:
    """Keep Prefect's home (its local API database) in `data_dir/.prefect` across runs unless PREFECT_HOME is
    set: a fresh home costs the server's database migrations on every run (~8 s here). Also give the
    temporary server `startup_timeout` seconds to start (Prefect's default 20 s fails on a loaded machine).
    Call before Prefect is imported."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str(Path(data_dir) / ".prefect")))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(startup_timeout))


def local_prefect_database() -> Path | None:
    """The SQLite file of Prefect's local API database (default `PREFECT_HOME/prefect.db`), or None when Prefect
    is configured with another database (e.g. PostgreSQL)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    url = url.get_secret_value() if url is not None else ""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return None
    return Path(url[len(prefix):])


def prefect_template_path() -> Path:
    """Where a freshly migrated Prefect API database is kept for this Prefect version (user cache folder;
    `COHORTFLOW_CACHE_DIR` overrides)."""
    import prefect

    base = Path(os.environ.get("COHORTFLOW_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cohortflow")
    return base / f"prefect-{prefect.__version__}-api.db"


def seed_prefect_database(db: Path) -> bool:
    """Copy the migrated template database to `db` when `db` does not exist yet (a cold `PREFECT_HOME`), so the
    temporary server skips the ~100 database migrations of a fresh home (8-16 s here). True when seeded."""
    template = prefect_template_path()
    if db.exists() or not template.exists():
        return False
    import shutil

    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_suffix(".seeding")
    shutil.copyfile(template, tmp)
    tmp.replace(db)
    return True


def save_prefect_template(db: Path) -> None:
    """Keep a consistent copy (SQLite backup API: the WAL included) of the just-migrated database `db` as the
    template for later cold homes of this Prefect version; no-op when one exists or `db` is missing."""
    import sqlite3

    template = prefect_template_path()
    if template.exists() or not db.exists():
        return
    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_suffix(f".{os.getpid()}.tmp")
    src, dst = sqlite3.connect(db), sqlite3.connect(tmp)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    tmp.replace(template)
