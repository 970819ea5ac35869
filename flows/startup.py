"""Faster start of a pipeline run: Prefect's temporary API server started early, heavy imports done meanwhile.

No Prefect import at module level: `prestart_prefect_server()` imports Prefect in its background thread, so
even that import overlaps the caller's work.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import suppress
from pathlib import Path


class PrestartedServer:
    """Prefect's temporary API server, started early (see prestart_prefect_server); `join()` before a flow runs."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def join(self) -> None:
        """Wait until the server answers; raise with the server's own message when it could not start (only
        when this process already points Prefect at it, i.e. `url` is set)."""
        if self.thread is not None:
            self.thread.join()
        if self.error is not None and self.url is not None:
            raise RuntimeError(f"Prefect's temporary API server did not start at {self.url}: {self.error}. "
                               "Start a server yourself (`make server`) and set PREFECT_API_URL to it.")


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prestart_prefect_server(timeout: int = 90) -> PrestartedServer | None:
    """Start Prefect's temporary API server (a subprocess) at once, so its start-up (~4-6 s, more under load)
    overlaps other work (generating a study, importing the stages' libraries) instead of delaying the first flow
    run. Returns a handle to `join` before the flow starts, or None when a server URL is configured or
    temporary servers are disabled; run the flows under `flow_run_settings(handle)`.

    Call it before anything imports Prefect when you can: then the server is launched as `serve_temporary` (the
    app of Prefect's own temporary server, in its own process, which also seeds a cold Prefect home) without
    importing Prefect into this process for it (the imports would hold this process's GIL while it imports the
    stages' libraries), and PREFECT_API_URL is set for this process. When Prefect is already imported its
    settings are fixed, so Prefect's `SubprocessASGIServer` is started instead (the flow run finds it); a
    failure there is left for the flow run to report.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    if os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "").lower() in ("0", "false", "no"):
        return None
    own = "prefect" not in sys.modules
    url = None
    if own:
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = url  # read by Prefect's settings when Prefect is imported
    handle = PrestartedServer(url)

    def start() -> None:
        try:
            if own:  # everything Prefect happens in the server's own process (serve_temporary)
                _launch_server(port, timeout)
                return
            from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

            if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
                return
            db = local_prefect_database()
            seeded = seed_prefect_database(db) if db is not None else False
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start(timeout=timeout)
            if db is not None and not seeded:
                save_prefect_template(db)
        except Exception as exc:  # noqa: BLE001 - reported by join() (own server) or by the flow run
            handle.error = str(exc)

    handle.thread = threading.Thread(target=start, daemon=True, name="prefect-server-start")
    handle.thread.start()
    return handle


def _launch_server(port: int, timeout: int) -> None:
    """Start `serve_temporary` on `port` in its own process (this process does not import Prefect for it) and
    wait until the API answers; the server stops when this process exits."""
    import atexit
    import subprocess
    import tempfile
    import time
    import urllib.request

    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop("PREFECT_API_URL", None)  # the server is not a client of itself
    proc = subprocess.Popen([sys.executable, "-m", "cohortflow.flows.startup", str(port), str(os.getpid())],
                            env=env, stderr=(errors := tempfile.TemporaryFile()))  # noqa: SIM115
    atexit.register(proc.terminate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            errors.seek(0)
            err = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the server process exited with code {proc.returncode}: {err}")
        with suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
            if r.status == 200:
                # the first API call that reads the database costs the server ~0.5 s (its engine and ORM
                # set-up): pay it here, while this process is still importing, not in the first flow run
                with suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/api/admin/version",
                                                               timeout=timeout):
                    pass
                return
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"no answer within {timeout} s")


def serve_temporary(port: int, parent_pid: int | None = None) -> None:
    """Run Prefect's API (the app of Prefect's own temporary server) with uvicorn on 127.0.0.1:`port`, in this
    process, until it is stopped or `parent_pid` is gone. A cold `PREFECT_HOME` is seeded from the migrated
    template first, and a template is kept after the first start that had to migrate."""
    import time

    import uvicorn

    db = local_prefect_database()
    seeded = seed_prefect_database(db) if db is not None else False
    server = uvicorn.Server(uvicorn.Config("prefect.server.api.server:create_app", factory=True, host="127.0.0.1",
                                           port=port, log_level="error", lifespan="on"))

    def watch() -> None:
        saved = db is None or seeded
        while not server.should_exit:
            if not saved and server.started:
                save_prefect_template(db)  # type: ignore[arg-type]
                saved = True
            if parent_pid is not None and os.getppid() != parent_pid:  # orphaned: the run that needed us is gone
                server.should_exit = True
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="temporary-server-watch").start()
    server.run()


def flow_run_settings(server: PrestartedServer | None):
    """Settings to run flows under against a temporary server started by `prestart_prefect_server`: no flow-run
    heartbeats. They let a lasting server notice crashed runs; a temporary server ends with this process, and
    each flow run would wait up to 1 s at its end for the heartbeat thread. A no-op context otherwise."""
    from contextlib import nullcontext

    if server is None:
        return nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


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


if __name__ == "__main__":  # the temporary server's own process: python -m cohortflow.flows.startup PORT [PARENT_PID]
    serve_temporary(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
