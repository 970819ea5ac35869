"""The `cohortflow` command line: one command per step, plus the demo.

Kept light at import: heavy libraries (prefect, great_expectations, statsmodels) load inside commands.
Exit codes: 0 ok, 1 the work ran but found problems (e.g. refused files), 2 bad usage or configuration.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="cohortflow: the cohort study pipeline (ingest, validate, score, link, model, report)",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


def _project_env() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if os.environ.get("PREFECT_HOME"):  # prefect creates only the last level of its home folder
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def demo_key(data_dir: Path) -> bytes:
    """The demo's own pseudonymisation key, made once and kept in the demo folder (mode 600)."""
    path = data_dir / ".pseudonym_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return bytes.fromhex(path.read_text().strip())


def environment_key() -> bytes:
    """The pseudonymisation key from COHORTFLOW_PSEUDONYM_KEY (hex, at least 32 bytes)."""
    raw = os.environ.get("COHORTFLOW_PSEUDONYM_KEY", "").strip()
    if not raw:
        console.print("[red]COHORTFLOW_PSEUDONYM_KEY is not set.[/] Identifiers are pseudonymised with a secret key "
                      "kept outside the repository and the database. Create one once with "
                      "`python -c \"import secrets; print(secrets.token_hex(32))\"`, store it in your secrets "
                      "manager and export it before running. (`cohortflow demo` makes its own.)")
        raise typer.Exit(2)
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        console.print("[red]COHORTFLOW_PSEUDONYM_KEY must be hexadecimal[/] (64 hex characters for 32 bytes).")
        raise typer.Exit(2) from None
    if len(key) < 32:
        console.print("[red]COHORTFLOW_PSEUDONYM_KEY is too short:[/] use at least 32 bytes (64 hex characters).")
        raise typer.Exit(2)
    return key


@app.command()
def version() -> None:
    """Print the cohortflow version."""
    from cohortflow import __version__

    typer.echo(__version__)


@app.command()
def demo(
    data_dir: Path = typer.Option(Path("data/demo"), help="folder for the generated study, database and outputs"),
    factor: float = typer.Option(1.0, help="study size: 1 = the study's targets (1,700 households)"),
    seed: int = typer.Option(20241120, help="generator seed"),
) -> None:
    """Generate a realistic study and run the whole pipeline on it into an embedded SQLite database."""
    _project_env()
    from cohortflow.flows.demo import run_demo

    run_demo(data_dir=data_dir, factor=factor, seed=seed, key=demo_key(data_dir), console=console)


@app.command()
def run(
    inbox: Path = typer.Argument(..., exists=True, file_okay=False, help="folder with survey exports"),
    outputs: Path = typer.Option(Path("data/outputs"), help="where effect tables and the report go"),
    database_url: str = typer.Option(None, envvar="COHORTFLOW_DATABASE_URL", help="default: SQLite in data/"),
    plan: Path = typer.Option(None, help="analysis plan YAML (default config/analysis.yaml)"),
) -> None:
    """Run the whole pipeline on an inbox of exports (key from COHORTFLOW_PSEUDONYM_KEY)."""
    _project_env()
    from cohortflow.flows.pipeline import pipeline_flow
    from cohortflow.warehouse.db import default_url, get_engine, init_warehouse

    key = environment_key()
    url = database_url or default_url()
    init_warehouse(get_engine(url))
    res = pipeline_flow(inbox=str(inbox), database_url=url, outputs_dir=str(outputs), key_hex=key.hex(),
                        plan_path=str(plan) if plan else None)
    console.print(f"Run {res.run_id}: report at {getattr(res.report_paths, 'html', None)}")


@app.command()
def ingest(
    inbox: Path = typer.Argument(..., exists=True, help="an export file or a folder of exports"),
    database_url: str = typer.Option(None, envvar="COHORTFLOW_DATABASE_URL", help="default: SQLite in data/"),
    docs_dir: Path = typer.Option(Path("data/validation"), help="where Data Docs of failed validations go"),
    as_json: bool = typer.Option(False, "--json", help="print the batch reports as JSON"),
) -> None:
    """Validate and load exports (one transaction per file; files already loaded are skipped).

    Exit status 1 when a file was refused: the message says which file, what is wrong and what to do.
    """
    _project_env()
    import json as _json
    from dataclasses import asdict

    from cohortflow.config.study import load_study
    from cohortflow.ingest import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.batch_ingest import ingest_files
    from cohortflow.warehouse.db import default_url, get_engine, init_warehouse
    from cohortflow.warehouse.load import inbox_files

    key = environment_key()
    engine = init_warehouse(get_engine(database_url or default_url()))
    files = [inbox] if inbox.is_file() else inbox_files(inbox)
    reports = ingest_files(files, engine, load_sources(), load_study(), load_instruments(), key,
                           docs_dir=docs_dir, data_docs="failures")
    if as_json:
        typer.echo(_json.dumps([asdict(r) for r in reports], default=str, indent=2))
    else:
        for r in reports:
            colour = {"loaded": "green", "skipped": "dim", "refused": "red"}.get(r.status, "yellow")
            console.print(f"[{colour}]{r.status:8}[/] {r.file_name}: {r.rows_in} in, {r.rows_loaded} loaded, "
                          f"{r.rows_quarantined} quarantined, {r.rows_duplicate} duplicates"
                          + (f"\n         {r.message}" if r.status == "refused" else ""))
    if any(r.status == "refused" for r in reports):
        raise typer.Exit(1)


def _register_commands() -> None:
    """Attach the command groups of every stage (each kept in its own module)."""
    from cohortflow.flows import (
        commands_analysis,
        commands_export,
        commands_ingest,
        commands_instruments,
        commands_ops,
        commands_report,
        commands_validation,
    )
    from cohortflow.synth import cli as synth_cli

    app.command("status")(commands_ingest.status)
    app.command("quarantine")(commands_ingest.quarantine)
    app.command("export")(commands_export.export)
    commands_instruments.register(app)
    app.add_typer(commands_validation.app, name="validation")
    app.add_typer(commands_analysis.app, name="analysis")
    app.add_typer(commands_report.app, name="report")
    app.add_typer(synth_cli.app, name="synth")
    app.add_typer(commands_ops.app, name="ops")


_register_commands()
