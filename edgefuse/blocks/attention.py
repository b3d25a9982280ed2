"""Self-attention over the concatenated inputs (the non-local form of Wang et al., 2018, "Non-local Neural
Networks", with query/key/value 1x1 convs), sized for the 2C-channel concat."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import hidden_channels, spatial_attention
from edgefuse.blocks.registry import register_fusion


@register_fusion("attention")
class BasicAttentionFusion(nn.Module):
    """Self-attention over the positions of ``concat([x, y])``, added to ``x + y`` through ``gamma``.

    A common write-up's q/k/v convs took ``channels`` inputs but were fed the 2C-channel concat; here they
    take 2C. ``gamma`` starts at zero, so a fresh block is exactly ``x + y``. Memory is O((HW)^2)
    where no fused attention kernel applies: use it on small maps.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = hidden_channels(channels, reduction)
        self.query = nn.Conv2d(2 * channels, inner, 1)
        self.key = nn.Conv2d(2 * channels, inner, 1)
        self.value = nn.Conv2d(2 * channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x, y], dim=1)
        out = spatial_attention(self.query(z), self.key(z), self.value(z))
        return x + y + self.gamma * out
