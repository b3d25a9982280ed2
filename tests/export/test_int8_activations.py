"""Hard-sigmoid as an int8 Add (edgefuse.export.int8_activations), bounded against the QDQ arithmetic it
replaces; hard-swish and SiLU split into a quantized gate and an int8 multiply in the program
(edgefuse.quantize.quantizer.decompose_activations), so that the file computes its program; all of them
run by onnxruntime's int8 kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.export import export_artifacts
from edgefuse.export.int8_activations import int8_hard_activations
from edgefuse.models import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.runtimes import OrtModel
from edgefuse.validate.doctor import diagnose
from tests.conftest import quant_config_here


def _qdq_graph(op: str, dtype, s_x: float, z_x: int, s_o: float, z_o: int, **attrs) -> onnx.ModelProto:
    """x -> Q/DQ (s_x, z_x) -> op -> Q/DQ (s_o, z_o) -> y: the shape PT2E exports an int8 activation in."""
    np_t = np.uint8 if dtype == TensorProto.UINT8 else np.int8
    inits = [numpy_helper.from_array(np.float32(s_x), "sx"), numpy_helper.from_array(np_t(z_x), "zx"),
             numpy_helper.from_array(np.float32(s_o), "so"), numpy_helper.from_array(np_t(z_o), "zo")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node(op, ["xd"], ["a"], **attrs),
             helper.make_node("QuantizeLinear", ["a", "so", "zo"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "so", "zo"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64, 64])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return OrtModel.from_bytes(model.SerializeToString()).run(x)


# A grid over [-8, 8] that covers both clip points (-3 and +3) and the saturated tails.
X = np.linspace(-8, 8, 4 * 64 * 64, dtype=np.float32).reshape(1, 4, 64, 64)


@pytest.mark.parametrize("dtype,z_x,z_gate", [(TensorProto.UINT8, 128, 0), (TensorProto.INT8, 0, -128)])
def test_hard_sigmoid_gate_is_the_same_quantized_arithmetic(dtype, z_x, z_gate):
    s_x, s_o = 16 / 255, 1 / 256  # a gate with edgefuse's fixed output range
    before = _qdq_graph("HardSigmoid", dtype, s_x, z_x, s_o, z_gate, alpha=1 / 6, beta=0.5)
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert int8_hard_activations(after) == {"hardsigmoid": 1}
    onnx.checker.check_model(after)
    assert "HardSigmoid" not in {n.op_type for n in after.graph.node}
    y0, y1 = _run(before, X), _run(after, X)
    # the same output grid; at most one step apart (rounding of (x + 3) * 6/s_o vs (x/6 + 0.5)/s_o)
    assert np.abs(y1 - y0).max() <= s_o * 1.001
    assert np.mean(y1 == y0) > 0.98
    exact = np.clip(np.round(np.clip(X / 6 + 0.5, 0, 1) / s_o), 0, 255) * s_o  # what the gate means
    assert np.abs(y1 - exact).max() <= s_o + s_x / 6 + 1e-6


@pytest.mark.parametrize("dtype,z_x,z_gate", [(TensorProto.UINT8, 128, 0), (TensorProto.INT8, 0, -128)])
def test_the_hard_swish_gate_rounds_its_midpoint_as_the_program_does(dtype, z_x, z_gate):
    # On the hard-swish gate's grid of 1/255, hardsigmoid(0) = 0.5 is 127.5 codes: the program rounds it to
    # 127 (float32(1/255) is a little above 1/255); the file must too, or 1-2 % of a trained MobileNetV3's
    # gate codes differ from its program's given the same inputs (edgefuse.validate.opcheck).
    s_x, s_o = 0.0471, float(np.float32(1 / 255))
    m = _qdq_graph("HardSigmoid", dtype, s_x, z_x, s_o, z_gate, alpha=1 / 6, beta=0.5)
    assert int8_hard_activations(m) == {"hardsigmoid": 1}
    x = np.zeros((1, 4, 64, 64), np.float32)  # quantizes to the zero point: exactly 0
    qmin, qmax = (0, 255) if dtype == TensorProto.UINT8 else (-128, 127)
    code = torch.ops.quantized_decomposed.quantize_per_tensor(
        torch.nn.functional.hardsigmoid(torch.zeros(1)), s_o, z_gate, qmin, qmax,
        torch.uint8 if dtype == TensorProto.UINT8 else torch.int8)
    assert int(code) - z_gate == 127  # the program's midpoint
    y = _run(m, x)
    assert np.all(y == np.float32(127 * s_o)), np.unique(y / s_o)


def test_a_hard_swish_in_an_int8_file_is_left_to_the_program():
    # The quantizer splits every hard-swish it quantizes; one left in the file is an fp32 choice of the
    # program (an excluded module), and quantizing its gate in the file alone would be a file-only change.
    m = _qdq_graph("HardSwish", TensorProto.UINT8, 16 / 255, 128, 8.4 / 255, 12)
    assert int8_hard_activations(m) == {"hardsigmoid": 0}
    assert "HardSwish" in {n.op_type for n in m.graph.node}


def test_nodes_without_int8_neighbours_are_left_alone():
    m = _qdq_graph("HardSigmoid", TensorProto.UINT8, 0.1, 128, 1 / 256, 0, alpha=1 / 6, beta=0.5)
    m.graph.node[3].op_type = "Identity"  # the activation's output is no longer quantized
    del m.graph.node[3].input[1:]
    assert int8_hard_activations(m) == {"hardsigmoid": 0}


def _assert_file_computes_program(q, path, xs) -> None:
    """The int8 file's logits are within one logit step of its program's, with the same argmax everywhere."""
    x = torch.stack(xs)
    with torch.no_grad():
        ref = q.program(x).numpy()
    got = OrtModel(path).run(x.numpy())
    step = np.abs(ref).max() / 127  # about one step of the logits' int8 grid
    assert np.abs(got - ref).max() <= step and (ref.argmax(1) == got.argmax(1)).all()


class _HardSwishNet(torch.nn.Module):
    """torchvision's MobileNetV3 style: conv -> BN -> in-place Hardswish, a residual add in place, a pooled head."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.act1, self.c2, self.act2 = torch.nn.Hardswish(inplace=True), torch.nn.Conv2d(16, 16, 1), torch.nn.Hardswish()
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.act1(self.bn(self.c1(x)))
        y = self.c2(x)
        y += x
        return self.fc(self.act2(y).mean((2, 3)))


