"""Where a model comes from: an edgefuse ``model.pt``, a ``torch.export`` archive (``.pt2``), a state_dict
with the factory that builds its network, or (only when asked) a whole pickled ``nn.Module`` -- each with the
preprocessing contract it must be fed with."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils._sympy.numbers import int_oo

from edgefuse._files import check_input_file, check_zip_size
from edgefuse._quiet import quiet
from edgefuse.checkpoint import _short, load_checkpoint
from edgefuse.data import PreprocessContract
from edgefuse.errors import CheckpointError, UsageError
from edgefuse.limits import MAX_BATCH
from edgefuse.pt2_audit import audit_pt2
from edgefuse.quantize.pt2e import allow_train_eval


def contract_from_flags(base, input_size=None, channels=None, mean=None, std=None, class_names=None, *,
                        resize=None, crop_pct=None, interpolation=None):
    """The contract for a model from ``--input-size/--channels/--mean/--std/--resize/--crop-pct/
    --interpolation`` over ``base`` (or none). ``input_size`` is a side or ``(height, width)``."""
    if base is None and (input_size is None or channels is None):
        raise UsageError("this model carries no preprocessing contract: pass --input-size and --channels "
                         "(and --mean/--std if it was trained with normalisation)")
    d = base.to_dict() if base is not None else {"input_size": input_size, "channels": channels,
                                                  "mean": [0.0] * channels, "std": [1.0] * channels,
                                                  "version": 2}
    if input_size is not None:
        d["input_size"] = list(input_size) if isinstance(input_size, (tuple, list)) else input_size
    for key, v in (("resize", resize), ("crop_pct", crop_pct), ("interpolation", interpolation)):
        if v is not None:
            d[key] = v
    if channels is not None:
        d["channels"] = channels
        if mean is None and base is not None and len(base.mean) != channels:
            d["mean"], d["std"] = [0.0] * channels, [1.0] * channels
    if mean is not None:
        d["mean"] = list(mean) if len(mean) > 1 else list(mean) * d["channels"]
    if std is not None:
        d["std"] = list(std) if len(std) > 1 else list(std) * d["channels"]
    if class_names:
        d["class_names"] = list(class_names)
    return PreprocessContract.from_dict(d)


#: timm's pretrained_cfg interpolation names -> Pillow's (timm evaluates with PIL's filters).
_TIMM_INTERPOLATION = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "random": "bilinear"}


def timm_contract_flags(model: nn.Module) -> dict:
    """Contract flags from a timm model's ``pretrained_cfg`` (input size, mean, std, crop_pct,
    interpolation: how timm evaluates it, shorter side + centre crop); {} for any other model."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, dict) or "input_size" not in cfg:
        return {}
    try:
        c, h, w = (int(v) for v in cfg["input_size"])
        flags = {"input_size": h if h == w else (h, w), "channels": c, "resize": "shorter-side",
                 "crop_pct": float(cfg.get("crop_pct") or 1.0),
                 "interpolation": _TIMM_INTERPOLATION.get(str(cfg.get("interpolation", "bilinear")), "bilinear")}
        if cfg.get("mean") is not None:
            flags["mean"] = [float(v) for v in cfg["mean"]]
        if cfg.get("std") is not None:
            flags["std"] = [float(v) for v in cfg["std"]]
    except (TypeError, ValueError):
        return {}
    return flags


def _check_pt2_batch_range(path: Path, program, batch) -> None:
    """Refuse a ``.pt2`` whose declared batch range does not cover what edgefuse runs: batch 1 (mobile
    files, latency) up to :data:`edgefuse.limits.MAX_BATCH` (the symbolic batch it traces with)."""
    rng = program.range_constraints.get(batch.node.expr)
    if rng is None:
        return
    lo, hi = int(rng.lower), (None if rng.upper == int_oo else int(rng.upper))
    if lo > 1 or (hi is not None and hi < MAX_BATCH):
        declared = f"{lo}..{hi if hi is not None else 'any'}"
        raise UsageError(
            f"{path} accepts batch sizes {declared} only (a bounded torch.export Dim); edgefuse runs batch 1 for "
            f"mobile files and latency and traces batches up to {MAX_BATCH}: re-export with "
            "dynamic_shapes=({0: torch.export.Dim('batch')},) (no min/max)")


def _import_factory(factory: str):
    """Import ``package.module:function``, looking in the current folder first (as uvicorn/gunicorn do for
    an app path): a user's model code usually sits beside their weights, not in an installed package."""
    mod_name, _, fn_name = factory.partition(":")
    if not mod_name or not fn_name:
        raise UsageError(f"--factory must look like package.module:function, got {factory!r}")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(
            f"cannot import factory {factory}: {e}; edgefuse imports it from the current folder ({cwd}) and the "
            f"installed packages: run edgefuse from the folder holding {mod_name.split('.')[0]}/ or "
            f"{mod_name.split('.')[0]}.py, or add that folder to PYTHONPATH") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"cannot import factory {factory}: {mod_name} has no function {fn_name!r}")
    return fn


