import json

import pytest
import torch

from edgefuse.training import gate_flags
from tests.quantize.fragile import FRAGILE_UNIT, make_fragile


@pytest.fixture(scope="module")
def fragile_file(trained_checkpoint, tmp_path_factory):
    """A trained resnet/effatt with one deliberately fragile 1x1 conv, pickled whole (loaded with
    --trust-pickle), plus the contract flags it needs."""
    from edgefuse.checkpoint import load_checkpoint

    ck = load_checkpoint(trained_checkpoint)
    path = tmp_path_factory.mktemp("fragile") / "fragile.pt"
    model = make_fragile(ck.model)
    x = torch.randn(4, *ck.contract.input_shape[1:])
    with torch.no_grad():  # the same function in fp32
        assert torch.allclose(model(x), ck.model(x), atol=1e-3)
    torch.save(model, path)
    c = ck.contract
    return path, {"trust_pickle": True, "input_size": c.input_size, "channels": c.channels,
                  "mean": list(c.mean), "std": list(c.std)}


def test_switched_program_reproduces_ptq_and_fp32(trained_checkpoint):
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.data import ImageDataset, load_data
    from edgefuse.quantize import QuantConfig, TensorBatches, quantize_ptq
    from edgefuse.quantize.analysis import switched_program

    ck = load_checkpoint(trained_checkpoint)
    cal = ImageDataset(load_data("digits").train, ck.contract)
    prog = switched_program(ck.model, TensorBatches(cal, 64, 32), QuantConfig(calib_samples=64))
    real = quantize_ptq(ck.model, TensorBatches(cal, 64, 32), QuantConfig(calib_samples=64))
    x = torch.stack([cal[i][0] for i in range(32)])
    with prog.quantized(None):
        assert torch.equal(prog(x), real(x))  # all switches on: exactly the shipped int8 program
    with prog.quantized(set()), torch.no_grad():
        assert torch.allclose(prog(x), ck.model(x), atol=1e-4)  # all off: the fp32 model
    assert len(prog.units) > 10 and "head" in prog.units


def test_analyze_ranks_the_fragile_layer_first(fragile_file, tmp_path):
    from tests.cli.test_cli import run

    path, kw = fragile_file
    out = tmp_path / "an"
    r = run("analyze", str(path), "--trust-pickle", "--input-size", str(kw["input_size"]), "--channels",
            str(kw["channels"]), "--mean", ",".join(map(str, kw["mean"])), "--std", ",".join(map(str, kw["std"])),
            "--samples", "128", "--out", str(out), "--top", "3")
    assert r.returncode == 0, r.stderr
    assert FRAGILE_UNIT in r.stdout
    a = json.loads((out / "analysis.json").read_text())
    mods = a["sensitivity"]["modules"]
    assert mods[0]["module"] == FRAGILE_UNIT
    s = a["sensitivity"]
    assert s["fp32_top1"] - s["int8_top1"] > 0.3  # the fragile layer wrecks the all-int8 build
    assert mods[0]["fp32_kept_top1"] >= s["fp32_top1"] - 0.01  # and keeping it fp32 restores it
    drift = a["export_drift"]
    assert drift["top1_agreement"] >= 0.95
    # per module, onnxruntime's int8 kernels reproduce PyTorch's int8 arithmetic (tapped where the export
    # quantizes each module's output); a drift the export introduced would show up as a low value here
    assert drift["modules_compared"] >= 10
    assert drift["worst_module"]["ort_vs_pytorch_sqnr_db"] is None or drift["worst_module"]["ort_vs_pytorch_sqnr_db"] > 30
    html = (out / "analysis.html").read_text()
    assert html.count("<svg") >= 3 and FRAGILE_UNIT in html


def test_export_max_drop_keeps_the_fragile_layer_in_fp32(fragile_file, tmp_path):
    from edgefuse.api import export_model
    from edgefuse.validate import Budgets

    path, kw = fragile_file
    out = tmp_path / "build"
    res = export_model(path, out, formats=("onnx",), runs=20, model_kwargs=kw,
                       budgets=Budgets(max_drop=1.0, max_latency_ratio=None))
    fb, report = res.fallback, res.report
    assert fb.kept_fp32 == [FRAGILE_UNIT] and fb.met
    assert res.accuracy["ptq_pytorch"] < res.accuracy["fp32_pytorch"] - 0.3
    assert report.passed, report.failures
    assert report.accuracy_drop <= 1.0
    assert FRAGILE_UNIT in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    step = manifest["fp32_fallback"]["latency_ms"]["steps"][0]
    assert step["module"] == FRAGILE_UNIT and step["ms"] > 0


def test_gate_flags():
    stats = {"a": {"mean": 0.5, "std": 0.3, "saturated": 0.1},
             "b": {"mean": 0.99, "std": 0.02, "saturated": 0.95},
             "c": {"mean": 0.5, "std": 0.001, "saturated": 0.0}}
    flags = gate_flags(stats)
    assert set(flags) == {"b", "c"}
    assert "saturated" in flags["b"][0] and "collapsed" in flags["c"][0]
