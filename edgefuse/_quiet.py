"""Silence the chatter of torch.export, the ONNX exporter and torchao (users asked for results, not logs)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

_NOISY_LOGGERS = (
    "torchao", "torch.onnx", "torch.export", "torch._export", "torch.utils._pytree", "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes", "onnxscript", "torch._subclasses",
)


def silence_loggers() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet():
    """Swallow Python-level prints and warnings of third-party tools inside the block.

    With ``EDGEFUSE_DEBUG=1`` nothing is swallowed.
    """
    if os.environ.get("EDGEFUSE_DEBUG", "") not in ("", "0"):
        yield
        return
    silence_loggers()
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def import_pt2e():
    """Import torchao's PT2E module without its CUDA-library warnings (harmless on CPU builds)."""
    silence_loggers()
    with quiet():
        import torchao.quantization.pt2e.quantize_pt2e as q  # noqa: F401
    return q
