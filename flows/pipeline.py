"""The end-to-end Prefect flow: ingest -> validate -> load -> score -> link -> model -> report.

Tasks are thin wrappers around the plain stage functions (which are callable and tested without Prefect);
they add retries where a failure can pass, logging and artifacts. One task per file or per stage, never per
respondent (task overhead is ~7 ms).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from cohortflow import __version__
from cohortflow.warehouse.memory import StageMeter  # per-stage wall time and process-tree peak memory


@dataclass
class PipelineResult:
    """What a pipeline run produced: batches, counts, the data snapshot and the report paths."""

    run_id: str
    database_url: str
    batches: list = field(default_factory=list)
    n_scores: int = 0
    snapshot_hash: str | None = None
    report_paths: object = None
    outputs_dir: Path | None = None
    stages: dict = field(default_factory=dict)
    flow_started: float | None = None


def _artifact_key(text: str) -> str:
    """Artifact keys take lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "artifact"


@task(name="ingest-file", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=lambda task, run, state: _is_transient(state))
def ingest_file_task(path: str, database_url: str, key: bytes, docs_dir: str | None):
    """Read, validate and load one export in one transaction; returns its batch report.

    A broken file is not an error here: it comes back refused, with its message. Only failures that can
    pass (a database connection, a file still being written) raise and are retried.
    """
    from cohortflow.config.study import load_study
    from cohortflow.flows.commands_validation import flow_validator
    from cohortflow.ingest import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.load import ingest_file

    study, instruments = load_study(), load_instruments()
    engine = get_engine(database_url)
    logger = get_run_logger()
    validate = flow_validator(engine, study, instruments, key, docs_dir=Path(docs_dir) if docs_dir else None,
                              echo=logger.debug)
    report = ingest_file(Path(path), engine, load_sources(), study, instruments, key, validate=validate)
    logger.info("%s: %s (%s in, %s loaded, %s quarantined, %s duplicates)", report.file_name, report.status,
                report.rows_in, report.rows_loaded, report.rows_quarantined, report.rows_duplicate)
    return report


@task(name="ingest-inbox", retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=lambda task, run, state: _is_transient(state))
def ingest_files_task(paths: list[str], database_url: str, key: bytes, docs_dir: str | None,
                      docs_in_background: bool = False):
    """Read, validate (one GX run per source version) and load many exports, one transaction per file.

    Same warehouse as ingest_file_task per file; Data Docs for files refused or with rows quarantined, whose
    validation summaries are posted as artifacts (`validation-<file>`); warnings of files loaded whole go into
    one table artifact (`validation-warnings`). A retry skips the files already loaded (by SHA-256).
    `docs_in_background`: the Data Docs pages are built by a forked process and the task returns without
    waiting for them; whoever runs the task calls `wait_for_data_docs()` in the same process (the pipeline
    does at its end).
    """
    from cohortflow.config.study import load_study
    from cohortflow.flows.commands_validation import publish_summary_artifact
    from cohortflow.ingest import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.batch_ingest import (
        DocsBuilder,
        failed_rules,
        has_failures,
        has_quarantine,
        ingest_files,
    )
    from cohortflow.warehouse.db import get_engine

    logger = get_run_logger()
    warnings: list[dict] = []

    def post(name, outcome) -> None:
        if has_quarantine(outcome):  # refused or rows quarantined: the file's own artifact
            publish_summary_artifact(outcome, name)
        elif has_failures(outcome):  # warnings only: one row per rule in a table for the run (one API call)
            for r in failed_rules(outcome).itertuples(index=False):
                warnings.append({"file": name, "rule": r.rule, "severity": r.severity, "checked": r.n_checked,
                                 "failed": r.n_failed, "example": (list(r.examples) or [""])[0]})

    builder = None
    if docs_in_background and docs_dir:
        builder = DocsBuilder()
        _DOCS_BUILDERS.append(builder)
    reports = ingest_files([Path(p) for p in paths], get_engine(database_url), load_sources(), load_study(),
                           load_instruments(), key, docs_dir=Path(docs_dir) if docs_dir else None,
                           echo=logger.debug, data_docs="quarantine", on_outcome=post, docs_builder=builder)
    if warnings:
        create_table_artifact(key="validation-warnings", table=warnings,
                              description="Validation warnings of files loaded whole (rule, rows failed, example)")
    for r in reports:
        logger.info("%s: %s (%s in, %s loaded, %s quarantined, %s duplicates)", r.file_name, r.status, r.rows_in,
                    r.rows_loaded, r.rows_quarantined, r.rows_duplicate)
    return reports


