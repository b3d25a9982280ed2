"""ExecuTorch ``.pte`` programs lowered to XNNPACK, checked in ExecuTorch's own runtime.

``torch.export`` (static batch: mobile runtimes plan memory ahead) -> ``to_edge_transform_and_lower``
with the XNNPACK partitioner -> ``.pte``. The int8 program comes from :mod:`edgefuse.quantize` with
``backend="xnnpack"``. Every op XNNPACK does not take runs in ExecuTorch's portable kernels; the
delegation summary lists them, because each one is a slow spot on the phone.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from edgefuse._extras import require_executorch
from edgefuse._quiet import quiet_native
from edgefuse.errors import ExportError, UnsupportedModelError, one_line
from edgefuse.metrics import sqnr_db
from edgefuse.runtimes import PteModel

#: Smallest SQNR of a ``.pte``'s outputs against its PyTorch program's, over the check images, in dB. XNNPACK's
#: int8 kernels round differently from PyTorch's reference int8 arithmetic: on digits images a faithful file
#: sits at 26 dB at worst and 39 dB in the median per image (269 images, AVX2 without VNNI), while outputs of other
#: images -- what a broken program gives at best -- reach 18 dB on one image and about 0 dB over several.
#: fp32 files match to rounding (> 100 dB).
MIN_SQNR_DB = {"int8": 20.0, "fp32": 60.0}

_SKIP = {"getitem", "executorch_call_delegate"}


def _op_name(node) -> str:
    name = getattr(node.target, "__name__", str(node.target))
    return re.sub(r"^(aten|quantized_decomposed|dim_order_ops)\.", r"\1::", name.split("executorch_exir_dialects_edge__ops_")[-1])


def delegation_summary(graph_module: torch.fx.GraphModule) -> dict:
    """How much of a lowered program XNNPACK runs: delegated subgraphs and nodes, and every op left out."""
    delegated = 0
    subgraphs = 0
    left: Counter = Counter()
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            subgraphs += 1
            lowered = getattr(graph_module, node.name)
            delegated += sum(1 for n in lowered.original_module.graph.nodes if n.op == "call_function")
        elif node.op == "call_function":
            op = _op_name(node)
            if not any(s in op for s in _SKIP):
                left[op] += 1
    total = delegated + sum(left.values())
    return {
        "backend": "XnnpackBackend",
        "delegated_subgraphs": subgraphs,
        "delegated_nodes": delegated,
        "portable_nodes": sum(left.values()),
        "delegated_fraction": delegated / total if total else 0.0,
        "portable_ops": dict(sorted(left.items())),
    }


def _values_only(node) -> bool:
    """True when only output 0 (the values, not the indices) of a (values, indices) op is read."""
    return all(u.op == "call_function" and u.target is operator.getitem and (u.args[1] == 0 or not u.users)
               for u in node.users)


def rewrite_max_pools_as_amax(gm: torch.fx.GraphModule) -> int:
    """Rewrite the max pools users write after the CBAM paper into ``amax``, which XNNPACK lowers.

    ``nn.AdaptiveMaxPool2d(1)`` (``aten.adaptive_max_pool2d``: not in the Core ATen opset, so lowering
    fails) becomes ``amax(x, (2, 3), keepdim=True)``, and ``torch.max(x, dim)`` with its indices unused
    becomes ``amax(x, dim, keepdim)``: the same values, exactly. Returns the nodes rewritten.
    """
    aten = torch.ops.aten
    done = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not _values_only(node):
            continue
        if node.target is aten.adaptive_max_pool2d.default and list(node.args[1]) == [1, 1]:
            dims, keep = [-2, -1], True
        elif node.target is aten.max.dim:
            dims, keep = [node.args[1]], bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
        else:
            continue
        with gm.graph.inserting_before(node):
            amax = gm.graph.call_function(aten.amax.default, (node.args[0], dims, keep))
        amax.meta = {k: v for k, v in node.meta.items() if k != "val"}
        if "val" in node.meta:
            amax.meta["val"] = node.meta["val"][0]
        for user in list(node.users):  # getitem 0 -> amax; an unread getitem of the indices goes
            if user.args[1] == 0:
                user.replace_all_uses_with(amax)
            gm.graph.erase_node(user)
        gm.graph.erase_node(node)
        done += 1
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


def export_pte(module: torch.nn.Module, example: torch.Tensor, path: str | Path,
               check_inputs: torch.Tensor | None = None, precision: str = "int8") -> dict:
    """Lower ``module`` (fp32 ``nn.Module`` or a converted PT2E int8 program) to an XNNPACK ``.pte``.

    Args:
        module: the model; its input shape is fixed to ``example``'s.
        example: one input batch (its batch size is the program's).
        path: where to write the ``.pte``.
        check_inputs: images (any number) the file is compared with ``module`` on, in ExecuTorch's runtime;
            default ``example``. Real images, not a constant: a blank input sits on rounding ties.
        precision: ``int8`` or ``fp32``, which sets the SQNR floor of the check (:data:`MIN_SQNR_DB`).

    Returns:
        Details for the manifest: the delegation summary and the check against PyTorch.

    Raises:
        MissingExtraError: ExecuTorch is not installed.
        ExportError: lowering failed, or the program does not load or match in ExecuTorch's runtime.
    """
    require_executorch()
    path = Path(path)
    try:
        with quiet_native():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            ep = torch.export.export(module, (example,))
            rewritten = rewrite_max_pools_as_amax(ep.graph_module)
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            summary = delegation_summary(edge.exported_program().graph_module)
            program = edge.to_executorch()
        path.write_bytes(program.buffer)
    except Exception as e:
        raise UnsupportedModelError(f"{path.name}: ExecuTorch lowering failed: {one_line(e)}; leave pte out of "
                                    "--format to ship the other formats") from e

    x = example if check_inputs is None else check_inputs
    with torch.no_grad():
        ref = module(x).numpy()
    got = PteModel(path).run(x.numpy())  # split into (or padded to) the file's fixed batch
    check = judge_against_program(ref, got, MIN_SQNR_DB[precision])
    if not check["passed"]:
        raise ExportError(f"{path.name}: ExecuTorch output differs from PyTorch: {check['reason']}")
    return {"delegation": summary, "max_abs_diff_vs_pytorch": check["max_abs_diff"],
            "sqnr_vs_pytorch_db": check["sqnr_db"], "check_samples": int(len(x)), "batch": int(example.shape[0]),
            "max_pools_as_amax": rewritten}


def judge_against_program(ref: np.ndarray, got: np.ndarray, min_sqnr_db: float) -> dict:
    """Whether a lowered file's outputs ``got`` are its program's ``ref`` up to kernel rounding: their SQNR
    over all the images at least ``min_sqnr_db``. (One image's largest logit error is not a measure: a
    faithful int8 file has 2 % of 269 digits images above 5 % of their largest logit.)"""
    sq = sqnr_db(ref, got)
    diff = float(np.abs(got - ref).max())
    ok = bool(np.isfinite(got).all()) and sq >= min_sqnr_db
    # None when the outputs are identical (infinite SQNR) or NaN: the manifest is strict JSON
    return {"passed": ok, "sqnr_db": round(sq, 2) if np.isfinite(sq) else None, "max_abs_diff": diff,
            "reason": "" if ok else (f"SQNR {sq:.1f} dB over {len(ref)} image(s) (floor {min_sqnr_db:g} dB), "
                                     f"largest difference {diff:.3g} (logits up to {float(np.abs(ref).max()):.3g})")}
