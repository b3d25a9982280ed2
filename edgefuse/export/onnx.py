"""ONNX export through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper, version_converter
from torch import nn

from edgefuse._quiet import quiet
from edgefuse.errors import ExportError, UnsupportedModelError, UsageError
from edgefuse._inplace import functionalize_inplace
from edgefuse.limits import MAX_BATCH, MAX_OPSET, MIN_OPSET

#: The ONNX opset edgefuse exports (onnxruntime 1.32 runs it; QDQ needs >= 13).
DEFAULT_OPSET = 18


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` to ONNX at ``path`` (weights embedded in the file).

    Args:
        model: any ``nn.Module`` or ``torch.fx.GraphModule`` (e.g. a converted PT2E program).
        example_inputs: example positional inputs; their batch size does not matter when dynamic.
        input_names, output_names: graph I/O names (default ``input``/``input_1``.., ``output``).
        dynamic_batch: make dimension 0 of every input symbolic (``batch``); else keep it fixed.
        opset: ONNX opset version.

    Raises:
        ExportError: the exporter failed; the message names the first cause.
    """
    path = Path(path)
    check_opset(opset)  # before the export, not after it
    n = len(example_inputs)
    input_names = input_names or (["input"] if n == 1 else [f"input_{i}" for i in range(n)])
    output_names = output_names or ["output"]
    if dynamic_batch and _export_batch_one_as_any_batch(model, tuple(example_inputs), path, input_names,
                                                        output_names, opset):
        _convert_opset(path, opset)
        return path
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        dynamic_shapes = tuple({0: batch} for _ in example_inputs)
        # torch.export specialises a dimension of size 1 to the constant 1, so a batch-1 example fails the
        # dynamic batch and the ONNX exporter falls back to its slower capture strategies (a third of a
        # MobileNetV3-large export): trace with batch 2, which is as good an example of "any batch".
        example_inputs = tuple(x.expand(2, *x.shape[1:]).contiguous() if x.shape[0] == 1 else x
                               for x in example_inputs)
    try:
        with quiet():
            model = _functional_program(model, tuple(example_inputs), dynamic_shapes)
            program = torch.onnx.export(
                model, tuple(example_inputs), None, dynamo=True, opset_version=opset,
                input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, optimize=True, verbose=False,
            )
            program.save(str(path), external_data=False)
    except Exception as e:  # the exporter raises many types; one line is what users need
        msg = str(e).strip().splitlines()
        cause = next((ln for ln in msg if "Error" in ln or "error" in ln), msg[0] if msg else type(e).__name__)
        raise UnsupportedModelError(f"ONNX export failed: {cause[:300]}") from e
    _convert_opset(path, opset)
    return path


def _export_batch_one_as_any_batch(model: nn.Module, example_inputs: tuple, path: Path, input_names: list[str],
                                   output_names: list[str], opset: int) -> bool:
    """Export at batch 1, then give the file a symbolic batch dimension; False (nothing written) when that
    cannot be shown to be the same program, and the caller exports with a symbolic batch instead.

    Why: under a symbolic batch torch's exporter spends about half again as long (MobileNetV3-large at
    224x224: 6.3 s instead of 4.0 s for fp32, 11 s instead of 7.2 s for int8), and the two files differ only
    in the batch-1 constants of Reshapes (``[1, 960]`` where the symbolic export writes ``[-1, 960]``).
    The static file is made batch-polymorphic by :func:`_symbolic_batch` and accepted only when the result is
    *per-sample*: three different inputs run as one batch give what each gives alone, in onnxruntime and in
    ``model`` itself (so a model that mixes samples, or a constant that is not per-sample, falls back).
    """
    x1 = tuple(x[:1] for x in example_inputs)
    try:
        with quiet():
            program = torch.onnx.export(
                _functional_program(model, x1, None), x1, None, dynamo=True, opset_version=opset,
                input_names=input_names, output_names=output_names, optimize=True, verbose=False,
            )
            proto = program.model_proto
    except Exception:
        return False  # the symbolic export will raise the one-line error, if there is one
    if not _symbolic_batch(proto) or not _per_sample(proto, model, x1):
        return False
    onnx.save(proto, str(path))
    return True


#: The dimension name dynamic files give the batch (as ``torch.export.Dim("batch")`` does).
BATCH_DIM = "batch"


