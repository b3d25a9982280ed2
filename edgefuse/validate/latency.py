"""Latency of builds: interleaved timing (:func:`edgefuse.runtimes.timing.interleaved_latency`) and what the
fp32 fallback's steps cost."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgefuse.export.formats.onnx import finish_onnx
from edgefuse.export.onnx import export_onnx
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.quantize.analysis import exclude_pattern
from edgefuse.runtimes import OrtModel
from edgefuse.runtimes.timing import interleaved_latency  # noqa: F401 -- also this module's API


def fallback_latency(model, calib_ds, fb, config, threads: int, runs: int, built: dict) -> dict:
    """onnxruntime latency of the all-int8 build and of each fallback step, interleaved in one run: what
    every module kept in fp32 costs. ``built`` holds programs already made (step -> QuantizedModel); other
    steps are rebuilt with PTQ (latency depends on the graph, not the weights, so PTQ stands in for QAT).
    Each step's file gets the passes a shipped int8 file gets (int8 hard activations, padded depthwise
    convs, tiled gate multiplies, global pools; not onnxsim nor the measured fp32 prefix), so the figures
    are of the kernels that ship: a raw export times MobileNetV3's hard-swish as fp32 islands."""
    kept_patterns = {exclude_pattern(k) for k in fb.kept_fp32}
    base = tuple(p for p in config.exclude if p not in kept_patterns)
    x = calib_ds[0][0][None]
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="edgefuse-fallback-") as tmp:
        for i in range(len(fb.kept_fp32) + 1):
            q = built.get(i)
            if q is None:
                cfg = replace(config, exclude=base + tuple(exclude_pattern(k) for k in fb.kept_fp32[:i]))
                q = quantize_ptq(model, TensorBatches(calib_ds, cfg.calib_samples, cfg.calib_batch_size), cfg)
            path = export_onnx(q.program, (x,), Path(tmp) / f"step{i}.int8.onnx")
            finish_onnx(path, calib_ds.contract, "int8", False, [])
            sessions[i] = OrtModel(path, threads)
        x1 = np.ascontiguousarray(x.numpy())
        lat = interleaved_latency({i: (lambda s=s: s.run(x1)) for i, s in sessions.items()}, runs=max(30, runs // 2))
    ms = [lat[i]["median_ms"] for i in range(len(sessions))]
    return {"all_int8_ms": ms[0], "final_ms": ms[-1], "threads": threads,
            "steps": [{"module": m, "ms": ms[i + 1], "cost_ms": ms[i + 1] - ms[i]} for i, m in enumerate(fb.kept_fp32)]}
