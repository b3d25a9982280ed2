"""``edgefuse ablate``."""

from pathlib import Path
from typing import Annotated

import typer

from edgefuse.cli.options import (Data, Epochs, Force, InputSide, Output, Runs, Seed, Threads, Width, ZooModel,
                                  csv_names, option_group, output_options)


@option_group("show", output_options)
def ablate(
    model: ZooModel = "resnet",
    fusions: Annotated[str, typer.Option(help="Comma-separated fusions to compare.")] = "add,concat,se,cbam,effatt",
    positions: Annotated[str, typer.Option(
        help="Comma-separated resnet stages using the fusion: all, early, late.")] = "all",
    data: Data = "digits",
    epochs: Epochs = 8,
    width: Width = 1.0,
    input_size: InputSide = 32,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the variants and ablation.{json,md,html}.")] = (
        Path("ablation")),
    threads: Threads = 1,
    runs: Runs = 100,
    seed: Seed = 0,
    force: Force = False,
    show: Output = None,
) -> None:
    """Is attention fusion worth it over Add/Concat once deployed in int8? Trains every fusion (x position) with
    the same seed and budget, quantizes and exports each, and tabulates parameters, MACs, fp32/int8 accuracy
    and fp32/int8 latency in onnxruntime, with a plot of accuracy against int8 latency."""
    from edgefuse.api import ablate_models
    from edgefuse.cli import render
    from edgefuse.cli._ui import progress_bars

    with progress_bars(show.bars) as progress:
        res = ablate_models(out, model=model, fusions=csv_names(fusions), positions=csv_names(positions), data=data,
                            epochs=epochs, width=width, input_size=input_size, seed=seed, threads=threads, runs=runs,
                            force=force, progress=progress)
    show.emit({k: v for k, v in res.items() if k != "files"}, lambda: render.ablation(res, model, data, epochs, threads))
