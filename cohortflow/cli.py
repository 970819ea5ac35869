"""Command-line entry point (filled in by flows.cli)."""


def main() -> None:
    from cohortflow.flows.cli import app

    app()
