"""Deployments of the operational flows and the long-running `serve` process.

`build_deployments(ops, ...)` makes one ingestion deployment per configured source (cron in the configured
time zone), an unscheduled ingestion deployment for the whole inbox, and the on-demand model deployment.
`serve_deployments(...)` registers them with the Prefect server at PREFECT_API_URL and runs their flow runs
in this process until it is stopped. Schedules need a real server (`cohortflow ops server`), not the
temporary one Prefect starts on its own.
"""

from __future__ import annotations

from pathlib import Path

from cohortflow.config.operations import Operations

INGEST_ALL = "ingest-all"
MODEL = "model-on-demand"


def _database_url(ops: Operations) -> str:
    from cohortflow.warehouse.db import default_url

    return ops.database_url or default_url()


def ingestion_deployment_name(source: str) -> str:
    """The deployment name of one source's scheduled ingestion."""
    return "ingest-" + source.replace("_", "-").lower()


def build_deployments(ops: Operations, interval_seconds: float | None = None, database_url: str | None = None,
                      only_sources: list[str] | None = None) -> list:
    """The RunnerDeployments to serve: scheduled ingestion per source, whole-inbox ingestion, model on demand.

    `interval_seconds` replaces every cron by a fixed interval (tests, trial runs). With `ops.dask_address`
    the flows' tasks go to that Dask cluster.
    """
    from datetime import timedelta

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval

    from cohortflow.flows.operations import ingest_flow, model_flow, task_runner_for

    url = database_url or _database_url(ops)
    inbox, outputs = str(Path(ops.inbox).resolve()), str(Path(ops.outputs).resolve())
    docs_dir = str(Path(outputs).parent / "validation") if ops.data_docs else None
    ingest = ingest_flow
    model = model_flow
    if ops.dask_address:
        ingest = ingest_flow.with_options(task_runner=task_runner_for(ops.dask_address))
        model = model_flow.with_options(task_runner=task_runner_for(ops.dask_address))
    common = {"inbox": inbox, "database_url": url, "docs_dir": docs_dir, "outputs_dir": outputs,
              "score_after": ops.score_after_ingest}
    # one ingestion at a time per deployment: a run that comes due while one is busy is cancelled
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    deps = []
    for source, sched in ops.ingestion.items():
        if only_sources and source not in only_sources:
            continue
        if interval_seconds:
            schedule = Interval(timedelta(seconds=interval_seconds), timezone=ops.timezone, active=sched.active)
        else:
            schedule = Cron(sched.cron, timezone=ops.timezone, active=sched.active)
        deps.append(ingest.to_deployment(
            name=ingestion_deployment_name(source), schedules=[schedule],
            parameters={**common, "sources": [source]}, tags=["ingestion", source],
            concurrency_limit=one_at_a_time,
            description=f"Ingest the {source} exports in {inbox} ({sched.cron} {ops.timezone})"))
    deps.append(ingest.to_deployment(name=INGEST_ALL, parameters={**common, "sources": None},
                                     tags=["ingestion"], description="Ingest every export in the inbox, on demand"))
    deps.append(model.to_deployment(name=MODEL, parameters={"database_url": url, "outputs_dir": outputs,
                                                            "plan_path": None},
                                    tags=["analysis"], description="Fit the analysis plan (parameter plan_path) "
                                    "on the current warehouse and write the report"))
    return deps


def serve_deployments(ops: Operations, interval_seconds: float | None = None, database_url: str | None = None,
                      only_sources: list[str] | None = None, limit: int | None = None) -> None:
    """Register the deployments and run their scheduled and requested flow runs here until interrupted."""
    from prefect import serve

    from cohortflow.flows.operations import pseudonym_key
    from cohortflow.warehouse.db import get_engine, init_warehouse

    pseudonym_key()  # fail at start, not at the first scheduled run
    url = database_url or _database_url(ops)
    init_warehouse(get_engine(url))
    Path(ops.inbox).mkdir(parents=True, exist_ok=True)
    serve(*build_deployments(ops, interval_seconds, url, only_sources), limit=limit)
