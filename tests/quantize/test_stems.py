"""Which stems stay fp32: a conv over pixels with too little work per output (3x3 over <= 4 channels) does;
a ResNet's 7x7 stem over RGB is int8, so onnxruntime runs the max-pool after it in its NHWC int8 kernel."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from edgefuse.data import PreprocessContract
from edgefuse.export import export_artifacts, weight_summary
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.validate.doctor import diagnose


class _Stem(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, k, stride=2, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        return self.body(self.pool(torch.relu(self.bn(self.conv(x)))))


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        return torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(i)), 0


def _export(k: int, tmp_path):
    torch.manual_seed(0)
    model = _Stem(k).eval()
    q = quantize_ptq(model, TensorBatches(_Data(), 32, 16))
    res = export_artifacts(model, PreprocessContract(64, 3, [0.5] * 3, [0.25] * 3), tmp_path, quantized=q,
                           formats=("onnx",))
    return res.path("onnx", "int8")


def test_a_resnet_stem_is_int8_and_so_is_its_max_pool(tmp_path):
    path = _export(7, tmp_path)
    assert weight_summary(onnx.load(path))["float_weights"] == 0  # the 7x7 stem's weights are int8 too
    ops = diagnose(path, runs=2).op_counts
    assert "MaxPool" not in ops and ops.get("NhwcMaxPool", 0) == 1, ops  # the pool runs on uint8, NHWC


def test_a_thin_stem_stays_fp32(tmp_path):
    assert weight_summary(onnx.load(_export(3, tmp_path)))["float_weights"] == 1  # 3x3 over RGB: fp32
