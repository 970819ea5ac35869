"""The `cohortflow` command line: one command per step, plus the demo.

Start-up is kept short: the command groups of the stages (`flows/commands_*.py`, `synth/cli.py`) are imported
only when one of their commands runs (`LazyGroup`), and heavy libraries (pandas, prefect, great_expectations,
statsmodels) load inside commands. `cohortflow --help` lists every command from the static `LAZY` table.

Exit codes (the same for every command; `EXIT_CODES`): 0 ok, 1 the work ran but found a data problem (a file
refused, a row not released, a failing batch), 2 bad usage or configuration (unknown option, bad config file,
missing or malformed pseudonym key), 3 a service could not be reached (database, Prefect server): try again.
Expected problems print one message naming what is wrong and what to do, never a traceback.
"""

from __future__ import annotations

import os
import secrets
from importlib import import_module
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_DATA: "the work ran but found a data problem (a refused file, a row not released, a failing batch)",
    EXIT_USAGE: "bad usage or configuration (unknown option, bad config file, missing pseudonym key)",
    EXIT_UNAVAILABLE: "a service could not be reached (database, Prefect server): check it and try again",
}
EPILOG = ("Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + ". "
          "Add --json to status, quarantine, ingest, version and analysis run for machine-readable output. "
          "Documentation per role: docs/data-manager.md, docs/statistician.md, docs/programme-lead.en.md "
          "(nl: docs/programme-lead.nl.md), docs/operations.md.")

# name -> ("module:attribute", short help). A Typer attribute becomes a command group, a function a command.
# The help text is what `cohortflow --help` shows without importing the module (a test keeps them in step).
LAZY: dict[str, tuple[str, str]] = {
    "status": ("cohortflow.flows.commands_ingest:status",
               "List import batches per arm/site/wave/role: status, rows in = loaded + quarantined + duplicate."),
    "quarantine": ("cohortflow.flows.commands_ingest:quarantine",
                   "Show quarantined rows with every reason, or release one (`--release ID --set item=value`)."),
    "export": ("cohortflow.flows.commands_export:export",
               "Link every current response across waves and write long/wide datasets with labels and a "
               "codebook."),
    "instruments": ("cohortflow.flows.commands_instruments:instruments_app",
                    "List and show instrument definitions (shipped and user-supplied)."),
    "codebook": ("cohortflow.flows.commands_instruments:codebook",
                 "Write a codebook of all instruments, items and scales (markdown and xlsx)."),
    "validation": ("cohortflow.flows.commands_validation:app",
                   "Validate exports, show generated suites and stored validation results."),
    "analysis": ("cohortflow.flows.commands_analysis:app",
                 "Mixed models, marginal means, contrasts and sensitivity analyses per the analysis plan."),
    "report": ("cohortflow.flows.commands_report:app",
               "Effect tables, plots and the HTML report for programme leads and statisticians."),
    "synth": ("cohortflow.synth.cli:app", "Generate realistic synthetic studies (demo data, tests)."),
    "ops": ("cohortflow.flows.commands_ops:app",
            "Operations: a Prefect server, deployments and schedules, recorded runs"),
}


def load_lazy_command(name: str) -> click.Command:
    """Import the module behind LAZY[name] and return its click command (a group for a Typer app)."""
    target, _ = LAZY[name]
    module, attr = target.split(":")
    obj = getattr(import_module(module), attr)
    if isinstance(obj, typer.Typer):
        cmd = typer.main.get_command(obj)
    else:
        holder = typer.Typer()
        holder.command(name)(obj)
        cmd = typer.main.get_command(holder)
    cmd.name = name
    return cmd


