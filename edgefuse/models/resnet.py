"""ResNet-style classifier whose residual merge is a selectable fusion (He et al., 2016, "Deep Residual
Learning for Image Recognition")."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.blocks import create_fusion
from edgefuse.models._layers import ConvBNAct, positions_mask, scaled
from edgefuse.models.registry import register_model


class FusionBasicBlock(nn.Module):
    """``relu(fusion(shortcut(x), bn2(conv2(relu(bn1(conv1(x)))))))``; with ``add`` it is the classic block."""

    def __init__(self, cin: int, cout: int, stride: int, fusion: str, fusion_kwargs: dict) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, 1, act=None)
        # The branch starts at zero (zero-init residual), so a fresh block passes its shortcut on.
        nn.init.zeros_(self.conv2[1].weight)
        self.shortcut = (
            ConvBNAct(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        )
        self.fusion = create_fusion(fusion, cout, **fusion_kwargs)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fusion(self.shortcut(x), self.conv2(self.conv1(x))))


class FusionResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        fusion: str = "add",
        width: float = 1.0,
        in_chans: int = 1,
        input_size: int = 32,
        depths: tuple[int, ...] = (1, 1, 1, 1),
        positions: str = "all",
        fusion_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        fusion_kwargs = dict(fusion_kwargs or {})
        chans = [scaled(c, width) for c in (16, 32, 64, 128)][: len(depths)]
        # Small inputs (digits, CIFAR) keep full resolution in the stem; large ones stride 4 early.
        stem_stride = 1 if input_size <= 64 else 2
        self.stem = nn.Sequential(
            ConvBNAct(in_chans, chans[0], 3, stem_stride),
            *([ConvBNAct(chans[0], chans[0], 3, 2)] if input_size > 64 else []),
        )
        use = positions_mask(len(depths), positions)
        stages, cin = [], chans[0]
        for i, (depth, cout) in enumerate(zip(depths, chans)):
            name = fusion if use[i] else "add"
            blocks = [
                FusionBasicBlock(cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0 else 1,
                                 name, fusion_kwargs if use[i] else {})
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


@register_model("resnet", min_input_size=16)
def resnet(num_classes: int, fusion: str = "add", width: float = 1.0, **kwargs) -> nn.Module:
    """ResNet-style network (4 stages of basic blocks, widths 16-128 x ``width``) with ``fusion`` as every
    residual merge (``positions``: all, early or late stages)."""
    return FusionResNet(num_classes, fusion, width, **kwargs)
