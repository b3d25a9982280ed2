"""The model registry: ``create_model(name, num_classes, fusion=..., width=..., **kw)`` and ``list_models()``."""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

from edgefuse._registry import Registry
from edgefuse.blocks import list_fusions
from edgefuse.blocks.registry import _FUSIONS
from edgefuse.errors import UsageError

_MODELS: Registry[nn.Module] = Registry("model")
_MIN_INPUT: dict[str, int] = {}


def register_model(name: str, min_input_size: int = 1) -> Callable:
    def deco(fn):
        _MIN_INPUT[name] = min_input_size
        return _MODELS.register(name)(fn)

    return deco


def create_model(name: str, num_classes: int, fusion: str = "add", width: float = 1.0, **kwargs) -> nn.Module:
    """Build a zoo model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of output logits (>= 2).
        fusion: fusion used at the model's merge points (see ``edgefuse.blocks.list_fusions``).
        width: channel multiplier (1.0 = the model's base width).
        **kwargs: ``in_chans`` (default 1), ``input_size`` (default 32; picks the stem stride),
            ``fusion_kwargs`` (e.g. ``{"gate": "hard_sigmoid"}``) and model-specific options.

    Returns:
        The model, with ``edgefuse_spec`` (name and arguments) attached so it can be saved and rebuilt.

    Raises:
        UnknownNameError: unknown model or fusion name.
        UsageError: impossible sizes.
    """
    factory = _MODELS.get(name)
    if int(num_classes) < 2:
        raise UsageError(f"num_classes must be >= 2, got {num_classes}")
    if not width > 0:
        raise UsageError(f"width must be > 0, got {width}")
    size = int(kwargs.get("input_size", 32))
    if size < _MIN_INPUT[name]:
        raise UsageError(
            f"input size {size} is too small for {name!r} (its strides need >= {_MIN_INPUT[name]})"
        )
    if int(kwargs.get("in_chans", 1)) < 1:
        raise UsageError(f"in_chans must be >= 1, got {kwargs.get('in_chans')}")

    if fusion not in list_fusions():
        _FUSIONS.get(fusion)  # raises the standard unknown-name error
    try:
        model = factory(num_classes, fusion=fusion, width=width, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        # an option of another zoo model (e.g. resnet's positions on mobilenetv3): the user's input, not a bug

        opt = re.search(r"argument '(\w+)'", str(e))
        raise UsageError(f"model {name!r} has no option {opt.group(1) if opt else str(e)!r}") from None
    model.edgefuse_spec = {
        "name": name,
        "kwargs": {"num_classes": int(num_classes), "fusion": fusion, "width": float(width), **kwargs},
    }
    return model


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return _MODELS.names()
