"""ONNX export through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``)."""

from __future__ import annotations

import functools
from pathlib import Path

import onnx
import torch
from onnx import version_converter
from torch import nn

from edgefuse._quiet import quiet
from edgefuse.errors import ExportError, UnsupportedModelError, UsageError
from edgefuse._inplace import functionalize_inplace
from edgefuse.export.onnx_batch import per_sample, symbolic_batch
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
    _skip_multi_output_patterns_that_cannot_start_here()
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


def _skip_multi_output_patterns_that_cannot_start_here() -> None:
    """Make onnxscript's optimizer (run by ``torch.onnx.export(optimize=True)``) skip a multi-output rewrite
    pattern at a node whose op type or domain its first output node cannot match, before it indexes the
    whole graph by op type for that node: it did so at every node, for every such rule (quadratic in the
    graph: 8 of the 9 s the optimizer spent on EfficientNet-B0's int8 graph). The search it skips could only
    fail at that first node, so the files come out byte for byte the same (``tests/export``)."""
    try:
        from onnxscript.rewriter import _basics, _matcher
        cls = _matcher.SimplePatternMatcher
        original = cls.match
    except (ImportError, AttributeError):  # another onnxscript: leave it as it is
        return
    if getattr(original, "_edgefuse_wrapped", False):
        return

    @functools.wraps(original)
    def match(self, model, graph_or_function, node, *args, **kwargs):
        pattern = self.pattern
        if not pattern.has_single_output_node:
            first = pattern.output_nodes[0]
            if not (first.op.matches(node.op_type) and first.domain.matches(node.domain)):
                return _basics.MatchResult().fail("No match found.")
        return original(self, model, graph_or_function, node, *args, **kwargs)

    match._edgefuse_wrapped = True
    cls.match = match


def _export_batch_one_as_any_batch(model: nn.Module, example_inputs: tuple, path: Path, input_names: list[str],
                                   output_names: list[str], opset: int) -> bool:
    """Export at batch 1, then give the file a symbolic batch dimension (:mod:`edgefuse.export.onnx_batch`:
    about a third faster than exporting under a symbolic batch); False (nothing written) when that cannot be
    shown to compute the same, and the caller exports with a symbolic batch instead."""
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
    if not symbolic_batch(proto) or not per_sample(proto, model, x1):
        return False
    onnx.save(proto, str(path))
    return True


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