def test_hard_swish_is_quantized_in_the_program_and_the_file_computes_it(tmp_path):
    torch.manual_seed(0)
    model = _HardSwishNet().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1), model.bn.running_var.uniform_(0.5, 2)
    contract = PreprocessContract(16, 3, [0.5] * 3, [0.25] * 3)
    xs = [2 * torch.randn(3, 16, 16) for _ in range(64)]  # activations on both sides of the clips at -3 and +3
    q = quantize_ptq(model, TensorBatches(xs, 64, 16), quant_config_here())
    nodes = [n for n in q.program.graph.nodes if n.op == "call_function"]
    targets = [n.target for n in nodes]
    aten = torch.ops.aten
    assert not {aten.hardswish.default, aten.hardswish_.default, aten.add_.Tensor} & set(targets)
    assert targets.count(aten.hardsigmoid.default) == 2
    # each gate is quantized on [0, 1] exactly: x * gate is x itself wherever x >= 3
    gate_q = [u for n in nodes if n.target is aten.hardsigmoid.default for u in n.users]
    assert len(gate_q) == 2 and all("quantize_per_tensor" in str(u.target) for u in gate_q)
    assert all(abs(float(u.args[1]) - 1 / 255) < 1e-9 for u in gate_q), [u.args[1] for u in gate_q]
    res = export_artifacts(model, contract, tmp_path, quantized=q, formats=("onnx",))
    details = next(a.details for a in res.artifacts if a.precision == "int8")
    assert details["int8_activations"] == {"hardsigmoid": 2}
    rep = diagnose(res.path("onnx", "int8"), runs=2)
    assert not {"HardSwish", "HardSigmoid"} & set(rep.op_counts), rep.op_counts
    assert rep.op_counts.get("QLinearMul", 0) >= 2 and rep.op_counts.get("QLinearAdd", 0) >= 3, rep.op_counts
    _assert_file_computes_program(q, res.path("onnx", "int8"), xs)


