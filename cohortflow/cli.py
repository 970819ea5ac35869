"""Command-line entry point (the commands live in cohortflow.flows.cli)."""


def main() -> None:
    """Run the `cohortflow` command (named so even when started as `python -m` or `python -c`)."""
    from cohortflow.flows.cli import app

    app(prog_name="cohortflow")


if __name__ == "__main__":  # pragma: no cover - `python -m cohortflow.cli`
    main()
