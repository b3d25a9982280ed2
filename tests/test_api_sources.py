"""Model sources other than model.pt: torch.export archives and factory + weights."""

import subprocess
import sys

import pytest
import torch

from edgefuse.pipeline.source import load_model_source
from edgefuse.errors import CheckpointError, UsageError
from edgefuse.models import create_model


def test_pt2_archive_needs_a_contract_and_exports(tmp_path):
    torch.manual_seed(0)
    m = create_model("resnet", 10, width=0.5).eval()
    torch.export.save(torch.export.export(m, (torch.randn(1, 1, 32, 32),)), tmp_path / "static.pt2")
    with pytest.raises(UsageError, match="fixed batch size"):
        load_model_source(tmp_path / "static.pt2", input_size=32, channels=1)
    ep = torch.export.export(m, (torch.randn(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    with pytest.raises(UsageError, match="--input-size"):
        load_model_source(tmp_path / "m.pt2")
    module, contract, info = load_model_source(tmp_path / "m.pt2", input_size=32, channels=1, mean=[0.3], std=[0.3])
    assert info["format"] == "pt2" and contract.mean == (0.3,)
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(module(x), m(x))
    r = subprocess.run([sys.executable, "-m", "edgefuse.cli.main", "export", str(tmp_path / "m.pt2"), "--int8",
                        "--input-size", "32", "--channels", "1", "--format", "onnx", "--out", str(tmp_path / "b"),
                        "--calib-samples", "64", "--runs", "5", "--max-latency-ratio", "100", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "model.int8.onnx").exists()


def test_corrupt_pt2(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="torch.export archive"):
        load_model_source(tmp_path / "bad.pt2", input_size=32, channels=1)


def test_factory_and_weights(tmp_path, monkeypatch):
    (tmp_path / "userpkg_fac.py").write_text(
        "from edgefuse.models import create_model\n"
        "def build():\n    return create_model('fpn', 10, width=0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    m = create_model("fpn", 10, width=0.5)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    module, contract, info = load_model_source(tmp_path / "w.pt", factory="userpkg_fac:build", input_size=32, channels=1)
    assert info["factory"] == "userpkg_fac:build" and contract.input_size == 32
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(module(x), m.eval()(x))
    with pytest.raises(UsageError, match="package.module:function"):
        load_model_source(tmp_path / "w.pt", factory="nocolon", input_size=32, channels=1)
    torch.save(create_model("fpn", 10, width=1.0).state_dict(), tmp_path / "w2.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_model_source(tmp_path / "w2.pt", factory="userpkg_fac:build", input_size=32, channels=1)


def test_checkpoint_contract_cannot_be_overridden(tiny_checkpoint):
    with pytest.raises(UsageError, match="carries its preprocessing contract"):
        load_model_source(tiny_checkpoint, input_size=2)
    # restating the same contract is fine
    _, contract, _ = load_model_source(tiny_checkpoint)
    _, same, _ = load_model_source(tiny_checkpoint, input_size=contract.input_size, channels=contract.channels)
    assert same == contract


class _DropoutHead(torch.nn.Module):
    """A user's network as torchvision writes them: Dropout before the classifier (MobileNetV3, EfficientNet)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                            torch.nn.Hardswish(inplace=True))
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(8 * 8 * 8, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_exported_programs_stay_in_eval_mode_after_evaluation(tmp_path):
    """Evaluation loops restore ``model.train(was_training)``; an exported program's flag must say eval, or
    its dropout comes back on in every later run and in the exported files (torchvision MobileNetV3: 36%)."""
    import numpy as np

    from edgefuse.api import export_model
    from edgefuse.quantize import TensorBatches, quantize_ptq
    from edgefuse.training import evaluate
    from edgefuse.validate import Budgets

    torch.manual_seed(0)
    m = _DropoutHead().eval()
    ep = torch.export.export(m, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "d.pt2")
    module, _, _ = load_model_source(tmp_path / "d.pt2", input_size=8, channels=1)
    data = [(torch.randn(1, 8, 8), 0) for _ in range(32)]
    evaluate(module, data)
    assert not module.training
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(module(x), module(x))
    q = quantize_ptq(module, TensorBatches(data, 32))
    evaluate(q.program, data)
    assert not q.program.training
    with torch.no_grad():
        torch.testing.assert_close(q.program(x), q.program(x))

    res = export_model(tmp_path / "d.pt2", tmp_path / "b", calib="digits", formats=("onnx",), runs=3,
                       model_kwargs={"input_size": 8, "channels": 1},
                       budgets=Budgets(max_latency_ratio=None))
    agree = res.report.extra["pytorch_agreement"]
    assert agree["model.int8.onnx"] == 1.0 and agree["model.fp32.onnx"] == 1.0, agree
    assert np.isfinite(res.report.sqnr_db) and res.report.sqnr_db > 15, res.report.sqnr_db


@pytest.mark.parametrize("lo,hi", [(1, 64), (2, 16)])
def test_bounded_batch_pt2_is_a_one_line_error(tmp_path, lo, hi):
    """`Dim("batch", max=64)` is a common way to write it: refused before any work, with how to re-export."""
    m = create_model("resnet", 10, width=0.5).eval()
    ep = torch.export.export(m, (torch.randn(2, 1, 32, 32),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=lo, max=hi)},))
    torch.export.save(ep, tmp_path / "b.pt2")
    with pytest.raises(UsageError, match=rf"batch sizes {lo}\.\.{hi} only.*Dim\('batch'\)"):
        load_model_source(tmp_path / "b.pt2", input_size=32, channels=1)
    r = subprocess.run([sys.executable, "-m", "edgefuse.cli.main", "export", str(tmp_path / "b.pt2"), "--int8",
                        "--input-size", "32", "--channels", "1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "re-export" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_dynamic_spatial_dims_are_checked_against_the_contract(tmp_path):
    m = create_model("resnet", 10, width=0.5).eval()
    ep = torch.export.export(m, (torch.randn(2, 1, 32, 32),), dynamic_shapes=(
        {0: torch.export.Dim("batch"), 2: torch.export.Dim("h", min=16, max=64)},))
    torch.export.save(ep, tmp_path / "h.pt2")
    r = subprocess.run([sys.executable, "-m", "edgefuse.cli.main", "export", str(tmp_path / "h.pt2"), "--int8",
                        "--input-size", "8", "--channels", "1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not accept" in r.stderr and len(r.stderr.strip().splitlines()) == 1
