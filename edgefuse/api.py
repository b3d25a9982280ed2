"""High-level entry points the CLI calls. Each returns plain data; none prints."""

from __future__ import annotations

import zipfile
from pathlib import Path

import onnx
import torch

from edgefuse._files import check_input_file
from edgefuse._versions import sha256_file
from edgefuse.checkpoint import load_checkpoint, save_checkpoint
from edgefuse.data import ImageDataset, PreprocessContract, check_same_classes, load_data, norm_stats
from edgefuse.distributed import joins_process_group as _joins_process_group
from edgefuse.errors import InputFileError, MissingExtraError
from edgefuse.export.onnx import opset_of
from edgefuse.export.onnx_checks import weight_summary
from edgefuse.limits import check_output_dir, check_run_flags
from edgefuse.models import create_model
from edgefuse.pipeline.export import ExportOutcome, ExportRequest, run_export
from edgefuse.pipeline.source import contract_from_flags, load_model_source
from edgefuse.progress import NullProgress, Progress
from edgefuse.reports.training import training_report
from edgefuse.runtimes import OrtModel, PteModel, load_runtime
from edgefuse.runtimes.sidecar import read_sidecar
from edgefuse.training import TrainConfig, count_macs, count_params, train
from edgefuse.validate import Budgets, validate_models, write_report


