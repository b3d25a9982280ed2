"""Dynamic fusion: a per-sample router mixes K fusion experts (as Chen et al., 2020, "Dynamic Convolution:
Attention over Convolution Kernels", mix kernels)."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks._utils import global_avg_pool, zero_
from edgefuse.blocks.registry import create_fusion, register_fusion


@register_fusion("dynamic")
class DynamicFusion(nn.Module):
    """``sum_k softmax(router(GAP(concat[x, y])))_k * expert_k(x, y)``.

    The router sees the 2C-channel concat (a common write-up's ``Linear(channels, ...)`` got 2C inputs).
    It starts at zero, so the mixture starts uniform; since every expert starts as ``x + y``,
    so does the block.

    Args:
        channels: channels of ``x`` and ``y``.
        expert: fusion name used for every expert (a common write-up uses CBAM fusion).
        num_experts: K.
        **expert_kwargs: passed to each expert.
    """

    def __init__(self, channels: int, expert: str = "cbam", num_experts: int = 4, **expert_kwargs) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if expert in ("dynamic", "cross_modal"):
            raise ValueError(f"expert {expert!r} cannot be used inside a dynamic fusion")
        self.experts = nn.ModuleList(
            create_fusion(expert, channels, **expert_kwargs) for _ in range(num_experts)
        )
        self.router = zero_(nn.Conv2d(2 * channels, num_experts, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.router(global_avg_pool(torch.cat([x, y], dim=1)))  # (B, K, 1, 1)
        weights = torch.softmax(logits, dim=1)
        out = weights[:, 0:1] * self.experts[0](x, y)
        for k in range(1, len(self.experts)):
            out = out + weights[:, k : k + 1] * self.experts[k](x, y)
        return out
