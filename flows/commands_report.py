"""CLI command of the report stage (wire into flows/cli.py as `app.add_typer(report_app, name="report")`).

`cohortflow report build DATA` fits the analysis plan on an analysis dataset (Contract 5, Parquet or CSV) and
writes the effect tables (xlsx, csv, md), the HTML report, the technical appendix and the plots.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Effect tables, plots and the HTML report for programme leads and statisticians.",
                  no_args_is_help=True)


@app.callback()
def report_app() -> None:
    """Effect tables, plots and the HTML report."""


@app.command("build")
def build(
    data: Path = typer.Argument(..., help="analysis dataset (Contract 5): .parquet or .csv"),
    out: Path = typer.Option(Path("out/report"), help="folder for the report files"),
    plan_path: Path | None = typer.Option(None, "--plan", help="analysis.yaml (default: the configured one)"),
    run_id: str | None = typer.Option(None, help="run id shown in the footer (default: a new one)"),
    imputations: int | None = typer.Option(None, help="override the plan's number of imputations"),
    no_sensitivity: bool = typer.Option(False, help="skip IPW and multiple imputation"),
) -> None:
    """Fit all outcomes of the plan on DATA and write the report to OUT."""
    from cohortflow.analysis.report import default_run_info, write_report
    from cohortflow.flows.commands_analysis import fit_dataset
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.snapshot import new_run_id, snapshot_hash

    frame, plan, study, res = fit_dataset(data, plan_path, imputations, no_sensitivity)
    # the same content hash the pipeline records, whatever the file format
    snapshot = snapshot_hash(frame)
    rid = run_id or new_run_id()
    paths = write_report(res, plan, study, load_instruments(), out, default_run_info(rid, snapshot))
    typer.echo(f"report: {paths.html}\nappendix: {paths.appendix}\neffect table: {paths.xlsx}, {paths.csv}, "
               f"{paths.md}\n{len(paths.plots)} plots in {paths.out_dir / 'plots'}")
    for k, v in res.failures.items():
        typer.echo(f"  failed: {k}: {v}", err=True)
