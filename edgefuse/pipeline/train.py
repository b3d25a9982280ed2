"""``edgefuse train``: data -> contract -> zoo model -> training -> checkpoint, gate log and training report."""

from __future__ import annotations

from pathlib import Path

import torch

from edgefuse.checkpoint import save_checkpoint
from edgefuse.data import PreprocessContract, load_data, norm_stats
from edgefuse.distributed import joins_process_group
from edgefuse.limits import check_output_dir, check_run_flags
from edgefuse.models import create_model
from edgefuse.progress import NullProgress, Progress
from edgefuse.reports.training import training_report
from edgefuse.training import TrainConfig, train


def gate_log_path(checkpoint: str | Path) -> Path:
    """Where training writes the per-epoch gate statistics of ``checkpoint``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".gates.jsonl")


def check_model_args(model: str, fusion: str, *, width: float = 1.0, channels: int | None = None,
                     input_size: int = 32, fusion_kwargs: dict | None = None, positions: str = "all") -> None:
    """Build the zoo model once (2 classes, thrown away): a bad name, size or option fails before any data
    is read or any time is spent."""
    extra_kwargs = {"positions": positions} if positions != "all" else {}
    create_model(model, 2, fusion=fusion, width=width, in_chans=channels or 1, input_size=input_size,
                 fusion_kwargs=fusion_kwargs or {}, **extra_kwargs)


@joins_process_group
def train_model(
    *,
    model: str,
    fusion: str,
    data: str,
    out: str | Path,
    epochs: int = 15,
    width: float = 1.0,
    input_size: int | tuple[int, int] = 32,
    channels: int | None = None,
    fusion_kwargs: dict | None = None,
    positions: str = "all",
    resize: str = "stretch",
    interpolation: str = "bilinear",
    crop_pct: float = 1.0,
    batch_size: int = 64,
    lr: float = 3e-3,
    attention_lr_scale: float = 0.2,
    seed: int = 0,
    progress: Progress = NullProgress(),
    dist=None,
) -> dict:
    """Train a zoo model on ``data`` and write the checkpoint ``out`` and its gate log.

    Under ``torchrun`` every process trains its share with DistributedDataParallel and rank 0 alone
    writes; ``dist`` is set by the decorator.

    Returns:
        A summary: model, fusion, data, accuracies, sample counts, seconds and file paths.
    """
    check_run_flags(input_size=input_size)
    check_output_dir(Path(out).parent, "the folder of --out")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, attention_lr_scale=attention_lr_scale, seed=seed)
    shape = {"resize": resize, "interpolation": interpolation, "crop_pct": crop_pct}
    PreprocessContract(input_size, channels or 1, [0.0] * (channels or 1), [1.0] * (channels or 1), **shape)  # flags
    side = min(input_size) if isinstance(input_size, (tuple, list)) else input_size  # the zoo's stem stride
    check_model_args(model, fusion, width=width, channels=channels, input_size=side,
                     fusion_kwargs=fusion_kwargs, positions=positions)
    extra_kwargs = {"positions": positions} if positions != "all" else {}
    splits = load_data(data, seed=seed)
    ch = channels or splits.default_channels
    mean, std = norm_stats(splits.train, ch, input_size, **shape)
    contract = PreprocessContract(input_size, ch, mean, std, splits.class_names, **shape)
    torch.manual_seed(seed)
    net = create_model(model, len(splits.class_names), fusion=fusion, width=width, in_chans=ch,
                       input_size=side, fusion_kwargs=fusion_kwargs or {}, **extra_kwargs)
    out = Path(out)
    log = gate_log_path(out)
    if dist.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
    result = train(net, splits, contract, config, log_path=log, progress=progress, dist=dist)
    metrics = {**result.metrics(), "test_samples": len(splits.test), "data": splits.source,
               "data_fingerprint": splits.fingerprint}
    if dist.enabled:
        metrics["world_size"] = dist.world_size
    flags: dict = {}
    report = out.with_name(out.stem + ".train.html")
    if dist.is_main:  # one writer
        save_checkpoint(out, net, contract, metrics=metrics, extra={"train_config": config.__dict__})

        flags = training_report(log, report, f"edgefuse training: {model}/{fusion} on {splits.source}")
    return {
        "model": model, "fusion": fusion, "data": splits.source,
        "val_top1": result.val_accuracy, "test_top1": result.test_accuracy,
        "test_samples": len(splits.test), "train_seconds": result.seconds,
        "checkpoint": str(out), "gate_log": str(log), "report": str(report), "gate_flags": flags,
        "rank": dist.rank, "world_size": dist.world_size,
    }
