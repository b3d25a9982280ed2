"""Check a ``torch.export`` archive (``.pt2``) for code before ``torch.export.load`` unpickles any of it.

``torch.export.load`` unpickles parts of an archive with ``weights_only=False``: weights and constants
its configs mark ``use_pickle``, the sample inputs (after a failed ``weights_only`` attempt), and
custom/opaque objects (plain pickles). A pickle can run any code while it loads, so a ``.pt2`` could
execute a payload with no flag at all. This audit reads the archive as a zip first: every pickled
member must load with PyTorch's own allow-list unpickler (``torch.load(weights_only=True)``, which
refuses a disallowed global without calling it); custom and opaque objects, which only a full pickle
can load, are refused outright. ``trust_pickle`` skips the audit. Members' inflated sizes are checked
before anything is read (a small archive can hold a 4 GiB member).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from edgefuse._files import MAX_UNCOMPRESSED_BYTES, check_zip_size
from edgefuse.errors import CheckpointError, one_line

_PICKLE_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")


def _refuse(path: Path, member: str, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: {member} {why}; it could run code while loading, so it is refused "
                           "(pass --trust-pickle only if you trust where the file came from)")


def audit_pt2(path: str | Path, *, trust_pickle: bool = False) -> None:
    """Raise :class:`CheckpointError` unless ``path`` can be loaded by ``torch.export.load`` without running code.

    Raises:
        CheckpointError: not a zip archive, an oversized member, or a pickle that is not weights-only.
    """
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is corrupt or not a torch.export archive ({e})") from None
    with z:
        infos = z.infolist()
        check_zip_size(path, MAX_UNCOMPRESSED_BYTES)
        if trust_pickle:
            return
        names = {i.filename for i in infos}
        pickled: list[str] = []
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.startswith(_PICKLE_OBJECT_PREFIXES) and "/data/constants/" in f"/{name}":
                raise _refuse(path, name, "is a pickled Python object (a custom or opaque constant)")
            if "/data/sample_inputs/" in f"/{name}":
                pickled.append(name)
            if base in ("model_weights_config.json", "model_constants_config.json") or (
                    base.endswith("_config.json") and ("/data/weights/" in f"/{name}" or "/data/constants/" in f"/{name}")):
                try:
                    config = json.loads(z.read(name)).get("config", {})
                    folder = name.rsplit("/", 1)[0]
                    pickled += [f"{folder}/{meta['path_name']}" for meta in config.values()
                                if isinstance(meta, dict) and meta.get("use_pickle")]
                except (ValueError, AttributeError, KeyError, TypeError):
                    raise CheckpointError(f"{path}: {name} is not a readable payload config") from None
        for name in pickled:
            if name not in names:
                continue  # torch.export.load reports missing members itself
            try:
                torch.load(io.BytesIO(z.read(name)), map_location="cpu", weights_only=True)
            except Exception as e:  # any failure means torch would fall back to (or use) a full unpickle
                raise _refuse(path, name, f"is not a weights-only pickle ({one_line(e, 120)})") from None
