"""``edgefuse list``."""

import typer


def list_cmd() -> None:
    """List the zoo models, fusions and gates."""
    from edgefuse.blocks import GATES, list_fusions
    from edgefuse.models import list_models

    typer.echo("models:  " + ", ".join(list_models()))
    typer.echo("fusions: " + ", ".join(list_fusions()))
    typer.echo("gates:   " + ", ".join(GATES))
