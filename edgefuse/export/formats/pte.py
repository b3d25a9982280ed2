"""``pte``: ExecuTorch programs (XNNPACK delegate), int8 from XNNPACK's signed-int8 scheme, batch fixed."""

from __future__ import annotations

import torch

from edgefuse._extras import require_executorch
from edgefuse.export.formats.base import Artifact, BuildContext, Format


def build(ctx: BuildContext) -> list[Artifact]:
    from edgefuse.export.executorch_pte import export_pte  # imports ExecuTorch: only when this format is built

    example = torch.zeros(ctx.mobile_shape)
    arts = []
    for precision, module in ctx.xnnpack_variants:
        name = f"model.{precision}.pte"
        arts.append(Artifact(name, "pte", precision, details=export_pte(module, example, ctx.folder / name)))
    return arts


FORMAT = Format("pte", "ExecuTorch + XNNPACK (needs `pip install 'edgefuse[executorch]'`)", build,
                runtime="executorch", mobile=True, requires=require_executorch, int8_scheme="xnnpack",
                sidecar_versions=("executorch", "torch"))
