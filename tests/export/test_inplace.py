"""In-place activations made out of place before the ONNX export: only where nobody can see the mutation."""

import pytest
import torch
from torch import nn

from edgefuse._inplace import functionalize_inplace


class ConvBNHardswish(nn.Module):  # torchvision's Conv2dNormActivation with an in-place activation
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(inplace=True)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y += self.conv(x)  # in-place add onto the activation's output
        return torch.relu_(y)


class SharedInput(nn.Module):  # the mutated tensor has a second reader: must stay in place
    def forward(self, x):
        y = x * 2
        a = y + 1
        torch.relu_(y)
        return y * a


class MutatesView(nn.Module):  # in place on a view: the base changes too, so the rewrite would be wrong
    def forward(self, x):
        y = x * 2
        torch.relu_(y.view(-1))
        return y


class MutatesInput(nn.Module):
    def forward(self, x):
        return nn.functional.silu(x, inplace=True) + 1


def _inplace_targets(gm):
    return sorted(str(n.target) for n in gm.graph.nodes if n.op == "call_function" and str(n.target).split(".")[-2].endswith("_"))


@pytest.mark.parametrize("module,rewritten", [(ConvBNHardswish(), 3), (SharedInput(), 0), (MutatesView(), 0),
                                               (MutatesInput(), 0)])
def test_rewrite_only_where_unobservable_and_values_unchanged(module, rewritten):
    module.eval()
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(module, (x.clone(),))
    before = _inplace_targets(ep.graph_module)
    gm, n = functionalize_inplace(ep.graph_module)
    assert n == rewritten
    assert _inplace_targets(ep.graph_module) == before  # the original is untouched (a copy was rewritten)
    assert len(_inplace_targets(gm)) == len(before) - rewritten
    functionalize_inplace(ep.graph_module, copy_first=False)
    assert torch.equal(ep.module()(x.clone()), module(x.clone()))


def test_export_onnx_file_is_unchanged_by_the_rewrite(tmp_path):
    # the same HardSwish nodes and the same numbers as the in-place graph gave
    import numpy as np
    import onnx

    from edgefuse.export import export_onnx
    from edgefuse.runtimes import OrtModel

    m = ConvBNHardswish().eval()
    x = torch.randn(3, 3, 8, 8)
    p = export_onnx(m, (x[:2],), tmp_path / "m.onnx")
    assert {n.op_type for n in onnx.load(str(p)).graph.node} >= {"HardSwish", "Relu", "Add"}
    np.testing.assert_allclose(OrtModel(p).run(x.numpy()), m(x).detach().numpy(), rtol=1e-5, atol=1e-5)