#: Data Docs builders of ingest_files_task runs in this process whose pages may still be being built
_DOCS_BUILDERS: list = []


def wait_for_data_docs() -> list[str]:
    """Wait for the Data Docs pages that ingest_files_task runs in this process build in the background; the
    messages of those that could not be built (the loads stand either way)."""
    errors: list[str] = []
    while _DOCS_BUILDERS:
        errors += _DOCS_BUILDERS.pop().wait()
    return errors


def _is_transient(state) -> bool:
    """Retry only errors that can pass: database connectivity and files still being written."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - inspecting the failure
        from sqlalchemy.exc import OperationalError

        return isinstance(exc, OperationalError | PermissionError | BlockingIOError)
    return False


@task(name="score")
def score_task(database_url: str, run_id: str) -> int:
    """Score every instrument for all current responses and store the scores."""
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.scoring.store import score_warehouse
    from cohortflow.warehouse.db import get_engine

    return score_warehouse(get_engine(database_url), load_instruments(), run_id)


@task(name="link-waves")
def link_task(database_url: str, outputs_dir: str) -> tuple[str, str]:
    """Link waves per person and household; write the analysis dataset; return its Parquet path and hash.

    The frame itself is not returned: handed to the model task it stayed in this process through the model
    stage (3.1-3.4 GB at factor 100, and Prefect's task machinery keeps references to a task's result and
    inputs beyond the call, so `del` in the flow does not free it at once). The model task reads back only the
    rows and columns its plan uses (`analysis.models.read_analysis_dataset`): the snapshot that was hashed is
    the one analysed.
    """
    from cohortflow.config.study import load_study
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.linkage import build_analysis_dataset, write_and_hash

    data = build_analysis_dataset(get_engine(database_url), load_study(), load_instruments())
    out = Path(outputs_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "analysis_long.parquet"
    # Parquet row group by row group (no second copy) while a second thread computes the snapshot hash
    return str(path), write_and_hash(data, path)


# The model and report tasks take the analysis result as input. Prefect's default cache policy hashes a
# task's inputs (JSON, else cloudpickle of the whole object) to build a cache key that nothing here uses
# (results are not persisted): NO_CACHE skips it.
@task(name="fit-models", cache_policy=NO_CACHE)
def analyse_task(data, plan_path: str | None):
    """Fit every outcome of the analysis plan (main and sensitivity analyses).

    `data`: the analysis dataset's Parquet path (as link_task returns it; only the plan's rows and columns
    are read) or a DataFrame."""
    from cohortflow.analysis.models import read_analysis_dataset, run_analysis
    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.config.study import load_study

    plan = load_analysis_plan(Path(plan_path) if plan_path else None)
    if isinstance(data, str | Path):
        data = read_analysis_dataset(data, plan)
    return run_analysis(data, plan, load_study()), plan


@task(name="write-report", cache_policy=NO_CACHE)
def report_task(result, plan, outputs_dir: str, run_info: dict):
    """Write effect tables (xlsx, csv, md), the HTML report, the appendix and plots."""
    from cohortflow.analysis.report import write_report
    from cohortflow.config.study import load_study
    from cohortflow.instruments.registry import load_instruments

    return write_report(result, plan, load_study(), load_instruments(), Path(outputs_dir), run_info)


@flow(name="cohortflow-pipeline", log_prints=True)
def pipeline_flow(
    inbox: str,
    database_url: str,
    outputs_dir: str,
    key_hex: str,
    plan_path: str | None = None,
) -> PipelineResult:
    """Run the whole journey on every export in `inbox` against the warehouse at `database_url`."""
    from cohortflow.warehouse.linkage import release_memory
    from cohortflow.warehouse.load import inbox_files
    from cohortflow.warehouse.snapshot import new_run_id

    flow_started = time.time()
    meter = StageMeter()
    run_id = new_run_id()
    key = bytes.fromhex(key_hex)
    result = PipelineResult(run_id=run_id, database_url=database_url, outputs_dir=Path(outputs_dir),
                            stages=meter.stages, flow_started=flow_started)
    logger = get_run_logger()
    try:
        docs_dir = str(Path(outputs_dir).parent / "validation")
        with meter.stage("ingest"):
            # Data Docs pages are built by a forked process while scoring and linkage go on; waited for below
            result.batches = ingest_files_task([str(p) for p in inbox_files(Path(inbox))], database_url, key,
                                               docs_dir, docs_in_background=True)
            create_markdown_artifact(key="ingestion-summary", markdown=_batches_markdown(result.batches),
                                     description="Row accounting per file")
        release_memory()  # what a stage freed goes back to the system: the next stage's peak is its own
        with meter.stage("score"):
            result.n_scores = score_task(database_url, run_id)
        release_memory()
        with meter.stage("link"):
            dataset, result.snapshot_hash = link_task(database_url, outputs_dir)
        release_memory()  # the linked frame is gone with the task: the model stage reads what it needs
        with meter.stage("analyse"):
            for message in wait_for_data_docs():  # the model flow wants both cores
                logger.warning(message)
            analysis, plan = analyse_task(dataset, plan_path)
        release_memory()
        run_info = {"run_id": run_id, "snapshot_hash": result.snapshot_hash, "database": _redact(database_url),
                    "cohortflow_version": __version__, "started": run_id[:16]}
        with meter.stage("report"):
            result.report_paths = report_task(analysis, plan, outputs_dir, run_info)
            record_model_run(database_url, run_id, result.snapshot_hash, plan_path)
            if getattr(result.report_paths, "html", None) and getattr(result.report_paths, "csv", None):
                from cohortflow.flows.operations import (
                    publish_model_artifacts,  # operations imports this module
                )

                publish_model_artifacts(result.report_paths, run_id, result.snapshot_hash)
    finally:
        wait_for_data_docs()  # no Data Docs process outlives the run (after a failure, too)
        meter.close()
    logger.info("stages: %s", ", ".join(f"{k} {v['seconds']:.1f} s (peak {v['peak_rss_mib']:.0f} MiB)"
                                         for k, v in meter.stages.items()))
    return result


def record_model_run(database_url: str, run_id: str, snapshot: str, plan_path: str | None) -> None:
    """Record the model run with its data snapshot and analysis-plan hash, so a result traces to its data."""
    import hashlib

    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.snapshot import record_run

    plan = load_analysis_plan(Path(plan_path) if plan_path else None)
    plan_hash = hashlib.sha256(plan.model_dump_json().encode()).hexdigest()
    record_run(get_engine(database_url), run_id, "model", snapshot, config_hash=plan_hash,
               details={"plan": plan_path or "config/analysis.yaml"})


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _batches_markdown(batches) -> str:
    lines = ["| file | status | rows in | loaded | quarantined | duplicates | message |", "|---|---|---|---|---|---|---|"]
    for b in batches:
        g = b.get if isinstance(b, dict) else lambda k, _b=b: getattr(_b, k, "")
        lines.append(
            f"| {g('file_name')} | {g('status')} | {g('rows_in')} | {g('rows_loaded')} | "
            f"{g('rows_quarantined')} | {g('rows_duplicate')} | {str(g('message') or '')[:80]} |"
        )
    return "\n".join(lines)

