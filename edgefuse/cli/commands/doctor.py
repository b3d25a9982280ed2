"""``edgefuse doctor``."""

from pathlib import Path
from typing import Annotated

import typer

from edgefuse.cli.options import JsonOut, Threads


def doctor(
    model: Annotated[Path, typer.Argument(help="An .onnx model (int8 or fp32).")],
    threads: Threads = 1,
    runs: Annotated[int, typer.Option(help="Profiled runs.")] = 50,
    top: Annotated[int, typer.Option(help="How many of the costliest findings to list.")] = 12,
    json_out: JsonOut = False,
) -> None:
    """Explain an int8 model's speed: what onnxruntime runs after fusion (int8 ops, fp32 islands, Q/DQ pairs,
    transposes), where the time goes, and which nodes (and source modules) keep int8 from paying off."""
    from edgefuse.cli import render
    from edgefuse.validate.doctor import diagnose

    rep = diagnose(model, threads=threads, runs=runs)
    if json_out:
        render.as_json(rep.to_dict())
    else:
        render.diagnosis(rep, top)
