"""Crash safety: an ingest process killed (SIGKILL) at random moments leaves the warehouse equal to an
uninterrupted run stopped after some whole file, and a re-run to completion equals the uninterrupted run."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ingest_exports import build_rows, write_export

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.batch_ingest import ingest_files
from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.load import inbox_files, ingest_file

KEY = "kill-test-key-0123456789"
INST = load_instruments()
RUNNER = Path(__file__).with_name("ingest_runner.py")


def make_inbox(inbox: Path) -> None:
    """About a dozen files: all formats, a correction that supersedes, a quarantined row, a refused file."""
    specs = [("proeftuin", "PT01", "T0", "child", "sav"), ("proeftuin", "PT01", "T0", "adult", "sav"),
             ("proeftuin", "PT02", "T1", "child", "sav"), ("gi", "GI01", "T0", "child", "xlsx"),
             ("gi", "GI01", "T0", "adult", "xlsx"), ("vt", "VT01", "T0", "adult", "csv"),
             ("vt", "VT01", "T0", "child", "csv"), ("vt", "VT02", "T1", "adult", "csv"),
             ("vt", "VT03", "T0", "parent", "csv")]
    for i, (arm, site, wave, role, fmt) in enumerate(specs):
        df = build_rows(INST, arm, site, wave, role, 120, seed=i)
        if i == 2:
            df.loc[4, "CRIES13_02"] = 8
        write_export(df, inbox / f"{arm}_{site}_{wave}_{role}.{fmt}")
    corr = build_rows(INST, "vt", "VT01", "T0", "adult", 120, seed=99)
    write_export(corr, inbox / "vt_VT01_T0_adult.sav")  # sorts after the .csv: a correction
    (inbox / "vt_VT04_T0_adult.csv").write_bytes(b"")


@pytest.mark.slow
@pytest.mark.parametrize("backend,mode", [("sqlite", "file"), ("postgres", "batch")])
def test_killed_ingest_is_all_or_nothing_per_file(tmp_path, request, backend, mode):
    """Killed at random moments, the warehouse is always the state after some whole file. PostgreSQL in batch
    mode: `ingest_files` commits each file asynchronously; a killed client must not change that."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_inbox(inbox)
    env = {**os.environ, "COHORTFLOW_PSEUDONYM_KEY": KEY}

    # reference: uninterrupted, with the state after every file
    ref = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'ref.sqlite'}"))
    states = [canonical_dump(ref)]
    args = (load_sources(), load_study(), INST, KEY.encode())
    files = inbox_files(inbox)
    for k, f in enumerate(files, 1):
        if mode == "batch":  # batch validation (Great Expectations) records other rule results than ingest_file's
            ref = init_warehouse(get_engine(f"sqlite:///{tmp_path / f'ref{k}.sqlite'}"))  # basic checks: the
            ingest_files(files[:k], ref, *args, data_docs="none")  # state after k files of one batch run
        else:
            ingest_file(f, ref, *args)
        states.append(canonical_dump(ref))
    final = states[-1]
    assert len(final["response"]) > 1000 and len(final["quarantine_row"]) == 1

    if backend == "postgres":
        from conftest import reset_postgres

        url = request.getfixturevalue("pg_engine").url.render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    rng = random.Random(20261123)

    def reset() -> None:
        if backend == "postgres":
            reset_postgres(url)
            return
        for suffix in ("", "-wal", "-shm"):
            if (tmp_path / f"killed.sqlite{suffix}").exists():
                os.remove(tmp_path / f"killed.sqlite{suffix}")

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(RUNNER), str(inbox), url, mode], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"  # imports done, schema present
        return proc

    proc = start()
    t = time.perf_counter()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    work_time = time.perf_counter() - t
    reset()

    engine = get_engine(url)
    kills = 0
    seen_prefixes = []
    for _ in range(12):
        proc = start()
        time.sleep(rng.uniform(0.0, work_time))
        proc.kill()
        proc.wait()
        state = canonical_dump(engine)
        matches = [k for k, s in enumerate(states) if s == state]
        assert matches, "warehouse after a kill is not the state after any whole file"
        if proc.returncode == -9:
            kills += 1
            seen_prefixes.append(matches[0])
        else:  # it finished before the kill: start again from an empty warehouse
            assert state == final
            engine.dispose()
            reset()
        if kills >= 5:
            break
    assert kills >= 5
    rerun = subprocess.run([sys.executable, str(RUNNER), str(inbox), url, mode], env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert canonical_dump(engine) == final
    # re-running once more changes nothing (every file skipped or refused again)
    subprocess.run([sys.executable, str(RUNNER), str(inbox), url, mode], env=env, capture_output=True, timeout=300)
    assert canonical_dump(engine) == final
    print("kill points reached file prefixes", seen_prefixes)
