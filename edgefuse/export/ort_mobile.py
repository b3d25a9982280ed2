"""ONNX Runtime Mobile: ``.ort`` files, the reduced-build operator config, and the NNAPI/CoreML check.

A phone app ships the ORT format (a flatbuffer of the already-optimised graph) so that a reduced-size
onnxruntime build can load it without the ONNX parser or the graph optimisers. The conversion is
onnxruntime's own ``convert_onnx_models_to_ort`` run for an ARM target (no x86-only NCHWc layout,
QDQ kept as signed int8 where that is allowed), on copies of the ONNX models with a fixed batch:
NNAPI and CoreML need static shapes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx

from edgefuse._quiet import quiet_native
from edgefuse.errors import ExportError, UnsupportedModelError, one_line
from edgefuse.metrics import agreement
from edgefuse.runtimes import OrtModel

#: File written beside the ``.ort`` models: the operators a reduced onnxruntime build must include.
REQUIRED_OPERATORS = "required_operators.config"

USABILITY_LIMIT = ("onnxruntime's mobile usability checker only compares op types (and shapes) with the lists of "
                   "ops NNAPI and CoreML support; it does not run the model on those accelerators, and int8 QDQ "
                   "models may still fall back to the CPU there")


def fix_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """Copy of ``model`` whose input (and derived output) batch dimension is fixed to ``batch``."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        dims = inp.type.tensor_type.shape.dim
        shape = [batch] + [d.dim_value for d in dims[1:]]
        if any(v <= 0 for v in shape[1:]):
            raise UnsupportedModelError(f"input {inp.name} has dynamic dimensions besides the batch; cannot fix it for mobile")
        make_input_shape_fixed(fixed.graph, inp.name, shape)
    fix_output_shapes(fixed)
    return fixed


def convert_to_ort(onnx_files: list[Path], out_dir: Path, batch: int = 1) -> tuple[list[Path], Path]:
    """Convert ONNX models to ORT format with a fixed batch; write ``required_operators.config``.

    Args:
        onnx_files: ``model.<precision>.onnx`` files (dynamic or fixed batch).
        out_dir: folder receiving ``model.<precision>.ort`` and the operator config.
        batch: the fixed batch size of the mobile models.

    Returns:
        The ``.ort`` paths (in ``onnx_files`` order) and the config path.

    Raises:
        ExportError: onnxruntime could not convert a model.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    src, dst = out_dir / ".ort-src", out_dir / ".ort-out"
    for d in (src, dst):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    try:
        for f in onnx_files:
            onnx.save(fix_batch(onnx.load(str(f)), batch), str(src / f.name))
        try:
            with quiet_native():
                # "arm": phones; keeps the graph free of the x86-only NCHWc transformer.
                convert_onnx_models_to_ort(src, output_dir=dst, optimization_styles=[OptimizationStyle.Fixed],
                                           target_platform="arm")
        except Exception as e:
            raise UnsupportedModelError(f"onnxruntime could not convert to ORT format: {one_line(e)}; leave ort out "
                                        "of --format to ship the other formats") from None
        outs = []
        for f in onnx_files:
            produced = dst / f.with_suffix(".ort").name
            if not produced.is_file():
                raise ExportError(f"onnxruntime did not write {produced.name}")
            target = out_dir / produced.name
            shutil.move(str(produced), target)
            outs.append(target)
        config = dst / REQUIRED_OPERATORS
        if not config.is_file():
            raise ExportError(f"onnxruntime did not write {REQUIRED_OPERATORS}")
        # Its comments name the models by their temporary paths: keep only the file names, so the
        # config is the same for the same models.
        lines = [f"# - {Path(ln[4:]).name}" if ln.startswith("# - ") else ln for ln in config.read_text().splitlines()]
        (out_dir / REQUIRED_OPERATORS).write_text("\n".join(lines) + "\n")
        return outs, out_dir / REQUIRED_OPERATORS
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)


def required_operators(config: Path) -> dict[str, list[str]]:
    """Parse a ``required_operators.config``: ``{"ai.onnx;18": ["Conv", ...], ...}``."""
    ops: dict[str, list[str]] = {}
    for line in config.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain_opset, _, names = line.partition(";")
        opset, _, names = names.partition(";")
        ops[f"{domain_opset or 'ai.onnx'};{opset}"] = sorted(n for n in names.split(",") if n)
    return ops


def mobile_usability(onnx_file: Path, batch: int = 1) -> dict:
    """onnxruntime's NNAPI / CoreML partition check of a model, as data.

    Returns a dict per execution provider with the verdict (``YES``, ``MAYBE``, ``NO``), partitions,
    supported/total nodes and unsupported op types, plus ``limit`` (what the check cannot see).
    """
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    model = onnx.shape_inference.infer_shapes(fix_batch(onnx.load(str(onnx_file)), batch), strict_mode=True)
    checks = {
        "nnapi": lambda m: uc.check_nnapi_partitions(m, require_fixed_input_sizes=True),
        "coreml_neuralnetwork": lambda m: uc.check_coreml_partitions(m, True, "coreml_supported_neuralnetwork_ops.md"),
        "coreml_mlprogram": lambda m: uc.check_coreml_partitions(m, True, "coreml_supported_mlprogram_ops.md"),
    }
    result: dict = {}
    for name, check in checks.items():
        with quiet_native():
            info = check(model)
        result[name] = {
            "verdict": info.suitability().name,
            "partitions": info.num_partitions,
            "supported_nodes": info.num_supported_nodes,
            "nodes": info.num_nodes,
            "unsupported_ops": sorted(info.unsupported_ops),
        }
    result["limit"] = USABILITY_LIMIT
    return result


def compare_with_onnx(ort_file: Path, onnx_file: Path, inputs: np.ndarray) -> dict:
    """Run the ``.ort`` file and the ONNX model it came from on the same inputs."""
    a, b = OrtModel(onnx_file).run(inputs), OrtModel(ort_file).run(inputs)
    return {"samples": int(len(inputs)), "top1_agreement": agreement(a, b),
            "max_abs_diff": float(np.max(np.abs(a - b)))}
