"""Depthwise convolutions padded to 16-channel blocks (edgefuse.export.channel_padding): exact, and refused
where a channel-mixing op other than a zero-weight convolution would see the padding."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgefuse.data import PreprocessContract
from edgefuse.export import export_artifacts, export_onnx
from edgefuse.export.channel_padding import pad_depthwise_channels, padded_channels
from edgefuse.export.int8_activations import int8_hard_activations
from edgefuse.export.onnx_checks import reduce_mean_to_global_pool, strip_debug_metadata, tile_channel_broadcasts
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.runtimes import OrtModel
from edgefuse.validate.opcheck import check_ops
from tests.conftest import quant_config_here

SIZE = 32  # maps of 32x32 = 1024 pixels: the gate multiply of the first block is tiled too


class InvertedResidual(nn.Module):
    """MobileNetV3's block as torchvision writes it: expand, depthwise, squeeze-excitation, project, residual."""

    def __init__(self, c_in: int, c: int, k: int = 3):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c_in, c, 1, bias=False), nn.BatchNorm2d(c), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False), nn.BatchNorm2d(c),
                                nn.Hardswish())
        self.fc1, self.fc2 = nn.Conv2d(c, 8, 1), nn.Conv2d(8, c, 1)
        self.project = nn.Sequential(nn.Conv2d(c, c_in, 1, bias=False), nn.BatchNorm2d(c_in))

    def forward(self, x):
        y = self.dw(self.expand(x))
        s = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(nn.functional.adaptive_avg_pool2d(y, 1)))))
        return x + self.project(y * s)


class Net(nn.Module):
    """Two paddable groups (24 and 40 channels), one already in blocks of 16 (32), and one the padding must
    leave alone: a 24-channel depthwise conv whose output is flattened into a Linear layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b1, self.b2, self.b3 = InvertedResidual(16, 24), InvertedResidual(16, 32, 5), InvertedResidual(16, 40)
        self.down = nn.Sequential(nn.Conv2d(16, 24, 1), nn.ReLU(), nn.Conv2d(24, 24, 3, stride=8, padding=1, groups=24))
        self.fc = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x):
        x = self.b3(self.b2(self.b1(self.stem(x))))
        return self.fc(self.down(x).flatten(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():  # batch-norm statistics of a trained network, not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(64, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    q = quantize_ptq(model, TensorBatches(x, samples=64, batch_size=16), quant_config_here())
    out = tmp_path_factory.mktemp("padding")
    raw = export_onnx(q.program, (x[:2],), out / "raw.int8.onnx")
    contract = PreprocessContract(SIZE, 3, (0.5,) * 3, (0.25,) * 3, [str(i) for i in range(10)])
    res = export_artifacts(model, contract, out / "build", quantized=q, formats=("onnx",), simplify=True)
    return {"model": model, "program": q.program, "x": x, "raw": raw, "res": res}


def _finished(raw, pad: bool) -> onnx.ModelProto:
    """The int8 passes of ``edgefuse.export.formats.onnx.finish_onnx``, in its order, with or without padding."""
    m = onnx.load(str(raw))
    strip_debug_metadata(m)
    reduce_mean_to_global_pool(m)
    int8_hard_activations(m)
    widened = pad_depthwise_channels(m) if pad else 0
    tile_channel_broadcasts(m)
    onnx.checker.check_model(m)
    return m, widened


def _with_quantized_outputs(m: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose every activation QuantizeLinear output is a graph output too."""
    m = copy.deepcopy(m)
    inits = {t.name for t in m.graph.initializer}
    names = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    m.graph.output.extend([onnx.helper.make_empty_tensor_value_info(n) for n in names])
    return m, names


