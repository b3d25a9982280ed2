from __future__ import annotations

from torch import nn

from edgefuse.errors import UnknownNameError, UsageError

ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def make_act(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UnknownNameError(
            f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}"
        ) from None


class ConvBNAct(nn.Sequential):
    """conv -> batch norm -> activation (``act=None`` for none)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)


def scaled(channels: int, width: float, divisor: int = 8) -> int:
    """Channels times the width multiplier, rounded to a multiple of ``divisor`` (never down by >10%)."""
    v = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    if v < 0.9 * channels * width:
        v += divisor
    return v


def positions_mask(n: int, positions: str) -> list[bool]:
    """Which of ``n`` stages use the attention fusion: ``all``, ``early`` (first half) or ``late``."""
    if positions == "all":
        return [True] * n
    if positions == "early":
        return [i < (n + 1) // 2 for i in range(n)]
    if positions == "late":
        return [i >= n // 2 for i in range(n)]

    raise UsageError(f"unknown fusion positions {positions!r}; choose one of: all, early, late")
