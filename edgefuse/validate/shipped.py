"""Validating a staged set as it will ship: every fp32/int8 pair in its runtime, every file against the
PyTorch program it was exported from, and one report that gates them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefuse._layout import run_batch
from edgefuse.data import eval_batch_size
from edgefuse.export.artifacts import ExportResult
from edgefuse.export.formats import format_names, get_format
from edgefuse.progress import NullProgress, Progress
from edgefuse.quantize.eval_twin import eval_twin
from edgefuse.quantize.fallback import FallbackResult
from edgefuse.quantize.fp32_region import fp32_region
from edgefuse.runtimes import load_runtime
from edgefuse.validate.core import validate_models
from edgefuse.validate.gate import judge
from edgefuse.validate.opcheck import IMAGES as OPCHECK_IMAGES, check_ops
from edgefuse.validate.report import Budgets, ValidationReport


def format_summary(r: ValidationReport) -> dict:
    """One format's row in a multi-format report."""
    return {"engine": r.runtime.get("engine"), "fp32_file": Path(r.fp32.file).name, "int8_file": Path(r.int8.file).name,
            "fp32_top1": r.fp32.top1, "int8_top1": r.int8.top1, "agreement": r.agreement,
            "fp32_ms": r.fp32.latency["median_ms"], "int8_ms": r.int8.latency["median_ms"],
            "latency_ratio": r.latency_ratio, "speedup": r.speedup, "size_ratio": r.size_ratio,
            "passed": r.passed, "failures": list(r.failures)}


def validate_shipped(staged: ExportResult, programs: dict[str, nn.Module], dataset, *, budgets: Budgets,
                     threads: int = 1, runs: int = 100, baseline: dict | None = None, data_info: dict | None = None,
                     fallback: FallbackResult | None = None, program_predictions: dict | None = None,
                     progress: Progress = NullProgress()) -> ValidationReport | None:
    """Validate every fp32/int8 pair of ``staged`` whose format has a runtime, and gate them together.

    Args:
        staged: the staged (or published) set.
        programs: the PyTorch programs the files came from: ``"fp32"``, and per int8 scheme
            (``"onnxruntime"``, ``"xnnpack"``) the converted int8 program.
        dataset: labelled evaluation images, or None (latency, size and SQNR on noise only).
        budgets, threads, runs, baseline, progress: as for :func:`validate_models`; the baseline is
            compared with the first format's pair.
        fallback: the fp32 fallback's outcome, if it ran (the gate fails when it missed its budget).
        program_predictions: per key of ``programs``, its top-1 class for every image of ``dataset``, where
            already computed (the programs are then not run again).

    Returns:
        The first format's report, whose ``gate`` judges the whole set (every format's pair, every file
        against its program, the fallback); ``extra["formats"]`` has a row per format and, with data,
        ``extra["pytorch_agreement"]`` each file's agreement with its program. None when no pair shipped.
    """
    pairs = [(fmt, staged.path(fmt, "fp32"), staged.path(fmt, "int8")) for fmt in format_names()
             if get_format(fmt).runtime is not None]
    pairs = [p for p in pairs if p[1] and p[2]]
    if not pairs:
        return None
    reports: dict[str, ValidationReport] = {}
    for fmt, fp32_file, int8_file in pairs:
        reports[fmt] = validate_models(fp32_file, int8_file, dataset, threads=threads, runs=runs, budgets=budgets,
                                       progress=progress, data_info=data_info or {"source": None},
                                       baseline=baseline if not reports else None)
    report = next(iter(reports.values()))
    if len(reports) > 1:
        report.extra["formats"] = {fmt: format_summary(r) for fmt, r in reports.items()}
    agreement = None
    if dataset is not None:
        agreement = agreement_with_programs(staged, programs, dataset, threads, reports,
                                            program_predictions=program_predictions)
        report.extra["pytorch_agreement"] = agreement
        onnx_int8 = staged.path("onnx", "int8")
        if onnx_int8 is not None:
            report.extra["int8_pytorch_vs_onnxruntime_agreement"] = agreement[onnx_int8.name]
    # Every file that ships is gated, not only the first; a file that does not compute its program fails
    # whatever its accuracy (labels may not tell) -- unless each of its ops is shown to compute its program's.
    checked = check_below_floor(staged, programs, dataset, agreement or {}, budgets, reports, threads)
    if checked:
        report.extra["op_check"] = checked
    report.gate = judge(reports, budgets, agreement=agreement, samples=0 if dataset is None else len(dataset),
                        fallback=fallback, cleared={f for f, c in checked.items() if c["passed"]})
    for key in ("delegation", "mobile_usability", "latency_precision"):  # what the formats' builders found out about their files
        found = {a.file: a.details[key] for a in staged.artifacts if key in a.details}
        if found:
            report.extra[key] = found
    padded = {a.file: a.details["padded_depthwise"] for a in staged.artifacts if a.details.get("padded_depthwise")}
    if padded:  # what a builder did to its files (said only where it widened something)
        report.extra["padded_depthwise"] = padded
    report.extra["notes"] = staged.notes
    if staged.target is not None:  # the reports name the files where they will be, not the staging folder
        for r in reports.values():
            for m in (r.fp32, r.int8):
                m.file = str(staged.target / Path(m.file).name)
    return report


