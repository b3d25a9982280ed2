"""The fusion registry: ``create_fusion(name, channels, **kw)`` and ``list_fusions()``."""

from __future__ import annotations

from torch import nn

from edgefuse._registry import Registry

_FUSIONS: Registry[nn.Module] = Registry("fusion")

register_fusion = _FUSIONS.register


def create_fusion(name: str, channels: int, **kwargs) -> nn.Module:
    """Build a fusion module ``fusion(x, y) -> z`` with ``z`` shaped like ``x``.

    Args:
        name: a name from :func:`list_fusions`.
        channels: channel count of ``x`` (and of ``y``, except for ``cross_modal``).
        **kwargs: block options (``reduction``, ``gate``, ...).

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    return _FUSIONS.get(name)(channels, **kwargs)


def list_fusions() -> list[str]:
    """Names accepted by :func:`create_fusion`, sorted."""
    return _FUSIONS.names()
