"""``ort``: ONNX Runtime Mobile files, converted from the ``onnx`` files for an ARM target, batch fixed."""

from __future__ import annotations

from edgefuse.errors import ExportError
from edgefuse.export.formats.base import Artifact, BuildContext, Format
from edgefuse.export.formats.onnx import describe
from edgefuse.export.ort_mobile import (
    REQUIRED_OPERATORS,
    compare_with_onnx,
    convert_to_ort,
    mobile_usability,
    required_operators,
)


def build(ctx: BuildContext) -> list[Artifact]:
    sources = [a for a in ctx.built if a.kind == "onnx"]
    batch = ctx.mobile_shape[0]
    ort_files, config = convert_to_ort([ctx.folder / a.file for a in sources], ctx.folder, batch)
    arts = []
    for src, ort_file in zip(sources, ort_files):
        parity = compare_with_onnx(ort_file, ctx.folder / src.file, ctx.check_inputs.numpy())
        if parity["top1_agreement"] < 0.99:
            raise ExportError(f"{ort_file.name} disagrees with {src.file} on "
                              f"{100 * (1 - parity['top1_agreement']):.1f}% of the check inputs")
        arts.append(Artifact(ort_file.name, "ort", src.precision, details={
            "batch": batch, "converted_from": src.file, "optimization": "all, target arm",
            "parity_with_onnx": parity, "mobile_usability": mobile_usability(ctx.folder / src.file, batch)}))
    arts.append(Artifact(REQUIRED_OPERATORS, "ort-operators", "any", details={
        "operators": required_operators(config),
        "use": "onnxruntime reduced build: build.py --minimal_build --include_ops_by_config " + REQUIRED_OPERATORS}))
    return arts


FORMAT = Format("ort", "ONNX Runtime Mobile, fixed batch, with required_operators.config", build,
                runtime="onnxruntime", mobile=True, needs=("onnx",), sidecar_versions=("onnxruntime",),
                suffixes=(".ort",), describe=describe)
