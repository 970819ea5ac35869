"""Data-manager commands: `status` (batches per arm/site/wave with counts and problems) and `quarantine`
(show quarantined rows; release one after correction). Wire into the main CLI with
`app.add_typer(ingest_app)` or by registering the two commands."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Ingestion status and quarantine for data managers", no_args_is_help=True)


def _engine(url: str | None):  # noqa: ANN202
    from cohortflow.warehouse.db import get_engine, init_warehouse

    return init_warehouse(get_engine(url))


@app.command()
def status(
    database_url: str = typer.Option(None, "--database-url", envvar="COHORTFLOW_DATABASE_URL",
                                     help="warehouse URL (default the project's SQLite file)"),
    problems: bool = typer.Option(True, help="list column problems and refusal messages under the table"),
    as_json: bool = typer.Option(False, "--json", help="print the batches as JSON"),
) -> None:
    """List import batches per arm/site/wave/role: status, rows in = loaded + quarantined + duplicate."""
    from cohortflow.warehouse.read import batches_frame

    df = batches_frame(_engine(database_url))
    if as_json:
        typer.echo(df.drop(columns=["started_at", "finished_at"]).to_json(orient="records", indent=1))
        return
    df = df.astype(object).where(df.notna(), None)
    console = Console(width=200)
    table = Table(title=f"Import batches ({len(df)})")
    for col in ("id", "arm", "site", "wave", "role", "file", "status", "in", "loaded", "quarantined", "duplicate",
                "check", "source"):
        table.add_column(col, justify="right" if col in ("id", "in", "loaded", "quarantined", "duplicate") else "left")
    bad = 0
    for r in df.itertuples(index=False):
        ok = r.status == "refused" or r.rows_in == r.rows_loaded + r.rows_quarantined + r.rows_duplicate
        bad += not ok
        style = {"refused": "red", "superseded": "dim"}.get(r.status, "yellow" if r.rows_quarantined else "")
        status_txt = r.status + (f" by {int(r.superseded_by)}" if r.superseded_by is not None else "")
        table.add_row(str(r.id), r.arm or "?", r.site or "?", r.wave or "*", r.role or "*", r.file_name, status_txt,
                      str(r.rows_in), str(r.rows_loaded), str(r.rows_quarantined), str(r.rows_duplicate),
                      ("refused whole" if r.status == "refused" else "ok") if ok else "MISMATCH", f"{r.source_name or '?'} v{r.source_version or '?'}", style=style)
    console.print(table)
    if problems:
        for r in df.itertuples(index=False):
            if r.status == "refused" and r.message:
                console.print(f"[red]batch {r.id} refused[/red]: {r.message}")
            for p in r.problems or []:
                near = f" (closest known: {p['closest']})" if p.get("closest") else ""
                console.print(f"[yellow]batch {r.id} {r.file_name}[/yellow]: {p['message']}{near}")
    if bad:
        console.print(f"[red]{bad} batch(es) where rows in != loaded + quarantined + duplicate[/red]")
        raise typer.Exit(1)


@app.command()
def quarantine(
    release: int = typer.Option(None, "--release", help="id of the quarantined row to release"),
    set_: list[str] = typer.Option(None, "--set", help="correction item_key=value (value 'missing' for blank)"),
    note: str = typer.Option(None, "--note", help="why the row is released"),
    batch: int = typer.Option(None, "--batch", help="only rows of this batch"),
    include_released: bool = typer.Option(False, "--all", help="also rows released earlier"),
    database_url: str = typer.Option(None, "--database-url", envvar="COHORTFLOW_DATABASE_URL"),
) -> None:
    """Show quarantined rows with every reason, or release one (`--release ID --set item=value`)."""
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.quarantine import ReleaseError, release_quarantined
    from cohortflow.warehouse.read import quarantine_frame

    engine = _engine(database_url)
    console = Console(width=200)
    if release is not None:
        corrections: dict[str, float | None] = {}
        for s in set_ or []:
            if "=" not in s:
                raise typer.BadParameter(f"--set {s!r}: expected item_key=value, e.g. cries13_04=2")
            k, v = s.split("=", 1)
            try:
                corrections[k.strip()] = None if v.strip().lower() in ("", "missing", "na") else float(v)
            except ValueError:
                raise typer.BadParameter(f"--set {s!r}: value {v!r} is not a number (or 'missing')") from None
        try:
            rid = release_quarantined(engine, release, load_instruments(), corrections or None, note)
        except ReleaseError as exc:
            console.print(f"[red]not released[/red]: {exc}")
            raise typer.Exit(1) from None
        console.print(f"released quarantined row {release} as response {rid}")
        return
    df = quarantine_frame(engine, include_released=include_released)
    if batch is not None:
        df = df[df["batch_id"] == batch]
    table = Table(title=f"Quarantined rows ({len(df)})")
    for col in ("id", "batch", "file", "row", "reasons", "released"):
        table.add_column(col)
    for r in df.itertuples(index=False):
        reasons = r.reasons if isinstance(r.reasons, list) else json.loads(r.reasons)
        txt = "; ".join(f"{x['rule']} {x.get('column') or ''}={x.get('value')!s}"
                        + (f" (expected {x['expected']})" if x.get("expected") else "") for x in reasons)
        table.add_row(str(r.id), str(r.batch_id), r.file_name, str(r.row_number), txt,
                      "" if r.released_at is None or r.released_at != r.released_at else str(r.released_at))
    console.print(table)
