"""High-level entry points the CLI calls. Each returns plain data; none prints."""

from __future__ import annotations

from pathlib import Path

from edgefuse.progress import NullProgress, Progress


def gate_log_path(checkpoint: str | Path) -> Path:
    """Where training writes the per-epoch gate statistics of ``checkpoint``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".gates.jsonl")


def train_model(
    *,
    model: str,
    fusion: str,
    data: str,
    out: str | Path,
    epochs: int = 15,
    width: float = 1.0,
    input_size: int = 32,
    channels: int | None = None,
    fusion_kwargs: dict | None = None,
    positions: str = "all",
    batch_size: int = 64,
    lr: float = 3e-3,
    attention_lr_scale: float = 0.2,
    seed: int = 0,
    progress: Progress = NullProgress(),
) -> dict:
    """Train a zoo model on ``data`` and write the checkpoint ``out`` and its gate log.

    Returns:
        A summary: model, fusion, data, accuracies, sample counts, seconds and file paths.
    """
    import torch

    from edgefuse.checkpoint import save_checkpoint
    from edgefuse.data import PreprocessContract, load_data, norm_stats
    from edgefuse.models import create_model
    from edgefuse.training import TrainConfig, train

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, attention_lr_scale=attention_lr_scale, seed=seed)
    extra_kwargs = {"positions": positions} if positions != "all" else {}
    # Fail on a bad name or size before spending time on the data.
    torch.manual_seed(seed)
    create_model(model, 2, fusion=fusion, width=width, in_chans=channels or 1, input_size=input_size,
                 fusion_kwargs=fusion_kwargs or {}, **extra_kwargs)
    splits = load_data(data, seed=seed)
    ch = channels or splits.default_channels
    mean, std = norm_stats(splits.train, ch, input_size)
    contract = PreprocessContract(input_size, ch, mean, std, splits.class_names)
    torch.manual_seed(seed)
    net = create_model(model, len(splits.class_names), fusion=fusion, width=width, in_chans=ch,
                       input_size=input_size, fusion_kwargs=fusion_kwargs or {}, **extra_kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = gate_log_path(out)
    result = train(net, splits, contract, config, log_path=log, progress=progress)
    metrics = {**result.metrics(), "test_samples": len(splits.test), "data": splits.source,
               "data_fingerprint": splits.fingerprint}
    save_checkpoint(out, net, contract, metrics=metrics, extra={"train_config": config.__dict__})
    return {
        "model": model, "fusion": fusion, "data": splits.source,
        "val_top1": result.val_accuracy, "test_top1": result.test_accuracy,
        "test_samples": len(splits.test), "train_seconds": result.seconds,
        "checkpoint": str(out), "gate_log": str(log),
    }


def describe_checkpoint(path: str | Path) -> dict:
    """What ``edgefuse inspect`` shows for a ``model.pt``: model, sizes, MACs, contract, metrics."""
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.training import count_macs, count_params

    loaded = load_checkpoint(path)
    c = loaded.contract
    kwargs = {k: v for k, v in loaded.spec["kwargs"].items() if k != "num_classes"}
    return {
        "model": loaded.spec["name"],
        "arguments": kwargs,
        "classes": list(c.class_names),
        "parameters": count_params(loaded.model),
        "MACs": count_macs(loaded.model, c.input_shape),
        "input": f"{c.input_name}: 1x{c.channels}x{c.input_size}x{c.input_size} {c.layout}, {c.color}",
        "preprocessing": {"resize": c.resize, "scale": round(c.scale, 8), "mean": list(c.mean), "std": list(c.std)},
        "metrics": loaded.metrics,
    }
