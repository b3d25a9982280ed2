"""EfficientAttention: the mobile-friendly gated fusion ``x·a + y·(1−a)``, ``a = σ(MLP(GAP(x + y)))``, of
Dai et al., 2021, "Attentional Feature Fusion" (its global-context branch)."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import global_avg_pool, hidden_channels, zero_
from edgefuse.blocks.gates import Gate
from edgefuse.blocks.registry import register_fusion


@register_fusion("effatt")
class EfficientAttention(nn.Module):
    """``a = gate(MLP(GAP(x + y)))``, ``out = gain * (x*a + y*(1 - a))``.

    The MLP is conv1x1 -> norm -> ReLU -> conv1x1. A common write-up's ``LayerNorm([C/r, 1, 1])`` is
    ``GroupNorm(1, C/r)`` here (the same normalisation, independent of spatial size); ``norm="none"``
    drops it. The weights ``gain*a`` and ``gain*(1 - a)`` are formed on the tiny (B, C, 1, 1) gate
    tensor, so the full-size maps see only two multiplies and one add -- ops with int8 kernels in
    onnxruntime (``y + a*(x - y)`` would put a full-size Sub, which has none, between them).
    The default ``gain=2`` makes a fresh block (a = 0.5) exactly ``x + y``, so it replaces an Add
    without halving the signal in every residual merge; ``gain=1`` gives a common write-up's convex blend.

    Args:
        channels: channels of ``x`` and ``y``.
        reduction: bottleneck ratio of the MLP.
        gate: ``sigmoid`` or ``hard_sigmoid``.
        norm: ``layernorm`` or ``none``.
        gain: output scale (2.0: starts as Add; 1.0: a common write-up's blend, starts as the mean).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 4,
        gate: str = "sigmoid",
        norm: str = "layernorm",
        gain: float = 2.0,
    ) -> None:
        super().__init__()
        if norm not in ("layernorm", "none"):
            raise ValueError(f"norm must be 'layernorm' or 'none', got {norm!r}")
        hidden = hidden_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.norm = nn.GroupNorm(1, hidden) if norm == "layernorm" else nn.Identity()
        self.act = nn.ReLU()
        self.fc2 = zero_(nn.Conv2d(hidden, channels, 1))
        self.gate = Gate(gate)
        self.gain = float(gain)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # GAP(x + y) == GAP(x) + GAP(y): pooling first saves a full-size add.
        a = self.gate(self.fc2(self.act(self.norm(self.fc1(global_avg_pool(x) + global_avg_pool(y))))))
        wx = a * self.gain if self.gain != 1.0 else a
        wy = self.gain - wx
        return x * wx + y * wy
