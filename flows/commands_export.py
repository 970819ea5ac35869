"""`cohortflow export`: link waves and write the analysis-ready datasets, attrition and codebook.

Wire into the main CLI with `app.add_typer(...)` or by registering `export` (see the linkage report).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Analysis-ready datasets: long and wide, Parquet/CSV/SPSS, codebook, attrition, flow diagram")
console = Console()


@app.command()
def export(
    out: Path = typer.Option(Path("data/outputs/datasets"), help="folder for the datasets and tables"),
    database_url: str = typer.Option(None, envvar="COHORTFLOW_DATABASE_URL", help="default: SQLite in data/"),
    formats: str = typer.Option("parquet,csv,sav", help="comma-separated: parquet, csv, sav"),
    lang: str = typer.Option("en", help="label language: nl or en"),
    plan: Path = typer.Option(None, help="analysis plan YAML with a `linkage:` section (default config/analysis.yaml)"),
) -> None:
    """Link every current response across waves and write long/wide datasets with labels and a codebook."""
    from cohortflow.config.loading import ConfigError
    from cohortflow.config.study import load_study
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.db import default_url, get_engine
    from cohortflow.warehouse.export import FORMATS, export_analysis
    from cohortflow.warehouse.linkage import load_linkage_rules

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in FORMATS]
    if bad or lang not in ("nl", "en"):
        console.print(f"[red]Unknown format(s) {bad} or language {lang!r}[/]: formats {list(FORMATS)}, languages nl, en.")
        raise typer.Exit(2)
    try:
        rules = load_linkage_rules(plan)
        study, instruments = load_study(), load_instruments()
    except ConfigError as exc:
        console.print(f"[red]Configuration problem:[/] {exc}")
        raise typer.Exit(2) from None
    engine = get_engine(database_url or default_url())
    res = export_analysis(engine, study, instruments, out, fmts, lang, rules)
    console.print(f"Wrote {len(res.files)} files to {res.out_dir} (run {res.run_id})")
    for name, h in res.snapshots.items():
        console.print(f"  {name}: snapshot {h[:16]}")
