"""A deliberately fragile layer for sensitivity and fallback tests (importable, so a pickled model loads)."""

import copy

import torch
from torch import nn


class Fragile(nn.Module):
    """``conv(x)`` computed as ``conv'(x + offset)`` (1x1 convs only, so padding cannot tell): exact in fp32,
    but the int8 step of ``conv'``'s input is set by the offset, not by the signal riding on it."""

    def __init__(self, conv: nn.Conv2d, offset: float = 300.0) -> None:
        super().__init__()
        assert conv.kernel_size == (1, 1)
        c = conv.in_channels
        self.shift = nn.Conv2d(c, c, 1)
        self.conv = copy.deepcopy(conv)
        with torch.no_grad():
            self.shift.weight.copy_(torch.eye(c)[:, :, None, None])
            self.shift.bias.fill_(offset)
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
            self.conv.bias = nn.Parameter(bias - offset * conv.weight.sum((1, 2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.shift(x))


#: Where :func:`make_fragile` puts the fragile conv in the zoo's resnet, and the unit analysis names.
FRAGILE_UNIT = "stages.2.0.shortcut.0.conv"


def make_fragile(model: nn.Module) -> nn.Module:
    """A copy of a zoo resnet with its stage-2 shortcut conv made fragile (same fp32 function)."""
    model = copy.deepcopy(model).eval()
    seq = model.stages[2][0].shortcut
    seq[0] = Fragile(seq[0])
    return model
