import typer

app = typer.Typer(help="cohortflow: the cohort study pipeline", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the cohortflow version."""
    from cohortflow import __version__

    typer.echo(__version__)
