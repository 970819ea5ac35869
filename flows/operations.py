"""Operational flows composed from the pipeline's tasks: scheduled ingestion and on-demand modelling.

* `ingest_flow(inbox, database_url, sources=None, ...)`: ingest the exports in the inbox (optionally only those
  of some source definitions), publish a row-accounting and validation artifact per batch, and when new data
  was loaded score the warehouse and rebuild the linked analysis dataset.
* `model_flow(database_url, outputs_dir, plan_path=None)`: link, fit the analysis plan, write the report and
  publish the effect table and a link to the report.
* `task_runner_for(address)`: Prefect's thread pool, or a `DaskTaskRunner` on the cluster at `address`.

The pseudonymisation key never is a flow parameter (parameters are stored by the Prefect server): it comes
from COHORTFLOW_PSEUDONYM_KEY in the environment of the process that runs the flow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from cohortflow.flows.pipeline import (
    _artifact_key,
    _batches_markdown,
    _redact,
    analyse_task,
    ingest_files_task,
    link_task,
    record_model_run,
    report_task,
    score_task,
)

KEY_ENV = "COHORTFLOW_PSEUDONYM_KEY"


class MissingKeyError(RuntimeError):
    """COHORTFLOW_PSEUDONYM_KEY is not set (or not 32+ bytes of hex) in the process that runs the flow."""


def pseudonym_key() -> bytes:
    """The key from COHORTFLOW_PSEUDONYM_KEY (hex, at least 32 bytes); raises MissingKeyError with advice."""
    raw = os.environ.get(KEY_ENV, "").strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise MissingKeyError(f"{KEY_ENV} must hold at least 32 bytes as hex (64 characters) in the environment "
                              "of the serve process (or worker). Export it from your secrets manager before "
                              "starting `cohortflow ops serve`.")
    return key


def task_runner_for(address: str | None = None):  # noqa: ANN201 - a Prefect TaskRunner
    """A DaskTaskRunner connected to `address` (e.g. tcp://10.0.0.5:8786), or the default thread pool."""
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner()


@dataclass
class IngestRun:
    """What an ingestion run did: one BatchReport per file, and scores/snapshot when new data came."""

    batches: list = field(default_factory=list)
    n_scores: int | None = None
    snapshot_hash: str | None = None


def _files_for(inbox: Path, sources: list[str] | None) -> list[Path]:
    """The inbox's exports, restricted to files matched by the named source definitions when given."""
    from cohortflow.ingest import load_sources, match_source
    from cohortflow.warehouse.load import inbox_files

    files = inbox_files(inbox)
    if not sources:
        return files
    defs = load_sources()
    keep = []
    for p in files:
        try:
            if match_source(p, defs).name in sources:
                keep.append(p)
        except Exception:  # noqa: BLE001 - unmatched files are the unfiltered deployment's business
            continue
    return keep


def source_version_groups(paths: list[Path], sources: list | None = None) -> list[list[Path]]:
    """The files cut into consecutive runs that share a source definition and version, in the given order.

    Each run becomes one batch-ingestion task (one GX validation run per source version, one transaction per
    file). Runs stay in name order and are loaded one after another, because load order decides duplicates
    and superseding: the warehouse is the same as file by file, whichever worker runs which group. A file no
    source matches forms its own group (it comes back refused, with the patterns known).
    """
    from cohortflow.ingest import load_sources, match_source

    defs = load_sources() if sources is None else sources
    groups: list[list[Path]] = []
    last: object = object()
    for p in paths:
        try:
            src = match_source(p, defs)
            tag: object = (src.name, src.version)
        except Exception:  # noqa: BLE001 - unmatched or unreadable: refused by the ingestion itself
            tag = ("unmatched", p.name)
        if groups and tag == last:
            groups[-1].append(p)
        else:
            groups.append([p])
        last = tag
    return groups


def batch_validation_rows(database_url: str, batch_id: int | None) -> list[dict]:
    """The validation results stored for one batch: rule, severity, n_checked, n_failed."""
    if batch_id is None:
        return []
    from sqlalchemy import select

    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.models import ValidationResult as V

    with get_engine(database_url).connect() as conn:
        rows = conn.execute(select(V.rule, V.severity, V.n_checked, V.n_failed)
                            .where(V.batch_id == batch_id).order_by(V.rule)).all()
    return [dict(r._mapping) for r in rows]


def batch_markdown(report, validation: list[dict]) -> str:
    """Markdown for one batch: its row accounting and its validation results."""
    acc = "yes" if report.rows_in == report.rows_loaded + report.rows_quarantined + report.rows_duplicate else "NO"
    lines = [f"## {report.file_name}: {report.status}", "",
             f"Source {report.source} v{report.source_version}; scope {report.arm}/{report.site}/"
             f"{report.wave}/{report.role}; batch {report.batch_id}.", "", _batches_markdown([report]), "",
             f"Rows accounted for (in = loaded + quarantined + duplicates): {acc}", ""]
    if report.message and report.status != "loaded":
        lines += ["```", report.message[:2000], "```", ""]
    if validation:
        lines += ["| rule | severity | checked | failed |", "|---|---|---|---|"]
        lines += [f"| {v['rule']} | {v['severity']} | {v['n_checked']} | {v['n_failed']} |" for v in validation]
    return "\n".join(lines)


def publish_batch_artifacts(reports: list, database_url: str) -> None:
    """One markdown artifact per new batch (key `batch-<file>`) and a table of all files (`ingestion-batches`)."""
    rows = []
    for r in reports:
        rows.append({"file": r.file_name, "status": r.status, "batch_id": r.batch_id, "rows_in": r.rows_in,
                     "loaded": r.rows_loaded, "quarantined": r.rows_quarantined, "duplicates": r.rows_duplicate,
                     "message": (r.message or "")[:200]})
        if r.status == "skipped":
            continue
        create_markdown_artifact(key="batch-" + _artifact_key(Path(r.file_name).stem),
                                 markdown=batch_markdown(r, batch_validation_rows(database_url, r.batch_id)),
                                 description=f"Row accounting and validation of {r.file_name}")
    create_table_artifact(key="ingestion-batches", table=rows or [{"file": "(inbox empty)"}],
                          description="Row accounting per file of this ingestion run")


@flow(name="cohortflow-ingest", log_prints=True)
def ingest_flow(
    inbox: str,
    database_url: str,
    sources: list[str] | None = None,
    docs_dir: str | None = None,
    outputs_dir: str | None = None,
    score_after: bool = True,
) -> IngestRun:
    """Ingest the inbox's exports (only those of `sources` when given) into the warehouse at `database_url`.

    The files (name order) are cut into consecutive groups of one source version (`source_version_groups`);
    each group is one `ingest-inbox` task: read, one validation run for the group, then one transaction per
    file. Groups run one after another (load order decides duplicates and superseding) on the flow's task
    runner, so under the DaskTaskRunner each group goes to a free worker. A group is retried only for failures
    that can pass (database connection, file still being written); files it loaded before the failure are
    skipped on the retry by their SHA-256. A broken file never raises: it comes back refused.
    When a file was loaded and `score_after`, the warehouse is scored and, with `outputs_dir`, the linked
    analysis dataset is rebuilt there.
    """
    logger = get_run_logger()
    key = pseudonym_key()
    run = IngestRun()
    previous = None
    futures = []
    for group in source_version_groups(_files_for(Path(inbox), sources)):
        previous = ingest_files_task.submit([str(p) for p in group], database_url, key, docs_dir,
                                            wait_for=[previous] if previous is not None else None)
        futures.append(previous)
    for fut in futures:
        run.batches.extend(fut.result())
    publish_batch_artifacts(run.batches, database_url)
    if not any(b.status == "loaded" for b in run.batches):
        logger.info("No new data in %s (%d file(s) seen).", inbox, len(run.batches))
        return run
    if score_after:
        from prefect.runtime import flow_run

        run.n_scores = score_task.submit(database_url, str(flow_run.id or "ingest")).result()
        if outputs_dir:
            _, run.snapshot_hash = link_task.submit(database_url, outputs_dir).result()
    return run


@dataclass
class ModelRun:
    """What an on-demand model run produced."""

    snapshot_hash: str
    report_paths: object
    n_failures: int = 0
    run_id: str = ""
    flow_run_id: str = ""


def effect_table_rows(csv_path: Path, limit: int = 500) -> list[dict]:
    """The effect table CSV as a list of row dicts (NaN as None) for a table artifact."""
    import pandas as pd

    df = pd.read_csv(csv_path).head(limit)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in df.to_dict("records")]


