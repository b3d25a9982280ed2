"""The dynamic-batch ONNX file: exported at batch 1 and given a symbolic batch, or exported symbolically when
that cannot be shown to be the same program."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import edgefuse.export.onnx as onnx_export
from edgefuse.export import export_onnx
from edgefuse.export.onnx_batch import symbolic_batch
from edgefuse.models.registry import create_model


class SqueezeExcite(nn.Module):
    """Conv, an SE gate and a flattening head: the Reshape ``[1, C]`` of a batch-1 export."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.fc(y.mean((2, 3))))
        return self.head((y * gate[:, :, None, None]).reshape(y.shape[0], -1))


class MixesSamples(nn.Module):
    """Not per-sample: each output depends on the whole batch (a batch-1 export would compute zeros)."""

    def forward(self, x):
        return (x - x.mean(0, keepdim=True)).flatten(1)


class Upsamples(nn.Module):
    """An FPN's top-down path: ``interpolate(size=...)`` exports as a Resize to fixed ``sizes``, batch 1
    included; at batch 3 it would resize every sample's map from the first one's (a difference of 1e-4 in
    a perturbed FPN, inside any tolerance a per-sample run could use)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return x + 1e-3 * nn.functional.interpolate(self.down(x), size=x.shape[-2:], mode="nearest")


class MergesBatch(nn.Module):
    """Flattens the batch into one row: its output's dimension 0 is not the batch."""

    def forward(self, x):
        return torch.relu(x).reshape(1, -1)


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _batch_one_used(monkeypatch) -> list[bool]:
    used = []
    real = onnx_export._export_batch_one_as_any_batch

    def spy(*args, **kwargs):
        used.append(real(*args, **kwargs))
        return used[-1]

    monkeypatch.setattr(onnx_export, "_export_batch_one_as_any_batch", spy)
    return used


def test_a_per_sample_model_is_exported_at_batch_one_and_runs_any_batch(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SqueezeExcite().eval()
    used = _batch_one_used(monkeypatch)
    path = export_onnx(model, (torch.zeros(1, 3, 4, 4),), tmp_path / "se.onnx")
    assert used == [True]
    m = onnx.load(str(path))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 2, 7):
        x = torch.randn(batch, 3, 4, 4)
        with torch.no_grad():
            np.testing.assert_allclose(_run(path, x), model(x).numpy(), rtol=1e-4, atol=1e-5)


