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
    from cohortflow.warehouse.db import default_database_url, get_engine, init_warehouse

    key = environment_key()
    url = database_url or default_database_url()
    init_warehouse(get_engine(url))
    res = pipeline_flow(inbox=str(inbox), database_url=url, outputs_dir=str(outputs), key_hex=key.hex(),
                        plan_path=str(plan) if plan else None)
    console.print(f"Run {res.run_id}: report at {getattr(res.report_paths, 'html', None)}")
