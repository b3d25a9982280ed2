"""High-level entry points the CLI calls. Each returns plain data; none prints."""

from __future__ import annotations

from pathlib import Path

from edgefuse.distributed import joins_process_group as _joins_process_group
from edgefuse.export.formats import format_names, get_format, parse_formats
from edgefuse.progress import NullProgress, Progress


def gate_log_path(checkpoint: str | Path) -> Path:
    """Where training writes the per-epoch gate statistics of ``checkpoint``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".gates.jsonl")


def check_model_args(model: str, fusion: str, *, width: float = 1.0, channels: int | None = None,
                     input_size: int = 32, fusion_kwargs: dict | None = None, positions: str = "all") -> None:
    """Build the zoo model once (2 classes, thrown away): a bad name, size or option fails before any data
    is read or any time is spent."""
    from edgefuse.models import create_model

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
    import torch

    from edgefuse.checkpoint import save_checkpoint
    from edgefuse.data import PreprocessContract, load_data, norm_stats
    from edgefuse.models import create_model
    from edgefuse.training import TrainConfig, train

    from edgefuse.limits import check_output_dir, check_run_flags

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
        from edgefuse.reports.training import training_report

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
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.training import count_macs, count_params

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
    import zipfile

    from edgefuse._files import check_input_file
    from edgefuse._versions import sha256_file
    from edgefuse.data import PreprocessContract
    from edgefuse.errors import InputFileError, MissingExtraError

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
        from edgefuse.runtimes import OrtModel

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
            import onnx

            from edgefuse.export.onnx import opset_of
            from edgefuse.export.onnx_checks import weight_summary

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
        from edgefuse.runtimes.sidecar import read_sidecar

        side = read_sidecar(p)
        info = {"format": "ExecuTorch program (.pte)", "precision": side.get("precision"),
                "input shape": side["input"]["shape"],
                **_contract_rows(PreprocessContract.from_dict(side["contract"])),
                "versions": side.get("versions", {})}
        if side.get("sha256") and side["sha256"] != base["sha256"]:
            info["warning"] = "the file's sha256 differs from its sidecar's: they do not belong together"
        try:
            from edgefuse.runtimes import PteModel

            info["input shape (runtime)"] = PteModel(p).input_shape
        except MissingExtraError:  # the extra is optional for inspecting; a file it cannot load is not
            info["runtime"] = "ExecuTorch not installed: the shape is the sidecar's"
        return {**info, **base}
    raise InputFileError(f"{p}: unknown file type {suffix or '(none)'}; inspect reads model.pt, .onnx, .ort, .pte "
                         "and TorchScript files")


# --------------------------------------------------------------------------------------------
# Model sources: model.pt, .pt2, or a factory + weights
# --------------------------------------------------------------------------------------------


def _contract_from_flags(base, input_size, channels, mean, std, class_names):
    from edgefuse.data import PreprocessContract
    from edgefuse.errors import UsageError

    if base is None and (input_size is None or channels is None):
        raise UsageError("this model carries no preprocessing contract: pass --input-size and --channels "
                         "(and --mean/--std if it was trained with normalisation)")
    d = base.to_dict() if base is not None else {"input_size": input_size, "channels": channels,
                                                  "mean": [0.0] * channels, "std": [1.0] * channels}
    if input_size is not None:
        d["input_size"] = input_size
    if channels is not None:
        d["channels"] = channels
        if mean is None and base is not None and len(base.mean) != channels:
            d["mean"], d["std"] = [0.0] * channels, [1.0] * channels
    if mean is not None:
        d["mean"] = list(mean) if len(mean) > 1 else list(mean) * d["channels"]
    if std is not None:
        d["std"] = list(std) if len(std) > 1 else list(std) * d["channels"]
    if class_names:
        d["class_names"] = list(class_names)
    return PreprocessContract.from_dict(d)


def _check_pt2_batch_range(path: Path, program, batch) -> None:
    """Refuse a ``.pt2`` whose declared batch range does not cover what edgefuse runs: batch 1 (mobile
    files, latency) up to :data:`edgefuse.limits.MAX_BATCH` (the symbolic batch it traces with)."""
    from edgefuse.errors import UsageError
    from edgefuse.limits import MAX_BATCH

    rng = program.range_constraints.get(batch.node.expr)
    if rng is None:
        return
    from torch.utils._sympy.numbers import int_oo

    lo, hi = int(rng.lower), (None if rng.upper == int_oo else int(rng.upper))
    if lo > 1 or (hi is not None and hi < MAX_BATCH):
        declared = f"{lo}..{hi if hi is not None else 'any'}"
        raise UsageError(
            f"{path} accepts batch sizes {declared} only (a bounded torch.export Dim); edgefuse runs batch 1 for "
            f"mobile files and latency and traces batches up to {MAX_BATCH}: re-export with "
            "dynamic_shapes=({0: torch.export.Dim('batch')},) (no min/max)")


def _import_factory(factory: str):
    """Import ``package.module:function``, looking in the current folder first (as uvicorn/gunicorn do for
    an app path): a user's model code usually sits beside their weights, not in an installed package."""
    import importlib
    import os
    import sys

    from edgefuse.errors import UsageError

    mod_name, _, fn_name = factory.partition(":")
    if not mod_name or not fn_name:
        raise UsageError(f"--factory must look like package.module:function, got {factory!r}")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(
            f"cannot import factory {factory}: {e}; edgefuse imports it from the current folder ({cwd}) and the "
            f"installed packages: run edgefuse from the folder holding {mod_name.split('.')[0]}/ or "
            f"{mod_name.split('.')[0]}.py, or add that folder to PYTHONPATH") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"cannot import factory {factory}: {mod_name} has no function {fn_name!r}")
    return fn


