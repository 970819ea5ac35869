"""Data-manager commands: `status` (batches per arm/site/wave with counts and problems) and `quarantine`
(show quarantined rows; release one after correction). Wire into the main CLI with
`app.add_typer(ingest_app)` or by registering the two commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Ingestion status and quarantine for data managers", no_args_is_help=True)


def _engine(url: str | None):  # noqa: ANN202
    from cohortflow.warehouse.db import get_engine, init_warehouse

    return init_warehouse(get_engine(url))


STATUS_COLUMNS = ("id", "file_name", "status", "arm", "site", "wave", "role", "source_name", "source_version",
                  "rows_in", "rows_loaded", "rows_quarantined", "rows_duplicate", "item_values", "superseded_by",
                  "message", "problems", "sha256", "size_bytes")


def batch_rows(database_url: str | None) -> list[dict] | None:
    """Every batch as a dict (STATUS_COLUMNS), ordered by arm, site, wave, role and id; None without a warehouse.

    Read-only and light (SQLAlchemy core, no pandas, no migrations), so `cohortflow status` starts fast and
    never changes the database it looks at.
    """
    from sqlalchemy import inspect, text

    from cohortflow.warehouse.db import get_engine

    engine = get_engine(database_url)
    try:
        if engine.dialect.name == "sqlite" and engine.url.database and not Path(engine.url.database).exists():
            return None
        if not inspect(engine).has_table("batch"):
            return None
        # plain SQL on purpose: the ORM models would add ~0.4 s of imports to a command people run often
        sql = text(f"SELECT {', '.join(STATUS_COLUMNS)} FROM batch ORDER BY arm, site, wave, role, id")
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sql)]
    finally:
        engine.dispose()
    for r in rows:  # JSON columns come back as text from SQLite
        if isinstance(r["problems"], str):
            r["problems"] = json.loads(r["problems"])
    return rows


def _accounted(r: dict) -> bool:
    return r["status"] == "refused" or r["rows_in"] == r["rows_loaded"] + r["rows_quarantined"] + r["rows_duplicate"]


@app.command()
def status(
    database_url: str = typer.Option(None, "--database-url", envvar="COHORTFLOW_DATABASE_URL",
                                     help="warehouse URL (default the project's SQLite file)"),
    problems: bool = typer.Option(True, help="list column problems and refusal messages under the table"),
    as_json: bool = typer.Option(False, "--json", help="print the batches as a JSON list of objects"),
) -> None:
    """List import batches per arm/site/wave/role: status, rows in = loaded + quarantined + duplicate.

    Exit status 1 when a batch's rows do not add up (rows in != loaded + quarantined + duplicate).
    """
    rows = batch_rows(database_url)
    if rows is None:
        if as_json:
            typer.echo("[]")
            return
        typer.echo("No warehouse yet at this address: nothing has been ingested. "
                   "Load exports with `cohortflow ingest INBOX`.")
        return
    bad = sum(not _accounted(r) for r in rows)
    if as_json:
        typer.echo(json.dumps([{**r, "accounted": _accounted(r)} for r in rows], indent=1, default=str))
        if bad:
            raise typer.Exit(1)
        return
    console = Console(width=200)
    table = Table(title=f"Import batches ({len(rows)})")
    for col in ("id", "arm", "site", "wave", "role", "file", "status", "in", "loaded", "quarantined", "duplicate",
                "check", "source"):
        table.add_column(col, justify="right" if col in ("id", "in", "loaded", "quarantined", "duplicate") else "left")
    for r in rows:
        ok = _accounted(r)
        style = {"refused": "red", "superseded": "dim"}.get(r["status"], "yellow" if r["rows_quarantined"] else "")
        status_txt = r["status"] + (f" by {int(r['superseded_by'])}" if r["superseded_by"] is not None else "")
        table.add_row(str(r["id"]), r["arm"] or "?", r["site"] or "?", r["wave"] or "*", r["role"] or "*",
                      r["file_name"], status_txt, str(r["rows_in"]), str(r["rows_loaded"]),
                      str(r["rows_quarantined"]), str(r["rows_duplicate"]),
                      ("refused whole" if r["status"] == "refused" else "ok") if ok else "MISMATCH",
                      f"{r['source_name'] or '?'} v{r['source_version'] or '?'}", style=style)
    console.print(table)
    if problems:
        for r in rows:
            if r["status"] == "refused" and r["message"]:
                console.print(f"[red]batch {r['id']} refused[/red]: {r['message']}", highlight=False)
            for p in r["problems"] or []:
                near = f" (closest known: {p['closest']})" if p.get("closest") else ""
                console.print(f"[yellow]batch {r['id']} {r['file_name']}[/yellow]: {p['message']}{near}",
                              highlight=False)
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
    database_url: str = typer.Option(None, "--database-url", envvar="COHORTFLOW_DATABASE_URL",
                                     help="warehouse URL (default the project's SQLite file)"),
    as_json: bool = typer.Option(False, "--json", help="print the rows (or the release) as JSON"),
) -> None:
    """Show quarantined rows with every reason, or release one (`--release ID --set item=value`).

    Exit status 1 when a row cannot be released (the message says why: unknown id, still invalid values).
    """
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
            if as_json:
                typer.echo(json.dumps({"released": None, "quarantine_id": release, "error": str(exc)}))
            else:
                Console(stderr=True, width=200).print(f"[red]not released[/red]: {exc}", highlight=False)
            raise typer.Exit(1) from None
        if as_json:
            typer.echo(json.dumps({"released": True, "quarantine_id": release, "response_id": rid}))
        else:
            console.print(f"released quarantined row {release} as response {rid}")
        return
    df = quarantine_frame(engine, include_released=include_released)
    if batch is not None:
        df = df[df["batch_id"] == batch]
    if as_json:
        out = []
        for r in df.itertuples(index=False):
            reasons = r.reasons if isinstance(r.reasons, list) else json.loads(r.reasons)
            released = None if r.released_at is None or r.released_at != r.released_at else str(r.released_at)
            out.append({"id": int(r.id), "batch_id": int(r.batch_id), "file_name": r.file_name,
                        "row_number": int(r.row_number), "reasons": reasons, "released_at": released})
        typer.echo(json.dumps(out, indent=1, default=str))
        return
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