def _symbolic_batch(proto: onnx.ModelProto) -> bool:
    """Make dimension 0 of ``proto``'s inputs, outputs and every tensor computed from the inputs the symbolic
    ``batch`` (in place), and rewrite Reshape targets ``[1, ...]`` of such tensors to ``[-1, d...]`` where
    ``d`` is the recorded per-sample shape of the result (its product is one sample's size, so ``-1`` is the
    batch). False when some tensor computed from the inputs does not lead with a batch-1 dimension, or a
    Reshape target does not lead with 1: such a graph is not shown batch-polymorphic this way."""
    graph = proto.graph
    if graph.node and any(n.op_type in ("If", "Loop", "Scan") for n in graph.node):
        return False  # subgraphs would need the same walk
    inits = {i.name: i for i in graph.initializer}
    shapes = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    derived = {i.name for i in graph.input}
    for node in graph.node:  # topologically sorted (the checker requires it)
        if any(i in derived for i in node.input):
            derived.update(o for o in node.output if o)
    for name in derived:
        value = shapes.get(name)
        if value is None:
            continue  # no recorded shape: nothing to rewrite (onnxruntime infers it)
        dims = value.type.tensor_type.shape.dim
        if not len(dims) or dims[0].dim_value != 1:
            return False
        dims[0].Clear()
        dims[0].dim_param = BATCH_DIM
    if any(o.name not in derived for o in graph.output):
        return False
    for k, node in enumerate(graph.node):
        if node.op_type != "Reshape" or node.input[0] not in derived:
            continue
        target = inits.get(node.input[1]) if len(node.input) > 1 else None
        result = shapes.get(node.output[0])
        if target is None or result is None:
            return False
        shape = numpy_helper.to_array(target)
        # the result's recorded shape, batch-1 constants resolved (a ``-1`` of ``reshape(n, -1)`` included)
        sample = [d.dim_value for d in result.type.tensor_type.shape.dim[1:]]
        if shape.ndim != 1 or len(shape) != len(sample) + 1 or shape[0] != 1 or not all(sample):
            return False
        name = f"{node.input[1]}__batch{k}"
        graph.initializer.append(numpy_helper.from_array(np.array([-1, *sample], np.int64), name))
        node.input[1] = name
    return True


#: Per-sample outputs may differ by this share of their largest magnitude between a batch of three and one
#: sample at a time (kernels pick other blockings by batch size; an int8 rounding may flip one step).
#: A program that mixes samples differs by the size of its outputs.
PER_SAMPLE_TOLERANCE = 2e-2


def _per_sample(proto: onnx.ModelProto, model: nn.Module, x1: tuple) -> bool:
    """Whether three different inputs run as one batch give what each gives alone, in onnxruntime on
    ``proto`` and in ``model`` (that the file computes ``model`` at batch 1 is the exporter's part, checked
    again with the shipped file over the evaluation split)."""
    from edgefuse.runtimes import OrtModel  # here: onnxruntime is only needed when a file is exported

    gen = torch.Generator().manual_seed(0)
    xs = tuple(torch.randn((3, *x.shape[1:]), generator=gen, dtype=x.dtype) for x in x1)
    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    try:
        session = OrtModel.from_bytes(proto.SerializeToString()).session

        def run_file(k: slice) -> list:
            return session.run(None, {n: x[k].numpy() for n, x in zip(names, xs)})

        def run_model(k: slice) -> list:
            with torch.no_grad():
                out = model(*(x[k] for x in xs))
            return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

        for run in (run_file, run_model):
            whole = run(slice(0, 3))
            for i in range(3):
                alone = run(slice(i, i + 1))
                if len(alone) != len(whole) or not all(_close(w[i:i + 1], a) for w, a in zip(whole, alone)):
                    return False
    except Exception:
        return False
    return True


def _close(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.isfinite(a).all() or not np.isfinite(b).all():
        return False
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-6)
    return float(np.abs(a - b).max(initial=0.0)) <= PER_SAMPLE_TOLERANCE * scale


def _functional_program(model: nn.Module, example_inputs: tuple, dynamic_shapes):
    """``model`` as an ExportedProgram whose unobservable in-place activations are out of place (see
    :mod:`edgefuse._inplace`: the exporter decomposes ``hardswish_`` & co. at ~0.1 s each under a symbolic
    batch). A model ``torch.export`` cannot take goes to the ONNX exporter as it is: its own fallback
    strategies apply, as before."""
    try:
        ep = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception:
        return model
    functionalize_inplace(ep.graph_module, copy_first=False)
    return ep


def opset_of(model) -> int | None:
    """The default-domain opset an ONNX ``ModelProto`` declares."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def check_opset(opset: int) -> int:
    """Raise :class:`UsageError` for an opset edgefuse cannot write (call before any work)."""
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise UsageError(f"--opset must be between {MIN_OPSET} (what torch's exporter writes; onnx's converter "
                         f"cannot lower it reliably) and {MAX_OPSET} (the newest onnxruntime loads), got {opset}")
    return int(opset)


def _convert_opset(path: Path, opset: int) -> None:
    """The dynamo exporter writes opset 18 whatever ``opset_version`` says: convert up to the one asked for
    (onnx's version converter) and check the file says so."""
    model = onnx.load(str(path))
    current = opset_of(model)
    if current == opset:
        return
    try:
        model = version_converter.convert_version(model, opset)
        onnx.checker.check_model(model)
    except Exception as e:
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UnsupportedModelError(f"cannot write opset {opset} (exported at {current}): {cause[:200]}") from None
    got = opset_of(model)
    if got != opset:
        raise ExportError(f"the opset converter wrote opset {got}, not {opset}")
    onnx.save(model, str(path))
