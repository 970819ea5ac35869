"""The Prefect start-up helpers (flows/startup.py): a migrated API database is kept as a template and seeds cold
homes; no server is started here (that costs seconds), the file handling is checked with small SQLite files."""

from __future__ import annotations

import sqlite3

import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _db(path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")  # as Prefect's server keeps it: recent pages live in the -wal file
    con.execute("CREATE TABLE alembic_version (version_num TEXT)")
    con.executemany("INSERT INTO alembic_version VALUES (?)", [(f"rev{i}",) for i in range(rows)])
    con.commit()
    return con


def test_template_is_saved_once_and_seeds_only_a_cold_home(cache, tmp_path):
    from cohortflow.flows.startup import prefect_template_path, save_prefect_template, seed_prefect_database

    template = prefect_template_path()
    assert template.parent == cache and "prefect-" in template.name
    warm = tmp_path / "home1" / "prefect.db"
    warm.parent.mkdir()
    con = _db(warm, 3)  # still open: its last pages are only in the WAL, the backup must include them
    save_prefect_template(warm)
    con.close()
    assert template.exists()
    got = sqlite3.connect(template).execute("SELECT count(*) FROM alembic_version").fetchone()[0]
    assert got == 3
    # a second save does not overwrite the template
    other = tmp_path / "home2" / "prefect.db"
    other.parent.mkdir()
    _db(other, 5).close()
    save_prefect_template(other)
    assert sqlite3.connect(template).execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 3
    # an existing (warm) home is never replaced
    assert seed_prefect_database(other) is False
    assert sqlite3.connect(other).execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 5
    # a cold home gets the template's tables
    cold = tmp_path / "home3" / "prefect.db"
    assert seed_prefect_database(cold) is True
    assert sqlite3.connect(cold).execute("SELECT version_num FROM alembic_version ORDER BY 1").fetchall() == [
        ("rev0",), ("rev1",), ("rev2",)]


def test_no_template_no_seed(cache, tmp_path):
    from cohortflow.flows.startup import seed_prefect_database

    assert seed_prefect_database(tmp_path / "home" / "prefect.db") is False
    assert not (tmp_path / "home" / "prefect.db").exists()


def test_local_database_follows_prefect_home(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_HOME, temporary_settings

    from cohortflow.flows.startup import local_prefect_database

    with temporary_settings({PREFECT_HOME: str(tmp_path / "ph")}):
        assert local_prefect_database() == tmp_path / "ph" / "prefect.db"


PRESTART_CHILD = """
import json, os, sys
from cohortflow.flows.startup import flow_run_settings, prestart_prefect_server
handle = prestart_prefect_server(timeout=120)
url = os.environ.get("PREFECT_API_URL")
handle.join()
from prefect import flow
from prefect.settings import get_current_settings

@flow
def double(x: int) -> tuple[int, int | None]:
    return 2 * x, get_current_settings().flows.heartbeat_frequency

with flow_run_settings(handle):
    value, heartbeat = double(21)
print(json.dumps({"url": url, "value": value, "heartbeat": heartbeat,
                  "default_heartbeat": get_current_settings().flows.heartbeat_frequency,
                  "prefect_server_imported": "prefect.server.api.server" in sys.modules}))
"""


@pytest.mark.slow
def test_prestarted_server_runs_a_flow_without_prefects_server_package_in_this_process(tmp_path):
    """A fresh process (Prefect not yet imported) launches the temporary server itself: PREFECT_API_URL points at
    it, a flow runs against it, Prefect's server package is never imported here, and the server stops on exit."""
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), COHORTFLOW_CACHE_DIR=str(tmp_path / "cache"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    proc = subprocess.run([sys.executable, "-c", PRESTART_CHILD], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["value"] == 42
    assert out["heartbeat"] is None and out["default_heartbeat"] is not None  # off only for the temporary server
    assert out["url"].startswith("http://127.0.0.1:") and out["url"].endswith("/api")
    assert out["prefect_server_imported"] is False
    with pytest.raises(OSError):  # the server went away with the process that started it
        urllib.request.urlopen(out["url"] + "/health", timeout=5)


ORPHAN_CHILD = """
import os, sys
from cohortflow.flows.startup import prestart_prefect_server
handle = prestart_prefect_server(timeout=120)
handle.join()
print(os.environ["PREFECT_API_URL"], flush=True)
os.kill(os.getpid(), 9)  # no atexit: the server must notice by itself that its run is gone
"""


@pytest.mark.slow
def test_temporary_server_stops_when_the_process_that_started_it_is_killed(tmp_path):
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), COHORTFLOW_CACHE_DIR=str(tmp_path / "cache"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.run([sys.executable, "-c", ORPHAN_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    url = proc.stdout.strip().splitlines()[-1]
    deadline, alive = time.monotonic() + 30, True
    while alive and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            time.sleep(0.5)
        except OSError:
            alive = False
    assert not alive, f"the temporary server at {url} outlived the killed process by 30 s"


def test_flow_run_settings_leave_a_configured_server_alone():
    from prefect.settings import get_current_settings

    from cohortflow.flows.startup import flow_run_settings

    before = get_current_settings().flows.heartbeat_frequency
    with flow_run_settings(None):
        assert get_current_settings().flows.heartbeat_frequency == before


def test_prestart_does_nothing_when_a_server_is_configured(monkeypatch):
    from cohortflow.flows.startup import prestart_prefect_server

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert prestart_prefect_server() is None
