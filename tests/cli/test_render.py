"""What the commands print, rendered from real results (every branch of the report that export can fill)."""

from __future__ import annotations

import copy

from edgefuse.cli import render


def test_the_export_report_renders_every_section(exported, capsys):
    res = copy.copy(exported)
    res.report = copy.deepcopy(exported.report)
    extra = res.report.extra
    extra["latency_precision"] = {
        "model.int8.onnx": {"fp32_modules": [], "fp32_weight_nodes": 0, "chosen": "all int8", "threads": 1,
                            "runs": 30, "candidates_ms": {"fp32": 1.1, "all int8": 0.5}},
        "model.int8.ort": {"fp32_modules": ["stem", "stages.0"], "fp32_weight_nodes": 3, "threads": 1, "runs": 30,
                           "chosen": "fp32 before stages.1.0.conv1", "candidates_ms": {
                               "fp32": 1.0, "all int8": 1.2, "fp32 before stages.1.0.conv1": 0.9}}}
    extra["formats"] = {"onnx": {"fp32_top1": 0.98, "int8_top1": 0.97, "agreement": 0.99, "fp32_ms": 1.0,
                                 "int8_ms": 0.5, "latency_ratio": 0.5, "speedup": 2.0, "passed": True}}
    render.export_result(res)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    for needle in ("wrote", "latency int8/fp32", "every layer int8 (0.500 ms; fp32 file 1.100 ms; int8 at least 1.5x faster",
                   "fp32 before stages.1.0.conv1: 2 module(s), 3 conv/linear weights in fp32", "every shipped format",
                   "gate:"):
        assert needle in out, (needle, out)
