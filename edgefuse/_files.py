from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

from edgefuse.errors import InputFileError

#: Largest model file edgefuse opens (ONNX's protobuf limit; far above any phone model): a guard
#: against feeding a multi-GB file of the wrong kind to a parser.
MAX_MODEL_BYTES = 2 << 30


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a hidden temporary beside it, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def json_ready(v):
    """``v`` with every non-finite float (NaN, an infinite SQNR) replaced by None, recursively: strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_ready(x) for x in v]
    return v


def write_json_atomic(path: str | Path, data) -> Path:
    """Write ``data`` as indented strict JSON (non-finite floats become null), atomically."""
    return write_text_atomic(path, json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n")


def check_input_file(path: str | Path, what: str = "model file", max_bytes: int | None = MAX_MODEL_BYTES) -> Path:
    """Path of an existing, non-empty regular file (within ``max_bytes``), or a one-line InputFileError."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputFileError(f"{path} is a folder, not a {what}")
    size = path.stat().st_size
    if size == 0:
        raise InputFileError(f"{what} {path} is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise InputFileError(f"{what} {path} is {size:,} bytes, over the {max_bytes >> 20} MiB limit: not a model "
                             "edgefuse can load (wrong file?)")
    return path


#: Largest inflated size of a zip-based model file (``model.pt``, ``.pt2``): twice the model-file limit.
MAX_UNCOMPRESSED_BYTES = 4 << 30


def check_zip_size(path: Path, limit: int | None = None) -> None:
    """Refuse a zip archive whose members inflate past ``limit`` (a small file can hold a 4 GiB member),
    from its directory alone, before anything is inflated. Non-zip files pass."""
    limit = MAX_UNCOMPRESSED_BYTES if limit is None else limit
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: the loader reports what it is
    if total > limit:
        raise InputFileError(f"{path} inflates to {total / 2**30:.1f} GiB (limit {limit / 2**30:.0f} GiB); "
                             "refused before inflating it")