def _loads_weights_only(path: Path) -> bool:
    """Whether ``path`` unpickles with ``weights_only=True`` (then ``--trust-pickle`` is not needed for it)."""
    import torch

    from edgefuse._files import check_zip_size

    check_zip_size(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def load_model_source(
    source: str | Path,
    *,
    factory: str | None = None,
    input_size: int | None = None,
    channels: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    trust_pickle: bool = False,
):
    """Load a model to quantize/export: an edgefuse ``model.pt``, a ``torch.export`` archive (``.pt2``),
    or ``factory="package.module:function"`` called with no arguments plus ``source`` as its
    state_dict (loaded ``weights_only``). Returns ``(module, contract, info)``.

    Only two forms execute code from outside edgefuse, and only because the user asked: the factory
    the user named, and ``trust_pickle=True``, which unpickles a whole ``nn.Module`` or a ``.pt2`` whose
    pickled members are not weights-only (pickles can run arbitrary code while loading; without the flag
    such files are refused before anything runs, see :mod:`edgefuse.pt2_audit`).
    """
    import torch

    from edgefuse.checkpoint import _short, load_checkpoint
    from edgefuse.errors import CheckpointError, UsageError

    from edgefuse._files import check_input_file

    path = check_input_file(source)
    info = {"source": str(path)}
    if factory:
        # The contract flags are checked before any of the user's code runs.
        contract = _contract_from_flags(None, input_size, channels, mean, std, None)
        fn = _import_factory(factory)
        try:
            model = fn()
        except Exception as e:  # the user's code: its failure is input to report, not an internal error
            raise UsageError(f"--factory {factory}() raised {type(e).__name__}: {_short(e)}") from None
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"--factory {factory}() returned a {type(model).__name__}, not an nn.Module")
        from edgefuse._files import check_zip_size

        check_zip_size(path)  # before torch inflates a member
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path} is not a weights-only state_dict ({_short(e)})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except Exception as e:
            raise CheckpointError(f"{path}: state_dict does not match {factory}() ({_short(e)})") from None
        info["factory"] = factory
        return model.eval(), contract, info
    if path.suffix == ".pt2":
        contract = _contract_from_flags(None, input_size, channels, mean, std, None)
        from edgefuse._quiet import quiet
        from edgefuse.pt2_audit import audit_pt2

        audit_pt2(path, trust_pickle=trust_pickle)  # before torch unpickles anything in it
        try:
            with quiet():
                program = torch.export.load(str(path))
        except Exception as e:
            raise CheckpointError(f"{path} is corrupt or not a torch.export archive ({_short(e)})") from None
        info["format"] = "pt2"
        user_inputs = [n for n in program.graph.nodes if n.op == "placeholder"
                       and n.name in program.graph_signature.user_inputs]
        val = user_inputs[0].meta.get("val") if user_inputs else None
        if val is not None and not isinstance(val.shape[0], torch.SymInt):
            raise UsageError(
                f"{path} was exported with a fixed batch size of {val.shape[0]}; calibration and evaluation run "
                "batches, so re-export it with dynamic_shapes=({0: torch.export.Dim('batch')},)"
            )
        if val is not None:
            _check_pt2_batch_range(path, program, val.shape[0])
        from edgefuse.quantize.pt2e import allow_train_eval

        # An exported program's module refuses .eval(); this switches its dropout/batch-norm ops.
        module = allow_train_eval(program.module())
        return module, contract, info
    if trust_pickle and not _loads_weights_only(path):
        from torch import nn

        # A pickle needs --input-size/--channels: say so before the user's pickle runs.
        contract = _contract_from_flags(None, input_size, channels, mean, std, None)
        try:
            # The user vouched for this file: a full pickle may run code while it loads.
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{path} is corrupt or not a PyTorch file ({_short(e)})") from None
        if isinstance(obj, nn.Module):
            info.update({"format": "pickled nn.Module (--trust-pickle)", "trust_pickle": True})
            return obj.eval(), contract, info
        if not (isinstance(obj, dict) and obj.get("format") == "edgefuse.checkpoint"):
            raise CheckpointError(f"{path} holds a {type(obj).__name__}, not an nn.Module or an edgefuse model.pt")
    loaded = load_checkpoint(path)
    info.update({"format": "edgefuse.checkpoint", "model": loaded.spec, "metrics": loaded.metrics})
    contract = loaded.contract
    if any(v is not None for v in (input_size, channels, mean, std)):
        wanted = _contract_from_flags(contract, input_size, channels, mean, std, None)
        if wanted != contract:
            # Calibrating or evaluating with other preprocessing than training's is the classic silent
            # int8 bug; the checkpoint's contract is authoritative.
            raise UsageError(
                f"{path} carries its preprocessing contract ({contract.input_size}x{contract.input_size}, "
                f"{contract.channels} channel(s), mean {list(contract.mean)}, std {list(contract.std)}); "
                "--input-size/--channels/--mean/--std may not change it (they describe .pt2 and --factory models)"
            )
    return loaded.model, contract, info


