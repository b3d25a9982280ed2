"""``edgefuse inspect``."""

from pathlib import Path
from typing import Annotated

import typer

from edgefuse.cli.options import JsonOut


def inspect(
    path: Annotated[Path, typer.Argument(help="model.pt, .onnx, .ort, .pte (with its .json sidecar) or TorchScript "
                                              "file.")],
    json_out: JsonOut = False,
) -> None:
    """Show what a model file holds and the preprocessing contract an app needs: input name, shape, layout,
    channel order, scale, mean/std, class labels; for checkpoints also parameters, MACs and metrics.
    Nothing in the file is executed."""
    from edgefuse.api import describe_artifact
    from edgefuse.cli import render

    info = describe_artifact(path)
    if json_out:
        render.as_json(info)
    else:
        render.key_values(str(path), info)
