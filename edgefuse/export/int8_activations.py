"""int8 forms for the activations onnxruntime runs in fp32 inside int8 graphs: hard-sigmoid and hard-swish.

MobileNetV3, LCNet, EfficientNet-lite-style blocks and their SE gates use ``hardsigmoid(x) = clip(a*x + b, 0, 1)``
(PyTorch: a = 1/6, b = 1/2) and ``hardswish(x) = x * hardsigmoid(x)`` (Howard et al. 2019, "Searching for
MobileNetV3"). onnxruntime runs both in fp32 between a DequantizeLinear and a QuantizeLinear: four passes
over the activation in fp32 for every block, a quarter to a third of such a network's int8 time.

Both are affine maps followed by a clip, and a QuantizeLinear already is an affine map followed by a clip
(saturation). So, for an activation ``x`` quantized with (s_x, z_x):

- ``hardsigmoid(x)`` quantized with (s_o, z_o) equals ``Q(x + b/a; s_o/a, z_o)`` read back with (s_o, z_o):
  the 1/a is folded into the scale, the clip into saturation. ``x + b/a`` is an int8 Add with a constant,
  which onnxruntime fuses into ``QLinearAdd``. For a gate already quantized to (s_o, z_o) this is the same
  arithmetic as before, up to rounding (one step of the output at most).
- ``hardswish(x) = x * hardsigmoid(x)``: the hard-sigmoid as above, quantized to the full [0, 1] range
  (step 1/255: an error of at most 1/510 of ``x``), then an int8 ``QLinearMul`` with ``x``.

SiLU is not rewritten here: the quantizer decomposes it into ``x * sigmoid(x)`` (see
:func:`edgefuse.quantize.quantizer.decompose_silu`), so the program itself quantizes the sigmoid and the file
computes what the program does.

The rewrite is applied to QDQ int8 graphs only (the fp32 file keeps the original ops).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefuse.export.onnx_checks import _consumers

#: PyTorch's hard-sigmoid / hard-swish slope and offset (ONNX HardSwish fixes these too).
_HARD_SWISH = (1.0 / 6.0, 0.5)


def _attr(node, name: str, default: float) -> float:
    return next((float(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _scalar(inits: dict, name: str) -> np.ndarray | None:
    t = inits.get(name)
    if t is None:
        return None
    a = numpy_helper.to_array(t)
    return a if a.size == 1 else None


def _unit_grid(dtype) -> tuple[float, int]:
    """Scale and zero point that spread [0, 1] over every code of the 8-bit ``dtype`` (step 1/255)."""
    info = np.iinfo(dtype)
    return 1.0 / (int(info.max) - int(info.min)), int(info.min)


def int8_hard_activations(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite ``HardSigmoid`` and ``HardSwish`` between int8 tensors as ``Add``/``Mul`` that onnxruntime runs
    as ``QLinearAdd``/``QLinearMul`` (see the module docstring for the arithmetic).

    A node is rewritten when its input comes from a per-tensor ``DequantizeLinear`` and its output goes to
    exactly one ``QuantizeLinear`` (an int8 consumer); others are left as they are.

    Returns:
        ``{"hardsigmoid": n, "hardswish": m}``: the nodes rewritten.
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

    counts = {"hardsigmoid": 0, "hardswish": 0}
    out: list[onnx.NodeProto] = []

    def emit(source, op, inputs, outputs, suffix):
        node = helper.make_node(op, inputs, outputs, name=f"{source.name or source.output[0]}_{suffix}")
        node.metadata_props.extend(source.metadata_props)  # doctor maps nodes to modules by these
        out.append(node)
        return outputs[0]

    for n in g.node:
        base = n.name or n.output[0]
        if n.op_type not in ("HardSigmoid", "HardSwish"):
            out.append(n)
            continue
        dq = producer.get(n.input[0])
        q = consumers.get(n.output[0], [])
        zp = _scalar(inits, dq.input[2]) if dq is not None and dq.op_type == "DequantizeLinear" and len(dq.input) == 3 else None
        if (zp is None or _scalar(inits, dq.input[1]) is None or len(q) != 1 or q[0].op_type != "QuantizeLinear"
                or _scalar(inits, q[0].input[1]) is None):
            out.append(n)
            continue
        a, b = _HARD_SWISH if n.op_type == "HardSwish" else (_attr(n, "alpha", 0.2), _attr(n, "beta", 0.5))
        if a <= 0 or b <= 0:  # the constant b/a is stored as the largest positive code
            out.append(n)
            continue
        dtype, qmax = zp.dtype.type, int(np.iinfo(zp.dtype).max)
        c = b / a
        c_dq = emit(n, "DequantizeLinear", [const([qmax], dtype, base + "_c_q"), const(c / qmax, np.float32, base + "_c_scale"),
                                            const(0, dtype, base + "_c_zp")], [fresh(base + "_c")], "c_dq")
        x_dq = emit(n, "DequantizeLinear", list(dq.input), [fresh(base + "_x")], "x_dq")  # its own DQ: one per fused node
        shifted = emit(n, "Add", [x_dq, c_dq], [fresh(base + "_shifted")], "add")
        if n.op_type == "HardSigmoid":
            # The gate's own QuantizeLinear now quantizes x + b/a with s_o / a; its readers keep (s_o, z_o).
            s_o = float(numpy_helper.to_array(inits[q[0].input[1]]))
            q[0].input[0] = shifted
            q[0].input[1] = const(s_o / a, np.float32, base + "_scale")
            counts["hardsigmoid"] += 1
            continue
        # hard-swish: the hard-sigmoid on the whole [0, 1] range, then an int8 multiply with x.
        s_o, z_o = _unit_grid(zp.dtype)
        zo = const(z_o, dtype, base + "_gate_zp")
        gq = emit(n, "QuantizeLinear", [shifted, const(s_o / a, np.float32, base + "_gate_qscale"), zo],
                  [fresh(base + "_gate_q")], "gate_q")
        gate = emit(n, "DequantizeLinear", [gq, const(s_o, np.float32, base + "_gate_scale"), zo],
                    [fresh(base + "_gate")], "gate_dq")
        emit(n, "Mul", [n.input[0], gate], [n.output[0]], "mul")
        counts["hardswish"] += 1
    del g.node[:]
    g.node.extend(out)
    g.initializer.extend(added)
    return counts
