from __future__ import annotations

import torch
from torch import nn


def hidden_channels(channels: int, reduction: int, minimum: int = 4) -> int:
    """Width of an attention bottleneck: ``channels // reduction`` but never below ``minimum``."""
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels} and {reduction}")
    return max(minimum, channels // reduction)


def zero_(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias: the last layer of an attention branch starts here, so a
    fresh block's gate logits are 0 (gates exactly 0.5) and its residual attention term is 0."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def init_merge_projection(conv: nn.Conv2d, parts: int, gain: float) -> None:
    """Initialise a 1x1 conv over ``parts`` concatenated C-channel tensors as ``gain * [I, I, ...]``.

    With ``gain`` undoing the gates' starting value of 0.5 per gate, a fresh concat-style fusion
    computes exactly ``x + y``: it drops into an Add slot without changing the network.
    """
    out_ch, in_ch = conv.weight.shape[:2]
    if in_ch != parts * out_ch or conv.kernel_size != (1, 1):
        raise ValueError("merge projection must be a 1x1 conv from parts*C to C channels")
    with torch.no_grad():
        eye = torch.eye(out_ch) * gain
        conv.weight.copy_(torch.cat([eye] * parts, dim=1)[:, :, None, None])
        if conv.bias is not None:
            conv.bias.zero_()


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(2, 3), keepdim=True)


def spatial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention between spatial positions.

    ``q``: (B, d, Hq, Wq); ``k``: (B, d, Hk, Wk); ``v``: (B, c, Hk, Wk) -> (B, c, Hq, Wq). Queries
    and keys may come from maps of different sizes. Uses ``F.scaled_dot_product_attention`` so
    the (HqWq x HkWk) matrix is never materialised where a fused kernel exists.
    """
    b, _, hq, wq = q.shape
    # One head: (B, 1, positions, channels); the ONNX exporter only lowers 4-D attention.
    qs = q.flatten(2).transpose(1, 2).unsqueeze(1)
    ks = k.flatten(2).transpose(1, 2).unsqueeze(1)
    vs = v.flatten(2).transpose(1, 2).unsqueeze(1)
    out = nn.functional.scaled_dot_product_attention(qs, ks, vs)
    return out.squeeze(1).transpose(1, 2).reshape(b, v.shape[1], hq, wq)
