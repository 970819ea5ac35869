"""`cohortflow synth ...`: generate a synthetic study from the command line (wired up in flows/cli.py)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Generate realistic synthetic studies (demo data, tests).", no_args_is_help=True)


@app.command("generate")
def generate(
    out_dir: Path = typer.Argument(..., help="folder to write inbox/ and truth/ into"),
    factor: float = typer.Option(1.0, help="size relative to the study's targets (1 = config/study.yaml)"),
    seed: int = typer.Option(20241120, help="random seed; the same seed gives the same files"),
    fault: list[str] = typer.Option([], "--fault", help="fault to inject (repeatable); see `synth faults`"),
    truth_persons: int | None = typer.Option(None, help="Monte Carlo persons per arm for the truth "
                                             "(default synth/model.yaml)"),
) -> None:
    """Write exports to OUT_DIR/inbox and the truth and manifest to OUT_DIR/truth."""
    from cohortflow.synth import generate_study

    m = generate_study(out_dir, factor=factor, seed=seed, faults=fault, truth_persons_per_arm=truth_persons)
    typer.echo(f"{len(m.files)} files, {sum(f.n_rows for f in m.files)} rows, {m.persons} persons, "
               f"{len(m.faults)} faults -> {out_dir}")


@app.command("faults")
def faults() -> None:
    """List the faults that can be injected."""
    from cohortflow.synth import FAULTS

    for name, desc in FAULTS.items():
        typer.echo(f"{name:22s} {desc}")
