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


def fit_dataset(data: Path, plan_path: Path | None, imputations: int | None, no_sensitivity: bool):
    """Read an analysis dataset (Parquet or CSV) and fit the plan: (frame, plan, study, AnalysisResult)."""
    import pandas as pd

    from cohortflow.analysis.models import run_analysis
    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.config.study import load_study

    if not data.is_file():
        raise typer.BadParameter(f"{data}: file not found; give the analysis dataset (Parquet or CSV).")
    frame = pd.read_parquet(data) if data.suffix == ".parquet" else pd.read_csv(data)
    study, plan = load_study(), load_analysis_plan(plan_path)
    res = run_analysis(frame, plan, study, sensitivity=not no_sensitivity, imputations=imputations)
    return frame, plan, study, res


@app.command("run")
def run(
    data: Path = typer.Argument(..., help="analysis dataset (Contract 5): .parquet or .csv"),
    out: Path = typer.Option(Path("out/analysis"), help="folder for the result tables"),
    plan_path: Path | None = typer.Option(None, "--plan", help="analysis.yaml (default: the configured one)"),
    imputations: int | None = typer.Option(None, help="override the plan's number of imputations"),
    no_sensitivity: bool = typer.Option(False, help="skip IPW and multiple imputation"),
) -> None:
    """Fit all outcomes of the plan and write CSV tables plus methods.json to OUT."""
    import pandas as pd

    _, _, _, res = fit_dataset(data, plan_path, imputations, no_sensitivity)
    out.mkdir(parents=True, exist_ok=True)
    res.contrasts.to_csv(out / "contrasts.csv", index=False)
    pd.concat([r.emms.assign(outcome=k) for k, r in res.outcomes.items()]).to_csv(out / "emmeans.csv", index=False)
    pd.concat([r.counts.assign(outcome=k) for k, r in res.outcomes.items()]).to_csv(out / "counts.csv", index=False)
    res.sensitivity.to_csv(out / "sensitivity.csv", index=False)
    res.balance.to_csv(out / "balance.csv", index=False)
    (out / "methods.json").write_text(json.dumps({"methods": res.methods, "multiplicity": res.multiplicity,
                                                  "failures": res.failures}, indent=2), encoding="utf-8")
    typer.echo(f"{len(res.outcomes)} outcome(s) fitted, {len(res.failures)} failure(s); tables in {out}")
    for k, v in res.failures.items():
        typer.echo(f"  failed: {k}: {v}", err=True)


@app.command("calibrate")
def calibrate_cmd(studies: int = 200, scale: float = 1.0, seed: int = 1, engine: str = "profiled") -> None:
    """Simulate STUDIES studies with a known effect and print bias, RMSE and 95% CI coverage."""
    from cohortflow.analysis.calibration import calibrate

    s = calibrate(studies, scale=scale, seed=seed, engine=engine)
    typer.echo(f"truth {s.truth:.3f}  bias {s.bias:+.4f}  RMSE {s.rmse:.4f}  coverage {100 * s.coverage:.1f}%  "
               f"(z: {100 * s.coverage_z:.1f}%)  fallbacks {s.fallbacks}  {s.seconds_per_fit:.2f} s/fit")
