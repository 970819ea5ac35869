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
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start(timeout=timeout)

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
