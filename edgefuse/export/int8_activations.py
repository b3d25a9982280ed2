"""The int8 form of hard-sigmoid, which onnxruntime runs in fp32 inside int8 graphs.

MobileNetV3, LCNet, EfficientNet-lite-style blocks and their SE gates use ``hardsigmoid(x) = clip(a*x + b, 0, 1)``
(PyTorch: a = 1/6, b = 1/2), and ``hardswish(x) = x * hardsigmoid(x)`` (Howard et al. 2019, "Searching for
MobileNetV3"). onnxruntime runs HardSigmoid in fp32 between a DequantizeLinear and a QuantizeLinear: passes
over the activation in fp32 for every block, a quarter to a third of such a network's int8 time.

It is an affine map followed by a clip, and a QuantizeLinear already is an affine map followed by a clip
(saturation). So, for an activation ``x`` quantized with (s_x, z_x), ``hardsigmoid(x)`` quantized with
(s_o, z_o) equals ``Q(x + b/a; s_o/a, z_o)`` read back with (s_o, z_o): the 1/a is folded into the scale, the
clip into saturation (a calibrated range lies inside [0, 1], so saturating to it is the clip followed by
the program's own quantization). ``x + b/a`` is an int8 Add with a constant, which onnxruntime fuses into
``QLinearAdd``. The program's arithmetic is unchanged up to rounding: one step of the output at most.

Hard-swish and SiLU are not rewritten here: the quantizer splits them into ``x * hardsigmoid(x)`` and
``x * sigmoid(x)`` with a quantized gate (:func:`edgefuse.quantize.quantizer.decompose_activations`), so the
program itself quantizes the gate and the file computes what the program does. A ``HardSwish`` left in an
int8 file is one the program keeps in fp32 (an excluded module), and stays so.

The rewrite is applied to QDQ int8 graphs only (the fp32 file keeps the original ops).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefuse.export.onnx_checks import _consumers, drop_dead_nodes, node_attr

def _attr(node, name: str, default: float) -> float:
    return float(node_attr(node, name, default))


def _scalar(inits: dict, name: str) -> np.ndarray | None:
    t = inits.get(name)
    if t is None:
        return None
    a = numpy_helper.to_array(t)
    return a if a.size == 1 else None


def int8_hard_activations(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite each ``HardSigmoid`` between int8 tensors as an ``Add`` that onnxruntime runs as ``QLinearAdd``
    (see the module docstring for the arithmetic).

    A node is rewritten when its input comes from a per-tensor ``DequantizeLinear`` and its output goes to
    exactly one ``QuantizeLinear`` (an int8 consumer); others are left as they are.

    Returns:
        ``{"hardsigmoid": n}``: the nodes rewritten.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = _consumers(g)
    added: list[onnx.TensorProto] = []
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}

    def fresh(base: str) -> str:
        k = 0
        while f"{base}_{k}" in taken:
            k += 1
        taken.add(f"{base}_{k}")
        return f"{base}_{k}"

    def const(value, dtype, base: str) -> str:
        t = numpy_helper.from_array(np.asarray(value, dtype=dtype), fresh(base))
        added.append(t)
        return t.name

    counts = {"hardsigmoid": 0}
    out: list[onnx.NodeProto] = []

    def emit(source, op, inputs, outputs, suffix):
        node = helper.make_node(op, inputs, outputs, name=f"{source.name or source.output[0]}_{suffix}")
        node.metadata_props.extend(source.metadata_props)  # doctor maps nodes to modules by these
        out.append(node)
        return outputs[0]

    for n in g.node:
        base = n.name or n.output[0]
        if n.op_type != "HardSigmoid":
            out.append(n)
            continue
        dq = producer.get(n.input[0])
        q = consumers.get(n.output[0], [])
        zp = _scalar(inits, dq.input[2]) if dq is not None and dq.op_type == "DequantizeLinear" and len(dq.input) == 3 else None
        if (zp is None or _scalar(inits, dq.input[1]) is None or len(q) != 1 or q[0].op_type != "QuantizeLinear"
                or _scalar(inits, q[0].input[1]) is None):
            out.append(n)
            continue
        a, b = _attr(n, "alpha", 0.2), _attr(n, "beta", 0.5)
        if a <= 0 or b <= 0:  # the constant b/a is stored as the largest positive code
            out.append(n)
            continue
        dtype, qmax = zp.dtype.type, int(np.iinfo(zp.dtype).max)
        c = b / a
        c_dq = emit(n, "DequantizeLinear", [const([qmax], dtype, base + "_c_q"), const(c / qmax, np.float32, base + "_c_scale"),
                                            const(0, dtype, base + "_c_zp")], [fresh(base + "_c")], "c_dq")
        x_dq = emit(n, "DequantizeLinear", list(dq.input), [fresh(base + "_x")], "x_dq")  # its own DQ: one per fused node
        shifted = emit(n, "Add", [x_dq, c_dq], [fresh(base + "_shifted")], "add")
        # The gate's own QuantizeLinear now quantizes x + b/a with s_o / a; its readers keep (s_o, z_o).
        s_o = float(numpy_helper.to_array(inits[q[0].input[1]]))
        q[0].input[0] = shifted
        # The scale is nudged up by 2^-21 (~0.5 ppm) so that a gate meeting a rounding tie rounds down as the
        # program's does: with the hard-swish gate's grid of 1/255, hardsigmoid(0) = 0.5 is 127.5 codes;
        # PyTorch multiplies by float32(1/255)'s inverse, just under 255, and gets 127, onnxruntime's
        # QLinearAdd got 128. Away from ties the nudge moves no code unless it lies within 6e-5 of one.
        q[0].input[1] = const(s_o / a * (1 + 2.0 ** -21), np.float32, base + "_scale")
        counts["hardsigmoid"] += 1
    del g.node[:]
    g.node.extend(out)
    g.initializer.extend(added)
    # A gate's old DequantizeLinear is unread once the Add has its own: onnxruntime would still run it (and
    # transpose its input back to NCHW for it), also in the candidates the latency search times.
    drop_dead_nodes(g)
    return counts
