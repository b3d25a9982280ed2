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
    "ort_format_model", "ort_format_model.utils", "usability_checker", "executorch",
)


def debug_enabled() -> bool:
    """``EDGEFUSE_DEBUG=1``: keep every third-party message and show tracebacks."""
    return os.environ.get("EDGEFUSE_DEBUG", "") not in ("", "0")


def silence_loggers() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet():
    """Swallow Python-level prints and warnings of third-party tools inside the block.

    With ``EDGEFUSE_DEBUG=1`` nothing is swallowed.
    """
    if debug_enabled():
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


@contextlib.contextmanager
def quiet_native():
    """Also silence native (C++) logging written straight to file descriptors 1 and 2.

    ExecuTorch's runtime logs CPU probing and onnxruntime logs graph clean-ups there; neither is
    useful to a user, and Python-level redirection cannot catch them. ``EDGEFUSE_DEBUG=1`` keeps them.
    """
    if debug_enabled():
        yield
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            except OSError:
                pass
        with quiet():
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
