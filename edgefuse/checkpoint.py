"""``model.pt``: a plain-dict checkpoint that loads with ``torch.load(weights_only=True)``.

No pickled code: the model is rebuilt from its registry name and arguments, then the
``state_dict`` is loaded into it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgefuse._files import check_input_file, check_zip_size
from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import CheckpointError, EdgefuseError, one_line
from edgefuse.models import create_model

FORMAT = "edgefuse.checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what travelled with it."""

    model: nn.Module
    contract: PreprocessContract
    spec: dict
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    contract: PreprocessContract,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (built by ``create_model``) and its contract to ``path`` atomically.

    Raises:
        CheckpointError: the model was not built by ``edgefuse.models.create_model``.
    """
    spec = getattr(model, "edgefuse_spec", None)
    if spec is None:
        raise CheckpointError("only models built with edgefuse.models.create_model can be saved as model.pt")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": spec["name"], "kwargs": _plain(spec["kwargs"])},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "contract": contract.to_dict(),
        "metrics": _plain(metrics or {}),
        "extra": _plain(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _plain(obj):
    """Convert to types ``weights_only`` loading accepts (dict, list, str, int, float, bool, None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def read_checkpoint(path: str | Path) -> dict:
    """Load the raw checkpoint dict safely (``weights_only=True``), with one-line errors."""
    path = check_input_file(path)
    check_zip_size(path)  # before torch inflates a member
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path} contains pickled Python objects (e.g. a whole nn.Module); loading it could run "
                "arbitrary code, so it is refused. Save a state_dict checkpoint with `edgefuse train`; export and "
                "analyze accept such a file with --trust-pickle, only if you trust where it came from"
            ) from None
        raise CheckpointError(f"{path} is corrupt or not a PyTorch checkpoint ({_short(e)})") from None
    except Exception as e:  # torch.load raises many types on damaged input (IndexError, EOFError, ...)
        raise CheckpointError(f"{path} is corrupt, truncated or not a PyTorch checkpoint ({_short(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an edgefuse model.pt (no '{FORMAT}' marker); for other models use a "
            ".pt2 torch.export archive, or pass a state_dict file as the model with --factory package.module:function "
            "(a function that builds the network)"
        )
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}; this edgefuse reads up to {FORMAT_VERSION}: upgrade edgefuse"
        )
    for key in ("model", "state_dict", "contract"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks the '{key}' entry; it is damaged")
    return ckpt


def _short(e: BaseException) -> str:
    return one_line(e, 160)


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Rebuild the model of an edgefuse ``model.pt`` and load its weights (eval mode).

    Raises:
        InputFileError, CheckpointError: missing, empty, corrupt, pickled-code, or mismatched file.
    """
    ckpt = read_checkpoint(path)
    spec = ckpt["model"]
    kwargs = dict(spec.get("kwargs", {}))
    try:
        model = create_model(spec["name"], **kwargs)
    except EdgefuseError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    state = ckpt["state_dict"]
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: weight {k} holds NaN or Inf values")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:2]
        raise CheckpointError(
            f"{path}: its state_dict does not match model {spec['name']!r} {kwargs} ({' '.join(first)[:200]})"
        ) from None
    model.eval()
    return LoadedModel(
        model=model,
        contract=PreprocessContract.from_dict(ckpt["contract"]),
        spec={"name": spec["name"], "kwargs": kwargs},
        metrics=dict(ckpt.get("metrics", {})),
        extra=dict(ckpt.get("extra", {})),
    )
