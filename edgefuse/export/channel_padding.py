"""Depthwise convolutions widened to a multiple of 16 channels, so onnxruntime runs its fast int8 kernel.

onnxruntime's symmetric int8 convolution kernels (MLAS ``ConvSym``; int8 weights with zero point 0, as
edgefuse quantizes them) take a depthwise convolution only when its channel count is a multiple of 16;
any other count goes to a generic kernel that measured 1.7-1.9x slower per node on AVX-512 VNNI, although
it does less work (72 channels at 56x56, 3x3: 197 us, against 110 us for the same layer at 80 channels;
120 at 28x28, 5x5: 171 vs 93 us). MobileNetV3 as torchvision and timm build it has 72, 88, 120, 184 and 200
channel depthwise layers, its most expensive ones at high resolution.

Extra channels whose weights are zero are exact in integer arithmetic: every convolution that *produces*
the widened tensor gets output channels with zero weights and zero bias, every convolution that *reads*
it gets zero weights for them, and what lies between (Quantize/Dequantize per tensor, element-wise ops
whose other operand is the same for every channel, pooling and reductions over H and W, the depthwise
convs themselves, squeeze-excitation gates) works channel by channel, so the real channels carry exactly
the codes they carried before (``tests/export``: bit-identical outputs and tensors). Every convolution of a
widened group must be int8 with an int32 bias (onnxruntime's integer kernels; a float one could sum in
another order); the padded channels hold finite values, and no op that divides by them or mixes channels
other than through a zero weight is admitted. Any other op touching the channels (a reshape, a matrix
multiply, a reduction over channels, a per-channel constant, a graph input or output) leaves that group of
layers as it was, and so does a graph with control flow (its subgraphs could read the channels unseen).

Every node whose output was widened records its original channel count under the ``channels`` metadata
key, so a check that compares the file with its PyTorch program (:mod:`edgefuse.validate.opcheck`) reads
the real channels only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgefuse.export.onnx_checks import _consumers, _inferred_shapes, node_attr, reduce_axes

#: onnxruntime's symmetric depthwise kernels process channels in blocks of this many.
CHANNEL_BLOCK = 16
#: Metadata key on every node whose output carries padding channels: the channel count before padding.
PADDED_FROM = "channels"

_UNARY = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Identity", "Tanh"}
_BINARY = {"Add", "Mul", "Sub", "Div"}
_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_SPATIAL_REDUCTIONS = {"ReduceMean", "ReduceMax"}


class _Refused(Exception):
    """This group of layers cannot be widened exactly."""


def padded_channels(node: onnx.NodeProto) -> int | None:
    """The channel count a node's output had before :func:`pad_depthwise_channels` widened it, or None."""
    v = next((p.value for p in node.metadata_props if p.key == PADDED_FROM), None)
    return int(v) if v is not None else None


