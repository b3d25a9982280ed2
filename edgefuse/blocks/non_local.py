"""Embedded-Gaussian non-local block (Wang et al., 2018)."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import hidden_channels, spatial_attention
from edgefuse.blocks.registry import register_fusion


class NonLocalBlock(nn.Module):
    """``x + gamma * W(attention(theta(x), phi(x), g(x)))`` with ``gamma`` starting at zero (identity)."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = hidden_channels(channels, reduction)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.out(spatial_attention(self.theta(x), self.phi(x), self.g(x)))


@register_fusion("nonlocal")
class NonLocalFusion(nn.Module):
    """A non-local block over ``x + y``: global context on the merged map; fresh, exactly ``x + y``."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.block = NonLocalBlock(channels, reduction)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.block(x + y)
