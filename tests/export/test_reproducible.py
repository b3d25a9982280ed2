"""Same inputs, seed and versions -> byte-identical artifacts and identical reports (latency aside)."""

import json

import pytest

from edgefuse.validate import Budgets

pytest.importorskip("executorch")

# onnxruntime writes .ort flatbuffers with tables in hash-map order that changes from process to
# process (and within one); their content is checked against the ONNX they came from instead.
NOT_BYTE_STABLE = (".ort", ".ort.json")
LATENCY_KEYS = {"latency", "latency_ratio", "speedup", "fp32_ms", "int8_ms", "doctor", "file", "fp32_file",
                "int8_file"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in LATENCY_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_exporting_twice_gives_the_same_bytes_and_report(tiny_checkpoint, tmp_path):
    from edgefuse.api import export_model

    runs = []
    for name in ("a", "b"):
        res = export_model(tiny_checkpoint, tmp_path / name, int8=True, calib="digits",
                           formats=("onnx", "ort", "pte"), runs=3,
                           budgets=Budgets(max_drop=None, max_latency_ratio=None))
        runs.append(res)
    hashes = [{a.file: a.sha256 for a in r["export"].artifacts} for r in runs]
    assert hashes[0].keys() == hashes[1].keys()
    stable = {f for f in hashes[0] if not f.endswith(NOT_BYTE_STABLE)}
    assert {"model.int8.onnx", "model.fp32.onnx", "model.int8.pte", "required_operators.config"} <= stable
    for f in stable:
        assert hashes[0][f] == hashes[1][f], f"{f} differs between two identical exports"
    reports = [_strip(json.loads((tmp_path / n / "report.json").read_text())) for n in ("a", "b")]
    assert reports[0] == reports[1]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    # What it takes to reproduce: versions, seed, quantization config, data fingerprint, source model.
    assert manifest["seed"] == 0 and manifest["versions"]["torch"] and manifest["versions"]["executorch"]
    assert manifest["data"]["digits"]["fingerprint"] and manifest["quantization"]["config"]["calibration"]
    assert manifest["source"]["model"]["name"] == "resnet"
