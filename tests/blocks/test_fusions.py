import pytest
import torch

from edgefuse.blocks import GATES, Gate, SEBlock, CBAM, NonLocalBlock, create_fusion, list_fusions
from edgefuse.blocks.registry import register_fusion
from edgefuse.errors import UnknownNameError
from tests.conftest import onnx_max_diff, perturb_

C = 16
FUSIONS = list_fusions()


def _inputs(name, b=2, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, C, h, w, generator=g)
    y = torch.randn(b, C, h, w, generator=g)
    return x, y


def test_registry_holds_every_seed_block():
    assert set(FUSIONS) >= {"add", "concat", "attention", "se", "cbam", "nonlocal", "dynamic", "cross_modal", "effatt"}


def test_unknown_fusion_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        create_fusion("sea", C)
    assert "sea" in str(e.value) and "effatt" in str(e.value) and "cbam" in str(e.value)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_fusion("add")(lambda c: None)


@pytest.mark.parametrize("name", FUSIONS)
def test_output_shape_matches_x(name):
    x, y = _inputs(name)
    assert create_fusion(name, C)(x, y).shape == x.shape


@pytest.mark.parametrize("name", FUSIONS)
def test_fresh_block_equals_its_baseline(name):
    x, y = _inputs(name)
    with torch.no_grad():
        z = create_fusion(name, C).eval()(x, y)
    expected = x if name == "cross_modal" else x + y
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FUSIONS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    m = perturb_(create_fusion(name, C))
    x, y = _inputs(name)
    x.requires_grad_(True)
    y.requires_grad_(True)
    (m(x, y) ** 2).mean().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FUSIONS)
def test_torch_export_and_onnx_match_pytorch(name, tmp_path):
    m = perturb_(create_fusion(name, C)).eval()
    x, y = _inputs(name)
    ep = torch.export.export(m, (x, y))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x, y), m(x, y), atol=1e-5, rtol=1e-5)
    assert onnx_max_diff(m, (x, y), tmp_path) <= 1e-4


def test_cross_modal_accepts_other_size_and_channels(tmp_path):
    m = perturb_(create_fusion("cross_modal", C, y_channels=24)).eval()
    x = torch.randn(2, C, 8, 8)
    y = torch.randn(2, 24, 5, 3)  # another modality: other channels, other (odd) spatial size
    assert m(x, y).shape == x.shape
    assert onnx_max_diff(m, (x, y), tmp_path) <= 1e-4


@pytest.mark.parametrize("gate", GATES)
def test_gates_map_zero_to_half_and_stay_in_unit_interval(gate):
    g = Gate(gate)
    assert float(g(torch.zeros(1))) == 0.5
    v = g(torch.linspace(-20, 20, 101))
    assert v.min() >= 0 and v.max() <= 1


def test_unknown_gate_raises():
    with pytest.raises(UnknownNameError, match="hard_sigmoid"):
        create_fusion("se", C, gate="tanh")


@pytest.mark.parametrize("name", ["se", "cbam", "effatt"])
def test_hard_sigmoid_gate_selectable(name):
    m = create_fusion(name, C, gate="hard_sigmoid")
    assert {g.kind for g in m.modules() if isinstance(g, Gate)} == {"hard_sigmoid"}


def test_single_tensor_blocks_start_as_documented():
    x = torch.randn(2, C, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(SEBlock(C)(x), 0.5 * x)
        torch.testing.assert_close(CBAM(C)(x), 0.25 * x)
        torch.testing.assert_close(NonLocalBlock(C)(x), x)


def test_attention_blocks_learn_away_from_baseline():
    # One optimiser step moves a zero-initialised gate: the block is not stuck at its baseline.
    m = create_fusion("effatt", C)
    x, y = _inputs("effatt")
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    target = x * 0.9 + y * 0.1
    for _ in range(3):
        opt.zero_grad()
        ((m(x, y) - 2 * target) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        assert (m(x, y) - (x + y)).abs().max() > 1e-3