def gate_log_path(checkpoint: str | Path) -> Path:
    """Where training writes the per-epoch gate statistics of ``checkpoint``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".gates.jsonl")


def check_model_args(model: str, fusion: str, *, width: float = 1.0, channels: int | None = None,
                     input_size: int = 32, fusion_kwargs: dict | None = None, positions: str = "all") -> None:
    """Build the zoo model once (2 classes, thrown away): a bad name, size or option fails before any data
    is read or any time is spent."""
    extra_kwargs = {"positions": positions} if positions != "all" else {}
    create_model(model, 2, fusion=fusion, width=width, in_chans=channels or 1, input_size=input_size,
                 fusion_kwargs=fusion_kwargs or {}, **extra_kwargs)


@_joins_process_group
def train_model(
    *,
    model: str,
    fusion: str,
    data: str,
    out: str | Path,
    epochs: int = 15,
    width: float = 1.0,
    input_size: int = 32,
    channels: int | None = None,
    fusion_kwargs: dict | None = None,
    positions: str = "all",
    batch_size: int = 64,
    lr: float = 3e-3,
    attention_lr_scale: float = 0.2,
    seed: int = 0,
    progress: Progress = NullProgress(),
    dist=None,
) -> dict:
    """Train a zoo model on ``data`` and write the checkpoint ``out`` and its gate log.

    Under ``torchrun`` every process trains its share with DistributedDataParallel and rank 0 alone
    writes; ``dist`` is set by the decorator.

    Returns:
        A summary: model, fusion, data, accuracies, sample counts, seconds and file paths.
    """


    check_run_flags(input_size=input_size)
    check_output_dir(Path(out).parent, "the folder of --out")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, attention_lr_scale=attention_lr_scale, seed=seed)
    check_model_args(model, fusion, width=width, channels=channels, input_size=input_size,
                     fusion_kwargs=fusion_kwargs, positions=positions)
    extra_kwargs = {"positions": positions} if positions != "all" else {}
    splits = load_data(data, seed=seed)
    ch = channels or splits.default_channels
    mean, std = norm_stats(splits.train, ch, input_size)
    contract = PreprocessContract(input_size, ch, mean, std, splits.class_names)
    torch.manual_seed(seed)
    net = create_model(model, len(splits.class_names), fusion=fusion, width=width, in_chans=ch,
                       input_size=input_size, fusion_kwargs=fusion_kwargs or {}, **extra_kwargs)
    out = Path(out)
    log = gate_log_path(out)
    if dist.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
    result = train(net, splits, contract, config, log_path=log, progress=progress, dist=dist)
    metrics = {**result.metrics(), "test_samples": len(splits.test), "data": splits.source,
               "data_fingerprint": splits.fingerprint}
    if dist.enabled:
        metrics["world_size"] = dist.world_size
    flags: dict = {}
    report = out.with_name(out.stem + ".train.html")
    if dist.is_main:  # one writer
        save_checkpoint(out, net, contract, metrics=metrics, extra={"train_config": config.__dict__})

        flags = training_report(log, report, f"edgefuse training: {model}/{fusion} on {splits.source}")
    return {
        "model": model, "fusion": fusion, "data": splits.source,
        "val_top1": result.val_accuracy, "test_top1": result.test_accuracy,
        "test_samples": len(splits.test), "train_seconds": result.seconds,
        "checkpoint": str(out), "gate_log": str(log), "report": str(report), "gate_flags": flags,
        "rank": dist.rank, "world_size": dist.world_size,
    }


def describe_checkpoint(path: str | Path) -> dict:
    """What ``edgefuse inspect`` shows for a ``model.pt``: model, sizes, MACs, contract, metrics."""
    loaded = load_checkpoint(path)
    c = loaded.contract
    kwargs = {k: v for k, v in loaded.spec["kwargs"].items() if k != "num_classes"}
    return {
        "model": loaded.spec["name"],
        "arguments": kwargs,
        "parameters": count_params(loaded.model),
        "MACs": count_macs(loaded.model, c.input_shape),
        **_contract_rows(c),
        "metrics": loaded.metrics,
    }


def _contract_rows(c) -> dict:
    return {
        "input": f"{c.input_name}: {'x'.join(map(str, c.input_shape))} {c.layout}, {c.color}",
        "preprocessing": {"resize": c.resize, "scale": round(c.scale, 8), "mean": list(c.mean), "std": list(c.std)},
        "classes": list(c.class_names),
    }


def describe_artifact(path: str | Path) -> dict:
    """What ``edgefuse inspect`` shows for any file edgefuse reads or writes.

    ``model.pt`` checkpoints (model, parameters, MACs, contract, metrics); ``.onnx`` and ``.ort``
    (contract from ``metadata_props``, shapes, precision, op mix); ``.pte`` (contract from the JSON
    sidecar, shapes from ExecuTorch's runtime when installed); TorchScript files (size, hash, no
    code is loaded). Nothing in the file is executed.

    Raises:
        InputFileError: missing, empty, corrupt or unknown file.
    """

    p = check_input_file(path)
    suffix = p.suffix.lower()
    base = {"file": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
    if suffix == ".pt" and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        if any("/code/" in n for n in names):
            return {"format": "TorchScript (server-side PyTorch; not loaded: loading runs its code)", **base}
    if suffix in (".pt", ".pth"):
        return {"format": "edgefuse checkpoint", **describe_checkpoint(p), **base}
    if suffix in (".onnx", ".ort"):
        m = OrtModel(p)
        meta = m.metadata()
        info = {"format": "ONNX" if suffix == ".onnx" else "ONNX Runtime Mobile (ORT format)",
                "precision": meta.get("edgefuse.precision", "unknown"),
                "input shape": [d if isinstance(d, int) else str(d) for d in m.input_shape],
                "outputs": {o.name: [d if isinstance(d, int) else str(d) for d in o.shape]
                            for o in m.session.get_outputs()}}
        if "edgefuse.contract" in meta:
            info.update(_contract_rows(PreprocessContract.from_json(meta["edgefuse.contract"])))
        else:
            info["contract"] = "none (not exported by edgefuse: pass --input-size/--channels/--mean/--std)"
        if suffix == ".onnx":
            try:
                model = onnx.load(str(p), load_external_data=False)
            except Exception as e:
                raise InputFileError(f"{p}: not a readable ONNX file ({type(e).__name__})") from None
            info["opset"] = opset_of(model)
            w = weight_summary(model)
            info["weights"] = {"int8": w["int8_weights"], "fp32": w["float_weights"]}
        info["edgefuse"] = meta.get("edgefuse.version", "")
        return {**info, **base}
    if suffix == ".pte":
        side = read_sidecar(p)
        info = {"format": "ExecuTorch program (.pte)", "precision": side.get("precision"),
                "input shape": side["input"]["shape"],
                **_contract_rows(PreprocessContract.from_dict(side["contract"])),
                "versions": side.get("versions", {})}
        if side.get("sha256") and side["sha256"] != base["sha256"]:
            info["warning"] = "the file's sha256 differs from its sidecar's: they do not belong together"
        try:
            info["input shape (runtime)"] = PteModel(p).input_shape
        except MissingExtraError:  # the extra is optional for inspecting; a file it cannot load is not
            info["runtime"] = "ExecuTorch not installed: the shape is the sidecar's"
        return {**info, **base}
    raise InputFileError(f"{p}: unknown file type {suffix or '(none)'}; inspect reads model.pt, .onnx, .ort, .pte "
                         "and TorchScript files")


# --------------------------------------------------------------------------------------------
# export --int8 and validate
# --------------------------------------------------------------------------------------------


@_joins_process_group
def export_model(source: str | Path, out_dir: str | Path, *, progress: Progress = NullProgress(), dist=None,
                 **request) -> ExportOutcome:
    """``edgefuse export``: load, quantize (PTQ or QAT), export, validate, gate, publish.

    ``request`` holds the fields of :class:`edgefuse.pipeline.export.ExportRequest` (``int8``, ``calib``,
    ``data``, ``formats``, ``budgets``, ...); the stages are :func:`edgefuse.pipeline.export.run_export`'s. The
    gate's verdict is in ``outcome.report.passed``; a failed gate does not raise.

    With ``budgets.max_drop`` and ``fallback``, an int8 build whose top-1 drop on the *validation* split
    exceeds the budget is rebuilt with its most sensitive modules in fp32 (greedy by measured
    sensitivity) until it fits; the *test* split then judges the result, so the choice is not fitted to
    the data that gates it. The kept modules and the latency each costs go to the manifest and report.

    Under ``torchrun`` the QAT step runs data-parallel on every process (DistributedDataParallel);
    everything else -- export, validation, every file written -- happens on rank 0 only, and the other
    ranks return an outcome with ``rank`` set and no ``export``/``report``. ``dist`` is set by the decorator.
    """
    return run_export(ExportRequest(source, out_dir, **request), progress=progress, dist=dist)


def validate_files(
    fp32: str | Path,
    int8: str | Path,
    *,
    data: str | None,
    split: str = "test",
    out_dir: str | Path | None = None,
    budgets=None,
    threads: int = 1,
    runs: int = 100,
    seed: int = 0,
    contract_flags: dict | None = None,
    baseline: dict | None = None,
    progress: Progress = NullProgress(),
):
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
                                       flags.get("mean"), flags.get("std"), None)
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
        write_report(report, out_dir)
    return report


__all__ = ["ExportOutcome", "ExportRequest", "check_model_args", "contract_from_flags", "describe_artifact",
           "describe_checkpoint", "export_model", "gate_log_path", "load_model_source", "train_model", "validate_files"]