class LazyGroup(TyperGroup):
    """The top-level group: stage commands are imported when run (or completed), listed from `LAZY` in help.

    It also turns the expected problems of any command into one clear message and an exit code
    (`friendly_error`), so no command shows a traceback for a bad configuration, a missing key or a database
    that cannot be reached.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.commands, *(n for n in LAZY if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in LAZY:
            return None
        if ctx.resilient_parsing or _listing_help(ctx):  # help listing / completion of names: no import
            return click.Command(cmd_name, help=LAZY[cmd_name][1], short_help=LAZY[cmd_name][1])
        self.commands[cmd_name] = load_lazy_command(cmd_name)
        return self.commands[cmd_name]

    def resolve_command(self, ctx: click.Context, args: list[str]):  # noqa: ANN201 - click's triple
        name = click.utils.make_str(args[0]) if args else None
        if name in LAZY and name not in self.commands:
            self.commands[name] = load_lazy_command(name)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta["cohortflow.args"] = [*getattr(ctx, "_protected_args", []), *ctx.args]  # click empties them
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            handled = friendly_error(exc, ctx)
            if handled is None:
                raise
            message, code = handled
            Console(stderr=True).print(message, highlight=False)
            raise typer.Exit(code) from None


def _listing_help(ctx: click.Context) -> bool:
    """True while the group's own --help is being formatted (commands are listed, not run)."""
    return bool(ctx.meta.get("cohortflow.listing"))


def _database_url_of(ctx: click.Context) -> str:
    """The warehouse URL a command used: its --database-url, else COHORTFLOW_DATABASE_URL, else the default."""
    args = ctx.meta.get("cohortflow.args") or [*getattr(ctx, "_protected_args", []), *ctx.args]
    for i, a in enumerate(args):
        if a == "--database-url" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--database-url="):
            return a.split("=", 1)[1]
    return os.environ.get("COHORTFLOW_DATABASE_URL") or "the default SQLite file data/cohortflow.sqlite"


