"""ONNX export through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``)."""

from __future__ import annotations

import contextlib
import functools
import operator
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
        with quiet(), _torchlib_registry_built_once(), _decompose_only_what_needs_it():
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


#: The exporter's registry of torchlib translations, by opset (see :func:`_torchlib_registry_built_once`).
_TORCHLIB_REGISTRIES: dict = {}


@contextlib.contextmanager
def _torchlib_registry_built_once():
    """While it is open, the ONNX exporter's ``ONNXRegistry.from_torchlib`` hands out a copy of the registry
    it built the first time for that opset instead of building it again: every ``torch.onnx.export`` call
    built it anew, inferring the ONNX signature of each of ~2,000 torchlib functions (0.4-0.8 s a call; an
    int8 export makes two to four calls). The copy has its own dict and lists (a custom translation table
    registered into it does not reach the cache); the entries, immutable once built, are shared. The files
    come out byte for byte the same (``tests/export/test_onnx_decompose.py``)."""
    try:
        from torch.onnx._internal.exporter import _registration
        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
    except (ImportError, AttributeError, KeyError):  # another torch: leave it as it is
        yield
        return
    build = original.__func__

    def from_torchlib(klass, opset_version=_registration._constants.TORCHLIB_OPSET):
        key = (klass, opset_version)
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = build(klass, opset_version)
        cached, registry = _TORCHLIB_REGISTRIES[key], klass()
        registry.__dict__.update(cached.__dict__)
        registry.functions = {target: list(metas) for target, metas in cached.functions.items()}
        return registry

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        cls.from_torchlib = original


@contextlib.contextmanager
def _decompose_only_what_needs_it():
    """While it is open, the ONNX exporter's decomposition step returns a program that has nothing to
    decompose as it is (:func:`already_decomposed`) instead of re-tracing it whole through
    ``run_decompositions``, which traces every node once more at ~2 ms each (torchvision MobileNetV3-large
    at 224: its int8 export 11.1 s -> 7.7 s, its fp32 export 4.2 s -> 2.2 s; the same ONNX nodes and
    bit-identical outputs, ``tests/export/test_onnx_decompose.py``). Any other program is decomposed as
    before."""
    try:
        from torch.onnx._internal.exporter import _decomp, _fx_passes
        original = _fx_passes.decompose_with_registry
    except (ImportError, AttributeError):  # another torch: leave it as it is
        yield
        return

    def decompose_with_registry(exported_program, registry):
        if already_decomposed(exported_program, registry, _decomp):
            return exported_program
        return original(exported_program, registry)

    _fx_passes.decompose_with_registry = decompose_with_registry
    try:
        yield
    finally:
        _fx_passes.decompose_with_registry = original


def _rewrite(node):
    """``(target, args)`` of the node ``run_decompositions`` would make of ``node``, for the few composite
    ops a converted classifier still holds (each decomposes into one op); None for any other op."""
    aten = torch.ops.aten
    args = node.args
    if node.kwargs:
        return None
    if node.target == aten.rsub.Scalar and (len(args) == 2 or args[2] == 1):  # 1 - gate
        return aten.sub.Tensor, (args[1], args[0])
    if node.target == aten.batch_norm.default and len(args) == 9 and args[5] is False:  # inference
        return aten._native_batch_norm_legit_no_training.default, (*args[:5], args[6], args[7])
    if node.target == aten.adaptive_avg_pool2d.default and list(args[1]) == [1, 1]:
        return aten.mean.dim, (args[0], [-1, -2], True)
    if node.target == aten.dropout.default and len(args) == 3 and args[2] is False:
        return aten.clone.default, (args[0],)
    if node.target == aten.flatten.using_ints:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and all(isinstance(d, int) for d in val.shape):
            return aten.view.default, (args[0], list(val.shape))
    return None


def already_decomposed(exported_program, registry, decomp) -> bool:
    """True when ``exported_program`` holds only ops the ONNX ``registry`` translates itself, which
    ``run_decompositions`` would keep as they are, after rewriting in place the few composite ops whose
    decomposition is one op (:func:`_rewrite`); False (nothing changed) for anything else: an op to
    decompose, an in-place op, a subgraph, a rewrite that feeds the output."""
    implemented = set(decomp.get_onnx_implemented_overloads(registry))
    table = decomp.create_onnx_friendly_decomposition_table(implemented)
    gm = exported_program.graph_module
    if any(m is not gm for m in gm.modules()):
        return False
    rewrites = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output") or (node.op == "call_function" and node.target is operator.getitem):
            continue
        if node.op != "call_function":
            return False
        target = node.target
        schema = getattr(target, "_schema", None)
        if schema is not None and target in implemented and target not in table and not schema.is_mutable:
            continue
        new = _rewrite(node)
        if new is None or any(u.op == "output" for u in node.users):
            return False
        rewrites.append((node, new))
    graph = gm.graph
    for node, (target, args) in rewrites:
        with graph.inserting_before(node):
            new_node = graph.call_function(target, args)
            if target == torch.ops.aten._native_batch_norm_legit_no_training.default:
                # (output, saved mean, saved rstd): the last two are empty in inference
                val = node.meta["val"]
                new_node.meta = {**node.meta, "val": (val, val.new_empty((0,)), val.new_empty((0,)))}
                new_node = graph.call_function(operator.getitem, (new_node, 0))
        new_node.meta = dict(node.meta)
        node.replace_all_uses_with(new_node)
        graph.erase_node(node)
    if rewrites:
        gm.recompile()
    return True


def _export_batch_one_as_any_batch(model: nn.Module, example_inputs: tuple, path: Path, input_names: list[str],
                                   output_names: list[str], opset: int) -> bool:
    """Export at batch 1, then give the file a symbolic batch dimension (:mod:`edgefuse.export.onnx_batch`:
    about a third faster than exporting under a symbolic batch); False (nothing written) when that cannot be
    shown to compute the same, and the caller exports with a symbolic batch instead."""
    x1 = tuple(x[:1] for x in example_inputs)
    try:
        with quiet(), _torchlib_registry_built_once(), _decompose_only_what_needs_it():
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
