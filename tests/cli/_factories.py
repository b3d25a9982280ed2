"""Factories for ``--factory tests.cli._factories:NAME`` in the bad-input matrix: networks as users write them,
and the ways a factory can be wrong."""

import torch
from torch import nn


class CumprodNet(nn.Module):
    """Exports to ONNX, but ``aten.cumprod`` is not in the Core ATen opset ExecuTorch lowers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return torch.cumprod(self.conv(x).flatten(1), 1)[:, :10]


def cumprod_net():
    return CumprodNet()


def raising():
    raise RuntimeError("the weights server is down")


def not_a_module():
    return {"conv": 3}


NOT_CALLABLE = 3