def pad_depthwise_channels(model: onnx.ModelProto, block: int = CHANNEL_BLOCK) -> int:
    """Widen every int8 depthwise Conv whose channel count is not a multiple of ``block`` (and the layers
    tied to its channels) to the next multiple, with zero weights: see the module docstring.

    Returns:
        How many depthwise convolutions were widened.
    """
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return 0
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute}
    producer = {o: n for n in g.node for o in n.output}
    consumers = _consumers(g)
    boundary = {i.name for i in g.input} | {o.name for o in g.output}
    taken = set(inits) | {o for n in g.node for o in n.output}
    shapes = None
    widened = 0
    # A widened depthwise conv's group becomes a multiple of ``block``: it is not taken up again.
    for d in list(g.node):
        if d.op_type != "Conv":
            continue
        w = _weight(d, producer, inits)
        c = node_attr(d, "group", 1)
        if w is None or not w["int8"] or c <= 1 or c % block == 0 or list(w["array"].shape[:2]) != [c, 1]:
            continue
        if shapes is None:
            shapes = _inferred_shapes(model)
        p = -(-c // block) * block
        try:
            plan = _component(d, c, shapes, producer, consumers, inits, consts, boundary)
            edits = [_padded_weights(n, role, c, p, producer, inits, consumers) for n, role in plan["convs"]]
        except _Refused:
            continue
        for n, role in plan["convs"]:
            if role == "depthwise":
                for a in n.attribute:
                    if a.name == "group":
                        a.i = p
        for node, k, array in (e for edit in edits for e in edit):
            name = _fresh(f"{node.input[k]}_{p}ch", taken)
            taken.add(name)
            t = numpy_helper.from_array(array, name)
            g.initializer.append(t)
            inits[name] = t
            node.input[k] = name  # what it read before may be read elsewhere too; unused ones go at compact()
        tied = plan["tensors"]
        for n in g.node:
            if any(o in tied for o in n.output):
                n.metadata_props.add(key=PADDED_FROM, value=str(c))
        # The shapes inferred before stay right for every other group: groups share no tensor (a walk takes in
        # everything its channels reach), so only this group's tensors, done with now, changed.
        widened += sum(role == "depthwise" for _, role in plan["convs"])
    if widened:
        # Recorded intermediate shapes are stale now (the widened tensors, and the de-quantized weights they
        # are computed from): shape inference recomputes them for whoever reads them next. The initializers
        # the widened copies replaced go where nothing reads them any more.
        del g.value_info[:]
        read = {i for n in g.node for i in n.input}
        kept = [t for t in g.initializer if t.name in read]
        del g.initializer[:]
        g.initializer.extend(kept)
    return widened


def _fresh(base: str, taken: set) -> str:
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _weight(conv, producer: dict, inits: dict) -> dict | None:
    """A Conv's weight: an 8-bit initializer behind a DequantizeLinear, or an fp32 initializer."""
    if len(conv.input) < 2:
        return None
    src = producer.get(conv.input[1])
    if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
        t = inits[src.input[0]]
        if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            return {"int8": True, "array": numpy_helper.to_array(t), "dq": src}
    if conv.input[1] in inits:
        return {"int8": False, "array": numpy_helper.to_array(inits[conv.input[1]]), "dq": None}
    return None


def _is_scalar_const(name: str, inits: dict, consts: dict) -> bool:
    t = inits.get(name) or consts.get(name)
    return t is not None and int(np.prod(t.dims)) == 1


def _component(start, c: int, shapes: dict, producer: dict, consumers: dict, inits: dict, consts: dict,
               boundary: set) -> dict:
    """The tensors whose channel axis is tied to ``start``'s ``c`` channels, and the convolutions around them
    with their role: ``depthwise``, ``source`` (produces the channels), ``sink`` (reads them),
    ``source+sink``. Raises :class:`_Refused` at anything that cannot be widened exactly."""
    tied: set[str] = set()
    convs: dict[int, tuple] = {}  # id(node) -> (node, role): protobuf messages do not hash
    queue = [start.input[0], start.output[0]]

    def tie(name: str) -> None:
        if name not in tied:
            queue.append(name)

    def role(n, r: str) -> None:
        old = convs.get(id(n), (n, None))[1]
        if old is None or old == r:
            convs[id(n)] = (n, r)
        elif {old, r} == {"source", "sink"} or "source+sink" in (old, r):
            convs[id(n)] = (n, "source+sink")
        else:
            raise _Refused

    def visit(n, name: str, produced: bool) -> None:
        op = n.op_type
        if n.domain not in ("", "ai.onnx"):
            raise _Refused
        if op in _QDQ:
            if not _is_scalar_const(n.input[1], inits, consts) or (len(n.input) > 2 and n.input[2]
                                                                   and not _is_scalar_const(n.input[2], inits, consts)):
                raise _Refused
            tie(n.input[0])
            tie(n.output[0])
        elif op in _UNARY or op in _POOLS:
            if any(i and not _is_scalar_const(i, inits, consts) for i in n.input[1:]):  # Clip's bounds
                raise _Refused
            tie(n.input[0])
            tie(n.output[0])
        elif op in _SPATIAL_REDUCTIONS:  # over H and W only, keeping the axes: per channel
            axes = reduce_axes(n, inits, consts)
            if axes is None or not axes or any(a % 4 < 2 for a in axes) or not node_attr(n, "keepdims", 1):
                raise _Refused
            tie(n.input[0])
            tie(n.output[0])
        elif op in _BINARY:
            for k, i in enumerate(n.input):
                t = inits.get(i) or consts.get(i)
                sh = list(t.dims) if t is not None else shapes.get(i)
                if sh is None or len(sh) > 4:
                    raise _Refused
                channel = sh[len(sh) - 3] if len(sh) >= 3 else 1  # the NCHW channel axis, after broadcasting
                if channel == 1:
                    continue  # the same value for every channel, the padding ones included
                if t is not None or len(sh) != 4 or channel != c:
                    raise _Refused  # a per-channel constant, or another channel count
                if op == "Div" and k == 1:  # a padded divisor of zero
                    raise _Refused
                tie(i)
            tie(n.output[0])
        elif op == "Conv":
            group = node_attr(n, "group", 1)
            if name not in n.input[:1] and name not in n.output:
                raise _Refused  # read as a weight or bias
            if group == 1:
                role(n, "source" if produced else "sink")
            elif group == c:
                w = _weight(n, producer, inits)
                if w is None or list(w["array"].shape[:2]) != [c, 1]:
                    raise _Refused
                role(n, "depthwise")
                tie(n.input[0])
                tie(n.output[0])
            else:
                raise _Refused
        else:
            raise _Refused

    while queue:
        name = queue.pop()
        if name in tied:
            continue
        if name in boundary or name in inits or name in consts:
            raise _Refused
        sh = shapes.get(name)
        if sh is None or len(sh) != 4 or sh[1] != c:
            raise _Refused
        tied.add(name)
        p = producer.get(name)
        if p is None:
            raise _Refused
        visit(p, name, produced=True)
        for reader in consumers.get(name, []):
            visit(reader, name, produced=False)
    return {"tensors": tied, "convs": list(convs.values())}


def _padded_weights(conv, role: str, c: int, p: int, producer: dict, inits: dict, consumers: dict) -> list:
    """``(node, input index, padded array)`` for one convolution of a component: the array replaces that input
    as an initializer of its own (initializers may be shared: onnxsim merges equal ones, such as zero biases).
    Raises :class:`_Refused` where the weight is not int8 or its bias not int32, a de-quantized weight is read
    by another node too, or it is quantized along an axis other than the output channels."""
    extra = p - c
    w = _weight(conv, producer, inits)
    if w is None or not w["int8"]:
        raise _Refused  # exact only in integer arithmetic
    axes = {"depthwise": [0], "source": [0], "sink": [1], "source+sink": [0, 1]}[role]
    pad = [(0, 0)] * w["array"].ndim
    for ax in axes:
        pad[ax] = (0, extra)
    weight = np.pad(w["array"], pad)
    out = []

    def grown(name: str, fill) -> np.ndarray:
        v = numpy_helper.to_array(inits[name])
        return np.concatenate([v, np.full(extra, fill, v.dtype)])

    dq = w["dq"]
    if len(consumers.get(dq.output[0], [])) != 1 or dq.input[1] not in inits:
        raise _Refused
    out.append((dq, 0, weight))
    scale = numpy_helper.to_array(inits[dq.input[1]])
    if scale.size > 1:  # per channel: along the output axis, which grows only for a producer
        if node_attr(dq, "axis", 1) % weight.ndim != 0:
            raise _Refused
        if 0 in axes:
            # the new channels' weights are zero: any positive scale computes zero (the last one is reused)
            out.append((dq, 1, grown(dq.input[1], scale[-1])))
            if len(dq.input) > 2 and dq.input[2]:
                out.append((dq, 2, grown(dq.input[2], 0)))
    if len(conv.input) > 2 and conv.input[2]:
        b = producer.get(conv.input[2])
        if (b is None or b.op_type != "DequantizeLinear" or not all(i in inits for i in b.input if i)
                or inits[b.input[0]].data_type != onnx.TensorProto.INT32):
            raise _Refused  # a float bias: the conv does not run in integers
        if 0 in axes:
            if len(consumers.get(b.output[0], [])) != 1:
                raise _Refused
            out.append((b, 0, grown(b.input[0], 0)))
            for k in (1, 2):
                if len(b.input) > k and b.input[k]:
                    v = numpy_helper.to_array(inits[b.input[k]])
                    if v.size > 1:
                        out.append((b, k, grown(b.input[k], v[-1] if k == 1 else 0)))
    return out


__all__ = ["CHANNEL_BLOCK", "PADDED_FROM", "pad_depthwise_channels", "padded_channels"]
