"""``pte``: ExecuTorch programs (XNNPACK delegate), int8 from XNNPACK's signed-int8 scheme, batch fixed."""

from __future__ import annotations

from pathlib import Path

import torch

from edgefuse._extras import require_executorch
from edgefuse._versions import sha256_file
from edgefuse.data.contract import PreprocessContract
from edgefuse.errors import MissingExtraError
from edgefuse.export.formats.base import Artifact, BuildContext, Format
from edgefuse.runtimes import PteModel
from edgefuse.runtimes.sidecar import read_sidecar


def build(ctx: BuildContext) -> list[Artifact]:
    from edgefuse.export.executorch_pte import export_pte  # imports ExecuTorch: only when this format is built

    example = torch.zeros(ctx.mobile_shape)
    arts = []
    for precision, module in ctx.xnnpack_variants:
        name = f"model.{precision}.pte"
        details = export_pte(module, example, ctx.folder / name, check_inputs=ctx.check_inputs, precision=precision)
        arts.append(Artifact(name, "pte", precision, details=details))
    return arts


def describe(path: Path) -> dict:
    """A ``.pte`` program: its contract from the JSON sidecar, the input shape ExecuTorch reports when installed."""
    side = read_sidecar(path)
    info = {"format": "ExecuTorch program (.pte)", "precision": side.get("precision"),
            "input shape": side["input"]["shape"], **PreprocessContract.from_dict(side["contract"]).summary(),
            "versions": side.get("versions", {})}
    if side.get("sha256") and side["sha256"] != sha256_file(path):
        info["warning"] = "the file's sha256 differs from its sidecar's: they do not belong together"
    try:
        info["input shape (runtime)"] = PteModel(path).input_shape
    except MissingExtraError:  # the extra is optional for inspecting; a file it cannot load is not
        info["runtime"] = "ExecuTorch not installed: the shape is the sidecar's"
    return info


FORMAT = Format("pte", "ExecuTorch + XNNPACK (needs `pip install 'edgefuse[executorch]'`)", build,
                runtime="executorch", mobile=True, requires=require_executorch, int8_scheme="xnnpack",
                sidecar_versions=("executorch", "torch"), suffixes=(".pte",), describe=describe)
