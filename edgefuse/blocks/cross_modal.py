"""Cross-modal attention: queries from one modality, keys and values from another (Tsai et al., 2019,
"Multimodal Transformer for Unaligned Multimodal Language Sequences")."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import hidden_channels, spatial_attention
from edgefuse.blocks.registry import register_fusion


@register_fusion("cross_modal")
class CrossModalAttention(nn.Module):
    """``x + gamma * attention(q(x), k(y), v(y))``.

    ``y`` may have another channel count (``y_channels``) and another spatial size: attention
    runs between every position of ``x`` and every position of ``y``, so nothing is resized (a
    common write-up's version required equal H x W). ``gamma`` starts at zero, so a fresh block returns ``x``.
    """

    def __init__(self, channels: int, y_channels: int | None = None, reduction: int = 8) -> None:
        super().__init__()
        y_channels = channels if y_channels is None else y_channels
        inner = hidden_channels(channels, reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(y_channels, inner, 1)
        self.value = nn.Conv2d(y_channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * spatial_attention(self.query(x), self.key(y), self.value(y))
