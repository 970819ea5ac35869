"""CLI commands of the analysis stage (wire into flows/cli.py as `app.add_typer(analysis_app, name="analysis")`).

`cohortflow analysis run DATA` fits every outcome of the analysis plan on an analysis dataset (Contract 5,
Parquet or CSV) and writes contrasts, marginal means, sensitivity analyses, balance and method texts.
`cohortflow analysis calibrate` runs the simulation calibration and prints bias and coverage.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Mixed models, marginal means, contrasts and sensitivity analyses per the analysis plan.",
                  no_args_is_help=True)


def fit_dataset(data: Path, plan_path: Path | None, imputations: int | None, no_sensitivity: bool,
                progress: bool = False, workers: int | None = None, bootstrap: bool | None = None):
    """Read an analysis dataset (Parquet or CSV) and fit the plan: (frame, plan, study, AnalysisResult).

    With `progress` a person at a terminal sees a bar per outcome. `workers` and `bootstrap` override the
    plan's `defaults.workers` and `sensitivity.bootstrap.enabled` (None: as the plan says).
    """
    import pandas as pd
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from cohortflow.analysis.models import run_analysis
    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.config.study import load_study

    if not data.is_file():
        raise typer.BadParameter(f"{data}: file not found; give the analysis dataset (Parquet or CSV), "
                                 "e.g. the analysis_long.parquet written by `cohortflow export`.")
    frame = pd.read_parquet(data) if data.suffix == ".parquet" else pd.read_csv(data)
    study, plan = load_study(), load_analysis_plan(plan_path)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True, disable=not progress,
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(f"fitting {len(plan.outcomes)} outcome(s)", total=len(plan.outcomes))
        res = run_analysis(frame, plan, study, sensitivity=not no_sensitivity, imputations=imputations,
                           workers=workers, bootstrap=bootstrap,
                           progress=lambda outcome_id: bar.update(task, advance=1, description=f"fitted {outcome_id}"))
        bar.update(task, completed=len(plan.outcomes))
    return frame, plan, study, res


@app.command("run")
def run(
    data: Path = typer.Argument(..., help="analysis dataset (Contract 5): .parquet or .csv"),
    out: Path = typer.Option(Path("out/analysis"), help="folder for the result tables"),
    plan_path: Path | None = typer.Option(None, "--plan", help="analysis.yaml (default: the configured one)"),
    imputations: int | None = typer.Option(None, help="override the plan's number of imputations"),
    no_sensitivity: bool = typer.Option(False, help="skip IPW and multiple imputation"),
    workers: int | None = typer.Option(None, min=1, help="processes fitting outcomes side by side "
                                                         "(default: the plan's defaults.workers)"),
    bootstrap: bool | None = typer.Option(None, "--bootstrap/--no-bootstrap",
                                          help="household-bootstrap CIs of the differences in change and d "
                                               "(default: the plan's sensitivity.bootstrap.enabled)"),
    as_json: bool = typer.Option(False, "--json", help="print a run summary as JSON (outcomes, failures, files)"),
) -> None:
    """Fit all outcomes of the plan and write CSV tables plus methods.json to OUT.

    Exit status 1 when an outcome could not be fitted (the others are still written).
    """
    import pandas as pd
    from rich.console import Console

    from cohortflow.warehouse.snapshot import snapshot_hash

    frame, _, _, res = fit_dataset(data, plan_path, imputations, no_sensitivity,
                                   progress=not as_json and Console(stderr=True).is_terminal, workers=workers,
                                   bootstrap=bootstrap)
    out.mkdir(parents=True, exist_ok=True)
    files = {"contrasts": out / "contrasts.csv", "emmeans": out / "emmeans.csv", "counts": out / "counts.csv",
             "sensitivity": out / "sensitivity.csv", "balance": out / "balance.csv",
             "methods": out / "methods.json"}
    res.contrasts.to_csv(files["contrasts"], index=False)
    pd.concat([r.emms.assign(outcome=k) for k, r in res.outcomes.items()]).to_csv(files["emmeans"], index=False)
    pd.concat([r.counts.assign(outcome=k) for k, r in res.outcomes.items()]).to_csv(files["counts"], index=False)
    res.sensitivity.to_csv(files["sensitivity"], index=False)
    res.balance.to_csv(files["balance"], index=False)
    files["methods"].write_text(json.dumps({"methods": res.methods, "multiplicity": res.multiplicity,
                                            "failures": res.failures}, indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"data": str(data), "snapshot_hash": snapshot_hash(frame),
                               "outcomes": sorted(res.outcomes), "failures": res.failures,
                               "methods": res.methods, "files": {k: str(v) for k, v in files.items()}},
                              indent=1, default=str))
    else:
        typer.echo(f"{len(res.outcomes)} outcome(s) fitted, {len(res.failures)} failure(s); tables in {out}")
        for k, v in res.failures.items():
            typer.echo(f"  failed: {k}: {v}", err=True)
    if res.failures:
        raise typer.Exit(1)


@app.command("calibrate")
def calibrate_cmd(studies: int = 200, scale: float = 1.0, seed: int = 1, engine: str = "profiled") -> None:
    """Simulate STUDIES studies with a known effect and print bias, RMSE and 95% CI coverage."""
    from cohortflow.analysis.calibration import calibrate

    s = calibrate(studies, scale=scale, seed=seed, engine=engine)
    typer.echo(f"truth {s.truth:.3f}  bias {s.bias:+.4f}  RMSE {s.rmse:.4f}  coverage {100 * s.coverage:.1f}%  "
               f"(z: {100 * s.coverage_z:.1f}%)  fallbacks {s.fallbacks}  {s.seconds_per_fit:.2f} s/fit")
