"""Operations end to end: a Prefect server on loopback, served deployments on a schedule, the Dask runner.

* A real `prefect server start` on 127.0.0.1 (temporary PREFECT_HOME, SQLite) for the whole module.
* `cohortflow ops serve` in a subprocess with a 5 s interval schedule: an export dropped into the inbox is
  loaded by a scheduled flow run, and its artifacts are read back from the API.
* The same ingest and model flows on a local Dask cluster (two worker processes) give the same warehouse and
  the same effect table as the default thread-pool runner.
* The model run's effect table and report link are read back from the API by the run's id.
* The batch task's retry condition: a transient database error is retried, a programming error and a broken
  file are not.
Every wait is bounded; subprocesses are killed in `finally`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KEY_HEX = "5f" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, interval: float = 0.5, log: Path | None = None):
    """Call `check` until it returns something truthy or `timeout` seconds pass (then fail with the log)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A Prefect server on a free loopback port; yields (api_url, env for subprocesses)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false", "MPLBACKEND": "Agg",
           "COHORTFLOW_PSEUDONYM_KEY": KEY_HEX, "PREFECT_SERVER_UI_ENABLED": "false"}
    log = home / "server.log"
    proc = None
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME", "COHORTFLOW_PSEUDONYM_KEY")}
    try:
        from cohortflow.flows.commands_ops import server_command

        with log.open("wb") as out:
            proc = subprocess.Popen(server_command("127.0.0.1", port), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait(healthy, 120, "the Prefect server's /api/health", log=log)
        # worker processes (Dask) inherit the environment; this process uses the settings context
        os.environ.update({k: env[k] for k in saved})
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: str(home)}):
            yield api, env
    finally:
        try:  # send buffered flow-run logs while the server is still up
            from prefect.logging.handlers import APILogHandler

            APILogHandler.flush()
        except Exception:  # noqa: BLE001 - logs only
            pass
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop(proc)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    """A small generated study (factor 0.05) cut to the two sites per arm with the most files: its inbox.

    The generator writes one file per arm, site, wave and role (94 here); every file costs one task, so the
    cut keeps the Dask comparison to a few minutes while every arm and wave is still there.
    """
    from collections import defaultdict

    from cohortflow.ingest import load_sources, match_source
    from cohortflow.synth import generate_study

    out = tmp_path_factory.mktemp("study")
    generate_study(out, factor=0.05, seed=20261123)
    sources = load_sources()
    by_site: dict[tuple, list[Path]] = defaultdict(list)
    for p in sorted((out / "inbox").iterdir()):
        fields = re.match(match_source(p, sources).filename_regex, p.name).groupdict()
        by_site[(fields["arm"], fields["site"])].append(p)
    keep: set[Path] = set()
    for arm in {a for a, _ in by_site}:
        sites = sorted((k for k in by_site if k[0] == arm), key=lambda k: (-len(by_site[k]), k[1]))[:2]
        keep.update(p for k in sites for p in by_site[k])
    inbox = out / "inbox-cut"
    inbox.mkdir()
    for p in keep:
        shutil.copy(p, inbox / p.name)
    return inbox


