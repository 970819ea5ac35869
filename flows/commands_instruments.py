"""CLI commands `cohortflow instruments list|show` and `cohortflow codebook`.

Wire into flows/cli.py with `register(app)` (adds the `instruments` group and the `codebook` command).
"""

from __future__ import annotations

from pathlib import Path

import typer

instruments_app = typer.Typer(help="List and show instrument definitions (shipped and user-supplied).", no_args_is_help=True)
app = typer.Typer(help="Instrument definitions and codebook.", no_args_is_help=True)


def _load():
    from cohortflow.config.loading import ConfigError
    from cohortflow.instruments.registry import load_instruments

    try:
        return load_instruments()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@instruments_app.command("list")
def list_instruments() -> None:
    """One line per definition: code, version, construct, roles, ages, items, scales, verified."""
    from rich.console import Console
    from rich.table import Table

    insts = _load()
    table = Table(title=f"{len(insts)} instrument definitions")
    for col in ("code", "version", "construct", "roles", "ages", "items", "scales", "verified", "source"):
        table.add_column(col)
    for code in sorted(insts):
        i = insts[code]
        n_ver = sum(s.provenance.verified for s in i.scales)
        ages = "" if i.age_range_years is None else f"{i.age_range_years[0]:g}-{i.age_range_years[1]:g}"
        table.add_row(
            code, i.version, i.construct_code, ",".join(i.roles), ages, str(len(i.items)),
            str(len(i.scales) + len(i.classifications)), f"{n_ver}/{len(i.scales)} scales",
            "user" if i.user_supplied else "shipped",
        )
    Console(width=160).print(table)


@instruments_app.command("show")
def show_instrument(
    code: str = typer.Argument(..., help="instrument code, e.g. sdq_parent"),
    lang: str = typer.Option("en", help="label language: en or nl"),
) -> None:
    """Everything a definition declares: items, responses, scales, missing rules, cut-offs, bands, provenance."""
    from cohortflow.instruments.codebook import instrument_markdown
    from cohortflow.scoring.engine import definition_fingerprint

    insts = _load()
    if code not in insts:
        typer.echo(f"unknown instrument {code!r}; known: {', '.join(sorted(insts))}", err=True)
        raise typer.Exit(2)
    typer.echo(instrument_markdown(insts[code], lang=lang))
    typer.echo(f"definition fingerprint: {definition_fingerprint(insts[code])}")


@app.command("codebook")
def codebook(
    out: Path = typer.Option(Path("codebook"), "--out", help="folder for codebook.md and codebook.xlsx"),
    lang: str = typer.Option("en", help="label language for response and band labels: en or nl"),
) -> None:
    """Write a codebook of all instruments, items and scales (markdown and xlsx)."""
    from cohortflow.instruments.codebook import write_codebook

    for p in write_codebook(_load(), out, lang=lang):
        typer.echo(f"wrote {p}")


app.add_typer(instruments_app, name="instruments")


def register(main_app: typer.Typer) -> None:
    """Add `instruments list|show` and `codebook` to the main CLI."""
    main_app.add_typer(instruments_app, name="instruments")
    main_app.command("codebook")(codebook)