def _runnable(staged: ExportResult) -> list:
    runnable = {f for f in format_names() if get_format(f).runtime is not None}
    return [a for a in staged.artifacts if a.kind in runnable]


def _reference_keys(staged: ExportResult) -> dict[str, tuple[str, tuple[str, ...]]]:
    """File name -> (program key, fp32 region) of the program it computes: its scheme's program, with the
    same fp32 region where latency-aware precision gave the file (or the file it was converted from) one."""
    by_name = {a.file: a for a in staged.artifacts}
    key = {}
    for a in _runnable(staged):
        if a.precision == "fp32":
            key[a.file] = ("fp32", ())
            continue
        src = by_name.get(a.details.get("converted_from"), a)
        region = tuple(a.details.get("latency_precision", src.details.get("latency_precision", {})).get("fp32_modules", ()))
        key[a.file] = (get_format(a.kind).int8_scheme, region)
    return key


def check_below_floor(staged: ExportResult, programs: dict[str, nn.Module], dataset, agreement: dict[str, float],
                      budgets: Budgets, reports: dict[str, ValidationReport], threads: int = 1) -> dict[str, dict]:
    """The op-by-op check (:func:`edgefuse.validate.opcheck.check_ops`) of every int8 ``.onnx`` file whose
    top-1 agreement with its program is below the floor; an ``.ort`` file converted from a file that passes
    it is cleared too when the two files agree on top-1 at the floor (the same graph, serialised with
    onnxruntime's optimisations applied). ``.pte``
    files are not checked this way (the floor decides).

    Returns:
        File name -> the check's outcome (``passed`` clears the file).
    """
    floor = budgets.min_artifact_agreement
    if floor is None or dataset is None:
        return {}
    key = _reference_keys(staged)
    x = None
    out: dict[str, dict] = {}
    for a in _runnable(staged):
        if a.precision != "int8" or a.kind != "onnx" or agreement.get(a.file, 1.0) >= floor:
            continue
        if x is None:
            x = torch.stack([dataset[i][0] for i in range(min(OPCHECK_IMAGES, len(dataset)))])
        prog_key, region = key[a.file]
        program = programs[prog_key] if not region else fp32_region(programs[prog_key], region)
        out[a.file] = check_ops(program, staged.out_dir / a.file, x, threads).to_dict()
    preds = {Path(r.int8.file).name: r.predictions["int8"] for r in reports.values() if r.predictions is not None}
    for a in _runnable(staged):
        src = a.details.get("converted_from")
        if (a.precision != "int8" or agreement.get(a.file, 1.0) >= floor or not out.get(src, {}).get("passed")
                or a.file not in preds or src not in preds):
            continue
        same = float(np.mean(preds[a.file] == preds[src]))
        out[a.file] = {"file": a.file, "same_as": src, "agreement_with_it": same, "passed": same >= floor,
                       "reason": "" if same >= floor else f"agrees with {src} on {100 * same:.1f}% only"}
    return out


def agreement_with_programs(staged: ExportResult, programs: dict[str, nn.Module], dataset, threads: int = 1,
                            reports: dict[str, ValidationReport] | None = None, batch_size: int | None = None,
                            program_predictions: dict | None = None) -> dict[str, float]:
    """Top-1 agreement of every runnable file of ``staged`` with the PyTorch program it was exported from.

    Files that validation already ran reuse its per-image top-1 classes (``reports``, per format); the
    others run here. Streams the dataset in batches: memory holds one batch of inputs and one top-1
    index per image.
    """
    files = _runnable(staged)
    key = _reference_keys(staged)
    known = {}
    for a in files:
        r = (reports or {}).get(a.kind)
        if r is not None and r.predictions is not None and Path(getattr(r, a.precision).file).name == a.file:
            known[a.file] = r.predictions[a.precision]
    given = {(k, ()): p for k, p in (program_predictions or {}).items() if p is not None and len(p) == len(dataset)}
    refs = {k: eval_twin(programs[k[0]] if not k[1] else fp32_region(programs[k[0]], k[1]))
            for k in set(key.values()) - set(given)}
    runtimes = {a.file: load_runtime(staged.out_dir / a.file, threads) for a in files if a.file not in known}
    ref_top1 = {k: [] for k in refs}
    got_top1 = {f: [] for f in runtimes}
    n = len(dataset) if refs or runtimes else 0  # nothing left to run: every figure was known
    batch_size = batch_size or eval_batch_size(dataset)
    channels_last: dict = {}  # per program, decided on the first batch as predict() does (edgefuse._layout)
    for start in range(0, n, batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, n))])
        with torch.no_grad():
            for k, module in refs.items():
                out, channels_last[k] = run_batch(module, x, channels_last.get(k))
                ref_top1[k].append(out.argmax(1).numpy())
        for f, rt in runtimes.items():
            got_top1[f].append(rt.run(x.numpy()).argmax(1))
    got = {**known, **{f: np.concatenate(v) for f, v in got_top1.items()}}
    ref = {**given, **{k: np.concatenate(v) for k, v in ref_top1.items() if v}}
    return {a.file: float(np.mean(got[a.file] == ref[key[a.file]])) for a in files}
