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


class _SmallNet(nn.Module):
    def __init__(self, channels: int, classes: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x):
        return self.body(x)


def timm_style():
    """A network carrying a timm ``pretrained_cfg``: its contract is timm's evaluation preprocessing."""
    torch.manual_seed(0)
    model = _SmallNet(3)
    model.pretrained_cfg = {"input_size": (3, 64, 64), "crop_pct": 0.875, "interpolation": "bicubic",
                            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    return model


def ocr_line():
    """A text-line classifier taking 1 x 48 x 192 inputs."""
    torch.manual_seed(0)
    return _SmallNet(1)
