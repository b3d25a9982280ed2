import pytest

from tests.thirdparty._matrix import check

pytestmark = pytest.mark.thirdparty


@pytest.mark.parametrize("name", ["tv_mobilenet_v3_small", "tv_mobilenet_v3_large", "tv_efficientnet_b0",
                                  "user_se_cbam"])
def test_torchvision_and_hand_written_models_export_correct_int8(name, tmp_path):
    # the hand-written CBAM (AdaptiveMaxPool2d, torch.max over channels) must also lower to ExecuTorch, and
    # MobileNetV3-large, whose depthwise convs are widened to 16-channel blocks, to ONNX Runtime Mobile
    formats = {"user_se_cbam": ("onnx", "pte"), "tv_mobilenet_v3_large": ("onnx", "ort")}.get(name, ("onnx",))
    r = check(name, tmp_path, formats=formats)
    assert set(r["artifact_agreement"]) == {f"model.{p}.{f}" for f in formats for p in ("fp32", "int8")}


def test_matrix_names_are_a_registry():
    from edgefuse.errors import UnknownNameError
    from edgefuse.models.third_party import create_third_party, list_third_party

    assert len(list_third_party()) >= 12 and "user_se_cbam" in list_third_party()
    with pytest.raises(UnknownNameError, match="unknown third-party model 'nope'"):
        create_third_party("nope", 10)


def test_max_pools_as_users_write_them_become_exact_amax():
    import torch

    from edgefuse.export.executorch_pte import rewrite_max_pools_as_amax
    from edgefuse.models.third_party import UserCBAM

    torch.manual_seed(0)
    m = UserCBAM(8).eval()
    x = torch.randn(2, 8, 6, 6)
    ep = torch.export.export(m, (x,))
    assert rewrite_max_pools_as_amax(ep.graph_module) == 2
    targets = {str(n.target) for n in ep.graph_module.graph.nodes}
    assert "aten.adaptive_max_pool2d.default" not in targets and "aten.max.dim" not in targets
    torch.testing.assert_close(ep.module()(x), m(x), rtol=0, atol=0)


def test_hand_written_network_trains():
    # benchmarks/third_party_accuracy.py fine-tunes it: one backward pass must go through (an in-place
    # Hardswish after the in-place ReLU once broke autograd)
    import torch

    from edgefuse.models.third_party import create_third_party

    model = create_third_party("user_se_cbam", 10).train()
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in model.parameters())
