"""The memory layout PyTorch evaluates image batches in (its CPU convolutions are faster channels-last).

Evaluating a 13-image batch at 224x224 (2 cores, AMD EPYC), channels-last (NHWC) against the default NCHW:
torchvision MobileNetV3-small 1.89x, -large 1.45x, EfficientNet-B0 1.20x; timm EfficientNet-B0 1.64x,
MobileNetV3-large 1.57x, ECA-/SE-/CBAM-ResNet-18 1.89x / 1.27x / 1.20x; a hand-written SE+CBAM net 0.86x.
At 64x64 the ResNets are 0.6x, and a one-channel image is the same memory either way: so the layout is
chosen by a fixed rule on the input (not by timing, which would make calibration, and so the files, vary
from run to run), and only for a model that runs in it.
"""

from __future__ import annotations

import torch

#: Channels-last from this many pixels per image (and 3 or more channels) up.
CHANNELS_LAST_MIN_PIXELS = 128 * 128


def prefers_channels_last(x: torch.Tensor) -> bool:
    """Whether a batch ``x`` is evaluated channels-last (see the module docstring)."""
    return x.ndim == 4 and x.shape[1] >= 3 and x.shape[2] * x.shape[3] >= CHANNELS_LAST_MIN_PIXELS


def run_first_batch(model, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``model``'s output on ``x``, channels-last when the rule says so and ``model`` accepts such a batch (a
    hand-written ``x.view(b, -1)`` of a feature map does not), and whether it was: the layout for the batches
    that follow. ``model`` must be stateless (not an observer-laden calibration graph)."""
    with torch.no_grad():
        if prefers_channels_last(x):
            try:
                return model(x.contiguous(memory_format=torch.channels_last)), True
            except Exception:
                pass
        return model(x), False


def run_batch(model, x: torch.Tensor, channels_last: bool | None) -> tuple[torch.Tensor, bool]:
    """``model``'s output on one batch of an evaluation: the first (``channels_last`` None) as
    :func:`run_first_batch` decides, the others in the layout it chose; returns that layout."""
    if channels_last is None:
        return run_first_batch(model, x)
    return model(in_layout(x, channels_last)), channels_last


def runs_channels_last(model, x: torch.Tensor) -> bool:
    """Whether ``model`` should get ``x``-like batches channels-last (runs it on ``x`` when the rule says so)."""
    return prefers_channels_last(x) and run_first_batch(model, x)[1]


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` channels-last, or as it is."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def dense_view(x: torch.Tensor) -> torch.Tensor:
    """``x``'s elements as a contiguous tensor without copying when ``x`` is channels-last (a permuted view):
    for what does not depend on the order of elements (min/max, histograms)."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)
    return x