def _redacted(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL (e.g. the default's description)
        return url


def friendly_error(exc: BaseException, ctx: click.Context | None = None) -> tuple[str, int] | None:
    """(message, exit code) for an expected problem, or None for a bug (which keeps its traceback).

    Recognised: configuration errors (ConfigError: file and field named), a missing or malformed pseudonym
    key, a database that cannot be reached or is not a cohortflow warehouse, and a Prefect server that does
    not answer.
    """
    names = {f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__}
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "cohortflow.config.loading.ConfigError" in names:
        return f"[red]Configuration problem:[/] {exc}\nFix the file named above and run the command again.", EXIT_USAGE
    if "cohortflow.flows.operations.MissingKeyError" in names:
        return f"[red]Pseudonymisation key problem:[/] {exc}", EXIT_USAGE
    if "sqlalchemy.exc.OperationalError" in names or "sqlalchemy.exc.InterfaceError" in names:
        url = _redacted(_database_url_of(ctx)) if ctx is not None else "the warehouse"
        orig = str(getattr(exc, "orig", None) or first).strip().splitlines()[0]
        return (f"[red]Cannot use the warehouse database[/] ({url}): {orig}\n"
                "Check COHORTFLOW_DATABASE_URL (or --database-url), that the database server is running and "
                "reachable from this machine, and the user's rights; then run the command again.",
                EXIT_UNAVAILABLE)
    if "sqlalchemy.exc.ArgumentError" in names or "sqlalchemy.exc.NoSuchModuleError" in names:
        return (f"[red]Bad database URL:[/] {first}\nExpected e.g. sqlite:///data/cohortflow.sqlite or "
                "postgresql+psycopg://user@host/cohortflow (COHORTFLOW_DATABASE_URL or --database-url).",
                EXIT_USAGE)
    if "httpx.ConnectError" in names or "prefect.exceptions.PrefectHTTPStatusError" in names:
        return (f"[red]Cannot reach the Prefect server[/] ({os.environ.get('PREFECT_API_URL', 'not set')}): "
                f"{first}\nStart it with `cohortflow ops server` (or `make server`) and set PREFECT_API_URL.",
                EXIT_UNAVAILABLE)
    return None


class _HelpAwareGroup(LazyGroup):
    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx.meta["cohortflow.listing"] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta["cohortflow.listing"] = False


app = typer.Typer(help="cohortflow: the cohort study pipeline (ingest, validate, score, link, model, report)",
                  epilog=EPILOG, cls=_HelpAwareGroup, no_args_is_help=True, pretty_exceptions_show_locals=False)
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
    """The pseudonymisation key from COHORTFLOW_PSEUDONYM_KEY (hex, at least 32 bytes); exit 2 with advice."""
    err = Console(stderr=True)
    raw = os.environ.get("COHORTFLOW_PSEUDONYM_KEY", "").strip()
    if not raw:
        err.print("[red]COHORTFLOW_PSEUDONYM_KEY is not set.[/] Identifiers are pseudonymised with a secret key "
                  "kept outside the repository and the database. Create one once with "
                  "`python -c \"import secrets; print(secrets.token_hex(32))\"`, store it in your secrets "
                  "manager and export it before running. (`cohortflow demo` makes its own.)")
        raise typer.Exit(EXIT_USAGE)
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        err.print("[red]COHORTFLOW_PSEUDONYM_KEY must be hexadecimal[/] (64 hex characters for 32 bytes).")
        raise typer.Exit(EXIT_USAGE) from None
    if len(key) < 32:
        err.print("[red]COHORTFLOW_PSEUDONYM_KEY is too short:[/] use at least 32 bytes (64 hex characters).")
        raise typer.Exit(EXIT_USAGE)
    return key


def show_progress(as_json: bool = False) -> bool:
    """Progress bars (drawn on stderr) only for a person at a terminal: never with --json or when redirected."""
    return not as_json and Console(stderr=True).is_terminal


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help='print {"version": ...} as JSON')) -> None:
    """Print the cohortflow version."""
    import json

    from cohortflow import __version__

    typer.echo(json.dumps({"version": __version__}) if as_json else __version__)


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
    key = environment_key()
    from cohortflow.flows.startup import flow_run_settings, prestart_prefect_server, warm_imports

    server = prestart_prefect_server()  # None when PREFECT_API_URL names a lasting server
    from cohortflow.warehouse.db import default_url, get_engine, init_warehouse

    url = database_url or default_url()
    init_warehouse(get_engine(url))
    if server is not None:
        warm_imports()
    from cohortflow.flows.pipeline import pipeline_flow

    if server is not None:
        server.join()
    with flow_run_settings(server):
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
    key = environment_key()
    import json as _json
    from dataclasses import asdict

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cohortflow.config.study import load_study
    from cohortflow.ingest import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.batch_ingest import ingest_files
    from cohortflow.warehouse.db import default_url, get_engine, init_warehouse
    from cohortflow.warehouse.load import inbox_files

    engine = init_warehouse(get_engine(database_url or default_url()))
    files = [inbox] if inbox.is_file() else inbox_files(inbox)
    sources, study, instruments = load_sources(), load_study(), load_instruments()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, disable=not show_progress(as_json), console=Console(stderr=True)) as bar:
        task = bar.add_task("reading and validating", total=len(files))

        def loading(name: str, _outcome: object) -> None:
            bar.update(task, advance=1, description=f"loading {name}")

        reports = ingest_files(files, engine, sources, study, instruments, key, docs_dir=docs_dir,
                               data_docs="failures", on_outcome=loading)
        bar.update(task, completed=len(files))
    if as_json:
        typer.echo(_json.dumps([asdict(r) for r in reports], default=str, indent=2))
    else:
        for r in reports:
            colour = {"loaded": "green", "skipped": "dim", "refused": "red"}.get(r.status, "yellow")
            console.print(f"[{colour}]{r.status:8}[/] {r.file_name}: {r.rows_in} in, {r.rows_loaded} loaded, "
                          f"{r.rows_quarantined} quarantined, {r.rows_duplicate} duplicates"
                          + (f"\n         {r.message}" if r.status == "refused" else ""), highlight=False)
    if any(r.status == "refused" for r in reports):
        raise typer.Exit(EXIT_DATA)