def test_served_ingestion_loads_a_dropped_file_on_its_schedule(prefect_server, small_study, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from sqlalchemy import select

    from cohortflow.ingest import load_sources, match_source
    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.models import Batch

    api, env = prefect_server
    sources = load_sources()
    export = next(p for p in sorted(small_study.iterdir()) if p.suffix == ".csv")
    source = match_source(export, sources).name
    inbox, outputs = tmp_path / "inbox", tmp_path / "outputs"
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    cfg = tmp_path / "operations.yaml"
    cfg.write_text(f"inbox: {inbox}\noutputs: {outputs}\ningestion:\n  {source}: {{cron: '0 6 * * 1-5'}}\n"
                   "data_docs: false\n")
    log = tmp_path / "serve.log"
    serve = None
    try:
        with log.open("wb") as out:
            serve = subprocess.Popen(
                [sys.executable, "-c", "from cohortflow.flows.commands_ops import app; app()", "serve",
                 "--config", str(cfg), "--interval", "5", "--database-url", url],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        name = "ingest-" + source.replace("_", "-")
        with get_client(sync_client=True) as client:
            def deployment():
                if serve.poll() is not None:
                    pytest.fail(f"serve exited with {serve.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    return client.read_deployment_by_name(f"cohortflow-ingest/{name}")
                except Exception:  # noqa: BLE001 - not registered yet
                    return None

            dep = _wait(deployment, 90, f"deployment {name}", log=log)
            assert dep.schedules and dep.schedules[0].schedule.interval.total_seconds() == 5
            shutil.copy(export, inbox / export.name)
            dropped = time.time()

            engine = get_engine(url)

            def loaded():
                with engine.connect() as conn:
                    return conn.execute(select(Batch.id, Batch.status, Batch.rows_loaded)
                                        .where(Batch.file_name == export.name)).first()

            batch = _wait(loaded, 300, f"{export.name} in the warehouse", interval=1, log=log)
            assert batch.status == "loaded" and batch.rows_loaded > 0

            key = "batch-" + "".join(c if c.isalnum() else "-" for c in export.stem.lower())

            def artifact():
                arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                return arts[0] if arts else None

            art = _wait(artifact, 60, f"artifact {key}", log=log)
            run = client.read_flow_run(art.flow_run_id)
            # loaded by a run the schedule created, of this deployment
            assert run.deployment_id == dep.id and run.auto_scheduled
            assert run.expected_start_time.timestamp() > dropped - 10

            def completed():
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))))
                return [r for r in runs if r.id == run.id]

            _wait(completed, 180, "the scheduled run to complete", log=log)
            # row accounting and validation results of the batch, as published
            assert export.name in art.data and "| rule | severity |" in art.data
            assert f"| {batch.rows_loaded} |" in art.data
            table = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ingestion-batches"])))
            assert any(export.name in str(t.data) for t in table)
    finally:
        _stop(serve)


def _normalised_dump(url: str) -> dict:
    """The canonical warehouse dump with the run ids (which name each run) replaced by their order, re-sorted."""
    from sqlalchemy import select

    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.dump import canonical_dump
    from cohortflow.warehouse.models import Run

    eng = get_engine(url)
    with eng.connect() as conn:
        ids = {r[0]: f"<run {i}>" for i, r in enumerate(conn.execute(select(Run.run_id).order_by(Run.started_at)))}

    def norm(v):
        if isinstance(v, str):
            for rid, name in ids.items():
                v = v.replace(rid, name)
        return v

    dump = {t: sorted((tuple(norm(v) for v in row) for row in rows), key=repr)
            for t, rows in canonical_dump(eng).items()}
    eng.dispose()
    return dump


def test_dask_runner_gives_the_same_warehouse_and_effects(prefect_server, small_study, tmp_path):
    import pandas as pd
    from distributed import LocalCluster

    from cohortflow.flows.operations import ingest_flow, model_flow, source_version_groups, task_runner_for
    from cohortflow.warehouse.db import get_engine, init_warehouse

    results = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        for name, address in (("threads", None), ("dask", cluster.scheduler_address)):
            url = f"sqlite:///{tmp_path / name}.sqlite"
            init_warehouse(get_engine(url))
            runner = task_runner_for(address)
            before = cluster.scheduler.transition_counter
            ing = ingest_flow.with_options(task_runner=runner)(inbox=str(small_study), database_url=url,
                                                                outputs_dir=str(tmp_path / name))
            mod = model_flow.with_options(task_runner=task_runner_for(address))(
                database_url=url, outputs_dir=str(tmp_path / name))
            results[name] = {"dump": _normalised_dump(url), "effects": pd.read_csv(mod.report_paths.csv),
                             "ingest": ing, "model": mod, "url": url,
                             "transitions": cluster.scheduler.transition_counter - before}
    a, b = results["threads"], results["dask"]
    groups = source_version_groups(sorted(small_study.iterdir()))
    assert len(groups) >= 2 and sum(map(len, groups)) == len(list(small_study.iterdir()))
    assert a["transitions"] == 0 and b["transitions"] > 0, "the Dask run's tasks went through the scheduler"
    assert sum(r.status == "loaded" for r in a["ingest"].batches) == len(list(small_study.iterdir())) >= 20 and a["ingest"].n_scores > 0
    assert len(a["effects"]) > 0
    assert a["ingest"].snapshot_hash == b["ingest"].snapshot_hash == a["model"].snapshot_hash
    assert a["dump"] == b["dump"]
    pd.testing.assert_frame_equal(a["effects"], b["effects"])
    _assert_model_artifacts_readable(b["model"], b["effects"], b["url"])


