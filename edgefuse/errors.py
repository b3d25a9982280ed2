"""Typed errors. Library code raises these; only ``edgefuse.cli`` turns them into exit codes."""

from __future__ import annotations


class EdgefuseError(Exception):
    """Base class of every error edgefuse raises on purpose.

    ``exit_code`` is what the command line exits with: 2 for bad input or usage, 1 for a gate that
    failed (the input was fine, the model was not).
    """

    exit_code = 2


class UsageError(EdgefuseError, ValueError):
    """An argument is invalid: unknown name, impossible value, conflicting options."""


class UnknownNameError(UsageError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingExtraError(UsageError):
    """A feature needs an optional dependency (``pip install 'edgefuse[extra]'``) that is not installed."""


class InputFileError(EdgefuseError, OSError):
    """A file or folder given as input is missing, empty, corrupt or of the wrong kind."""


class DataError(EdgefuseError, ValueError):
    """Data set content is unusable (no images, one class, wrong shapes, NaN...)."""


class CheckpointError(InputFileError):
    """A model checkpoint cannot be loaded safely or does not match its model."""


class ExportError(EdgefuseError, RuntimeError):
    """An artifact could not be produced or failed its post-export checks."""

    exit_code = 1


class UnsupportedModelError(ExportError):
    """A converter (ONNX exporter, ExecuTorch lowering, ORT conversion, TorchScript) cannot express this model.

    Exit 2, like other input the tool cannot take: nothing was produced, so there is nothing to gate.
    """

    exit_code = 2


class VerifyFailed(EdgefuseError):
    """Files in an artifact folder do not match its manifest (changed, truncated or missing)."""

    exit_code = 1


class GateFailed(EdgefuseError):
    """A validation budget (accuracy drop, latency ratio) was exceeded."""

    exit_code = 1


def one_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (the next one too when the first ends with ':', as in
    "operators with mismatched dtypes:"), or its type name when it has none."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    text = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return text[:limit]
