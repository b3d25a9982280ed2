"""``edgefuse verify-arm``: every ``.onnx``/``.ort`` of a build run in onnxruntime's aarch64 kernels (emulated)
and compared with the same file on this x86 machine, image for image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.errors import GateFailed, InputFileError, UsageError
from edgefuse.metrics import agreement, sqnr_db
from edgefuse.progress import NullProgress, Progress
from edgefuse.runtimes import OrtModel
from edgefuse.runtimes.arm64 import CPU_MODELS, DEFAULT_CPUS, Arm64Environment, wheel_versions

#: Parity, ARM vs x86 on the same file: int8 files may differ by requantization rounding (one int8 step
#: here and there), fp32 files only by float summation order.
MIN_INT8_AGREEMENT, MIN_INT8_SQNR_DB, MIN_FP32_SQNR_DB = 0.99, 30.0, 60.0
WHY_INT8_DIFFERS = (
    "x86 onnxruntime runs int8 convolutions on unsigned activations (signed ones shifted by 128) with VNNI/AVX-512 "
    "kernels; aarch64 runs them with NEON (sdot/udot on cores with dot product) and its own fixed-point "
    "requantization, so outputs may differ by one int8 step where a value rounds differently")


def _files(build: Path) -> list[Path]:
    files = sorted(p for p in build.iterdir() if p.suffix in (".onnx", ".ort") and p.name.startswith("model."))
    if not files:
        raise InputFileError(f"{build} holds no model.*.onnx or model.*.ort files (an edgefuse export folder)")
    return files


def verify_arm(build: str | Path, *, cpus=DEFAULT_CPUS, data: str = "digits", samples: int = 64, seed: int = 0,
               require_parity: bool = False, min_agreement: float = MIN_INT8_AGREEMENT,
               min_sqnr: float = MIN_INT8_SQNR_DB, progress: Progress = NullProgress()) -> dict:
    """Run the build's files on emulated arm64 cores and compare each with its x86 run.

    Args:
        build: an ``edgefuse export`` folder.
        cpus: emulated core models (:data:`edgefuse.runtimes.arm64.CPU_MODELS`).
        data: images to compare on, preprocessed here by the build's contract (the test split's first
            ``samples``): both sides see the same tensors.
        require_parity: raise :class:`GateFailed` when an int8 file differs beyond ``min_agreement`` /
            ``min_sqnr`` (or an fp32 file beyond float rounding) on any core.

    Returns:
        ``{"cpus", "samples", "rows": [{file, precision, cpu, agreement, max_abs_diff, sqnr_db,
        int8_vs_fp32_agreement_arm, int8_vs_fp32_agreement_x86, parity}], "failures", "notes"}``.
    """
    build = Path(build)
    if not build.is_dir():
        raise InputFileError(f"{build} is not a folder (give an edgefuse export folder)")
    cpus = tuple(cpus)
    unknown = [c for c in cpus if c not in CPU_MODELS]
    if unknown or not cpus:
        raise UsageError(f"unknown emulated CPU(s) {', '.join(unknown) or '(none)'}; choose from: {', '.join(CPU_MODELS)}")
    if samples < 1:
        raise UsageError(f"--samples must be >= 1, got {samples}")
    files = _files(build)
    models = {f: OrtModel(f) for f in files}
    contract = PreprocessContract.from_json(models[files[0]].metadata()["edgefuse.contract"])
    test = load_data(data, seed=seed).test
    ds = ImageDataset(test.subset(range(min(samples, len(test)))), contract)
    x = np.stack([ds[i][0] for i in range(len(ds))])
    x86 = {}
    for f, m in models.items():
        batch = m.input_shape[0]
        x86[f] = (np.concatenate([m.run(x[i:i + batch]) for i in range(0, len(x), batch)])
                  if isinstance(batch, int) else m.run(x))
    env = Arm64Environment.prepare(progress=progress)
    precision = {f: "int8" if ".int8." in f.name else "fp32" for f in files}
    fp32_twin = {f: next((g for g in files if g.suffix == f.suffix and precision[g] == "fp32"), None) for f in files}
    rows, failures = [], []
    progress.start("arm64 runs", len(cpus))
    try:
        for cpu in cpus:
            arm = env.run_onnx(cpu, files, x)
            for f in files:
                row = {"file": f.name, "precision": precision[f], "cpu": cpu, "kernels": CPU_MODELS[cpu][2],
                       "agreement": round(float(agreement(x86[f], arm[f])), 4),
                       "max_abs_diff": float(np.abs(x86[f] - arm[f]).max()),
                       "sqnr_db": round(float(min(sqnr_db(x86[f], arm[f]), 200.0)), 2)}
                twin = fp32_twin[f]
                if precision[f] == "int8" and twin is not None:
                    row["int8_vs_fp32_agreement_arm"] = round(float(agreement(arm[twin], arm[f])), 4)
                    row["int8_vs_fp32_agreement_x86"] = round(float(agreement(x86[twin], x86[f])), 4)
                ok = (row["agreement"] >= min_agreement and row["sqnr_db"] >= min_sqnr) if precision[f] == "int8" \
                    else row["sqnr_db"] >= MIN_FP32_SQNR_DB
                row["parity"] = bool(ok)
                if not ok:
                    failures.append(f"{f.name} on {cpu}: ARM vs x86 top-1 agreement {100 * row['agreement']:.2f}%, "
                                    f"SQNR {row['sqnr_db']:.1f} dB (parity needs "
                                    + (f">= {100 * min_agreement:g}% and >= {min_sqnr:g} dB" if precision[f] == "int8"
                                       else f">= {MIN_FP32_SQNR_DB:g} dB for fp32") + ")")
                rows.append(row)
            progress.advance("arm64 runs")
    finally:
        progress.finish("arm64 runs")
    int8_rows = [r for r in rows if r["precision"] == "int8"]
    notes = []
    if any(r["max_abs_diff"] > 0 for r in int8_rows):
        notes.append(f"int8 logits differ between ARM and x86: {WHY_INT8_DIFFERS}.")
    notes.append("Emulated: no timing, no NNAPI/CoreML/GPU delegates; the arithmetic is that of onnxruntime's "
                 "aarch64 CPU kernels on the emulated core's instruction set.")
    result = {"build": str(build), "cpus": list(cpus), "samples": len(x), "data": data, "rows": rows,
              "failures": failures, "notes": notes, "environment": {"root": str(env.root), **wheel_versions()},
              "parity_required": require_parity}
    if require_parity and failures:
        raise GateFailed("ARM parity: " + "; ".join(failures))
    return result
