"""Squeeze-and-Excitation (Hu et al., 2018): channel gates from globally pooled features."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import global_avg_pool, hidden_channels, init_merge_projection, zero_
from edgefuse.blocks.gates import Gate
from edgefuse.blocks.registry import register_fusion


class SEBlock(nn.Module):
    """``x * gate(fc2(relu(fc1(GAP(x)))))``.

    The FC layers are 1x1 convs so the block exports without reshapes. ``fc2`` starts at zero:
    a fresh block scales its input by exactly 0.5 (the gate of 0), uniformly.

    Args:
        channels: input channels.
        reduction: bottleneck ratio of the excitation MLP.
        gate: ``sigmoid`` or ``hard_sigmoid``.
    """

    def __init__(self, channels: int, reduction: int = 4, gate: str = "sigmoid") -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = zero_(nn.Conv2d(hidden, channels, 1))
        self.gate = Gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(global_avg_pool(x)))))


@register_fusion("se")
class SEFusion(nn.Module):
    """SE over ``concat([x, y])``, projected back to ``channels`` by a 1x1 conv.

    A fresh block computes exactly ``x + y`` (gates 0.5, projection ``[2I, 2I]``).
    """

    def __init__(self, channels: int, reduction: int = 4, gate: str = "sigmoid") -> None:
        super().__init__()
        self.se = SEBlock(2 * channels, reduction, gate)
        self.proj = nn.Conv2d(2 * channels, channels, 1)
        init_merge_projection(self.proj, parts=2, gain=2.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(self.se(torch.cat([x, y], dim=1)))
