from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path


def versions() -> dict[str, str]:
    """Versions of the packages that shape an artifact's bytes and numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("edgefuse", "torch", "torchao", "onnx", "onnxruntime", "onnxscript", "onnxsim", "numpy", "executorch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
