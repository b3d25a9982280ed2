"""The runtimes that execute exported files here, behind one protocol (:class:`Runtime`).

``RUNTIMES`` declares them, in one place: which file suffixes each opens. A new runtime is one module with a
class satisfying :class:`Runtime` plus one entry here.
"""

from __future__ import annotations

from pathlib import Path

from edgefuse.errors import InputFileError
from edgefuse.runtimes.base import Runtime
from edgefuse.runtimes.executorch import PteModel
from edgefuse.runtimes.onnxruntime import OrtModel

#: runtime name -> (file suffixes, class). The classes import their native library only when a file is opened.
RUNTIMES: dict[str, tuple[tuple[str, ...], type]] = {
    "onnxruntime": ((".onnx", ".ort"), OrtModel),
    "executorch": ((".pte",), PteModel),
}


def runtime_name(path: str | Path) -> str:
    """The name of the runtime that opens ``path`` (by suffix)."""
    suffix = Path(path).suffix.lower()
    for name, (suffixes, _) in RUNTIMES.items():
        if suffix in suffixes:
            return name
    known = ", ".join(s for suffixes, _ in RUNTIMES.values() for s in suffixes)
    raise InputFileError(f"{path}: unknown model file type {suffix or '(none)'}; expected {known}")


def load_runtime(path: str | Path, threads: int = 1) -> Runtime:
    """Open a model file in its runtime: onnxruntime for ``.onnx``/``.ort``, ExecuTorch for ``.pte``."""
    return RUNTIMES[runtime_name(path)][1](path, threads)


__all__ = ["RUNTIMES", "OrtModel", "PteModel", "Runtime", "load_runtime", "runtime_name"]
