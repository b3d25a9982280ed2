"""``edgefuse export``, conducted: the model flows down once.

:func:`run_export` calls each stage once, in order, and each stage hands a typed value to the next:

1. :func:`check_request` -- flags, the output folder, optional extras (before any work: a second, not minutes);
2. :func:`load_inputs` -- the model and its contract (:mod:`edgefuse.pipeline.source`), data splits;
3. :func:`quantize_programs` -- the int8 program of every scheme the formats need, PTQ or QAT, and the fp32
   fallback when a budget asks for it (:mod:`edgefuse.quantize`);
4. :func:`edgefuse.export.artifacts.stage_artifacts` -- every format's files in a staging folder;
5. :func:`gate_staged` -- each shipped pair in its runtime and each file against its program
   (:func:`edgefuse.validate.shipped.validate_shipped`), the reports written beside the files;
6. :func:`edgefuse.export.artifacts.publish_artifacts` -- the set moved into place with the gate's verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefuse.data import EVAL_KEEP_BYTES, DataSplits, ImageDataset, PreprocessContract, check_same_classes, load_data
from edgefuse.distributed import DistContext
from edgefuse.errors import DataError, UsageError, one_line
from edgefuse.export.artifacts import ExportResult, check_target, discard_staged, publish_artifacts, stage_artifacts
from edgefuse.export.formats import get_format, parse_formats, require_extras
from edgefuse.export.onnx import DEFAULT_OPSET, check_opset
from edgefuse.limits import check_output_dir, check_run_flags
from edgefuse.pipeline.source import load_model_source
from edgefuse.progress import NullProgress, Progress
from edgefuse.quantize import QuantConfig, QuantizedModel, TensorBatches, quantize_ptq, quantize_qat
from edgefuse.quantize.eval_twin import eval_twin
from edgefuse.quantize.fallback import FallbackResult, fallback_within_budget
from edgefuse.quantize.targets import measurable_here, quant_config_for, xnnpack_preset
from edgefuse.reports.validation import write_reports
from edgefuse.training import predict
from edgefuse.validate.latency import fallback_latency
from edgefuse.validate.report import Budgets, ValidationReport
from edgefuse.validate.shipped import validate_shipped


@dataclass(frozen=True)
class ExportRequest:
    """Everything ``export`` is asked to do, checked on creation (cheap checks only: no file is read).

    Attributes:
        source: the model file (see :func:`edgefuse.pipeline.source.load_model_source`).
        out_dir: the folder the set is published to.
        int8: build int8 files too (else fp32 only, not gated).
        calib: calibration (and QAT training) data; its train split is used.
        data: labelled evaluation data (its test split gates); default ``calib``.
        quant_config: the onnxruntime-scheme recipe (default: the CPU preset detected here).
        qat_config: QAT instead of PTQ alone.
        formats: what to write (:func:`edgefuse.export.formats.format_names`).
        batch: a fixed batch (default: dynamic, and 1 for mobile files).
        opset: ONNX opset (default 18).
        budgets: the gate (:class:`edgefuse.validate.Budgets`).
        validate: run validation and the gate.
        threads, runs: latency measurement.
        force: replace a published set.
        seed: data split seed.
        fallback: with ``budgets.max_drop``, keep the most sensitive modules in fp32 until it fits.
        latency_search: time fp32 prefixes of the int8 ONNX graph on this CPU and ship the fastest
            (:mod:`edgefuse.export.kernel_choice`); only where this CPU is of the target's kind.
        baseline: a stored report to compare with (``--baseline``; its tolerances are in ``budgets``).
        model_kwargs: ``factory``, ``trust_pickle``, ``input_size``, ``channels``, ``mean``, ``std``.
    """

    source: str | Path
    out_dir: str | Path
    int8: bool = True
    calib: str | None = "digits"
    data: str | None = None
    quant_config: QuantConfig | None = None
    qat_config: object | None = None
    formats: tuple[str, ...] = ("onnx", "torchscript")
    batch: int | None = None
    opset: int | None = None
    budgets: Budgets = field(default_factory=Budgets)
    validate: bool = True
    threads: int = 1
    runs: int = 100
    force: bool = False
    seed: int = 0
    fallback: bool = True
    latency_search: bool = True
    baseline: dict | None = None
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise the frozen fields once
        set_(self, "out_dir", Path(self.out_dir))
        set_(self, "formats", parse_formats(list(self.formats)))
        set_(self, "opset", check_opset(self.opset or DEFAULT_OPSET))
        set_(self, "budgets", self.budgets or Budgets())
        set_(self, "model_kwargs", dict(self.model_kwargs or {}))
        check_run_flags(threads=self.threads, runs=self.runs, batch=self.batch,
                        input_size=self.model_kwargs.get("input_size"))
        if self.int8 and not self.calib:
            raise UsageError("--int8 needs calibration data: pass --calib DATA")

    @property
    def eval_source(self) -> str | None:
        return self.data or self.calib


@dataclass
class ExportOutcome:
    """What ``export`` produced.

    Attributes:
        source: how the model was loaded (file, format, factory, trust_pickle).
        accuracy: PyTorch top-1 on the test split of each program built (``fp32_pytorch``, ``ptq_pytorch``...).
        export: the published set (None on a non-zero torchrun rank).
        report: the gate's report (None without validation or int8); its verdict is ``report.passed``.
        fallback: the fp32 fallback's record, when a budget triggered it.
        rank: under torchrun, the rank of a process that helped with QAT and wrote nothing.
        seconds: wall seconds of each stage this run went through, in order (``load``, ``evaluate_fp32``,
            ``quantize`` -- calibration, conversion, the int8 program's evaluation and any fallback search --,
            ``fallback_latency``, ``artifacts``, ``gate``, ``publish``): where an export's time went, shown by
            the CLI and recorded by ``benchmarks/third_party.py``.
    """

    source: dict
    accuracy: dict[str, float] = field(default_factory=dict)
    export: ExportResult | None = None
    report: ValidationReport | None = None
    fallback: FallbackResult | None = None
    rank: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Inputs:
    """Stage 2: the model, its contract and the data it is calibrated and judged on."""

    model: nn.Module
    contract: PreprocessContract
    info: dict
    splits: dict[str, DataSplits]
    calib_ds: ImageDataset | None
    test_ds: ImageDataset | None
    val_ds: ImageDataset | None


@dataclass
class Programs:
    """Stage 3: the int8 programs the formats ship (per scheme), and the fallback that shaped them."""

    onnxruntime: QuantizedModel | None = None
    xnnpack: QuantizedModel | None = None
    fallback: FallbackResult | None = None
    #: the onnxruntime program before the fallback kept modules in fp32 (for its latency costing)
    all_int8: QuantizedModel | None = None
    #: per scheme (``fp32`` too), the final program's top-1 class for every test image
    predicted: dict[str, np.ndarray | None] = field(default_factory=dict)

    def by_scheme(self, model: nn.Module) -> dict[str, nn.Module]:
        out = {"fp32": model}
        for scheme in ("onnxruntime", "xnnpack"):
            q = getattr(self, scheme)
            if q is not None:
                out[scheme] = q.program
        return out


def check_request(req: ExportRequest) -> None:
    """Stage 1: what can be refused before any model is loaded."""
    check_output_dir(req.out_dir)
    check_target(req.out_dir, req.force)
    require_extras(req.formats)  # a one-line error naming a missing extra


def load_inputs(req: ExportRequest) -> Inputs:
    """Stage 2: load the model and the data; refuse a model/data mismatch before quantizing."""
    model, contract, info = load_model_source(req.source, **req.model_kwargs)
    splits = {src: load_data(src, seed=req.seed) for src in {s for s in (req.calib if req.int8 else None,
                                                                          req.eval_source) if s}}
    if req.eval_source:
        names = splits[req.eval_source].class_names
        check_same_classes(contract.class_names, names, req.eval_source)
        if not contract.class_names:
            contract = replace(contract, class_names=tuple(names))
        if req.int8 and req.validate:  # refuse before any work, not after writing artifacts
            req.budgets.require_samples(len(splits[req.eval_source].test), f"the test split of {req.eval_source}")
    probe = torch.zeros(contract.input_shape)
    try:
        with torch.no_grad():
            model.eval()
            n_out = model(probe).shape[-1]
    except Exception as e:
        raise UsageError(f"the model does not accept a {tuple(probe.shape)} input ({one_line(e, 150)}); "
                         "check --input-size and --channels") from None
    if contract.class_names and n_out != len(contract.class_names):
        raise DataError(f"the model has {n_out} outputs but the data has {len(contract.class_names)} classes")
    ev = splits.get(req.eval_source) if req.eval_source else None
    return Inputs(model, contract, info, splits,
                  calib_ds=ImageDataset(splits[req.calib].train, contract) if req.int8 else None,
                  test_ds=ImageDataset(ev.test, contract, keep_bytes=EVAL_KEEP_BYTES) if ev is not None else None,
                  val_ds=ImageDataset(ev.val, contract, keep_bytes=EVAL_KEEP_BYTES) if ev is not None else None)


def _record_accuracy(accuracy: dict, key: str, program: nn.Module, test_ds) -> np.ndarray | None:
    """PyTorch top-1 of ``program`` on the test split into ``accuracy[key]``; returns its per-image classes (the
    artifact check compares the files with them instead of running the program again)."""
    if test_ds is None:
        return None
    pred, labels = predict(eval_twin(program), test_ds)
    accuracy[key] = float((pred == labels).mean()) if len(labels) else 0.0
    return pred


def quantize_programs(req: ExportRequest, inputs: Inputs, accuracy: dict, progress: Progress,
                      dist: DistContext | None) -> Programs:
    """Stage 3: one int8 program per scheme the formats need, calibrated on the same images."""
    progs = Programs()
    if not req.int8:
        return progs
    model, calib_ds, test_ds = inputs.model, inputs.calib_ds, inputs.test_ds
    config = req.quant_config or quant_config_for()
    schemes = {get_format(f).int8_scheme for f in req.formats}
    if "onnxruntime" in schemes:  # the ONNX-based formats (and TorchScript) share onnxruntime's program
        q = quantize_ptq(model, TensorBatches(calib_ds, config.calib_samples, config.calib_batch_size), config,
                         progress=progress)
        progs.predicted["onnxruntime"] = _record_accuracy(accuracy, "ptq_pytorch", q.program, test_ds)
        if req.qat_config is not None:
            q = quantize_qat(model, calib_ds, config, req.qat_config, progress=progress, dist=dist)
            progs.predicted["onnxruntime"] = _record_accuracy(accuracy, "qat_pytorch", q.program, test_ds)
        if req.fallback and req.budgets.max_drop is not None and inputs.val_ds is not None:
            rebuilt, fb = fallback_within_budget(model, q, calib_ds, inputs.val_ds, config,
                                                 max_drop=req.budgets.max_drop, drop_type=req.budgets.drop_type,
                                                 qat_config=req.qat_config, progress=progress, dist=dist)
            if fb is not None:
                progs.fallback, progs.all_int8 = fb, q
                if rebuilt is not None:
                    q = rebuilt
                    config = rebuilt.config  # the .pte build keeps the same modules in fp32
                    progs.predicted["onnxruntime"] = _record_accuracy(accuracy, "fallback_pytorch", q.program, test_ds)
        progs.onnxruntime = q
    if "xnnpack" in schemes:
        xcfg = xnnpack_preset(config)
        progs.xnnpack = (quantize_qat(model, calib_ds, xcfg, req.qat_config, progress=progress, dist=dist)
                         if req.qat_config else
                         quantize_ptq(model, TensorBatches(calib_ds, xcfg.calib_samples, xcfg.calib_batch_size), xcfg,
                                      progress=progress))
        progs.predicted["xnnpack"] = _record_accuracy(accuracy, "xnnpack_int8_pytorch", progs.xnnpack.program, test_ds)
    return progs


def gate_staged(req: ExportRequest, staged: ExportResult, inputs: Inputs, progs: Programs, accuracy: dict,
                progress: Progress) -> ValidationReport | None:
    """Stage 5: validate and gate the staged set; the reports go into the staging folder (published with it)."""
    if not (req.validate and req.int8):
        return None
    data_info = {"source": req.eval_source, "split": "test"} if req.eval_source else {"source": None}
    report = validate_shipped(staged, progs.by_scheme(inputs.model), inputs.test_ds, budgets=req.budgets,
                              threads=req.threads, runs=req.runs, baseline=req.baseline, data_info=data_info,
                              fallback=progs.fallback, program_predictions=progs.predicted, progress=progress)
    if report is None:
        return None
    report.extra["accuracy_pytorch"] = accuracy
    if progs.fallback is not None:
        report.extra["fp32_fallback"] = progs.fallback.to_dict()
    write_reports(report, staged.out_dir)
    return report


def _latency_threads(req: ExportRequest, progs: Programs) -> int | None:
    """Threads for the latency-aware precision search, or None when it does not run: asked off, no int8
    onnxruntime program, or a target CPU of another kind than this one."""
    q = progs.onnxruntime
    if not req.latency_search or q is None or not measurable_here(q.config.target):
        return None
    return req.threads


class _StageClock:
    """Calls a stage and adds its wall seconds to ``seconds`` under the stage's name (also when it raises)."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    def __call__(self, name: str, stage, *args, **kwargs):
        start = time.perf_counter()
        try:
            return stage(*args, **kwargs)
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 2)