# --------------------------------------------------------------------------------------------
# export --int8 and validate
# --------------------------------------------------------------------------------------------


def _accuracy(fn, dataset) -> float:
    from edgefuse.training import evaluate

    return evaluate(fn, dataset)


@_joins_process_group
def export_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = True,
    calib: str | None = "digits",
    data: str | None = None,
    quant_config=None,
    qat_config=None,
    formats: tuple[str, ...] = ("onnx", "torchscript"),
    batch: int | None = None,
    opset: int | None = None,
    budgets=None,
    validate: bool = True,
    threads: int = 1,
    runs: int = 100,
    force: bool = False,
    seed: int = 0,
    fallback: bool = True,
    baseline: dict | None = None,
    baseline_tolerance: float = 0.0,
    model_kwargs: dict | None = None,
    progress: Progress = NullProgress(),
    dist=None,
) -> dict:
    """``edgefuse export``: load, quantize (PTQ or QAT), export, validate. Returns a summary dict with
    ``export`` (:class:`ExportResult`), ``report`` (:class:`ValidationReport` or None), accuracies and
    ``fallback`` (:class:`edgefuse.quantize.fallback.FallbackResult` or None).

    The gate's verdict is in ``report.passed``; this function does not raise on a failed gate.

    With ``budgets.max_drop`` and ``fallback``, an int8 build whose top-1 drop on the *validation* split
    exceeds the budget is rebuilt with its most sensitive modules in fp32 (greedy by measured
    sensitivity) until it fits; the *test* split then judges the result, so the choice is not fitted to
    the data that gates it. The kept modules and the latency each costs go to the manifest and report.

    Under ``torchrun`` the QAT step runs data-parallel on every process (DistributedDataParallel);
    everything else -- export, validation, every file written -- happens on rank 0 only, and the
    other ranks return ``{"rank": r}`` with no ``export``/``report``. ``dist`` is set by the decorator.
    """
    if dist.enabled and not dist.is_main and qat_config is None:
        return {"rank": dist.rank, "export": None, "report": None, "accuracy": {}}  # nothing to share
    from edgefuse.data import ImageDataset, check_same_classes, load_data
    from edgefuse.errors import DataError, UsageError
    from edgefuse.export import DEFAULT_OPSET
    from edgefuse.export.artifacts import check_target, discard_staged, publish_artifacts, stage_artifacts
    from edgefuse.export.onnx import check_opset
    from edgefuse.limits import check_output_dir, check_run_flags
    from edgefuse.quantize import TensorBatches, quantize_ptq, quantize_qat
    from edgefuse.validate import Budgets

    out = Path(out_dir)
    # flags and the output folder first: refused in a second, not after quantizing
    opset = check_opset(opset or DEFAULT_OPSET)
    check_run_flags(threads=threads, runs=runs, batch=batch, input_size=(model_kwargs or {}).get("input_size"))
    check_output_dir(out)
    check_target(out, force)
    formats = parse_formats(list(formats))
    for name in formats:  # before any work: a one-line error naming a missing extra
        if get_format(name).requires is not None:
            get_format(name).requires()
    model, contract, info = load_model_source(source, **(model_kwargs or {}))
    if quant_config is None:
        from edgefuse.quantize.targets import quant_config_for

        quant_config = quant_config_for()
    budgets = budgets or Budgets()
    if int8 and not calib:
        raise UsageError("--int8 needs calibration data: pass --calib DATA")
    eval_source = data or calib
    splits = {}
    for src in {s for s in (calib if int8 else None, eval_source) if s}:
        splits[src] = load_data(src, seed=seed)
    if eval_source:
        names = splits[eval_source].class_names
        check_same_classes(contract.class_names, names, eval_source)
        if not contract.class_names:
            from dataclasses import replace

            contract = replace(contract, class_names=tuple(names))
    if eval_source and int8 and validate:  # refuse before any work, not after writing artifacts
        budgets.require_samples(len(splits[eval_source].test), f"the test split of {eval_source}")
    import torch

    probe = torch.zeros(contract.input_shape)
    try:
        with torch.no_grad():
            model.eval()
            n_out = model(probe).shape[-1]
    except Exception as e:
        raise UsageError(f"the model does not accept a {tuple(probe.shape)} input ({str(e).splitlines()[0][:150]}); "
                         "check --input-size and --channels") from None
    if contract.class_names and n_out != len(contract.class_names):
        raise DataError(f"the model has {n_out} outputs but the data has {len(contract.class_names)} classes")

    result: dict = {"source": info, "accuracy": {}}
    quantized = pte_quantized = None
    test_ds = ImageDataset(splits[eval_source].test, contract) if eval_source else None
    if test_ds is not None:
        result["accuracy"]["fp32_pytorch"] = _accuracy(model, test_ds)
    if int8:
        calib_ds = ImageDataset(splits[calib].train, contract)
        schemes = {get_format(f).int8_scheme for f in formats}
        if "onnxruntime" in schemes:  # the ONNX-based formats (and TorchScript) share onnxruntime's int8 program
            reader = TensorBatches(calib_ds, quant_config.calib_samples, quant_config.calib_batch_size)
            quantized = quantize_ptq(model, reader, quant_config, progress=progress)
            if test_ds is not None:
                result["accuracy"]["ptq_pytorch"] = _accuracy(quantized.program, test_ds)
            if qat_config is not None:
                quantized = quantize_qat(model, calib_ds, quant_config, qat_config, progress=progress, dist=dist)
                if test_ds is not None:
                    result["accuracy"]["qat_pytorch"] = _accuracy(quantized.program, test_ds)
            if fallback and budgets.max_drop is not None and eval_source:
                rebuilt, fb = _accuracy_fallback(model, quantized, calib_ds, splits[eval_source], contract,
                                                 quant_config, qat_config, budgets, progress, dist)
                if fb is not None:
                    result["fallback"] = fb
                    all_int8 = quantized
                    if rebuilt is not None:
                        quantized = rebuilt
                        quant_config = rebuilt.config  # the .pte build keeps the same modules in fp32
                        if test_ds is not None:
                            result["accuracy"]["fallback_pytorch"] = _accuracy(quantized.program, test_ds)
        if "xnnpack" in schemes:
            # ExecuTorch runs XNNPACK's int8 kernels: same calibration data and gate rules, XNNPACK's
            # signed-int8 scheme.
            from dataclasses import replace

            xcfg = replace(quant_config, backend="xnnpack", activation_dtype="int8", reduce_range=False,
                           target="xnnpack")
            reader = TensorBatches(calib_ds, xcfg.calib_samples, xcfg.calib_batch_size)
            pte_quantized = (quantize_qat(model, calib_ds, xcfg, qat_config, progress=progress, dist=dist) if qat_config
                             else quantize_ptq(model, reader, xcfg, progress=progress))
            if test_ds is not None:
                result["accuracy"]["xnnpack_int8_pytorch"] = _accuracy(pte_quantized.program, test_ds)
    if dist.enabled and not dist.is_main:
        return {"rank": dist.rank, "export": None, "report": None, "accuracy": result["accuracy"]}
    manifest_extra = {"source": {k: v for k, v in info.items() if k != "metrics"},
                      "data": {s: {"fingerprint": sp.fingerprint} for s, sp in splits.items()},
                      "seed": seed, "accuracy_pytorch": result["accuracy"]}
    fb = result.get("fallback")
    if fb is not None and fb.kept_fp32:
        fb.latency_ms = _fallback_latency(model, calib_ds, fb, quantized.config, threads, runs,
                                          {0: all_int8, len(fb.kept_fp32): quantized})
        manifest_extra["fp32_fallback"] = fb.to_dict()
    check_inputs = None
    if test_ds is not None:
        check_inputs = torch.stack([test_ds[i][0] for i in range(min(16, len(test_ds)))])
    # Staged, validated and gated in a folder beside the previous set; published only with the verdict, so
    # an interruption before it leaves the previous set as it was, and never an ungated one.
    # (one try from staging to publishing: a signal between two steps must not leave the staging folder)
    exported = None
    try:
        exported = stage_artifacts(model, contract, out, quantized=quantized, pte_quantized=pte_quantized,
                                   formats=formats, batch=batch, opset=opset, force=force,
                                   check_inputs=check_inputs, manifest_extra=manifest_extra)
        report = _gate_staged(exported, result, model, quantized, pte_quantized, test_ds, fb, eval_source, validate,
                              int8, threads, runs, budgets, baseline, baseline_tolerance, progress)
        result["export"] = publish_artifacts(exported, force=force, gate=None if report is None else {
            "passed": report.passed, "failures": list(report.failures)})
    except BaseException:
        if exported is not None:
            discard_staged(exported)
        raise
    result["report"] = report
    return result


