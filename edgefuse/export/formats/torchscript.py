"""``torchscript``: traced TorchScript for server-side PyTorch (not a mobile format any more)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from edgefuse._quiet import quiet
from edgefuse.errors import ExportError, UnsupportedModelError, one_line
from edgefuse.export.formats.base import Artifact, BuildContext, Format


def _trace(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))  # our own file, just written
        got, ref = loaded(example), module(example)
    if not torch.allclose(got, ref, atol=1e-3, rtol=1e-3):
        raise ExportError(f"{path.name}: TorchScript output differs from PyTorch by {float((got - ref).abs().max()):.3g}")


def build(ctx: BuildContext) -> list[Artifact]:
    arts = []
    for precision, module in ctx.variants:
        name = f"model.{precision}.torchscript.pt"
        try:
            _trace(module, ctx.example, ctx.folder / name)
            arts.append(Artifact(name, "torchscript", precision,
                                 details={"note": "server-side PyTorch only; not a mobile format"}))
        except Exception as e:
            if precision == "fp32":  # the int8 file is optional: a server-side extra
                if isinstance(e, ExportError):
                    raise
                raise UnsupportedModelError(f"TorchScript export failed: {one_line(e)}; leave torchscript "
                                            "out of --format to ship the other formats") from e
            (ctx.folder / name).unlink(missing_ok=True)
            ctx.notes.append(f"int8 TorchScript not produced: {type(e).__name__}: {one_line(e, 160)}")
    return arts


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (a zip holding ``code/``), told apart from a checkpoint without loading it."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


def describe(path: Path) -> dict:
    # Loading TorchScript runs its code: inspect reads nothing but the archive's name list.
    return {"format": "TorchScript (server-side PyTorch; not loaded: loading runs its code)"}


FORMAT = Format("torchscript", "server-side PyTorch only", build, suffixes=(".torchscript.pt",), describe=describe)
