"""CBAM (Woo et al., 2018): channel attention followed by spatial attention."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import (
    global_avg_pool,
    global_max_pool,
    hidden_channels,
    init_merge_projection,
    zero_,
)
from edgefuse.blocks.gates import Gate
from edgefuse.blocks.registry import register_fusion


class ChannelAttention(nn.Module):
    """A shared MLP over the average- and max-pooled descriptors, summed, then gated."""

    def __init__(self, channels: int, reduction: int = 4, gate: str = "sigmoid") -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), zero_(nn.Conv2d(hidden, channels, 1))
        )
        self.gate = Gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(global_avg_pool(x)) + self.mlp(global_max_pool(x))
        return x * self.gate(att)


class SpatialAttention(nn.Module):
    """A k x k conv over the channel-wise mean and max maps, gated."""

    def __init__(self, kernel_size: int = 7, gate: str = "sigmoid") -> None:
        super().__init__()
        self.conv = zero_(nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2))
        self.gate = Gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(desc))


class CBAM(nn.Module):
    """Channel then spatial attention. A fresh block scales its input by exactly 0.25."""

    def __init__(
        self, channels: int, reduction: int = 4, kernel_size: int = 7, gate: str = "sigmoid"
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, gate)
        self.spatial = SpatialAttention(kernel_size, gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


@register_fusion("cbam")
class CBAMFusion(nn.Module):
    """CBAM over ``concat([x, y])`` (sized for 2C channels, a common write-up's FPN bug), projected back to C.

    A fresh block computes exactly ``x + y`` (two gates of 0.5, projection ``[4I, 4I]``).
    """

    def __init__(
        self, channels: int, reduction: int = 4, kernel_size: int = 7, gate: str = "sigmoid"
    ) -> None:
        super().__init__()
        self.cbam = CBAM(2 * channels, reduction, kernel_size, gate)
        self.proj = nn.Conv2d(2 * channels, channels, 1)
        init_merge_projection(self.proj, parts=2, gain=4.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(self.cbam(torch.cat([x, y], dim=1)))
