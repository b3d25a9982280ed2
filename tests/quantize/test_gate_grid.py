"""The fixed gate grid meets no rounding ties: onnxruntime and the PyTorch program then compute the same
codes for ``x * gate`` and for the gate itself, whatever the gate's value.

onnxruntime's QLinearMul breaks ties otherwise than the program's round-half-to-even, and the program
stores its scale in float32 (0.5 / float32(1/255) rounds down in PyTorch, up in onnxruntime). With a
grid of 1/256, a gate of 0.5 made every odd code of x a tie whenever the product kept x's scale: a trained
LCNet-0.5's int8 file agreed with its program on 92 % of test images.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgefuse.quantize.quantizer import EdgefuseQuantizer

Q = torch.ops.quantized_decomposed.quantize_per_tensor
D = torch.ops.quantized_decomposed.dequantize_per_tensor


def _gate_mul(s_x: float, z_x: int, s_g: float, s_o: float, z_o: int) -> bytes:
    inits = [numpy_helper.from_array(np.float32(v), n) for v, n in [(s_x, "sx"), (s_g, "sg"), (s_o, "so")]]
    inits += [numpy_helper.from_array(np.uint8(v), n) for v, n in [(z_x, "zx"), (0, "zg"), (z_o, "zo")]]
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["g", "sg", "zg"], ["gd"]),
             helper.make_node("Mul", ["xd", "gd"], ["p"]),
             helper.make_node("QuantizeLinear", ["p", "so", "zo"], ["y"])]
    shape = [256, 256]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.UINT8, shape) for n in ("x", "g")],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize("s_x,z_x", [(0.07245902, 5), (0.0331624, 128), (0.1239939, 163)])
@pytest.mark.parametrize("ratio", [1.0, 0.5])  # the product keeps x's scale, or half of it
def test_x_times_gate_is_the_same_code_in_onnxruntime_and_the_program(s_x, z_x, ratio):
    s_g = EdgefuseQuantizer().gate.scale
    s_o, z_o = s_x * ratio, z_x
    x = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, 1)  # every code of x ...
    g = x.T.copy()  # ... times every code of the gate
    sess = ort.InferenceSession(_gate_mul(s_x, z_x, s_g, s_o, z_o), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x, "g": g})[0]  # DQ -> Mul -> Q: fused into QLinearMul
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    prog = Q(D(xt, s_x, z_x, 0, 255, torch.uint8) * D(gt, s_g, 0, 0, 255, torch.uint8), s_o, z_o, 0, 255, torch.uint8)
    assert np.array_equal(got, prog.numpy()), f"{np.mean(got != prog.numpy()):.4f} of the products differ"


def test_a_gate_of_one_half_is_no_tie():
    # sigmoid(0) = hardsigmoid(0) = 0.5: an SE gate whose input is exactly zero
    for spec in (EdgefuseQuantizer().gate, EdgefuseQuantizer(is_qat=True).gate):
        codes = 0.5 / np.float32(spec.scale)
        assert abs(codes - np.floor(codes) - 0.5) > 0.1, codes
        prog = int(Q(torch.tensor([0.5]), spec.scale, spec.zero_point, spec.quant_min, spec.quant_max, spec.dtype))
        assert prog == int(np.round(codes)) + spec.zero_point