def _assert_model_artifacts_readable(model, effects, url: str) -> None:
    """The model run's effect table and report link, read back from the Prefect API by its flow run id."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from sqlalchemy import select

    from cohortflow.flows.operations import MODEL_ARTIFACT_KEYS
    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.models import Run

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=list(MODEL_ARTIFACT_KEYS)),
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(model.flow_run_id)])))
    by_key = {a.key: a for a in arts}
    assert set(by_key) == set(MODEL_ARTIFACT_KEYS)
    table, link = by_key["effect-table"], by_key["effect-report"]
    assert table.type == "table" and link.type == "markdown"  # a link artifact is stored as markdown
    rows = table.data if isinstance(table.data, list) else __import__("json").loads(table.data)
    assert len(rows) == len(effects) and list(rows[0]) == list(effects.columns)
    assert Path(model.report_paths.html).resolve().as_uri() in link.data
    assert model.run_id in table.description and model.snapshot_hash[:12] in table.description
    # the run is recorded with its snapshot, so it can be reproduced from its run id
    eng = get_engine(url)
    with eng.connect() as conn:
        rec = conn.execute(select(Run.kind, Run.data_snapshot).where(Run.run_id == model.run_id)).first()
    eng.dispose()
    assert rec is not None and rec.kind == "model" and rec.data_snapshot == model.snapshot_hash


def test_ingest_retries_transient_database_errors_only(prefect_server, small_study, tmp_path, monkeypatch):
    """The batch task's retry condition: OperationalError is retried (and passes), ValueError fails at once,
    and a broken file is refused without any retry (read once)."""
    from sqlalchemy.exc import OperationalError

    import cohortflow.warehouse.batch_ingest as batch
    from cohortflow.flows.operations import ingest_flow
    from cohortflow.warehouse.db import get_engine, init_warehouse

    export = next(p for p in sorted(small_study.iterdir()) if p.suffix == ".csv")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(export, inbox / export.name)
    real = batch.load_validated
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    init_warehouse(get_engine(url))
    monkeypatch.setattr(batch, "load_validated", flaky)
    run = ingest_flow(inbox=str(inbox), database_url=url, score_after=False)
    assert len(calls) == 2 and run.batches[0].status == "loaded"

    calls.clear()

    def broken(*args, **kwargs):
        calls.append(1)
        raise ValueError("a bug, not a passing failure")

    monkeypatch.setattr(batch, "load_validated", broken)
    url2 = f"sqlite:///{tmp_path / 'w2.sqlite'}"
    init_warehouse(get_engine(url2))
    with pytest.raises(ValueError, match="a bug"):
        ingest_flow(inbox=str(inbox), database_url=url2, score_after=False)
    assert len(calls) == 1

    # a broken file (cut mid-row) is refused, never retried: read once, the run completes
    monkeypatch.setattr(batch, "load_validated", real)
    reads: list[str] = []
    real_read = batch.read_file

    def counting_read(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(batch, "read_file", counting_read)
    inbox3 = tmp_path / "inbox3"
    inbox3.mkdir()
    data = export.read_bytes()
    (inbox3 / export.name).write_bytes(data[: len(data) // 2 + 7])
    url3 = f"sqlite:///{tmp_path / 'w3.sqlite'}"
    init_warehouse(get_engine(url3))
    run = ingest_flow(inbox=str(inbox3), database_url=url3, score_after=False)
    assert [b.status for b in run.batches] == ["refused"] and export.name in run.batches[0].message
    assert reads == [export.name]
