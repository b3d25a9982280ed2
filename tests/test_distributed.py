"""Data-parallel training under torchrun: 2 CPU processes (gloo), one writer, same result as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes_matches_single_process(tmp_path):
    from edgefuse.api import train_model
    from edgefuse.checkpoint import load_checkpoint

    args = ["train", "--epochs", "6", "--width", "0.5", "--json"]
    torchrun = Path(sys.executable).with_name("torchrun")
    edgefuse = Path(sys.executable).with_name("edgefuse")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--no-python", str(edgefuse), *args,
                        "--out", str(tmp_path / "ddp" / "model.pt")],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)  # exactly one JSON document: only rank 0 prints
    assert out["world_size"] == 2 and out["rank"] == 0
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["model.gates.jsonl", "model.pt", "model.train.html"]
    ddp = load_checkpoint(tmp_path / "ddp" / "model.pt")
    assert ddp.metrics["world_size"] == 2
    assert len((tmp_path / "ddp" / "model.gates.jsonl").read_text().splitlines()) == 6

    torch.set_num_threads(1)
    single = train_model(model="resnet", fusion="effatt", data="digits", out=tmp_path / "one" / "model.pt",
                         epochs=6, width=0.5)
    torch.set_num_threads(2)
    # Same global batch, schedule and seed; only the order of the samples and per-rank BatchNorm
    # statistics differ, so the two runs land within a few test images of each other.
    assert abs(out["test_top1"] - single["test_top1"]) <= 0.03, (out, single)
    assert abs(out["val_top1"] - single["val_top1"]) <= 0.03, (out, single)
    assert out["test_top1"] > 0.8


def test_qat_under_torchrun_matches_single_process(tiny_checkpoint, tmp_path):
    from edgefuse.quantize import QATConfig

    torchrun = Path(sys.executable).with_name("torchrun")
    edgefuse = Path(sys.executable).with_name("edgefuse")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--no-python", str(edgefuse), "export",
                        str(tiny_checkpoint), "--qat", "--epochs", "1", "--format", "onnx", "--no-validate",
                        "--out", str(tmp_path / "ddp"), "--quiet"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    ddp = manifest["accuracy_pytorch"]
    assert manifest["quantization"]["method"] == "qat" and len(manifest["quantization"]["qat_history"]) == 1
    assert not [p for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")]

    # The same QAT in one process (what `export --qat --epochs 1` runs), evaluated the same way.
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.data import ImageDataset, load_data
    from edgefuse.quantize import QuantConfig, quantize_qat
    from edgefuse.training import evaluate

    lm = load_checkpoint(tiny_checkpoint)
    splits = load_data("digits")
    torch.set_num_threads(1)
    q = quantize_qat(lm.model, ImageDataset(splits.train, lm.contract), QuantConfig(),
                     QATConfig(epochs=1, freeze_observer_epoch=1))
    torch.set_num_threads(2)
    single = evaluate(q.program, ImageDataset(splits.test, lm.contract))
    assert abs(ddp["qat_pytorch"] - single) <= 0.03, (ddp, single)
