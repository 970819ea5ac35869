"""`cohortflow ops ...`: start a Prefect server on loopback and serve the deployments.

Wire as `app.add_typer(commands_ops.app, name="ops")` in flows/cli.py (commands `ops server`, `ops serve`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

app = typer.Typer(help="Operations: a Prefect server, deployments and schedules, recorded runs",
                  no_args_is_help=True)


def server_command(host: str = "127.0.0.1", port: int = 4200) -> list[str]:
    """The command line that starts a Prefect server (database from PREFECT_API_DATABASE_CONNECTION_URL)."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="interface to listen on (loopback by default)"),
    port: int = typer.Option(4200, help="port of the API and UI"),
) -> None:
    """Run a long-lived Prefect server (SQLite in PREFECT_HOME, or PostgreSQL via
    PREFECT_API_DATABASE_CONNECTION_URL). Then set PREFECT_API_URL=http://HOST:PORT/api for `serve`."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    typer.echo(f"Prefect server on http://{host}:{port} (API http://{host}:{port}/api). Ctrl-C stops it.")
    raise typer.Exit(subprocess.call(server_command(host, port)))


@app.command()
def serve(
    config: Path = typer.Option(None, help="operations YAML (default config/operations.yaml)"),
    interval: float = typer.Option(None, help="seconds: replace every cron by this interval (trial runs)"),
    database_url: str = typer.Option(None, envvar="COHORTFLOW_DATABASE_URL", help="warehouse URL"),
    inbox: Path = typer.Option(None, help="override the inbox folder of the configuration"),
    outputs: Path = typer.Option(None, help="override the outputs folder of the configuration"),
    source: list[str] = typer.Option(None, help="serve ingestion of these sources only (repeatable)"),
) -> None:
    """Register the ingestion (per source, on its schedule) and model deployments and run their flow runs.

    Needs PREFECT_API_URL pointing at a Prefect server and COHORTFLOW_PSEUDONYM_KEY in the environment.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from cohortflow.config.loading import ConfigError
    from cohortflow.config.operations import load_operations
    from cohortflow.flows.operations import MissingKeyError
    from cohortflow.flows.serve import serve_deployments

    try:
        ops = load_operations(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    updates = {k: v for k, v in (("inbox", inbox), ("outputs", outputs)) if v is not None}
    if updates:
        ops = ops.model_copy(update=updates)
    if not os.environ.get("PREFECT_API_URL"):
        typer.echo("PREFECT_API_URL is not set: schedules need a running server (`cohortflow ops server`), then "
                   "export PREFECT_API_URL=http://127.0.0.1:4200/api", err=True)
        raise typer.Exit(2)
    try:
        serve_deployments(ops, interval_seconds=interval, database_url=database_url, only_sources=source or None)
    except MissingKeyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command()
def runs(
    run_id: str = typer.Option(None, "--run-id", help="show only this run (as printed in a report's footer)"),
    database_url: str = typer.Option(None, "--database-url", envvar="COHORTFLOW_DATABASE_URL",
                                     help="warehouse URL (default the project's SQLite file)"),
    as_json: bool = typer.Option(False, "--json", help="print the runs as a JSON list"),
) -> None:
    """Recorded runs (scoring, model): run id, data snapshot hash, analysis-plan hash, code version.

    Exit status 1 when --run-id names no recorded run.
    """
    import json

    from sqlalchemy import inspect, select

    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.models import Run

    engine = get_engine(database_url)
    cols = ("run_id", "kind", "started_at", "finished_at", "status", "data_snapshot", "config_hash", "code_version",
            "details")
    rows: list[dict] = []
    if inspect(engine).has_table("run"):
        stmt = select(*(getattr(Run, c) for c in cols)).order_by(Run.started_at)
        if run_id:
            stmt = stmt.where(Run.run_id == run_id)
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
    engine.dispose()
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
    else:
        for r in rows:
            typer.echo(f"{r['run_id']}  {r['kind']:8s} {r['status']:10s} snapshot {str(r['data_snapshot'])[:16]}  "
                       f"plan {str(r['config_hash'] or '-')[:12]}  code {r['code_version']}  {r['details'] or ''}")
        if not rows:
            typer.echo("No recorded run" + (f" with id {run_id}" if run_id else "") + ".")
    if run_id and not rows:
        raise typer.Exit(1)
