"""A batch-1 ONNX graph made batch-polymorphic, where that can be shown node by node.

torch's exporter spends about half again as long under a symbolic batch dimension as at a fixed batch of 1
(MobileNetV3-large at 224x224: 6.3 s instead of 4.0 s for fp32, 11 s instead of 7.2 s for int8). A
convolutional network is per-sample: every node maps sample ``i`` of its inputs to sample ``i`` of its output,
so the batch-1 graph computes any batch once dimension 0 is symbolic -- unless a node carries a batch-1
constant (a Reshape to ``[1, 960]``, a Resize to fixed ``sizes``) or works across dimension 0
(a reduction, softmax or concatenation over it, a Transpose that moves it). :func:`symbolic_batch` admits
a graph only when every node computed from the inputs is of a kind known to be per-sample with the
attributes and constants it has, rewrites the one batch-1 constant it knows how to (Reshape), and
otherwise refuses; :func:`per_sample` then runs the result and the model on a batch of three and on each
sample alone. A refused graph is exported again with a symbolic batch.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

#: The dimension name dynamic files give the batch (as ``torch.export.Dim("batch")`` does).
BATCH_DIM = "batch"

#: Nodes that act on each element, or on each sample, whatever the batch: every input computed from the
#: graph inputs; constants broadcast along dimension 0 only if they hold 1 there (checked).
_ELEMENTWISE = {
    "Abs", "Add", "And", "BitShift", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Cos", "Div", "Elu", "Equal",
    "Erf", "Exp", "Floor", "Gelu", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity",
    "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "Max", "Min", "Mish", "Mod", "Mul", "Neg",
    "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Softplus",
    "Softsign", "Sqrt", "Sub", "Tanh", "ThresholdedRelu", "Where", "Xor",
    "QuantizeLinear", "DequantizeLinear",
}
#: Nodes whose first input is the per-sample data and whose other inputs are parameters (weights, scales).
_DATA_FIRST = {
    "AveragePool", "BatchNormalization", "Conv", "ConvInteger", "ConvTranspose", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "InstanceNormalization", "LpNormalization", "LpPool", "LRN", "MaxPool",
    "QLinearConv",
}
#: Nodes over one axis, per-sample when that axis is not 0.
_ONE_AXIS = {"ArgMax", "ArgMin", "CumSum", "Hardmax", "LayerNormalization", "LogSoftmax", "Softmax", "Split"}
_REDUCE = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare"}


def symbolic_batch(proto: onnx.ModelProto) -> bool:
    """Give ``proto`` (exported at batch 1) a symbolic batch, in place; False when that cannot be shown safe.

    Dimension 0 of the inputs, the outputs and every tensor computed from the inputs becomes ``batch``, and
    each Reshape target ``[1, ...]`` or ``[0, ...]`` of such a tensor becomes ``[-1, d...]``, ``d`` the
    recorded per-sample shape of its result (whose product is one sample's size, so ``-1`` is the batch).
    Every node computed from the inputs must be per-sample by its kind, attributes and constants (see the
    module docstring).
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    shapes = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    derived = {i.name for i in graph.input if i.name not in inits}
    nodes = []
    for node in graph.node:  # topologically sorted (the checker requires it)
        if any(i in derived for i in node.input):
            nodes.append(node)
            derived.update(o for o in node.output if o)
        elif node.op_type in ("If", "Loop", "Scan"):
            return False  # subgraphs are not walked
    if not derived or any(o.name not in derived for o in graph.output):
        return False
    ranks = {}
    for name in derived:
        value = shapes.get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            return False  # every tensor's shape is recorded by the exporter; without it nothing is shown
        dims = value.type.tensor_type.shape.dim
        if not len(dims) or dims[0].dim_value != 1 or any(not d.dim_value for d in dims[1:]):
            return False
        ranks[name] = len(dims)
    context = _Context(inits, derived, ranks)
    if not all(_per_sample_node(n, context) for n in nodes):
        return False
    for name in derived:
        dim = shapes[name].type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    for k, node in enumerate(nodes):
        if node.op_type == "Reshape":
            sample = [d.dim_value for d in shapes[node.output[0]].type.tensor_type.shape.dim[1:]]
            name = f"{node.input[1]}__batch{k}"
            graph.initializer.append(numpy_helper.from_array(np.array([-1, *sample], np.int64), name))
            node.input[1] = name
    return True


class _Context:
    def __init__(self, inits: dict, derived: set, ranks: dict) -> None:
        self.inits, self.derived, self.ranks = inits, derived, ranks

    def const(self, name: str):
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def rank(self, name: str) -> int | None:
        if name in self.ranks:
            return self.ranks[name]
        value = self.const(name)
        return None if value is None else value.ndim


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _axes_avoid_batch(axes, rank: int | None) -> bool:
    if axes is None or rank is None:
        return False
    axes = [int(a) for a in np.atleast_1d(axes)]
    return len(axes) > 0 and all(a % rank != 0 for a in axes)


def _per_sample_node(node, ctx: _Context) -> bool:
    """Whether ``node`` (some input computed from the graph inputs) maps sample i to sample i at any batch."""
    op, ins = node.op_type, [i for i in node.input]
    derived = [i in ctx.derived for i in ins]
    rank = ctx.rank(ins[0]) if ins and ins[0] else None
    out_rank = ctx.rank(node.output[0]) if node.output else None
    if out_rank is None:
        return False
    if op in _ELEMENTWISE:
        if op in ("QuantizeLinear", "DequantizeLinear"):
            # an activation's scale and zero point are per-tensor, or per-channel along an axis other than 0
            scale = ctx.const(ins[1]) if len(ins) > 1 else None
            if not derived[0] or any(derived[1:]) or scale is None:
                return False
            return scale.ndim == 0 or _axes_avoid_batch(_attr(node, "axis", 1), rank)
        for name, is_derived in zip(ins, derived):
            if is_derived or not name:
                continue
            value = ctx.const(name)  # a constant operand must not bring its own dimension 0
            if value is None or (value.ndim >= out_rank and value.shape[value.ndim - out_rank] != 1):
                return False
        return True
    if op in _DATA_FIRST:
        return derived[0] and not any(derived[1:])
    if op == "Gemm":
        return derived[0] and not any(derived[1:]) and not _attr(node, "transA", 0)
    if op == "MatMul":  # batched matmul of two per-sample stacks (rank 3 or more), or per-sample x a 2-D weight
        b_rank = ctx.rank(ins[1])
        return derived[0] and (derived[1] and rank is not None and rank >= 3 and b_rank == rank
                               or not derived[1] and b_rank == 2)
    if op in _REDUCE:
        axes = _attr(node, "axes") if len(ins) < 2 or not ins[1] else ctx.const(ins[1])
        return derived[0] and not any(derived[1:]) and _axes_avoid_batch(axes, rank)
    if op in _ONE_AXIS:
        default = -1 if op in ("Softmax", "LogSoftmax", "Hardmax", "LayerNormalization") else 0
        axis = _attr(node, "axis", default) if op != "CumSum" else ctx.const(ins[1])
        return derived[0] and not any(derived[1:]) and _axes_avoid_batch(axis, rank)
    if op == "Concat":
        return all(derived) and _axes_avoid_batch(_attr(node, "axis"), rank)
    if op == "Flatten":
        return _attr(node, "axis", 1) == 1
    if op == "Transpose":
        perm = _attr(node, "perm")
        return perm is not None and len(perm) and perm[0] == 0
    if op in ("Squeeze", "Unsqueeze"):
        axes = _attr(node, "axes") if len(ins) < 2 else ctx.const(ins[1])
        return derived[0] and not any(derived[1:]) and _axes_avoid_batch(
            axes, rank if op == "Squeeze" else out_rank)
    if op == "Expand":
        # ONNX broadcasts both ways: a target of 1 at dimension 0 (or none there) keeps the input's batch, as
        # timm's ECA writes ``x * y.expand_as(x)``; a larger one, or new leading dimensions, would not
        target = ctx.const(ins[1]) if len(ins) > 1 else None
        return (derived[0] and not derived[1] and target is not None and target.ndim == 1 and rank is not None
                and out_rank == rank and len(target) <= rank and (len(target) < rank or target[0] == 1))
    if op == "Reshape":
        # dimension 0 of the target: the batch of one, or 0 = "copy the input's" (unless allowzero makes it a
        # literal 0), as the exporter writes ``flatten(2).transpose(1, 2)`` of a 1x1 map (the zoo's
        # EfficientAttention at its last stages: its int8 and fp32 exports were refused and done twice)
        target = ctx.const(ins[1]) if len(ins) > 1 else None
        return (derived[0] and target is not None and target.ndim == 1 and len(target) == out_rank
                and len(target) > 0 and (target[0] == 1 or (target[0] == 0 and not _attr(node, "allowzero", 0))))
    if op == "Slice":  # starts, ends, axes (given, none of them 0), steps: constants
        consts = [ctx.const(i) if i else None for i in ins[1:]]
        return (derived[0] and len(ins) >= 4 and not any(derived[1:]) and all(c is not None for c in consts[:3])
                and _axes_avoid_batch(consts[2], rank))
    if op == "Gather":
        return derived[0] and not any(derived[1:]) and _axes_avoid_batch(_attr(node, "axis", 0), rank)
    if op == "Pad":
        pads = ctx.const(ins[1]) if len(ins) > 1 else None
        if not derived[0] or any(derived[1:]) or pads is None or (len(ins) > 3 and ins[3]):
            return False
        return rank is not None and len(pads) == 2 * rank and pads[0] == 0 and pads[rank] == 0
    if op == "Resize":  # scales (not sizes) that keep dimension 0
        scales = ctx.const(ins[2]) if len(ins) > 2 and ins[2] else None
        return (derived[0] and not any(derived[1:]) and (len(ins) < 4 or not ins[3]) and scales is not None
                and len(scales) > 0 and scales[0] == 1)
    return False  # anything else (Shape, Tile, ConstantOfShape, ...) is not shown per-sample


#: How far a batch of three may be from each sample run alone, as a share of the output's largest magnitude:
#: the same graph at another batch size (another kernel blocking) in float32, and the same plus a flipped
#: int8 rounding step in a quantized graph. What the structural check cannot see (a sample read by another)
#: moves the output by far more in a network of random inputs.
PER_SAMPLE_TOLERANCE = {"fp32": 1e-4, "int8": 2e-2}


def per_sample(proto: onnx.ModelProto, model: nn.Module, x1: tuple) -> bool:
    """Whether three different inputs run as one batch give what each gives alone, in onnxruntime on
    ``proto`` and in ``model`` (that the file computes ``model`` at batch 1 is the exporter's part, checked
    again with the shipped file over the evaluation split)."""
    from edgefuse.runtimes import OrtModel  # here: onnxruntime is only needed when a file is exported

    quantized = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    tolerance = PER_SAMPLE_TOLERANCE["int8" if quantized else "fp32"]
    gen = torch.Generator().manual_seed(0)
    xs = tuple(torch.randn((3, *x.shape[1:]), generator=gen, dtype=x.dtype) for x in x1)
    inits = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
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
                if len(alone) != len(whole) or not all(_close(w[i:i + 1], a, tolerance)
                                                       for w, a in zip(whole, alone)):
                    return False
    except Exception:
        return False
    return True


def _close(a, b, tolerance: float) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.isfinite(a).all() or not np.isfinite(b).all():
        return False
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-6)
    return float(np.abs(a - b).max(initial=0.0)) <= tolerance * scale
