"""Validation commands for data managers (`cohortflow validation ...`) and the batch summary artifact.

* `validate FILE...`: read exports with their source definitions, validate them, print the plain-text
  summary per file and (with --docs-dir) build the Data Docs page of each batch. Nothing is loaded.
* `suite [SOURCE]`: the generated expectation suite of a source version: rules, severities, what the
  definitions say (allowed codes, windows, ages, thresholds).
* `results`: validation results per batch stored in the warehouse (failing rules with examples).

`validation_status_lines(engine)` gives `cohortflow status` a short per-batch line of failing rules,
`publish_summary_artifact(outcome, file_name)` posts the summary as a Prefect markdown artifact, and
`flow_validator(...)` is the `validate` callable for `ingest_file`: history from the warehouse, Data Docs
under the data folder, the summary as an artifact.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(help="Validate exports, show generated suites and stored validation results.",
                  no_args_is_help=True)


def _env() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@app.command("validate")
def validate_files(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="export files to validate"),
    docs_dir: Path = typer.Option(None, help="build Data Docs per batch here (e.g. data/validation)"),
) -> None:
    """Validate export files without loading them; print a summary per file (exit 1 if one is refused)."""
    _env()
    from cohortflow.config.sources import load_source_definitions
    from cohortflow.config.study import load_study
    from cohortflow.ingest.mapping import match_source, read_export
    from cohortflow.ingest.readers import BadFileError
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.validation import summarise, validate_mapped_file

    study, instruments, sources = load_study(), load_instruments(), load_source_definitions()
    refused = 0
    for path in files:
        try:
            source = match_source(path, sources)
            mapped = read_export(path, source, instruments)
        except BadFileError as exc:
            typer.echo(f"Validation of {path.name}: REFUSED: the file cannot be read\n  ! {exc}\n")
            refused += 1
            continue
        out = validate_mapped_file(mapped, study, instruments, source=source, docs_dir=docs_dir)
        refused += bool(out.file_errors)
        typer.echo(summarise(out, path.name) + "\n")
    if refused:
        raise typer.Exit(1)


@app.command("suite")
def show_suite(source: str = typer.Argument(None, help="source name (default: every source definition)")) -> None:
    """Print the generated suite of each source version: rule, severity, what the definitions allow."""
    from cohortflow.config.sources import load_source_definitions
    from cohortflow.config.study import load_study
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.validation import build_suite

    study, instruments = load_study(), load_instruments()
    sources = [s for s in load_source_definitions() if source is None or s.name == source]
    if not sources:
        typer.echo(f"no source definition named {source!r}")
        raise typer.Exit(2)
    for src in sources:
        suite = build_suite(src, study, instruments)
        typer.echo(f"Suite {suite.name} ({suite.source_label}): {len(suite.expectations)} expectations")
        for e in suite.expectations:
            typer.echo(f"  {e.description}")
            if e.notes:
                typer.echo(f"      {e.notes}")
        typer.echo("")


def validation_status_lines(engine: Any, limit_examples: int = 1) -> list[str]:
    """One line per batch with failing validation rules: 'batch 3 file.sav: allowed_codes 2 (quarantine) ...'."""
    from sqlalchemy import select

    from cohortflow.warehouse.models import Batch, ValidationResult

    stmt = (select(Batch.id, Batch.file_name, ValidationResult.rule, ValidationResult.severity,
                   ValidationResult.n_failed, ValidationResult.examples)
            .join(ValidationResult, ValidationResult.batch_id == Batch.id)
            .where(ValidationResult.n_failed > 0).order_by(Batch.id, ValidationResult.rule))
    lines: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    with engine.connect() as conn:
        for r in conn.execute(stmt):
            names[r.id] = r.file_name
            ex = [str(x) for x in (r.examples or [])[:limit_examples]]
            lines.setdefault(r.id, []).append(f"{r.rule} {r.n_failed} ({r.severity}{'; e.g. ' + ex[0] if ex else ''})")
    return [f"batch {b} {names[b]}: " + "; ".join(parts) for b, parts in lines.items()]


@app.command("results")
def stored_results(
    database_url: str = typer.Option(None, "--database-url", envvar="COHORTFLOW_DATABASE_URL",
                                     help="warehouse URL (default the project's SQLite file)"),
) -> None:
    """Failing validation rules per stored batch, with an example each."""
    from cohortflow.warehouse.db import get_engine, init_warehouse

    engine = init_warehouse(get_engine(database_url))
    lines = validation_status_lines(engine)
    console = Console(width=200)
    if not lines:
        console.print("No validation failures stored.")
    for line in lines:
        console.print(line, markup=False)


def publish_summary_artifact(outcome: Any, file_name: str) -> None:
    """Post the plain-text validation summary of one batch as a Prefect markdown artifact (inside a flow run)."""
    from prefect.artifacts import create_markdown_artifact

    from cohortflow.validation.summary import summarise_markdown

    key = "validation-" + "".join(c if c.isalnum() else "-" for c in file_name.lower()).strip("-")[:48]
    create_markdown_artifact(key=key, markdown=summarise_markdown(outcome, file_name),
                             description=f"Validation of {file_name}")


def person_history(engine: Any) -> Any:
    """Persons already in the warehouse as the frame validation compares with: pseudonym, sex, birth_year."""
    import pandas as pd
    from sqlalchemy import select

    from cohortflow.warehouse.models import Person

    with engine.connect() as conn:
        rows = conn.execute(select(Person.person_id, Person.sex, Person.birth_year)).all()
    return pd.DataFrame(rows, columns=["pseudonym", "sex", "birth_year"])


def flow_validator(engine: Any, study: Any, instruments: Any, key: bytes, docs_dir: Path | None = None,
                   artifacts: bool = True, echo: Any = None) -> Any:
    """A `validate(mapped) -> ValidationOutcome` for ingest_file: cross-wave history from the warehouse,
    Data Docs per batch under `docs_dir` (e.g. <data_dir>/validation), the plain-text summary passed to
    `echo` (e.g. a logger's info) and, inside a Prefect run, posted as an artifact."""
    _env()
    from cohortflow.validation import summarise, validate_mapped_file

    def validate(mapped: Any) -> Any:
        out = validate_mapped_file(mapped, study, instruments, history=person_history(engine), docs_dir=docs_dir,
                                   key=key)
        name = mapped.meta.get("file_name", "file")
        if echo is not None:
            echo(summarise(out, name))
        if artifacts:
            with contextlib.suppress(Exception):  # outside a flow run there is nowhere to post it
                publish_summary_artifact(out, name)
        return out

    return validate
