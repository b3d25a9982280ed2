"""Gate activations: the functions that turn attention logits into weights in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from edgefuse.errors import UnknownNameError

#: Gate functions a block can use. ``hard_sigmoid`` (relu6(x + 3) / 6) is the cheap piecewise-linear
#: form mobile runtimes prefer; both map 0 to exactly 0.5, which zero-initialisation relies on.
GATES = ("sigmoid", "hard_sigmoid")


#: Other libraries' modules that are attention gates when a network holds them as modules: ``nn.Sigmoid`` /
#: ``nn.Hardsigmoid`` (torchvision's ``SqueezeExcitation.scale_activation``, hand-written SE/CBAM blocks,
#: timm's ``create_act_layer("sigmoid")``) and timm's own wrappers of the same functions.
FOREIGN_GATE_TYPES: tuple[type, ...] = (nn.Sigmoid, nn.Hardsigmoid)
FOREIGN_GATE_NAMES = frozenset({"HardSigmoid", "HardSigmoidMe", "Sigmoid", "SigmoidMe"})


def is_gate(module: nn.Module) -> bool:
    """Whether ``module`` is an attention gate: an edgefuse :class:`Gate`, or a sigmoid / hard-sigmoid
    module of the user's network (a CNN holds those as modules only to turn attention logits into weights)."""
    return (isinstance(module, (Gate, *FOREIGN_GATE_TYPES))
            or type(module).__name__ in FOREIGN_GATE_NAMES)


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