class ChannelConv(nn.Module):
    """ECA's gate (Wang et al., 2020) as timm writes it: a 1-D conv across the pooled channels,
    ``view(b, 1, -1)`` (a Reshape to ``[1, 1, -1]`` at batch 1), and ``x * y.expand_as(x)`` (an Expand to
    ``[1, C, H, W]``). The zoo's EfficientAttention over a 1x1 map is where the exporter writes a Reshape
    target ``[0, 1, -1]`` (``flatten(2).transpose(1, 2)`` as one Reshape, dimension 0 copied from its input)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1)).view(x.shape[0], -1, 1, 1)
        return x * torch.sigmoid(y).expand_as(x)


@pytest.mark.parametrize("make", [ChannelConv, lambda: create_model("resnet", 10, fusion="effatt")],
                         ids=["eca-gate", "resnet-effatt"])
def test_eca_and_efficient_attention_gates_are_exported_at_batch_one(make, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = make().eval()
    shape = (3, 8, 8) if isinstance(model, ChannelConv) else (1, 32, 32)
    used = _batch_one_used(monkeypatch)
    path = export_onnx(model, (torch.zeros(1, *shape),), tmp_path / "m.onnx")
    assert used == [True]
    targets = [onnx.numpy_helper.to_array(i).tolist() for i in onnx.load(str(path)).graph.initializer
               if "__batch" in i.name]
    assert targets and all(t[0] == -1 for t in targets)
    for batch in (1, 2, 5):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            np.testing.assert_allclose(_run(path, x), model(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", [MixesSamples(), MergesBatch(), Upsamples()],
                         ids=["mixes-samples", "merges-batch", "resize-to-sizes"])
def test_a_graph_not_shown_per_sample_is_exported_with_a_symbolic_batch(model, tmp_path, monkeypatch):
    torch.manual_seed(0)
    used = _batch_one_used(monkeypatch)
    path = export_onnx(model, (torch.zeros(1, 2, 6, 6),), tmp_path / "m.onnx")
    assert used == [False]  # refused, and the symbolic export wrote the file
    x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, x), model(x).numpy(), rtol=1e-6, atol=1e-7)


def _reshape_graph(target: list[int], data_dims: list[int], result_dims: list[int], **attrs) -> onnx.ModelProto:
    h = onnx.helper
    return h.make_model(h.make_graph(
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("Reshape", ["r", "shape"], ["y"], **attrs)], "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, data_dims)],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, result_dims)],
        [onnx.numpy_helper.from_array(np.array(target, np.int64), "shape")],
        value_info=[h.make_tensor_value_info("r", onnx.TensorProto.FLOAT, data_dims)]))


@pytest.mark.parametrize("target", [[1, 12], [1, -1], [1, 3, -1], [0, 3, -1], [0, -1]])
def test_symbolic_batch_rewrites_a_leading_one_of_reshapes_to_the_per_sample_shape(target):
    result = [1, 12] if len(target) == 2 else [1, 3, 4]
    m = _reshape_graph(target, [1, 3, 2, 2], result)
    assert symbolic_batch(m)
    shapes = {i.name: onnx.numpy_helper.to_array(i).tolist() for i in m.graph.initializer}
    assert shapes[m.graph.node[1].input[1]] == [-1, *result[1:]]
    assert [d.dim_param for v in (m.graph.input[0], m.graph.value_info[0], m.graph.output[0])
            for d in v.type.tensor_type.shape.dim[:1]] == ["batch"] * 3
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.randn(5, 3, 2, 2).astype(np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0).reshape(5, *result[1:]))


def _graph(node: onnx.NodeProto, x_dims, y_dims, **constants) -> onnx.ModelProto:
    h = onnx.helper
    return h.make_model(h.make_graph(
        [node], "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_dims)],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, y_dims)],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()]))


def test_symbolic_batch_refuses_what_it_cannot_show_per_sample():
    # a target whose dimension 0 is not 1 (moves the batch), or a result of unknown size
    assert not symbolic_batch(_reshape_graph([3, 4], [1, 3, 2, 2], [3, 4]))
    assert not symbolic_batch(_reshape_graph([-1, 4], [1, 3, 2, 2], [3, 4]))
    # 0 with allowzero=1 is a literal 0, not "the input's dimension 0"
    assert not symbolic_batch(_reshape_graph([0, 3, -1], [1, 3, 2, 2], [1, 3, 4], allowzero=1))
    assert not symbolic_batch(_reshape_graph([1, -1], [1, 3, 2, 2], [1, "n"]))
    # a tensor computed from the input whose dimension 0 is not the batch of one
    assert not symbolic_batch(_reshape_graph([1, 12], [3, 1, 2, 2], [1, 12]))
    h = onnx.helper
    refused = [  # nodes that work across dimension 0, or carry a batch-1 constant
        (h.make_node("ReduceMean", ["x", "axes"], ["y"]), [1, 3], [1, 3], {"axes": np.array([0], np.int64)}),
        (h.make_node("Softmax", ["x"], ["y"], axis=0), [1, 3], [1, 3], {}),
        (h.make_node("Transpose", ["x"], ["y"], perm=[1, 0]), [1, 3], [3, 1], {}),
        (h.make_node("Flatten", ["x"], ["y"], axis=2), [1, 3, 2], [3, 2], {}),
        (h.make_node("Add", ["x", "c"], ["y"]), [1, 3], [2, 3], {"c": np.zeros((2, 3), np.float32)}),
        # Expand to a batch of its own, or under a new leading dimension
        (h.make_node("Expand", ["x", "s"], ["y"]), [1, 3], [4, 3], {"s": np.array([4, 3], np.int64)}),
        (h.make_node("Expand", ["x", "s"], ["y"]), [1, 3], [2, 1, 3], {"s": np.array([2, 1, 3], np.int64)}),
        (h.make_node("Resize", ["x", "", "", "s"], ["y"]), [1, 1, 2, 2], [1, 1, 4, 4],
         {"s": np.array([1, 1, 4, 4], np.int64)}),
        (h.make_node("Shape", ["x"], ["y"]), [1, 3], [2], {}),
    ]
    for node, x_dims, y_dims, constants in refused:
        assert not symbolic_batch(_graph(node, x_dims, y_dims, **constants)), node.op_type
    admitted = [
        (h.make_node("ReduceMean", ["x", "axes"], ["y"]), [1, 3, 2], [1, 2], {"axes": np.array([-2], np.int64)}),
        (h.make_node("Add", ["x", "c"], ["y"]), [1, 3], [1, 3], {"c": np.zeros((1, 3), np.float32)}),
        # ECA's y.expand_as(x): 1 at dimension 0 broadcasts to the input's batch (and a shorter target)
        (h.make_node("Expand", ["x", "s"], ["y"]), [1, 3, 1, 1], [1, 3, 2, 2], {"s": np.array([1, 3, 2, 2], np.int64)}),
        (h.make_node("Expand", ["x", "s"], ["y"]), [1, 3, 1], [1, 3, 4], {"s": np.array([3, 4], np.int64)}),
        (h.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest"), [1, 1, 2, 2], [1, 1, 4, 4],
         {"sc": np.array([1, 1, 2, 2], np.float32)}),
    ]
    for node, x_dims, y_dims, constants in admitted:
        assert symbolic_batch(_graph(node, x_dims, y_dims, **constants)), node.op_type