def test_mobilenetv3_hard_swish_runs_on_int8_kernels(tmp_path):
    d = load_data("digits")
    contract = PreprocessContract(32, 1, [0.306], [0.324], d.class_names)
    calib, test = ImageDataset(d.train, contract), ImageDataset(d.test, contract)
    torch.manual_seed(0)
    model = create_model("mobilenetv3", 10, act=None, gate="hard_sigmoid").eval()  # the paper's activations
    q = quantize_ptq(model, TensorBatches(calib, 32, 16), quant_config_here())
    res = export_artifacts(model, contract, tmp_path, quantized=q, formats=("onnx",))
    details = next(a.details for a in res.artifacts if a.precision == "int8")
    assert details["int8_activations"]["hardsigmoid"] >= 13  # 10+ hard-swish gates and 3+ SE gates
    rep = diagnose(res.path("onnx", "int8"), runs=3)
    assert not {"HardSwish", "HardSigmoid"} & set(rep.op_counts), rep.op_counts  # no fp32 island left
    assert rep.op_counts.get("QLinearAdd", 0) >= 13 and rep.op_counts.get("QLinearMul", 0) >= 13
    x = torch.stack([test[i][0] for i in range(128)])
    with torch.no_grad():
        ref = q.program(x).numpy()
    got = OrtModel(res.path("onnx", "int8")).run(x.numpy())
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.99  # the file still computes its program


class _SiLUNet(torch.nn.Module):
    """EfficientNet-style: conv -> BN -> in-place SiLU, a second SiLU, then a pooled head."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn, self.c2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.nn.functional.silu(self.bn(self.c1(x)), inplace=True)
        x = torch.nn.functional.silu(self.c2(x))
        return self.fc(x.mean((2, 3)))


def test_silu_is_quantized_in_the_program_and_the_file_computes_it(tmp_path):
    # The quantizer splits SiLU into x * sigmoid(x): onnxruntime runs QLinearSigmoid and QLinearMul, and the
    # file's logits are the program's (an ONNX-only rewrite once quantized the sigmoid in the file alone)
    torch.manual_seed(0)
    model = _SiLUNet().eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        model.bn.running_mean.uniform_(-1, 1), model.bn.running_var.uniform_(0.5, 2)
    contract = PreprocessContract(16, 3, [0.5] * 3, [0.25] * 3)
    xs = [torch.randn(3, 16, 16) for _ in range(64)]
    q = quantize_ptq(model, TensorBatches(xs, 64, 16), quant_config_here())
    targets = [n.target for n in q.program.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.silu.default not in targets and torch.ops.aten.silu_.default not in targets
    assert targets.count(torch.ops.aten.sigmoid.default) == 2
    res = export_artifacts(model, contract, tmp_path, quantized=q, formats=("onnx",))
    rep = diagnose(res.path("onnx", "int8"), runs=2)
    assert rep.op_counts.get("QLinearSigmoid", 0) == 2 and "Sigmoid" not in rep.op_counts, rep.op_counts
    _assert_file_computes_program(q, res.path("onnx", "int8"), xs)


def test_in_place_silu_with_another_reader_is_left_alone():
    from edgefuse._inplace import functionalize_inplace
    from edgefuse.quantize.quantizer import decompose_activations

    class Shared(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            a = y + 1
            torch.nn.functional.silu(y, inplace=True)
            return y * a

    x = torch.randn(2, 3, 4, 4)
    gm = torch.export.export(Shared(), (x.clone(),)).module()
    out = decompose_activations(functionalize_inplace(gm)[0])
    assert torch.ops.aten.silu_.default in [n.target for n in out.graph.nodes]
    assert torch.equal(out(x.clone()), Shared()(x.clone()))