@flow(name="cohortflow-model", log_prints=True)
def model_flow(database_url: str, outputs_dir: str, plan_path: str | None = None) -> ModelRun:
    """Link the warehouse, fit the analysis plan at `plan_path` (default config/analysis.yaml), write the report.

    Records the run (run id, data snapshot hash, plan hash) in the warehouse's `run` table and publishes the
    effect table (`effect-table`) and a link to the HTML report (`effect-report`).
    """
    from datetime import UTC, datetime

    from prefect.runtime import flow_run

    from cohortflow import __version__
    from cohortflow.warehouse.snapshot import new_run_id

    run_id = new_run_id("model")
    dataset, snapshot = link_task.submit(database_url, outputs_dir).result()  # Parquet path, snapshot hash
    analysis, plan = analyse_task.submit(dataset, plan_path).result()
    run_info = {"run_id": run_id, "snapshot_hash": snapshot, "database": _redact(database_url),
                "cohortflow_version": __version__, "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),
                "prefect_flow_run": str(flow_run.id or "")}
    paths = report_task.submit(analysis, plan, outputs_dir, run_info).result()
    record_model_run(database_url, run_id, snapshot, plan_path)
    publish_model_artifacts(paths, run_id, snapshot)
    return ModelRun(snapshot_hash=snapshot, report_paths=paths, n_failures=len(getattr(analysis, "failures", {})),
                    run_id=run_id, flow_run_id=str(flow_run.id or ""))


MODEL_ARTIFACT_KEYS = ("effect-table", "effect-report")


def publish_model_artifacts(report_paths, run_id: str, snapshot: str) -> dict[str, str]:
    """Inside a flow run: publish a model run's effect table (table artifact `effect-table`, one row per line
    of effect_table.csv) and a link to its HTML report (`effect-report`). Returns {key: artifact id}.

    Called by `model_flow`; the pipeline flow can call it the same way after its report task.
    """
    table_id = create_table_artifact(key=MODEL_ARTIFACT_KEYS[0], table=effect_table_rows(Path(report_paths.csv)),
                                     description=f"Effect table of run {run_id}, data snapshot {snapshot[:12]}")
    link_id = create_link_artifact(key=MODEL_ARTIFACT_KEYS[1], link=Path(report_paths.html).resolve().as_uri(),
                                   link_text="Effect report",
                                   description=f"Report of run {run_id}, data snapshot {snapshot[:12]}")
    return {MODEL_ARTIFACT_KEYS[0]: str(table_id), MODEL_ARTIFACT_KEYS[1]: str(link_id)}
