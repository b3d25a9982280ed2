"""The ONNX exporter's decomposition step, skipped for a program that has nothing to decompose
(edgefuse.export.onnx._decompose_only_what_needs_it): the same nodes and the same outputs as the full
re-trace, and the full re-trace for anything else."""

import contextlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import edgefuse.export.onnx as onnx_export
from edgefuse.models.registry import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.quantize.targets import quant_config_for


def _spy(monkeypatch) -> list[bool]:
    seen = []
    real = onnx_export.already_decomposed

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(onnx_export, "already_decomposed", spy)
    return seen


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("name,fusion,precision", [("mobilenetv3", "se", "int8"), ("resnet", "cbam", "int8"),
                                                    ("resnet", "effatt", "int8"), ("mobilenetv3", "se", "fp32"),
                                                    ("resnet", "effatt", "fp32")])
def test_a_program_with_nothing_to_decompose_skips_the_retrace_and_exports_the_same_graph(
        name, fusion, precision, tmp_path, monkeypatch):
    """int8 programs (adaptive pools, flatten, dropout, ``1 - gate`` rewritten) and fp32 modules (batch norm
    too): the same ONNX nodes, bit-identical outputs."""
    torch.manual_seed(0)
    model = create_model(name, 10, fusion=fusion).eval()
    program = (quantize_ptq(model, TensorBatches(torch.randn(8, 1, 32, 32), 8, 4), quant_config_for()).program
               if precision == "int8" else model)
    x = torch.randn(3, 1, 32, 32)
    seen = _spy(monkeypatch)
    fast = onnx_export.export_onnx(program, (x[:1],), tmp_path / "fast.onnx")
    assert seen and seen[0] is True  # nothing left to decompose: the re-trace was skipped
    monkeypatch.setattr(onnx_export, "_decompose_only_what_needs_it", contextlib.nullcontext)
    full = onnx_export.export_onnx(program, (x[:1],), tmp_path / "full.onnx")
    ops = [[n.op_type for n in onnx.load(str(p)).graph.node] for p in (fast, full)]
    assert ops[0] == ops[1]
    np.testing.assert_array_equal(_run(fast, x), _run(full, x))


class _PoolTo2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(self.conv(x), 2).flatten(1)


def test_a_program_with_an_op_to_decompose_is_retraced_whole(tmp_path, monkeypatch):
    """An adaptive pool to 2x2 has no ONNX function and no one-op rewrite: the exporter decomposes the
    program as it always did, and the file computes the module."""
    torch.manual_seed(0)
    model = _PoolTo2().eval()
    x = torch.randn(3, 1, 12, 12)
    seen = _spy(monkeypatch)
    path = onnx_export.export_onnx(model, (x[:1],), tmp_path / "m.onnx")
    assert seen and seen[0] is False
    np.testing.assert_allclose(_run(path, x), model(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_the_torchlib_registry_is_built_once_and_the_files_are_the_same_bytes(tmp_path, monkeypatch):
    """The exporter's registry of torchlib translations is built on the first export and copied after
    (edgefuse.export.onnx._torchlib_registry_built_once): int8 and fp32 files byte for byte what an export
    that builds it every time writes, the cache untouched by what an export does to its copy."""
    from torch.onnx._internal.exporter import _registration

    torch.manual_seed(0)
    model = create_model("resnet", 10, fusion="se").eval()
    program = quantize_ptq(model, TensorBatches(torch.randn(8, 1, 32, 32), 8, 4), quant_config_for()).program
    x = torch.randn(1, 1, 32, 32)
    built = []
    build = _registration.ONNXRegistry.__dict__["from_torchlib"].__func__

    def counting(cls, *args, **kwargs):
        built.append(cls)
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(counting))
    monkeypatch.setattr(onnx_export, "_TORCHLIB_REGISTRIES", {})
    cached = {k: onnx_export.export_onnx(m, (x,), tmp_path / f"{k}.cached.onnx")
              for k, m in (("int8", program), ("fp32", model), ("int8-again", program))}
    assert len(built) == 1  # three exports (three exporter calls or more), one registry built
    (registry,) = onnx_export._TORCHLIB_REGISTRIES.values()
    size = len(registry.functions)
    built_once = onnx_export._torchlib_registry_built_once
    assert _registration.ONNXRegistry.__dict__["from_torchlib"].__func__ is counting  # restored after each
    monkeypatch.setattr(onnx_export, "_torchlib_registry_built_once", contextlib.nullcontext)
    for k, m in (("int8", program), ("fp32", model)):
        fresh = onnx_export.export_onnx(m, (x,), tmp_path / f"{k}.fresh.onnx")
        assert fresh.read_bytes() == cached[k].read_bytes(), k
    assert cached["int8-again"].read_bytes() == cached["int8"].read_bytes()
    assert len(built) > 1 and len(registry.functions) == size
    # a custom translation registered into a copy (as torch.onnx.export(custom_translation_table=) does)
    relu = torch.ops.aten.relu.default
    before = list(registry.functions[relu.name()])
    with built_once():
        copy = _registration.ONNXRegistry.from_torchlib()
    copy.register_op(relu, lambda x: x)
    assert len(copy.functions[relu.name()]) == len(before) + 1 and registry.functions[relu.name()] == before
