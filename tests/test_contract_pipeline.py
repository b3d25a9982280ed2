"""Contract v2 through the whole pipeline: a timm-style model brings its crop_pct/bicubic contract, a 48x192
model is letterboxed; both calibrate, export and validate on an image folder of odd-sized photos, and every
artifact carries the contract that was used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli._factories import ocr_line, timm_style
from tests.cli._run import run_cli

pytestmark = pytest.mark.slow


def _folder(root, channels):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(40):
            h, w = int(rng.integers(40, 160)), int(rng.integers(40, 260))
            base = 60 if c == "a" else 180
            px = np.clip(rng.normal(base, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px if channels == 3 else px[..., 0]).save(root / c / f"{i}.png")
    return root


def _export(tmp_path, factory, fn, *flags, channels):
    sd = tmp_path / "sd.pt"
    torch.save(fn().state_dict(), sd)
    data = _folder(tmp_path / "data", channels)
    out = tmp_path / "build"
    ran = run_cli("export", sd, "--factory", f"tests.cli._factories:{factory}", *flags, "--int8", "--calib", data,
                  "--calib-samples", "40", "--format", "onnx", "--runs", "5", "--max-latency-ratio", "100",
                  "--min-artifact-agreement", "0.9", "--out", out)
    assert ran.returncode == 0, ran.stderr
    return out, data


def test_a_timm_style_model_brings_its_crop_pct_contract(tmp_path):
    out, data = _export(tmp_path, "timm_style", timm_style, channels=3)
    side = json.loads((out / "manifest.json").read_text())
    from edgefuse.runtimes import OrtModel

    meta = json.loads(OrtModel(out / "model.int8.onnx").metadata()["edgefuse.contract"])
    assert (meta["resize"], meta["crop_pct"], meta["interpolation"], meta["input_size"]) == \
        ("shorter-side", 0.875, "bicubic", 64)
    assert meta["mean"] == [0.485, 0.456, 0.406]
    assert side["source"].get("contract_from") == "timm pretrained_cfg"
    ran = run_cli("validate", "--fp32", out / "model.fp32.onnx", "--int8", out / "model.int8.onnx", "--data", data,
                  "--runs", "5", "--max-latency-ratio", "100", "--out", tmp_path / "v")
    assert ran.returncode == 0, ran.stderr


def test_a_48x192_model_is_letterboxed_end_to_end(tmp_path):
    out, data = _export(tmp_path, "ocr_line", ocr_line, "--input-size", "48x192", "--channels", "1",
                        "--resize", "letterbox", channels=1)
    from edgefuse.runtimes import OrtModel

    m = OrtModel(out / "model.int8.onnx")
    meta = json.loads(m.metadata()["edgefuse.contract"])
    assert (meta["input_size"], meta["height"], meta["width"], meta["resize"]) == ([48, 192], 48, 192, "letterbox")
    assert list(m.input_shape[1:]) == [1, 48, 192]
    report = json.loads((out / "report.json").read_text())
    assert report["gate"]["passed"] and report["data"]["samples"] > 0
    ran = run_cli("validate", "--fp32", out / "model.fp32.onnx", "--int8", out / "model.int8.onnx", "--data", data,
                  "--runs", "5", "--max-latency-ratio", "100")
    assert ran.returncode == 0, ran.stderr


def test_a_zoo_model_trains_and_exports_with_a_non_square_contract(tmp_path):
    ckpt = tmp_path / "m.pt"
    ran = run_cli("train", "--model", "resnet", "--fusion", "se", "--epochs", "1", "--input-size", "24x48", "--resize",
                  "letterbox", "--interpolation", "bicubic", "--out", ckpt, "--quiet")
    assert ran.returncode == 0, ran.stderr
    ran = run_cli("export", ckpt, "--int8", "--format", "onnx", "--runs", "5", "--max-latency-ratio", "100",
                  "--out", tmp_path / "build")
    assert ran.returncode == 0, ran.stderr
    from edgefuse.runtimes import OrtModel

    m = OrtModel(tmp_path / "build" / "model.int8.onnx")
    meta = json.loads(m.metadata()["edgefuse.contract"])
    assert (meta["height"], meta["width"], meta["resize"], meta["interpolation"]) == (24, 48, "letterbox", "bicubic")
    assert list(m.input_shape[1:]) == [1, 24, 48]
