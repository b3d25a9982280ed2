"""``edgefuse analyze``: which module's int8 costs the accuracy, where the export drifts, how the gates behave.

Returns plain data and writes ``analysis.json`` plus a self-contained HTML page; never prints.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgefuse._files import json_ready, write_json_atomic, write_text_atomic
from edgefuse.data import ImageDataset, check_same_classes, load_data
from edgefuse.errors import DataError, UsageError
from edgefuse.export import export_onnx
from edgefuse.metrics import sqnr_db
from edgefuse.pipeline.source import load_model_source
from edgefuse.pipeline.train import gate_log_path
from edgefuse.progress import NullProgress, Progress
from edgefuse.quantize import TensorBatches
from edgefuse.quantize.analysis import batched_logits, module_sensitivity, switch_prepared
from edgefuse.quantize.pt2e import calibrate, convert_calibrated
from edgefuse.quantize.targets import quant_config_for
from edgefuse.reports.analysis import analysis_html
from edgefuse.reports.training import read_gate_log
from edgefuse.runtimes import OrtModel
from edgefuse.training import GateMonitor, gate_flags
from edgefuse.validate.drift import onnxruntime_module_drift


def analyze_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    data: str = "digits",
    split: str = "val",
    samples: int | None = None,
    quant_config=None,
    seed: int = 0,
    top: int = 10,
    threads: int = 1,
    force: bool = False,
    model_kwargs: dict | None = None,
    progress: Progress = NullProgress(),
) -> dict:
    """``edgefuse analyze``: per-module int8 sensitivity of a model, the activation ranges of its worst
    modules, PyTorch int8 vs onnxruntime int8 (export drift), and its attention gates.

    Args:
        source: a model file as for ``export`` (model.pt, .pt2, --factory/--trust-pickle forms).
        out_dir: folder for ``analysis.json`` and ``analysis.html``.
        data: labelled data (calibration uses its train split).
        split: the split analysed (``val`` by default: the test split is the gate's).
        samples: analyse the first ``samples`` images of the split (default all).
        quant_config: :class:`QuantConfig` (default: the CPU preset, as ``export`` does).
        top: how many of the worst modules get activation histograms.

    Returns:
        The analysis dict (also written to ``analysis.json``).
    """
    out = Path(out_dir)
    if (out / "analysis.json").exists() and not force:
        raise UsageError(f"{out} already holds an analysis; pass --force to replace it")
    if split not in ("train", "val", "test"):
        raise UsageError(f"--split must be train, val or test, got {split!r}")
    if samples is not None and samples < 1:
        raise UsageError("--samples must be >= 1")
    model, contract, info = load_model_source(source, **(model_kwargs or {}))
    splits = load_data(data, seed=seed)
    check_same_classes(contract.class_names, splits.class_names, data)
    if quant_config is None:
        quant_config = quant_config_for()
    calib_ds = ImageDataset(splits.train, contract)
    eval_ds = ImageDataset(splits.split(split), contract)
    if len(eval_ds) == 0:
        raise DataError(f"the {split} split of {data} is empty")
    model.eval()
    reader = TensorBatches(calib_ds, quant_config.calib_samples, quant_config.calib_batch_size)
    # One calibration serves both the switchable program and the plain int8 one that gets exported.
    prepared, _, _ = calibrate(model, reader, quant_config, progress)
    q = convert_calibrated(copy.deepcopy(prepared), quant_config)
    prog = switch_prepared(prepared, quant_config)
    sens = module_sensitivity(prog, eval_ds, samples=samples, progress=progress)

    # Gates at calibration time (fp32 model, calibration images).
    reader.rewind()
    with GateMonitor(model) as mon, torch.no_grad():
        while (x := reader.get_next()) is not None:
            model(x)
    cal_gates = mon.stats()
    history = read_gate_log(gate_log_path(source))
    train_gates = history[-1].get("gates", {}) if history else {}

    # Export drift: the same int8 program in PyTorch and in onnxruntime.
    n = sens.samples
    xs = torch.stack([eval_ds[i][0] for i in range(n)])
    ys = np.asarray([int(eval_ds[i][1]) for i in range(n)])
    pt = batched_logits(q, xs).numpy()
    with tempfile.TemporaryDirectory(prefix="edgefuse-analyze-") as tmp:
        onnx_path = export_onnx(q, (xs[:1],), Path(tmp) / "int8.onnx")
        ort_model = OrtModel(onnx_path, threads)
        ortv = np.concatenate([ort_model.run(xs[i : i + 64].numpy()) for i in range(0, n, 64)])
        per_module = onnxruntime_module_drift(prog, onnx_path, xs[:64], threads)
    drift = {"top1_agreement": float((pt.argmax(1) == ortv.argmax(1)).mean()),
             "output_sqnr_db": sqnr_db(pt, ortv),
             "pytorch_int8_top1": float((pt.argmax(1) == ys).mean()),
             "onnxruntime_int8_top1": float((ortv.argmax(1) == ys).mean())}

    sens_dict = sens.to_dict()
    for row in sens_dict["modules"]:
        row.update(per_module.get(row["module"], {"ort_sqnr_db": None, "pytorch_sqnr_db": None,
                                                   "ort_vs_pytorch_sqnr_db": None}))
    if per_module:
        worst = min(per_module, key=lambda k: _finite_db(per_module[k]["ort_vs_pytorch_sqnr_db"]))
        drift["modules_compared"] = len(per_module)
        drift["worst_module"] = {"module": worst, **per_module[worst]}
    result = json_ready({
        "schema": "edgefuse.analysis", "schema_version": 1,
        "source": {k: v for k, v in info.items() if k != "metrics"},
        "data": {"source": data, "split": split, "samples": n, "fingerprint": splits.fingerprint},
        "quant_config": quant_config.to_dict(),
        "sensitivity": sens_dict,
        "export_drift": drift,
        "gates": {"calibration": cal_gates, "calibration_flags": gate_flags(cal_gates),
                  "training_last_epoch_flags": gate_flags(train_gates), "training_epochs": len(history)},
        "method": ("One calibrated int8 program; each module's quantization switched on alone (only_int8_*) "
                   "and off alone (fp32_kept_*). Ranked by top-1 regained when kept in fp32, then top-1 lost "
                   "when alone in int8, then output SQNR when alone in int8. activation_sqnr_db compares the "
                   "module's own output, all-int8 vs all-fp32; clipped is the share of its fp32 outputs outside "
                   "its int8 range. ort_sqnr_db / pytorch_sqnr_db: the module's de-quantized int8 output in "
                   "onnxruntime / PyTorch against fp32; ort_vs_pytorch_sqnr_db: the two int8 computations against "
                   "each other (export drift). SQNR null = identical (infinite) or, for the onnxruntime columns, "
                   "no quantized output to tap."),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "analysis.json", result)
    write_text_atomic(out / "analysis.html", analysis_html(result, history, top))
    result["files"] = {"json": str(out / "analysis.json"), "html": str(out / "analysis.html")}
    return result


def _finite_db(v) -> float:
    return 1e9 if v is None or not math.isfinite(v) else v