def _gate_staged(exported, result, model, quantized, pte_quantized, test_ds, fb, eval_source, validate, int8,
                 threads, runs, budgets, baseline, baseline_tolerance, progress):
    """Validate every staged fp32/int8 pair in its runtime, compare each file with its PyTorch program and
    write the reports into the staging folder (with the files' published paths); None without validation."""
    from edgefuse.validate import validate_models, write_report
    from edgefuse.validate.report import artifact_failures

    report = None
    pairs = [(fmt, exported.path(fmt, "fp32"), exported.path(fmt, "int8")) for fmt in format_names()
             if get_format(fmt).runtime is not None]
    pairs = [p for p in pairs if p[1] and p[2]]
    if validate and int8 and pairs:
        data_info = {"source": eval_source, "split": "test"} if eval_source else {"source": None}
        reports = {}
        for fmt, fp32_file, int8_file in pairs:
            reports[fmt] = validate_models(fp32_file, int8_file, test_ds, threads=threads, runs=runs, budgets=budgets,
                                           progress=progress, data_info=data_info,
                                           baseline=baseline if not reports else None,
                                           baseline_tolerance=baseline_tolerance)
        fmt0, report = next(iter(reports.items()))
        report.extra["accuracy_pytorch"] = result["accuracy"]
        if len(reports) > 1:
            report.extra["formats"] = {fmt: _format_summary(r) for fmt, r in reports.items()}
            # Every file that ships is gated, not only the first.
            report.failures.extend(f"{fmt}: {msg}" for fmt, r in reports.items() if fmt != fmt0 for msg in r.failures)
        if test_ds is not None:
            report.extra["pytorch_agreement"] = _agreement_with_pytorch(
                exported, model, quantized, pte_quantized, test_ds, threads, reports)
            # A file that does not compute its program fails whatever its accuracy (labels may not tell).
            report.failures.extend(artifact_failures(report.extra["pytorch_agreement"], budgets, len(test_ds)))
            onnx_int8 = exported.path("onnx", "int8")
            if onnx_int8 is not None:
                report.extra["int8_pytorch_vs_onnxruntime_agreement"] = report.extra["pytorch_agreement"][onnx_int8.name]
        delegation = {a.file: a.details["delegation"] for a in exported.artifacts if "delegation" in a.details}
        usability = {a.file: a.details["mobile_usability"] for a in exported.artifacts if "mobile_usability" in a.details}
        if delegation:
            report.extra["delegation"] = delegation
        if usability:
            report.extra["mobile_usability"] = usability
        report.extra["notes"] = exported.notes
        if fb is not None:
            report.extra["fp32_fallback"] = fb.to_dict()
            if not fb.met:
                report.failures.append(
                    f"the fp32 fallback could not bring the {fb.split}-split drop within budget: "
                    f"{100 * (fb.fp32_top1 - fb.after_top1):.2f} pp with {len(fb.kept_fp32)} module(s) in fp32")
        for r in reports.values():  # the reports name the files where they will be, not the staging folder
            for m in (r.fp32, r.int8):
                m.file = str(exported.target / Path(m.file).name)
        write_report(report, exported.out_dir)
    return report


