import pytest
import torch

from edgefuse.errors import UnknownNameError, UsageError
from edgefuse.models import create_model, list_models
from tests.conftest import onnx_max_diff, perturb_

MODELS = list_models()


def test_zoo_has_the_three_families():
    assert set(MODELS) >= {"mobilenetv3", "resnet", "fpn"}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("chans", [1, 3])
def test_output_shape(name, size, chans):
    m = create_model(name, 7, fusion="effatt", in_chans=chans, input_size=size).eval()
    with torch.no_grad():
        assert m(torch.randn(2, chans, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", MODELS)
def test_odd_input_size_works(name):
    m = create_model(name, 4, fusion="cbam", input_size=37).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 37, 37)).shape == (1, 4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fusion", ["add", "effatt", "se"])
def test_export_matches_pytorch(name, fusion, tmp_path):
    torch.manual_seed(0)
    m = perturb_(create_model(name, 10, fusion=fusion), std=0.02).eval()
    x = torch.randn(2, 1, 32, 32)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), atol=1e-4, rtol=1e-4)
    assert onnx_max_diff(m, (x,), tmp_path) <= 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    m = perturb_(create_model(name, 10, fusion="effatt"), std=0.02).train()
    m(torch.randn(4, 1, 32, 32)).logsumexp(1).mean().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


@pytest.mark.parametrize("name", MODELS)
def test_fusion_is_used_at_merge_points(name):
    from edgefuse.blocks import EfficientAttention

    m = create_model(name, 10, fusion="effatt")
    assert any(isinstance(x, EfficientAttention) for x in m.modules())


def test_resnet_fusion_positions():
    from edgefuse.blocks import SEFusion

    early = create_model("resnet", 10, fusion="se", positions="early")
    late = create_model("resnet", 10, fusion="se", positions="late")
    stage_of = lambda m: {n.split(".")[1] for n, x in m.named_modules() if isinstance(x, SEFusion)}
    assert stage_of(early) == {"0", "1"} and stage_of(late) == {"2", "3"}


def test_unknown_model_and_fusion_raise():
    with pytest.raises(UnknownNameError, match="resnet"):
        create_model("resnet50", 10)
    with pytest.raises(UnknownNameError, match="effatt"):
        create_model("resnet", 10, fusion="bogus")


def test_too_small_input_raises():
    with pytest.raises(UsageError, match="too small"):
        create_model("resnet", 10, input_size=4)


def test_an_option_of_another_model_is_a_usage_error():
    # resnet's `positions` on mobilenetv3 is the user's input, not an internal TypeError
    with pytest.raises(UsageError, match="model 'mobilenetv3' has no option 'positions'"):
        create_model("mobilenetv3", 10, positions="early")


def test_spec_is_attached_for_checkpoints():
    m = create_model("fpn", 3, fusion="cbam", width=0.5, in_chans=3)
    assert m.edgefuse_spec == {
        "name": "fpn",
        "kwargs": {"num_classes": 3, "fusion": "cbam", "width": 0.5, "in_chans": 3},
    }


def test_mobilenetv3_int8_friendly_defaults():
    """ReLU everywhere and depthwise channels in multiples of 16 by default (see the factory's docstring);
    the paper's per-block hard-swish stays one argument away, and a typo is a usage error."""
    from torch import nn

    m = create_model("mobilenetv3", 10)
    dws = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.groups > 1]
    assert dws and all(mod.groups % 16 == 0 for mod in dws)
    assert not any(isinstance(mod, nn.Hardswish) for mod in m.modules())
    paper = create_model("mobilenetv3", 10, act=None, dw_divisor=8)
    assert sum(isinstance(mod, nn.Hardswish) for mod in paper.modules()) >= 10
    assert any(mod.groups % 16 for mod in paper.modules() if isinstance(mod, nn.Conv2d) and mod.groups > 1)
    with pytest.raises(UsageError, match="act must be"):
        create_model("mobilenetv3", 10, act="gelu")
    for bad in (0, -8):
        with pytest.raises(UsageError, match="dw_divisor must be"):
            create_model("mobilenetv3", 10, dw_divisor=bad)