def run_export(req: ExportRequest, *, progress: Progress = NullProgress(),
               dist: DistContext | None = None) -> ExportOutcome:
    """``edgefuse export``: the stages above, each once. Does not raise on a failed gate (see ``report.passed``).

    Under ``torchrun`` QAT runs data-parallel on every process; everything else happens on rank 0, and the
    other ranks return an outcome with ``rank`` set and nothing written.
    """
    if dist is not None and dist.enabled and not dist.is_main and req.qat_config is None:
        return ExportOutcome(source={}, rank=dist.rank)  # nothing to share
    check_request(req)
    seconds: dict[str, float] = {}
    clock = _StageClock(seconds)
    inputs = clock("load", load_inputs, req)
    outcome = ExportOutcome(source=inputs.info, seconds=seconds)
    fp32_predicted = clock("evaluate_fp32", _record_accuracy, outcome.accuracy, "fp32_pytorch", inputs.model,
                           inputs.test_ds)
    progs = clock("quantize", quantize_programs, req, inputs, outcome.accuracy, progress, dist)
    progs.predicted["fp32"] = fp32_predicted
    outcome.fallback = progs.fallback
    if dist is not None and dist.enabled and not dist.is_main:
        outcome.rank = dist.rank
        return outcome
    manifest_extra = {"source": {k: v for k, v in inputs.info.items() if k != "metrics"},
                      "data": {s: {"fingerprint": sp.fingerprint} for s, sp in inputs.splits.items()},
                      "seed": req.seed, "accuracy_pytorch": outcome.accuracy}
    fb = progs.fallback
    if fb is not None and fb.kept_fp32:
        fb.latency_ms = clock("fallback_latency", fallback_latency, inputs.model, inputs.calib_ds, fb,
                              progs.onnxruntime.config, req.threads, req.runs,
                              {0: progs.all_int8, len(fb.kept_fp32): progs.onnxruntime})
        manifest_extra["fp32_fallback"] = fb.to_dict()
    check_inputs = None
    if inputs.test_ds is not None:
        check_inputs = torch.stack([inputs.test_ds[i][0] for i in range(min(16, len(inputs.test_ds)))])
    # Staged, validated and gated in a folder beside the previous set; published only with the verdict, so an
    # interruption before it leaves the previous set as it was, and never an ungated one. (One try from
    # staging to publishing: a signal between two steps must not leave the staging folder behind.)
    staged = None
    try:
        staged = clock("artifacts", stage_artifacts, inputs.model, inputs.contract, req.out_dir,
                       quantized=progs.onnxruntime, pte_quantized=progs.xnnpack, formats=req.formats, batch=req.batch,
                       opset=req.opset, force=req.force, check_inputs=check_inputs, manifest_extra=manifest_extra,
                       latency_threads=_latency_threads(req, progs))
        outcome.report = clock("gate", gate_staged, req, staged, inputs, progs, outcome.accuracy, progress)
        outcome.export = clock("publish", publish_artifacts, staged, force=req.force,
                               gate=None if outcome.report is None else outcome.report.gate.to_dict())
    except BaseException:
        if staged is not None:
            discard_staged(staged)
        raise
    return outcome
