"""The exporter's optimizer with multi-output patterns skipped where they cannot start: the same bytes."""

import torch
from onnxscript.rewriter import _matcher

import edgefuse.export.onnx as onnx_export
from edgefuse.models.registry import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.quantize.targets import quant_config_for


def test_skipping_patterns_that_cannot_start_gives_the_same_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = create_model("mobilenetv3", 10, fusion="se").eval()
    program = quantize_ptq(model, TensorBatches(torch.randn(8, 1, 32, 32), 8, 4), quant_config_for()).program
    x = torch.zeros(1, 1, 32, 32)
    fast = onnx_export.export_onnx(program, (x,), tmp_path / "fast.onnx")
    assert getattr(_matcher.SimplePatternMatcher.match, "_edgefuse_wrapped", False)
    # onnxscript's own matcher, as it comes
    monkeypatch.setattr(_matcher.SimplePatternMatcher, "match", _matcher.SimplePatternMatcher.match.__wrapped__)
    monkeypatch.setattr(onnx_export, "_skip_multi_output_patterns_that_cannot_start_here", lambda: None)
    plain = onnx_export.export_onnx(program, (x,), tmp_path / "plain.onnx")
    assert fast.read_bytes() == plain.read_bytes()