def _loads_weights_only(path: Path) -> bool:
    """Whether ``path`` unpickles with ``weights_only=True`` (then ``--trust-pickle`` is not needed for it)."""
    check_zip_size(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def load_model_source(
    source: str | Path,
    *,
    factory: str | None = None,
    input_size: int | None = None,
    channels: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    trust_pickle: bool = False,
    resize: str | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
):
    """Load a model to quantize/export: an edgefuse ``model.pt``, a ``torch.export`` archive (``.pt2``),
    or ``factory="package.module:function"`` called with no arguments plus ``source`` as its
    state_dict (loaded ``weights_only``). Returns ``(module, contract, info)``.

    Only two forms execute code from outside edgefuse, and only because the user asked: the factory
    the user named, and ``trust_pickle=True``, which unpickles a whole ``nn.Module`` or a ``.pt2`` whose
    pickled members are not weights-only (pickles can run arbitrary code while loading; without the flag
    such files are refused before anything runs, see :mod:`edgefuse.pt2_audit`).

    A factory's timm model (one with a ``pretrained_cfg``) brings its own contract -- timm's evaluation
    preprocessing -- which the flags override one by one.
    """
    path = check_input_file(source)
    info = {"source": str(path)}
    shape = {"resize": resize, "crop_pct": crop_pct, "interpolation": interpolation}
    if factory:
        # The contract flags are checked before any of the user's code runs (all of them when they are
        # complete; a timm model may fill the missing ones from its pretrained_cfg).
        contract = None
        if input_size is not None and channels is not None:
            contract = contract_from_flags(None, input_size, channels, mean, std, None, **shape)
        else:  # the values given are checked now; a timm model may bring the rest (else: refused after it)
            ch = channels or len(mean or std or [0])
            contract_from_flags(None, input_size or 1, ch, mean, std, None, **shape)
        fn = _import_factory(factory)
        try:
            model = fn()
        except Exception as e:  # the user's code: its failure is input to report, not an internal error
            raise UsageError(f"--factory {factory}() raised {type(e).__name__}: {_short(e)}") from None
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"--factory {factory}() returned a {type(model).__name__}, not an nn.Module")
        timm_flags = timm_contract_flags(model)
        if timm_flags:
            given = {"input_size": input_size, "channels": channels, "mean": mean, "std": std, **shape}
            merged = {**timm_flags, **{k: v for k, v in given.items() if v is not None}}
            contract = contract_from_flags(None, merged.pop("input_size"), merged.pop("channels"),
                                           merged.pop("mean", None), merged.pop("std", None), None, **merged)
            info["contract_from"] = "timm pretrained_cfg" + (" (flags override)" if any(
                v is not None for v in given.values()) else "")
        elif contract is None:
            contract_from_flags(None, input_size, channels, mean, std, None, **shape)  # raises: what is missing

        check_zip_size(path)  # before torch inflates a member
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path} is not a weights-only state_dict ({_short(e)})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except Exception as e:
            raise CheckpointError(f"{path}: state_dict does not match {factory}() ({_short(e)})") from None
        info["factory"] = factory
        return model.eval(), contract, info
    if path.suffix == ".pt2":
        contract = contract_from_flags(None, input_size, channels, mean, std, None, **shape)

        audit_pt2(path, trust_pickle=trust_pickle)  # before torch unpickles anything in it
        try:
            with quiet():
                program = torch.export.load(str(path))
        except Exception as e:
            raise CheckpointError(f"{path} is corrupt or not a torch.export archive ({_short(e)})") from None
        info["format"] = "pt2"
        user_inputs = [n for n in program.graph.nodes if n.op == "placeholder"
                       and n.name in program.graph_signature.user_inputs]
        val = user_inputs[0].meta.get("val") if user_inputs else None
        if val is not None and not isinstance(val.shape[0], torch.SymInt):
            raise UsageError(
                f"{path} was exported with a fixed batch size of {val.shape[0]}; calibration and evaluation run "
                "batches, so re-export it with dynamic_shapes=({0: torch.export.Dim('batch')},)"
            )
        if val is not None:
            _check_pt2_batch_range(path, program, val.shape[0])

        # An exported program's module refuses .eval(); this switches its dropout/batch-norm ops.
        module = allow_train_eval(program.module())
        return module, contract, info
    if trust_pickle and not _loads_weights_only(path):

        # A pickle needs --input-size/--channels: say so before the user's pickle runs.
        contract = contract_from_flags(None, input_size, channels, mean, std, None, **shape)
        try:
            # The user vouched for this file: a full pickle may run code while it loads.
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{path} is corrupt or not a PyTorch file ({_short(e)})") from None
        if isinstance(obj, nn.Module):
            info.update({"format": "pickled nn.Module (--trust-pickle)", "trust_pickle": True})
            return obj.eval(), contract, info
        if not (isinstance(obj, dict) and obj.get("format") == "edgefuse.checkpoint"):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not an nn.Module or an edgefuse model.pt")
    loaded = load_checkpoint(path)
    info.update({"format": "edgefuse.checkpoint", "model": loaded.spec, "metrics": loaded.metrics})
    contract = loaded.contract
    if any(v is not None for v in (input_size, channels, mean, std, *shape.values())):
        wanted = contract_from_flags(contract, input_size, channels, mean, std, None, **shape)
        if wanted != contract:
            # Calibrating or evaluating with other preprocessing than training's is the classic silent
            # int8 bug; the checkpoint's contract is authoritative.
            raise UsageError(
                f"{path} carries its preprocessing contract ({contract.height}x{contract.width}, "
                f"{contract.channels} channel(s), {contract.resize} {contract.interpolation}, mean "
                f"{list(contract.mean)}, std {list(contract.std)}); the contract flags may not change it (they "
                "describe .pt2 and --factory models)"
            )
    return loaded.model, contract, info
