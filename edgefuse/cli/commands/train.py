"""``edgefuse train``."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefuse.cli.options import (Data, Epochs, Force, Output, Seed, Width, ZooModel, input_size_of, option_group,
                                  output_options)


@option_group("show", output_options)
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (a gate log goes beside it).")] = Path(
        "model.pt"),
    model: ZooModel = "resnet",
    fusion: Annotated[str, typer.Option(help="Fusion at the model's merge points: see `edgefuse list`.")] = "effatt",
    data: Data = "digits",
    epochs: Epochs = 15,
    width: Width = 1.0,
    input_size: Annotated[str, typer.Option(
        help="Input size in pixels: 32, or HEIGHTxWIDTH (48x192) for non-square inputs.")] = "32",
    resize: Annotated[str, typer.Option(
        help="How images reach the input size: stretch, shorter-side (keep aspect, centre-crop) or letterbox.")
    ] = "stretch",
    interpolation: Annotated[str, typer.Option(help="Pillow filter: nearest, bilinear or bicubic.")] = "bilinear",
    crop_pct: Annotated[float, typer.Option(help="shorter-side only: share kept by the centre crop.")] = 1.0,
    channels: Annotated[Optional[int], typer.Option(help="1 (grey) or 3 (RGB); default: what the data holds.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Gate of the attention blocks: sigmoid or hard_sigmoid.")] = None,
    positions: Annotated[str, typer.Option(help="resnet only: stages that use the fusion (all, early, late).")] = "all",
    batch_size: Annotated[int, typer.Option(min=1, help="Global batch size.")] = 64,
    lr: Annotated[float, typer.Option(
        help="Peak learning rate; attention parameters get lr x --attention-lr-scale.")] = 3e-3,
    attention_lr_scale: Annotated[float, typer.Option(
        help="LR multiplier of the attention parameters (lower than the rest: a freshly initialised gate otherwise "
             "swings the features it scales).")] = 0.2,
    seed: Seed = 0,
    force: Force = False,
    show: Output = None,
) -> None:
    """Train a zoo model on labelled images and save model.pt (weights + preprocessing contract).

    Data-parallel on N processes (gloo on CPU, nccl on GPU) with PyTorch's launcher:
    `torchrun --nproc_per_node N --no-python edgefuse train ...` (multi-node: add --nnodes, --node_rank,
    --rdzv_endpoint). --batch-size stays the global batch; only rank 0 writes and prints."""
    from edgefuse.api import train_model
    from edgefuse.cli import render
    from edgefuse.cli._ui import progress_bars
    from edgefuse.distributed import env_rank
    from edgefuse.errors import UsageError

    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    show = show.for_rank(env_rank())
    with progress_bars(show.bars) as progress:
        res = train_model(
            model=model, fusion=fusion, data=data, out=out, epochs=epochs, width=width,
            input_size=input_size_of(input_size), resize=resize, interpolation=interpolation, crop_pct=crop_pct,
            channels=channels, fusion_kwargs={"gate": gate} if gate else {}, positions=positions,
            batch_size=batch_size, lr=lr, attention_lr_scale=attention_lr_scale, seed=seed, progress=progress)
    show.emit(res, lambda: render.training(res))
