"""The baselines attention fusion is measured against: element-wise Add and channel Concat."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import init_merge_projection
from edgefuse.blocks.registry import register_fusion


@register_fusion("add")
class AddFusion(nn.Module):
    """``x + y``. No parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


@register_fusion("concat")
class ConcatFusion(nn.Module):
    """Channel concat projected back to ``channels`` by a 1x1 conv, so it is a drop-in for Add.

    A common write-up's concat doubled the channel count, which no Add slot accepts. The projection starts
    as ``[I, I]``, i.e. exactly ``x + y``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * channels, channels, 1)
        init_merge_projection(self.proj, parts=2, gain=1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([x, y], dim=1))
