"""Two ingest processes on the same inbox at the same time (PostgreSQL): no deadlock, every file once; file by
file (`ingest_inbox`) and in batch (`ingest_files`: asynchronous commits per file, one flush at the end)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from test_ingest_kill import KEY, RUNNER, make_inbox

from cohortflow.warehouse.db import get_engine
from cohortflow.warehouse.load import inbox_files


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["file", "batch"])
def test_two_concurrent_ingests_load_each_file_once(pg_engine, tmp_path, mode):
    url = pg_engine.url.render_as_string(hide_password=False)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_inbox(inbox)
    env = {**os.environ, "COHORTFLOW_PSEUDONYM_KEY": KEY}
    procs = [subprocess.Popen([sys.executable, str(RUNNER), str(inbox), url, mode], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    engine = get_engine(url)
    files = inbox_files(inbox)
    with engine.connect() as conn:
        per_sha = conn.execute(text("select sha256, count(*) from batch group by sha256")).all()
        statuses = dict(conn.execute(text("select status, count(*) from batch group by status")).all())
        n_resp = conn.execute(text("select count(*) from response where not superseded")).scalar()
        accounted = conn.execute(text(
            "select count(*) from batch where status <> 'refused' and "
            "rows_in <> rows_loaded + rows_quarantined + rows_duplicate")).scalar()
    assert len(per_sha) == len(files) and all(c == 1 for _, c in per_sha)
    assert statuses == {"loaded": 9, "superseded": 1, "refused": 1}
    assert n_resp == 9 * 120 - 1 and accounted == 0
    # each file was loaded by exactly one of the two processes; the other skipped it
    loaded = [line for o in outs for line in o[0].splitlines() if line.startswith("loaded ")]
    assert sorted(loaded) == sorted({*loaded}) and len(loaded) == 10
    assert Path(RUNNER).exists()
