"""Command-line entry point (the commands live in cohortflow.flows.cli)."""

import atexit
import gc


def main() -> None:
    """Run the `cohortflow` command (named so even when started as `python -m` or `python -c`)."""
    # Registered before anything else, so it runs last of the exit handlers: without it the interpreter's final
    # garbage collections over the objects of Great Expectations, Prefect, statsmodels and matplotlib took
    # 0.5-1.5 s after every command (benchmarks/RESULTS.md); the process's memory goes back to the system anyway.
    atexit.register(gc.freeze)
    from cohortflow.flows.cli import app

    app(prog_name="cohortflow")


if __name__ == "__main__":  # pragma: no cover - `python -m cohortflow.cli`
    main()
