"""``edgefuse validate``: two model files, the contract they carry (or flags), labelled data -> report and gate."""

from __future__ import annotations

from pathlib import Path

from edgefuse.data import ImageDataset, PreprocessContract, check_same_classes, load_data
from edgefuse.limits import check_output_dir, check_run_flags
from edgefuse.pipeline.source import contract_from_flags
from edgefuse.progress import NullProgress, Progress
from edgefuse.runtimes import load_runtime
from edgefuse.reports.validation import write_reports
from edgefuse.validate import Budgets, ValidationReport, validate_models


def validate_files(
    fp32: str | Path,
    int8: str | Path,
    *,
    data: str | None,
    split: str = "test",
    out_dir: str | Path | None = None,
    budgets: Budgets | None = None,
    threads: int = 1,
    runs: int = 100,
    seed: int = 0,
    contract_flags: dict | None = None,
    baseline: dict | None = None,
    progress: Progress = NullProgress(),
) -> ValidationReport:
    """``edgefuse validate``: compare two model files (``.onnx``/``.ort`` or ``.pte``) on labelled data; write
    reports if ``out_dir``."""
    check_run_flags(threads=threads, runs=runs, input_size=(contract_flags or {}).get("input_size"))
    if out_dir:
        check_output_dir(out_dir)
    meta = load_runtime(fp32).metadata()
    base = PreprocessContract.from_json(meta["edgefuse.contract"]) if "edgefuse.contract" in meta else None
    flags = {k: v for k, v in (contract_flags or {}).items() if v is not None}
    if base is None or flags:
        contract = contract_from_flags(base, flags.get("input_size"), flags.get("channels"),
                                       flags.get("mean"), flags.get("std"), None, resize=flags.get("resize"),
                                       crop_pct=flags.get("crop_pct"), interpolation=flags.get("interpolation"))
    else:
        contract = base
    dataset = None
    if data:
        splits = load_data(data, seed=seed)
        check_same_classes(contract.class_names, splits.class_names, data)
        dataset = ImageDataset(splits.split(split), contract)
    report = validate_models(fp32, int8, dataset, threads=threads, runs=runs, budgets=budgets or Budgets(),
                             data_info={"source": data, "split": split}, progress=progress,
                             baseline=baseline)
    if out_dir:
        write_reports(report, out_dir)
    return report
