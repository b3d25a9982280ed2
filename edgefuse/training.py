"""Training with the attention recipe (attention parameters at a lower learning rate), evaluation and the gate monitor."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from edgefuse._layout import run_batch
from edgefuse.blocks import ATTENTION_MODULES
from edgefuse.blocks.gates import is_gate
from edgefuse.data import DataSplits, ImageDataset, PreprocessContract, eval_batch_size
from edgefuse.distributed import EpochShards
from edgefuse.errors import UsageError
from edgefuse.progress import NullProgress, Progress


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak AdamW learning rate of the non-attention parameters.
        attention_lr_scale: attention parameters train at ``lr * attention_lr_scale`` (a common write-up's
            advice: 5-10x lower; default 0.2).
        weight_decay: AdamW decay of conv/linear weights (norms, biases and gammas get none).
        warmup_epochs: linear warm-up before the cosine decay.
        shift: random translation in pixels (augmentation); 0 disables it.
        label_smoothing: cross-entropy label smoothing.
        seed: seeds weights' shuffling and augmentation.
    """

    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    attention_lr_scale: float = 0.2
    weight_decay: float = 0.02
    warmup_epochs: int = 1
    shift: int = 2
    label_smoothing: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"learning rate must be > 0, got {self.lr}")
        if not 0 < self.attention_lr_scale <= 1:
            raise UsageError(f"attention LR scale must be in (0, 1], got {self.attention_lr_scale}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.shift < 0:
            raise UsageError("weight decay, warm-up epochs and shift must be >= 0")


@dataclass
class TrainResult:
    """What :func:`train` returns: final metrics and the per-epoch history."""

    val_accuracy: float
    test_accuracy: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def metrics(self) -> dict:
        return {"val_top1": self.val_accuracy, "test_top1": self.test_accuracy, "train_seconds": round(self.seconds, 1)}


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups: (attention | rest) x (decayed weights | norms, biases, gammas)."""
    attention_ids = {
        id(p) for m in model.modules() if isinstance(m, ATTENTION_MODULES) for p in m.parameters()
    }
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1
        groups.setdefault((id(p) in attention_ids, decay), []).append(p)
    out = []
    for (attn, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": config.lr * (config.attention_lr_scale if attn else 1.0),
            "weight_decay": config.weight_decay if decay else 0.0,
            "name": ("attention" if attn else "base") + ("" if decay else "/no_decay"),
        })
    return out


def _shift(x: torch.Tensor, pixels: int, gen: torch.Generator) -> torch.Tensor:
    if pixels <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * pixels + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pixels + 1, (b,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 class of ``model`` for every ``(input, label)`` pair of ``dataset``, and the labels.

    ``batch_size`` defaults to :func:`edgefuse.data.eval_batch_size` of the dataset.
    """
    batch_size = batch_size or eval_batch_size(dataset)
    was_training = model.training
    model.eval()
    preds, labels = [], []
    channels_last = None
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            out, channels_last = run_batch(model, x, channels_last)  # decided on the first batch (edgefuse._layout)
            preds.append(out.argmax(1).numpy())
            labels.append(np.asarray(y))
    model.train(was_training)
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(preds), np.concatenate(labels)


def evaluate(model: nn.Module, dataset, batch_size: int | None = None) -> float:
    """Top-1 accuracy (0..1) of ``model`` on a dataset of ``(input, label)`` pairs."""
    pred, labels = predict(model, dataset, batch_size)
    return float((pred == labels).mean()) if len(labels) else 0.0


#: A gate output this close to 0 or 1 counts as saturated (int8 gates step by 2/511: near the ends a gate is
#: a hard switch, and brittle).
NEAR_END = 0.02
#: A gate is flagged saturated when at least this share of its outputs is near an end ...
SATURATED_SHARE = 0.9
#: ... and collapsed when its outputs' standard deviation is below this (a constant scale, no attention).
COLLAPSED_STD = 0.01
#: The healthy-gate rule in words, for reports.
GATE_HEALTH = (f"saturated (>= {SATURATED_SHARE:.0%} of outputs within {NEAR_END} of 0 or 1) "
               f"or collapsed (std < {COLLAPSED_STD})")


def _zoom_histogram(v: torch.Tensor, bins: int = 30) -> dict:
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-6:  # a constant gate: one visible bar, centred
        lo, hi = lo - 5e-4, hi + 5e-4
    return {"min": round(lo, 6), "max": round(hi, 6), "counts": [int(c) for c in torch.histc(v, bins, lo, hi)]}


class GateMonitor:
    """Records the outputs of every attention gate in a model while attached (an edgefuse ``Gate``, or
    a user network's ``nn.Sigmoid``/``nn.Hardsigmoid`` gate module, see :func:`edgefuse.blocks.gates.is_gate`):
    mean, std, a 10-bin histogram over [0, 1], the saturated share (as SE and CBAM papers inspect them) and a
    30-bin histogram over the outputs' own range (``zoom``: a gate with std 0.006 is two bars over [0, 1])."""

    def __init__(self, model: nn.Module, max_values: int = 200_000) -> None:
        self.gates = {n: m for n, m in model.named_modules() if is_gate(m)}
        self.max_values = max_values
        self._values: dict[str, list[torch.Tensor]] = {}
        self._handles: list = []

    def __enter__(self) -> "GateMonitor":
        self._values = {n: [] for n in self.gates}
        for name, gate in self.gates.items():
            self._handles.append(gate.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(_m, _inp, out):
            self._values[name].append(out.detach().flatten()[: self.max_values].float())
        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def stats(self) -> dict[str, dict]:
        out = {}
        for name, vals in self._values.items():
            if not vals:
                continue
            v = torch.cat(vals)[: self.max_values]
            hist = torch.histc(v, bins=10, min=0.0, max=1.0)
            out[name] = {
                "mean": round(float(v.mean()), 5),
                "std": round(float(v.std()), 5) if v.numel() > 1 else 0.0,
                "hist": [int(c) for c in hist],
                "saturated": round(float(((v < NEAR_END) | (v > 1 - NEAR_END)).float().mean()), 5),
                "zoom": _zoom_histogram(v),
            }
        return out


def train(
    model: nn.Module,
    data: DataSplits,
    contract: PreprocessContract,
    config: TrainConfig = TrainConfig(),
    *,
    log_path: str | Path | None = None,
    progress: Progress = NullProgress(),
    dist=None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train`` with the attention recipe; return val/test accuracy.

    The recipe: AdamW with attention parameters in their own group at a lower LR, linear warm-up then
    cosine decay, zero-initialised gates (built into the blocks), random-shift augmentation. After
    each epoch the gate outputs on the validation split are summarised; with ``log_path`` they are
    written there as one JSON line per epoch.

    With ``dist`` (an enabled :class:`edgefuse.distributed.DistContext`, i.e. under torchrun) the model
    is wrapped in ``DistributedDataParallel``; a ``DistributedSampler`` gives each rank its share of
    every epoch and each rank takes ``batch_size / world_size`` items per step, so the global batch and
    the learning-rate schedule are those of a single process. Only rank 0 writes the log.
    """
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    train_ds, val_ds = ImageDataset(data.train, contract), ImageDataset(data.val, contract)
    # Preprocess once: the source images are small and fixed; augmentation happens on tensors.
    xs = torch.stack([train_ds[i][0] for i in range(len(train_ds))])
    ys = torch.as_tensor(data.train.labels)
    shards = EpochShards(len(xs), config.batch_size, config.seed, dist)
    if shards.world > 1:
        if config.batch_size < shards.world:
            raise UsageError(f"--batch-size {config.batch_size} is smaller than the {shards.world} processes")
        if dist.rank != 0:
            log_path, progress = None, NullProgress()
    trainee = shards.wrap(model)
    steps_per_epoch = shards.steps
    total = steps_per_epoch * config.epochs
    warm = steps_per_epoch * config.warmup_epochs
    opt = torch.optim.AdamW(param_groups(model, config))
    base_lrs = [g["lr"] for g in opt.param_groups]

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    log = open(log_path, "w") if log_path else None
    history: list[dict] = []
    t0 = time.perf_counter()
    step = 0
    progress.start("train", total)
    try:
        for epoch in range(config.epochs):
            model.train()
            order = shards.order(epoch, gen)
            loss_sum = correct = 0.0
            for b in range(steps_per_epoch):
                idx = shards.step_rows(order, b)
                x, y = _shift(xs[idx], config.shift, gen), ys[idx]
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * lr_factor(step)
                logits = trainee(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += loss.item() * len(y)
                correct += float((logits.argmax(1) == y).sum())
                progress.advance("train", 1, epoch=epoch + 1, loss=loss.item())
            with GateMonitor(model) as mon:
                val_acc = evaluate(model, val_ds)
            rec = {
                "epoch": epoch + 1,
                "train_loss": round(loss_sum / len(order), 5),
                "train_top1": round(correct / len(order), 5),
                "val_top1": round(val_acc, 5),
                "lr": round(base_lrs[0] * lr_factor(step - 1), 7),
                "gates": mon.stats(),
            }
            history.append(rec)
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
    finally:
        progress.finish("train")
        if log:
            log.close()
    model.eval()
    test_acc = evaluate(model, ImageDataset(data.test, contract))
    return TrainResult(history[-1]["val_top1"], test_acc, history, time.perf_counter() - t0)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass (from PyTorch's FLOP counter, which includes attention)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(input_shape))
    model.train(was_training)
    return int(fc.get_total_flops() // 2)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gate_flags(stats: dict[str, dict], saturated: float = SATURATED_SHARE,
               collapsed_std: float = COLLAPSED_STD) -> dict[str, list[str]]:
    """Flag gates from :class:`edgefuse.training.GateMonitor`-style statistics.

    ``saturated``: at least ``saturated`` of the outputs are within :data:`NEAR_END` of 0 or 1 (the gate is a hard
    switch; 8-bit steps of 2/511 near the ends make it brittle). ``collapsed``: the standard deviation is
    below ``collapsed_std`` (the gate is a constant: it does no attention, only a fixed scale).
    """
    flags: dict[str, list[str]] = {}
    for name, s in stats.items():
        f = []
        if s.get("saturated", 0.0) >= saturated:
            f.append(f"saturated: {100 * s['saturated']:.0f}% of outputs within {NEAR_END} of 0 or 1")
        if s.get("std", 1.0) < collapsed_std:
            f.append(f"collapsed: std {s['std']:.4f}, the gate is a constant ~{s.get('mean', float('nan')):.3f}")
        if f:
            flags[name] = f
    return flags
