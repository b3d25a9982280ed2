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


def test_file_and_program_regions_compute_the_same(se_resnet):
    model, q, graph, _, x = se_resnet
    with torch.no_grad():
        fp32_out, int8_out = model(x).numpy(), q.program(x).numpy()
    assert sqnr_db(int8_out, fp32_out) < 60
    changed = 0
    for modules in prefix_candidates(graph).values():
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
        # the all-int8 program (where the region quantized anything) or with fp32
        assert sqnr_db(prog_out, file_out) > 60 > sqnr_db(fp32_out, prog_out), modules[-1]
        assert counts["quantizers"] == _quantizers(graph) - _quantizers(g)
        if counts["quantizers"]:  # activations left unquantized (folding weights alone is exact)
            changed += 1
            assert sqnr_db(int8_out, prog_out) < 60, modules[-1]
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
