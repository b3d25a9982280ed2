"""Latency-aware precision (edgefuse.export.kernel_choice): the fp32 region of the ONNX file and of the PyTorch
program are the same computation, and the choice between candidates is a pure rule over measured medians."""

from __future__ import annotations

import onnx
import pytest
import torch

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.export import export_artifacts, weight_summary
from edgefuse.export.kernel_choice import PAYS, choose_fp32_prefix, fp32_region, pick_fastest, prefix_candidates
from edgefuse.metrics import sqnr_db
from edgefuse.models import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.quantize.fp32_region import fp32_region as program_fp32_region
from edgefuse.quantize.targets import measurable_here
from edgefuse.runtimes import OrtModel
from tests.conftest import quant_config_here


def _quantizers(g: onnx.ModelProto) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in g.graph.node)


@pytest.fixture(scope="module")
def se_resnet(tmp_path_factory):
    d = load_data("digits")
    c = PreprocessContract(32, 1, [0.306], [0.324], d.class_names)
    torch.manual_seed(0)
    model = create_model("resnet", 10, fusion="se").eval()
    q = quantize_ptq(model, TensorBatches(ImageDataset(d.train, c), 64, 16), quant_config_here())
    res = export_artifacts(model, c, tmp_path_factory.mktemp("se"), quantized=q, formats=("onnx",))
    x = torch.stack([ImageDataset(d.test, c)[i][0] for i in range(64)])
    return model, q, onnx.load(res.path("onnx", "int8")), res.path("onnx", "fp32"), x


def test_cuts_are_in_graph_order_and_grow(se_resnet):
    _, _, graph, _, _ = se_resnet
    cuts = list(prefix_candidates(graph).values())
    assert 1 <= len(cuts) <= 10
    assert all(len(a) < len(b) and b[: len(a)] == a for a, b in zip(cuts, cuts[1:]))


def _conv_chain(layers: list[tuple[str, int, int, int]], size: int = 32) -> onnx.ModelProto:
    """A chain of convs ``(module, out channels, groups, stride)`` over a ``size`` x ``size`` map, each node
    labelled with its module as edgefuse's export labels them."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    nodes, inits, c, x = [], [], 3, "x"
    for k, (mod, out, groups, stride) in enumerate(layers):
        kernel = 1 if groups == 1 and k else 3
        inits.append(numpy_helper.from_array(np.zeros((out, c // groups, kernel, kernel), np.float32), f"w{k}"))
        node = helper.make_node("Conv", [x, f"w{k}"], [f"y{k}"], group=groups, strides=[stride, stride],
                                pads=[kernel // 2] * 4)
        node.metadata_props.add(key="module", value=mod)
        nodes.append(node)
        c, x = out, f"y{k}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_cuts_cross_the_narrowest_maps():
    # inverted residual blocks: expand 1x1 -> depthwise 3x3 (stride) -> project 1x1
    block = lambda b, c, s: [(f"{b}.expand", 4 * c, 1, 1), (f"{b}.dw", 4 * c, 4 * c, s), (f"{b}.project", c, 1, 1)]  # noqa: E731
    graph = _conv_chain([("stem", 8, 1, 1), ("b1.dw", 8, 8, 1), ("b1.pw", 8, 1, 1)] + block("b2", 8, 2)
                        + block("b3", 8, 1) + block("b4", 16, 2) + block("b5", 16, 1))
    # input maps of the cuts: b1.dw 8x32x32, b1.pw the same, b2.expand the same, b2.dw 32x32x32 (wider), ...
    # only the last cut before a map grows is kept: the one that crosses a block's narrow input
    assert list(prefix_candidates(graph)) == ["fp32 before b2.expand", "fp32 before b3.expand", "fp32 before b4.expand"]
    assert prefix_candidates(graph, limit=2) == {k: v for k, v in prefix_candidates(graph).items()
                                                 if k != "fp32 before b3.expand"}  # thinned, the first kept


def _every_conv_prefix(graph: onnx.ModelProto) -> list[list[str]]:
    """The modules before each conv, in graph order (the cuts before the search keeps the narrow ones)."""
    from edgefuse.export.onnx_checks import module_of

    order, out = [], []
    for n in graph.graph.node:
        mod = module_of(n)
        if not mod or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.op_type == "Conv" and order:
            out.append(list(order))
        if mod not in order:
            order.append(mod)
    return out


def test_file_and_program_regions_compute_the_same(se_resnet):
    model, q, graph, _, x = se_resnet
    with torch.no_grad():
        fp32_out, int8_out = model(x).numpy(), q.program(x).numpy()
    assert sqnr_db(int8_out, fp32_out) < 60
    changed = 0
    # every prefix up to a conv, not only the narrow cuts the search times: the parity holds for any region
    regions = [list(m) for m in prefix_candidates(graph).values()] + _every_conv_prefix(graph)
    for modules in regions:
        g = onnx.ModelProto()
        g.CopyFrom(graph)
        counts = fp32_region(g, modules)
        onnx.checker.check_model(g)
        assert counts["nodes"] > 0
        before, after = weight_summary(graph), weight_summary(g)
        assert after["int8_weights"] == before["int8_weights"] - counts["weights"]
        file_out = OrtModel.from_bytes(g.SerializeToString()).run(x.numpy())
        with torch.no_grad():
            prog_out = program_fp32_region(q.program, modules)(x).numpy()
        # file and program changed the arithmetic alike: they agree far more closely than either does with
        # fp32 (and, counted below, with the all-int8 program where the region changed anything)
        assert sqnr_db(prog_out, file_out) > 60 > sqnr_db(fp32_out, prog_out), modules[-1]
        assert counts["quantizers"] == _quantizers(graph) - _quantizers(g)
        if counts["quantizers"] and sqnr_db(int8_out, prog_out) < 60:  # the region changed the arithmetic
            changed += 1
    assert changed >= 3, changed
    # and the all-int8 program is untouched (the region works on a copy)
    with torch.no_grad():
        assert (q.program(x).numpy() == int8_out).all()


def test_pick_fastest_needs_a_clear_margin_and_prefers_less_fp32():
    assert pick_fastest({"all int8": 1.0, "a": 0.99, "b": 0.98}) == "all int8"  # within noise: no change
    assert pick_fastest({"all int8": 1.0, "a": 0.80, "b": 0.79}) == "a"  # the least fp32 within margin of best
    assert pick_fastest({"all int8": 1.0, "a": 0.90, "b": 0.70}) == "b"


def test_where_int8_pays_nothing_else_is_measured(se_resnet):
    _, _, graph, fp32_path, _ = se_resnet
    calls = []

    def finish(m):
        calls.append(1)
        return {}

    g, choice, _ = choose_fp32_prefix(graph, finish, input_shape=[1, 1, 32, 32], fp32=onnx.load(fp32_path), runs=5)
    assert set(choice.candidates_ms) >= {"fp32", "all int8"}
    if choice.candidates_ms["all int8"] < PAYS * choice.candidates_ms["fp32"]:
        assert len(calls) == 1 and choice.chosen == "all int8" and not choice.fp32_modules
    else:  # a loaded machine: then the cuts were timed too, and the record says which won
        assert len(calls) > 1 and choice.chosen in choice.candidates_ms
    assert choice.to_dict()["fp32_weight_nodes"] == choice.fp32_weight_nodes


def test_measured_only_on_a_cpu_of_the_targets_kind():
    assert measurable_here("x86-vnni", "x86_64") and measurable_here("x86-avx2", "AMD64")
    assert not measurable_here("arm64", "x86_64") and measurable_here("arm64", "aarch64")
    assert not measurable_here("x86-vnni", "aarch64")
