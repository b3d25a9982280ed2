"""Optional dependencies (``pip install 'edgefuse[extra]'``): one check per extra, one-line errors."""

from __future__ import annotations

from edgefuse.errors import MissingExtraError


def require_executorch() -> None:
    """Raise a one-line :class:`~edgefuse.errors.MissingExtraError` when ExecuTorch is not installed."""
    try:
        import executorch  # noqa: F401
        from executorch.backends.xnnpack.quantizer import xnnpack_quantizer  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "the pte format needs ExecuTorch, an optional extra: pip install 'edgefuse[executorch]'"
        ) from None
