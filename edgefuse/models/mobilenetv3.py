"""MobileNetV3-Small-style network: inverted residuals with SE, the classic edge model."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks import SEBlock, create_fusion
from edgefuse.errors import UsageError
from edgefuse.models._layers import ConvBNAct, scaled
from edgefuse.models.registry import register_model

# kernel, expansion channels, output channels, SE, activation, stride (MobileNetV3-Small, Howard et al. 2019)
_SMALL = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
]


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise kxk -> SE -> project 1x1, merged with the input by ``fusion`` when shapes allow."""

    def __init__(self, cin, exp, cout, k, stride, se, act, gate, fusion, fusion_kwargs):
        super().__init__()
        self.expand = ConvBNAct(cin, exp, 1, act=act) if exp != cin else nn.Identity()
        self.dw = ConvBNAct(exp, exp, k, stride, groups=exp, act=act)
        self.se = SEBlock(exp, reduction=4, gate=gate) if se else nn.Identity()
        self.project = ConvBNAct(exp, cout, 1, act=None)
        self.fusion = (
            create_fusion(fusion, cout, **fusion_kwargs) if stride == 1 and cin == cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return out if self.fusion is None else self.fusion(x, out)


class MobileNetV3(nn.Module):
    def __init__(
        self,
        num_classes: int,
        fusion: str = "add",
        width: float = 1.0,
        in_chans: int = 1,
        input_size: int = 32,
        act: str | None = "relu",
        gate: str = "sigmoid",
        fusion_kwargs: dict | None = None,
        dropout: float = 0.2,
        dw_divisor: int = 16,
    ) -> None:
        super().__init__()
        if act not in (None, "relu", "hardswish"):
            raise UsageError(f"mobilenetv3: act must be 'relu', 'hardswish' or None (the paper's per-block "
                             f"ReLU/hard-swish), got {act!r}")
        if int(dw_divisor) < 1:
            raise UsageError(f"mobilenetv3: dw_divisor must be a positive channel multiple, got {dw_divisor!r}")
        fusion_kwargs = dict(fusion_kwargs or {})
        small_input = input_size <= 64
        stem_c = scaled(16, width)
        self.stem = ConvBNAct(in_chans, stem_c, 3, 1 if small_input else 2, act=act or "hardswish")
        blocks, cin = [], stem_c
        for i, (k, exp, cout, se, block_act, stride) in enumerate(_SMALL):
            if small_input and i == 0:
                stride = 1  # keep 32x32 inputs at 4x4 before the head instead of 1x1
            exp_c, out_c = scaled(exp, width, dw_divisor), scaled(cout, width)
            blocks.append(InvertedResidual(cin, exp_c, out_c, k, stride, se, act or block_act, gate,
                                           fusion, fusion_kwargs))
            cin = out_c
        self.blocks = nn.Sequential(*blocks)
        last = scaled(576, width)
        self.last_conv = ConvBNAct(cin, last, 1, act=act or "hardswish")
        hidden = scaled(1024, width)
        self.head = nn.Sequential(
            nn.Linear(last, hidden), nn.Hardswish() if (act or "hardswish") == "hardswish" else nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_conv(self.blocks(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


@register_model("mobilenetv3", min_input_size=16)
def mobilenetv3(num_classes: int, fusion: str = "add", width: float = 1.0, **kwargs) -> nn.Module:
    """MobileNetV3-Small-style network with SE in its inverted residual blocks; ``fusion`` merges the
    residual connections; ``gate`` is the SE gate.

    Two defaults differ from the paper so that int8 pays off (measured with ``benchmarks/int8_speed.py``):
    ``act="relu"`` everywhere (hard-swish has no int8 kernel in onnxruntime, so each one is an fp32 island
    with its Dequantize/Quantize pair — TF's "minimalistic" MobileNetV3 drops hard-swish for the same
    reason; ``act=None`` restores the paper's per-block ReLU/hard-swish), and expansion (depthwise)
    channels rounded to multiples of ``dw_divisor=16`` (onnxruntime's fast int8 depthwise kernel needs a multiple of 16
    channels on x86, of 8 on arm64; fp32 NCHWc kernels pad to 16 anyway, so fp32 pays nothing)."""
    return MobileNetV3(num_classes, fusion, width, **kwargs)