def test_padding_is_exact_on_every_quantized_tensor(built):
    plain, _ = _finished(built["raw"], pad=False)
    padded, widened = _finished(built["raw"], pad=True)
    assert widened == 2  # 24 and 40 channels; 32 is a block already; the flattened 24 is refused
    groups = sorted(next(a.i for a in n.attribute if a.name == "group") for n in padded.graph.node
                    if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
    assert groups == [24, 32, 32, 48]
    assert any(n.op_type == "Tile" for n in padded.graph.node)  # the tiled gate is laid out for 32 channels
    # every widened weight and bias: the original values, then zeros
    from onnx import numpy_helper

    def weights(m):
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        producer = {o: n for n in m.graph.node for o in n.output}
        out = {}
        for n in m.graph.node:
            if n.op_type == "Conv":
                for k, name in enumerate(n.input[1:], 1):
                    src = producer.get(name)
                    out[(n.name, k)] = inits[src.input[0] if src is not None else name]
        return out

    before, after = weights(plain), weights(padded)
    grown = 0
    for key, old in before.items():
        new = after[key]
        real = new[tuple(slice(0, d) for d in old.shape)]
        assert np.array_equal(real, old), key
        if new.shape != old.shape:
            grown += 1
            assert new.sum() == old.sum() and np.count_nonzero(new) == np.count_nonzero(old), key
    assert grown >= 10  # per group: expand (+ bias), depthwise, SE squeeze, SE excite (+ bias), project
    a, names_a = _with_quantized_outputs(plain)
    b, names_b = _with_quantized_outputs(padded)
    x = built["x"][:5].numpy()
    ya = dict(zip(["logits", *names_a], OrtModel.from_bytes(a.SerializeToString()).session.run(None, {"input": x})))
    yb = dict(zip(["logits", *names_b], OrtModel.from_bytes(b.SerializeToString()).session.run(None, {"input": x})))
    assert np.array_equal(ya["logits"], yb["logits"])
    real = {o: padded_channels(n) for n in padded.graph.node for o in n.output}
    compared = widened_tensors = 0
    for name in set(names_a) & set(names_b):
        got = yb[name]
        if got.ndim != 4:  # inside a tiled multiply: (N, H*W/k, k*C), k chosen by C (its output is NCHW again)
            continue
        if real.get(name):
            widened_tensors += 1
            assert got.shape[1] > real[name]
            got = got[:, :real[name]]
        assert np.array_equal(ya[name], got), name
        compared += 1
    assert compared >= 20 and widened_tensors >= 8


def test_the_exported_file_is_padded_and_checked_on_its_real_channels(built, tmp_path):
    res = built["res"]
    art = next(a for a in res.artifacts if a.file == "model.int8.onnx")
    assert art.details["padded_depthwise"] == 2
    path = res.path("onnx", "int8")
    x = built["x"][:32]
    with torch.no_grad():
        prog_out = built["program"](x).numpy()
    assert (OrtModel(path).run(x.numpy()).argmax(1) == prog_out.argmax(1)).mean() >= 0.97
    # The op-for-op check reads the file's first ``channels`` of a padded tensor: the same verdict and figures
    # as for the same passes without padding (unsliced, the program could not read the padded codes at all).
    checks = {}
    for pad in (False, True):
        m, _ = _finished(built["raw"], pad)
        onnx.save(m, tmp_path / f"pad-{pad}.onnx")
        checks[pad] = check_ops(built["program"], tmp_path / f"pad-{pad}.onnx", x)
    a, b = checks[False], checks[True]
    assert "could not read" not in b.reason and b.paired == a.paired == a.tensors
    assert (b.passed, b.worst_fraction, b.worst_step, b.output_error) == (a.passed, a.worst_fraction, a.worst_step,
                                                                          a.output_error)
    shipped = check_ops(built["program"], path, x)
    assert "could not read" not in shipped.reason and shipped.paired >= shipped.tensors // 2 and shipped.worst_step <= 1
    manifest = json.loads((res.out_dir / "manifest.json").read_text())
    assert next(a for a in manifest["artifacts"] if a["file"] == "model.int8.onnx")["details"]["padded_depthwise"] == 2


@pytest.mark.parametrize("after,widened", [("project", 1), ("add", 0), ("reshape", 0), ("div", 0), ("fp32", 0)])
def test_only_what_cannot_see_the_padding_is_padded(after, widened):
    # int8 1x1 conv 8 -> 24, depthwise 24, then: a projecting 1x1 conv (padded), or a per-channel constant,
    # a reshape, a division by the padded channels (each would see the padding: left as they are), or the
    # projecting conv in fp32 (a latency-chosen fp32 region: float sums are not exact, left as it is)
    from onnx import TensorProto, helper, numpy_helper

    c = 24
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-127, 127, (c, 8, 1, 1)).astype(np.int8), "we"),
             numpy_helper.from_array(rng.integers(-127, 127, (c, 1, 3, 3)).astype(np.int8), "w"),
             numpy_helper.from_array(rng.integers(-127, 127, (8, c, 1, 1)).astype(np.int8), "wp"),
             numpy_helper.from_array(np.full(c, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws8"),
             numpy_helper.from_array(np.zeros(c, np.int8), "wz"), numpy_helper.from_array(np.zeros(8, np.int8), "wz8"),
             numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z"),
             numpy_helper.from_array(rng.standard_normal((1, c, 1, 1)).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["we", "ws", "wz"], ["wed"], axis=0),
             helper.make_node("Conv", ["xd", "wed"], ["e"], kernel_shape=[1, 1]),
             helper.make_node("QuantizeLinear", ["e", "s", "z"], ["eq"]),
             helper.make_node("DequantizeLinear", ["eq", "s", "z"], ["ed"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["ed", "wd"], ["c"], group=c, kernel_shape=[3, 3], pads=[1] * 4)]
    nodes += {
        "project": [helper.make_node("DequantizeLinear", ["wp", "ws8", "wz8"], ["wpd"], axis=0),
                    helper.make_node("Conv", ["c", "wpd"], ["y"], kernel_shape=[1, 1])],
        "add": [helper.make_node("Add", ["c", "bias"], ["y"])],
        "reshape": [helper.make_node("Reshape", ["c", "shape"], ["y"])],
        "div": [helper.make_node("Div", ["ed", "c"], ["y"])],
        "fp32": [helper.make_node("Conv", ["c", "wp_fp32"], ["y"], kernel_shape=[1, 1])],
    }[after]
    inits.append(numpy_helper.from_array(rng.standard_normal((8, c, 1, 1)).astype(np.float32), "wp_fp32"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    before = copy.deepcopy(m)
    assert pad_depthwise_channels(m) == widened
    if not widened:
        assert m.SerializeToString() == before.SerializeToString()
        return
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    run = [OrtModel.from_bytes(v.SerializeToString()).run(x) for v in (before, m)]
    assert np.array_equal(run[0], run[1])


def test_doctor_names_the_depthwise_layers_left_on_the_slow_kernel(built, tmp_path):
    from edgefuse.validate.doctor import diagnose

    kind = "int8 depthwise conv on onnxruntime's slow kernel"
    plain, _ = _finished(built["raw"], pad=False)
    onnx.save(plain, tmp_path / "plain.onnx")
    before = [f for f in diagnose(tmp_path / "plain.onnx", runs=3).findings if f.kind == kind]
    after = [f for f in diagnose(built["res"].path("onnx", "int8"), runs=3).findings if f.kind == kind]
    assert len(before) == 3  # 24, 40 and the flattened 24 channels
    assert [f.module for f in after] == ["down.2"]  # only the one whose channels a reshape reads
    assert "pads" in after[0].advice


def test_export_says_what_it_widened(built, tmp_path, monkeypatch):
    # the user's network as a .pt2, through the whole export and its gate: the report, report.md and the
    # terminal name the widened layers of the int8 .onnx
    from rich.console import Console

    from edgefuse.api import export_model
    from edgefuse.cli import render

    batch = torch.export.Dim("batch")
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(built["model"], (built["x"][:2],), dynamic_shapes=({0: batch},)), pt2)
    res = export_model(pt2, tmp_path / "build", calib="digits", formats=("onnx",), runs=3, latency_search=False,
                       model_kwargs={"input_size": SIZE, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3})
    assert res.report.extra["padded_depthwise"] == {"model.int8.onnx": 2}
    assert "16-channel blocks" in (tmp_path / "build" / "report.md").read_text()
    console = Console(record=True, width=200)
    monkeypatch.setattr(render, "out", console)
    render.validation_report(res.report)
    assert "model.int8.onnx: 2 int8 depthwise conv(s) widened to 16-channel blocks" in console.export_text()
