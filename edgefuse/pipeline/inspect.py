"""``edgefuse inspect``: what a file holds, read without executing anything in it.

Checkpoints are described here; every export format describes its own files (``Format.describe``).
"""

from __future__ import annotations

from pathlib import Path

from edgefuse._files import check_input_file
from edgefuse._versions import sha256_file
from edgefuse.checkpoint import load_checkpoint
from edgefuse.errors import InputFileError
from edgefuse.export.formats import format_names, format_of_file, get_format
from edgefuse.export.formats.torchscript import is_torchscript
from edgefuse.training import count_macs, count_params


def describe_checkpoint(path: str | Path) -> dict:
    """What ``edgefuse inspect`` shows for a ``model.pt``: model, sizes, MACs, contract, metrics."""
    loaded = load_checkpoint(path)
    c = loaded.contract
    kwargs = {k: v for k, v in loaded.spec["kwargs"].items() if k != "num_classes"}
    return {
        "model": loaded.spec["name"],
        "arguments": kwargs,
        "parameters": count_params(loaded.model),
        "MACs": count_macs(loaded.model, c.input_shape),
        **c.summary(),
        "metrics": loaded.metrics,
    }


def describe_artifact(path: str | Path) -> dict:
    """What ``edgefuse inspect`` shows for any file edgefuse reads or writes.

    ``model.pt`` checkpoints (model, parameters, MACs, contract, metrics); ``.onnx`` and ``.ort``
    (contract from ``metadata_props``, shapes, precision, op mix); ``.pte`` (contract from the JSON
    sidecar, shapes from ExecuTorch's runtime when installed); TorchScript files (size, hash, no
    code is loaded). Nothing in the file is executed.

    Raises:
        InputFileError: missing, empty, corrupt or unknown file.
    """

    p = check_input_file(path)
    base = {"file": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
    if p.suffix.lower() in (".pt", ".pth"):  # a checkpoint, or TorchScript under the same suffix
        if is_torchscript(p):
            return {**get_format("torchscript").describe(p), **base}
        return {"format": "edgefuse checkpoint", **describe_checkpoint(p), **base}
    fmt = format_of_file(p)
    if fmt is None or fmt.describe is None:
        readable = [s for n in format_names() if get_format(n).describe for s in get_format(n).suffixes]
        raise InputFileError(f"{p}: unknown file type {p.suffix or '(none)'}; inspect reads model.pt and "
                             f"{', '.join(readable)} files")
    return {**fmt.describe(p), **base}
