"""The evaluation twin computes its program's logits bit for bit, on every model family edgefuse quantizes
(zoo x fusions, the third-party matrix, both schemes, a latency-aware fp32 region), so the predictions it
produces stand for the program's."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import perturb_
from edgefuse.errors import MissingExtraError
from edgefuse.models.registry import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.quantize.eval_twin import eval_twin
from edgefuse.quantize.fp32_region import fp32_region
from edgefuse.quantize.quantizer import module_path
from edgefuse.quantize.targets import quant_config_for, xnnpack_preset

QD = torch.ops.quantized_decomposed


def _quantize(model, shape, config=None):
    torch.manual_seed(0)
    calib = torch.randn(8, *shape)
    return quantize_ptq(model.eval(), TensorBatches(calib, 8, 4), config or quant_config_for())


def _inputs(shape):
    g = torch.Generator().manual_seed(1)
    # wide inputs push activations past the calibrated ranges, so the clamps are exercised too
    return torch.cat([torch.randn(6, *shape, generator=g), 4 * torch.randn(6, *shape, generator=g)])


def _assert_twin_exact(program, x):
    twin = eval_twin(program)
    assert twin is not program
    left = [str(n.target) for n in twin.graph.nodes if n.op == "call_function" and "quantized_decomposed" in str(n.target)]
    assert not left, left  # every pair and every weight de-quantization was replaced
    with torch.no_grad():
        want, got = program(x), twin(x)
    assert torch.equal(want, got), (want - got).abs().max()


ZOO = [("mobilenetv3", f) for f in ("add", "se", "cbam", "effatt")] + \
      [("resnet", f) for f in ("concat", "se", "nonlocal", "attention", "dynamic")] + [("fpn", "effatt")]


@pytest.mark.parametrize("name,fusion", ZOO)
def test_twin_is_exact_on_the_zoo(name, fusion):
    torch.manual_seed(0)
    model = perturb_(create_model(name, 10, fusion=fusion))
    q = _quantize(model, (1, 32, 32))
    _assert_twin_exact(q.program, _inputs((1, 32, 32)))


def test_twin_is_exact_for_the_xnnpack_scheme_and_an_fp32_region():
    torch.manual_seed(0)
    model = perturb_(create_model("mobilenetv3", 10, fusion="se"))
    q = _quantize(model, (1, 32, 32), xnnpack_preset(quant_config_for()))
    _assert_twin_exact(q.program, _inputs((1, 32, 32)))
    q = _quantize(model, (1, 32, 32))
    modules = sorted({module_path(n) for n in q.program.graph.nodes if n.op == "call_function"} - {None, ""})
    region = fp32_region(q.program, modules[: len(modules) // 3])
    _assert_twin_exact(region, _inputs((1, 32, 32)))


def _third_party():
    try:
        from edgefuse.models.third_party import create_third_party, list_third_party

        names = list_third_party()
        create_third_party(names[0], 10)
        return names
    except MissingExtraError:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("name", _third_party() or [pytest.param("none", marks=pytest.mark.skip("no thirdparty extra"))])
def test_twin_is_exact_on_the_third_party_matrix(name):
    from edgefuse.models.third_party import create_third_party

    torch.manual_seed(0)
    model = perturb_(create_third_party(name, 10), std=0.05)
    q = _quantize(model, (3, 32, 32))
    _assert_twin_exact(q.program, _inputs((3, 32, 32)))


def test_a_program_without_quantization_comes_back_as_it_is():
    model = create_model("resnet", 10).eval()
    assert eval_twin(model) is model
    gm = torch.fx.symbolic_trace(model)
    assert eval_twin(gm) is gm
