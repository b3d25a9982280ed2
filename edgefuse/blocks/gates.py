"""Gate activations: the functions that turn attention logits into weights in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.errors import UnknownNameError

#: Gate functions a block can use. ``hard_sigmoid`` (relu6(x + 3) / 6) is the cheap piecewise-linear
#: form mobile runtimes prefer; both map 0 to exactly 0.5, which zero-initialisation relies on.
GATES = ("sigmoid", "hard_sigmoid")


class Gate(nn.Module):
    """An attention gate. Every gate in edgefuse is an instance of this class, so gates can be
    found by type: training logs their output statistics and quantization pins their output
    range to [0, 1] instead of calibrating it.

    Args:
        kind: one of :data:`GATES`.
    """

    def __init__(self, kind: str = "sigmoid") -> None:
        super().__init__()
        if kind not in GATES:
            raise UnknownNameError(f"unknown gate {kind!r}; choose one of: {', '.join(GATES)}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return torch.sigmoid(x)
        return nn.functional.hardsigmoid(x)

    def extra_repr(self) -> str:
        return self.kind
