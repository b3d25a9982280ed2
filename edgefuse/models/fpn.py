"""FPN-style classifier whose top-down merges use a selectable fusion (Lin et al., 2017, "Feature Pyramid
Networks for Object Detection")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgefuse.blocks import create_fusion
from edgefuse.models._layers import ConvBNAct, scaled
from edgefuse.models.registry import register_model


class FusionFPN(nn.Module):
    """Backbone C2..C5 -> lateral 1x1 -> top-down ``fusion(lateral, upsampled)`` -> 3x3 smooth -> pooled head.

    Fixes a common write-up's ``CBAMFPN``: the fusion gets C-channel inputs and its result is what flows
    down (a common write-up computed it and then discarded it), and upsampling targets the lateral's size,
    so odd sizes work (a common write-up's ``scale_factor=2`` broke on them).
    """

    def __init__(
        self,
        num_classes: int,
        fusion: str = "add",
        width: float = 1.0,
        in_chans: int = 1,
        input_size: int = 32,
        fpn_channels: int = 64,
        fusion_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        fusion_kwargs = dict(fusion_kwargs or {})
        chans = [scaled(c, width) for c in (16, 32, 64, 128)]
        out_c = scaled(fpn_channels, width)
        self.stem = ConvBNAct(in_chans, chans[0], 3, 1 if input_size <= 64 else 2)
        stages, cin = [], chans[0]
        for i, c in enumerate(chans):
            stride = 1 if (i == 0 and input_size <= 64) else 2
            stages.append(nn.Sequential(ConvBNAct(cin, c, 3, stride), ConvBNAct(c, c, 3)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_c, 1) for c in chans)
        self.smooth = nn.ModuleList(ConvBNAct(out_c, out_c, 3) for _ in chans)
        self.fusions = nn.ModuleList(create_fusion(fusion, out_c, **fusion_kwargs) for _ in chans[:-1])
        self.head = nn.Linear(out_c * len(chans), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        last = self.lateral[-1](feats[-1])
        pooled = [self.smooth[-1](last).mean(dim=(2, 3))]
        for i in range(len(feats) - 2, -1, -1):
            inner = self.lateral[i](feats[i])
            up = F.interpolate(last, size=inner.shape[-2:], mode="nearest")
            last = self.fusions[i](inner, up)
            pooled.insert(0, self.smooth[i](last).mean(dim=(2, 3)))
        return self.head(torch.cat(pooled, dim=1))


@register_model("fpn", min_input_size=16)
def fpn(num_classes: int, fusion: str = "add", width: float = 1.0, **kwargs) -> nn.Module:
    """FPN-style classifier: a 4-level pyramid whose top-down merges use ``fusion``; pooled levels feed the head."""
    return FusionFPN(num_classes, fusion, width, **kwargs)