def _accuracy_fallback(model, quantized, calib_ds, split, contract, quant_config, qat_config, budgets, progress, dist):
    """Run the fp32 fallback when the int8 build's drop on the validation split exceeds the budget."""
    from edgefuse.data import ImageDataset
    from edgefuse.quantize import TensorBatches, quantize_ptq, quantize_qat
    from edgefuse.quantize.fallback import accuracy_fallback
    from edgefuse.validate.report import drop_of

    val_ds = ImageDataset(split.val, contract)
    if len(val_ds) == 0:
        return None, None
    fp32, int8 = _accuracy(model, val_ds), _accuracy(quantized.program, val_ds)
    if drop_of(fp32, int8, budgets.drop_type) <= budgets.max_drop + 1e-9:
        return None, None

    def rebuild(cfg):
        if qat_config is not None:
            return quantize_qat(model, calib_ds, cfg, qat_config, progress=progress, dist=dist)
        return quantize_ptq(model, TensorBatches(calib_ds, cfg.calib_samples, cfg.calib_batch_size), cfg,
                            progress=progress)

    return accuracy_fallback(model, calib_ds, val_ds, quant_config, rebuild, max_drop=budgets.max_drop,
                             drop_type=budgets.drop_type, progress=progress, before_top1=int8)


def _fallback_latency(model, calib_ds, fb, config, threads: int, runs: int, built: dict) -> dict:
    """onnxruntime latency of the all-int8 build and of each fallback step, interleaved in one run: what
    every module kept in fp32 costs. ``built`` holds programs already made (step -> QuantizedModel); other
    steps are rebuilt with PTQ (latency depends on the graph, not the weights, so PTQ stands in for QAT)."""
    import tempfile
    from dataclasses import replace

    import numpy as np

    from edgefuse.export import export_onnx
    from edgefuse.quantize import TensorBatches, quantize_ptq
    from edgefuse.quantize.analysis import exclude_pattern
    from edgefuse.validate.latency import interleaved_latency
    from edgefuse.runtimes import OrtModel

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
            path = export_onnx(q.program, (x,), Path(tmp) / f"step{i}.onnx")
            sessions[i] = OrtModel(path, threads)
        x1 = np.ascontiguousarray(x.numpy())
        lat = interleaved_latency({i: (lambda s=s: s.run(x1)) for i, s in sessions.items()}, runs=max(30, runs // 2))
    ms = [lat[i]["median_ms"] for i in range(len(sessions))]
    return {"all_int8_ms": ms[0], "final_ms": ms[-1], "threads": threads,
            "steps": [{"module": m, "ms": ms[i + 1], "cost_ms": ms[i + 1] - ms[i]} for i, m in enumerate(fb.kept_fp32)]}


def _format_summary(r) -> dict:
    return {"engine": r.runtime.get("engine"), "fp32_file": Path(r.fp32.file).name, "int8_file": Path(r.int8.file).name,
            "fp32_top1": r.fp32.top1, "int8_top1": r.int8.top1, "agreement": r.agreement,
            "fp32_ms": r.fp32.latency["median_ms"], "int8_ms": r.int8.latency["median_ms"],
            "latency_ratio": r.latency_ratio, "speedup": r.speedup, "size_ratio": r.size_ratio,
            "passed": r.passed, "failures": list(r.failures)}


def _agreement_with_pytorch(exported, model, quantized, pte_quantized, dataset, threads: int, reports: dict,
                            batch_size: int = 64) -> dict[str, float]:
    """Top-1 agreement of every runnable artifact with the PyTorch program it was exported from.

    Files that validation already ran reuse its per-image top-1 classes (``reports``, per format); the
    others run here. Streams the dataset in batches: memory holds one batch of inputs and one top-1
    index per image.
    """
    import numpy as np
    import torch

    from edgefuse.runtimes import load_runtime

    refs = {"fp32": model}
    if quantized is not None:
        refs["int8"] = quantized.program
    if pte_quantized is not None:
        refs["pte_int8"] = pte_quantized.program
    runnable = {f for f in format_names() if get_format(f).runtime is not None}
    files = [a for a in exported.artifacts if a.kind in runnable]
    key = {a.file: "fp32" if a.precision == "fp32" else
           ("pte_int8" if get_format(a.kind).int8_scheme == "xnnpack" else "int8") for a in files}
    known = {}
    for a in files:
        r = reports.get(a.kind)
        if r is not None and r.predictions is not None and Path(getattr(r, a.precision).file).name == a.file:
            known[a.file] = r.predictions[a.precision]
    runtimes = {a.file: load_runtime(exported.out_dir / a.file, threads) for a in files if a.file not in known}
    ref_top1 = {k: [] for k in refs}
    got_top1 = {f: [] for f in runtimes}
    n = len(dataset)
    for start in range(0, n, batch_size):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, n))])
        with torch.no_grad():
            for k, module in refs.items():
                ref_top1[k].append(module(x).argmax(1).numpy())
        for f, rt in runtimes.items():
            got_top1[f].append(rt.run(x.numpy()).argmax(1))
    got = {**known, **{f: np.concatenate(v) for f, v in got_top1.items()}}
    return {a.file: float(np.mean(got[a.file] == np.concatenate(ref_top1[key[a.file]]))) for a in files}


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
    baseline_tolerance: float = 0.0,
    progress: Progress = NullProgress(),
):
    """``edgefuse validate``: compare two model files (``.onnx``/``.ort`` or ``.pte``) on labelled data; write
    reports if ``out_dir``."""

    from edgefuse.data import ImageDataset, PreprocessContract, check_same_classes, load_data
    from edgefuse.validate import Budgets, validate_models, write_report
    from edgefuse.runtimes import load_runtime

    from edgefuse.limits import check_output_dir, check_run_flags

    check_run_flags(threads=threads, runs=runs, input_size=(contract_flags or {}).get("input_size"))
    if out_dir:
        check_output_dir(out_dir)
    meta = load_runtime(fp32).metadata()
    base = PreprocessContract.from_json(meta["edgefuse.contract"]) if "edgefuse.contract" in meta else None
    flags = {k: v for k, v in (contract_flags or {}).items() if v is not None}
    if base is None or flags:
        contract = _contract_from_flags(base, flags.get("input_size"), flags.get("channels"),
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
                             baseline=baseline, baseline_tolerance=baseline_tolerance)
    if out_dir:
        write_report(report, out_dir)
    return report
