"""Channels-last evaluation and calibration (edgefuse._layout): the same predictions and the same observed
ranges as NCHW, and NCHW for inputs and models the rule leaves alone."""

import pytest
import torch
from torch import nn

from edgefuse._layout import dense_view, prefers_channels_last, runs_channels_last
from edgefuse.quantize.observers import ACTIVATION_OBSERVERS
from edgefuse.training import predict

BIG = (3, 128, 128)  # the smallest input the rule evaluates channels-last


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.fc = nn.Linear(4, 3)
        self.layouts = []

    def forward(self, x):
        self.layouts.append(x.is_contiguous())
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class ViewsFlat(Conv):
    """A hand-written ``x.view(b, -1)`` of a feature map: refuses a channels-last one."""

    def forward(self, x):
        self.layouts.append(x.is_contiguous())
        return self.fc(self.conv(x).view(x.shape[0], -1)[:, :4])


def _dataset(shape, n=6):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(shape, generator=gen), i % 3) for i in range(n)]


def test_the_rule_takes_large_colour_images_only():
    assert prefers_channels_last(torch.zeros(2, *BIG))
    assert not prefers_channels_last(torch.zeros(2, 1, 224, 224))  # one channel: the same memory either way
    assert not prefers_channels_last(torch.zeros(2, 3, 64, 64))  # there NCHW is faster (ResNets 0.6x)
    assert not prefers_channels_last(torch.zeros(2, 3 * 128 * 128))


@pytest.mark.parametrize("cls, channels_last", [(Conv, True), (ViewsFlat, False)])
def test_predict_runs_channels_last_where_the_model_takes_it(cls, channels_last):
    torch.manual_seed(0)
    model = cls().eval()
    data = _dataset(BIG)
    pred, labels = predict(model, data, batch_size=2)
    assert (not model.layouts[-1]) == channels_last
    with torch.no_grad():
        expected = torch.cat([model(torch.stack([x for x, _ in data[i:i + 2]])) for i in range(0, 6, 2)])
    assert pred.tolist() == expected.argmax(1).tolist() and labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert runs_channels_last(model, torch.zeros(1, *BIG)) == channels_last
    model.layouts.clear()
    predict(model, _dataset((3, 32, 32)), batch_size=2)
    assert all(model.layouts)  # below the rule's size: NCHW


@pytest.mark.parametrize("name", sorted(ACTIVATION_OBSERVERS))
def test_observers_see_the_same_values_in_either_layout(name):
    x = torch.randn(4, 5, 6, 7) * 3
    a, b = ACTIVATION_OBSERVERS[name](), ACTIVATION_OBSERVERS[name]()
    for batch in (x, x * 2 + 1):
        a(batch)
        out = b(batch.contiguous(memory_format=torch.channels_last))
        assert not out.is_contiguous()  # passed on as it came
    assert dense_view(x.contiguous(memory_format=torch.channels_last)).is_contiguous()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert all(torch.equal(p, q) for p, q in zip(a.calculate_qparams(), b.calculate_qparams()))


def test_the_gate_runs_programs_channels_last_too(tmp_path):
    # the file-vs-program check evaluates a program the gate has no predictions of (a latency-chosen fp32
    # region's) over the whole evaluation split: in the layout predict() uses
    from edgefuse.export import export_onnx
    from edgefuse.export.artifacts import ExportResult
    from edgefuse.export.formats.base import Artifact
    from edgefuse.validate.shipped import agreement_with_programs

    data = _dataset(BIG)
    for model, channels_last in ((Conv().eval(), True), (ViewsFlat().eval(), False)):
        export_onnx(model, (data[0][0][None],), tmp_path / "model.fp32.onnx")
        staged = ExportResult(tmp_path, [Artifact("model.fp32.onnx", "onnx", "fp32")], [], {})
        model.layouts.clear()
        assert agreement_with_programs(staged, {"fp32": model}, data, batch_size=2) == {"model.fp32.onnx": 1.0}
        assert model.layouts[-2:] == [not channels_last] * 2, (type(model).__name__, model.layouts)
