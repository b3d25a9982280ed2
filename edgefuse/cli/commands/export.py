"""``edgefuse export``: the headline command."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefuse.cli.options import (CalibSamples, Force, Gate, ModelFile, Output, Runs, Seed, Target, Threads,
                                  gate_options, option_group, output_options, source_options)


# Static: the registry's modules import torch, and --help must not. tests/export/test_formats.py checks that
# this text names every registered format.
FORMAT_HELP = ("Comma-separated: onnx (QDQ int8), ort (ONNX Runtime Mobile, fixed batch, with required_operators.config), "
               "pte (ExecuTorch + XNNPACK; needs `pip install 'edgefuse[executorch]'`), torchscript (server-side only).")


@option_group("show", output_options)
@option_group("gate", gate_options)
@option_group("source", source_options)
def export(
    model: ModelFile,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for artifacts, manifest and report.")] = Path(
        "build"),
    int8: Annotated[bool, typer.Option("--int8", help="Also build an int8 model (PTQ, or QAT with --qat).")] = False,
    calib: Annotated[str, typer.Option(
        help="Calibration (and QAT training) data: digits, fashion-mnist, an IDX or image folder or an .npz; "
             "its train split is used, "
             "preprocessed exactly as for evaluation.")] = "digits",
    data: Annotated[Optional[str], typer.Option(help="Labelled evaluation data (test split); default: --calib.")] = None,
    calib_samples: CalibSamples = 300,
    calibration: Annotated[str, typer.Option(help="Activation ranges: minmax, moving_average or histogram.")] = (
        "histogram"),
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor",
                                              help="int8 weight scales per output channel.")] = True,
    target: Target = "auto",
    exclude: Annotated[Optional[list[str]], typer.Option(
        help="Regex over module paths to keep in fp32 (repeatable).")] = None,
    qat: Annotated[bool, typer.Option("--qat", help="Quantization-aware fine-tuning instead of PTQ alone.")] = False,
    epochs: Annotated[int, typer.Option(min=1, help="QAT epochs.")] = 3,
    qat_lr: Annotated[float, typer.Option(help="QAT learning rate.")] = 5e-5,
    formats: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "onnx,ort,torchscript",
    batch: Annotated[Optional[int], typer.Option(help="Fixed batch size (default: dynamic batch dimension).")] = None,
    opset: Annotated[int, typer.Option(
        help="ONNX opset of the written files, 18-24 (the exporter writes 18; newer ones are converted with onnx's "
             "version converter and checked).")] = 18,
    gate: Gate = None,
    min_artifact_agreement: Annotated[float, typer.Option(
        help="Gate: smallest top-1 agreement (0-1) of every exported file with the PyTorch program it came from on "
             "the evaluation images; below it the file does not compute what was quantized.")] = 0.99,
    fallback: Annotated[bool, typer.Option(
        "--fallback/--no-fallback",
        help="With --max-drop: when int8 loses more than the budget on the validation split, keep the most sensitive "
             "modules in fp32 (greedy, by measured sensitivity) until it fits; the test split then gates the "
             "result.")] = True,
    latency_search: Annotated[bool, typer.Option(
        "--latency-search/--no-latency-search",
        help="With --int8: time fp32 prefixes of the int8 ONNX graph here (the first layers of depthwise networks "
             "are faster in fp32 on onnxruntime) and ship the fastest; the choice is in the manifest. Off: every "
             "layer int8, and byte-identical files on any machine.")] = True,
    threads: Threads = 1,
    runs: Runs = 100,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the validation and gate.")] = False,
    source: dict = None,
    seed: Seed = 0,
    force: Force = False,
    show: Output = None,
) -> None:
    """Export ONNX, ONNX Runtime Mobile (.ort), ExecuTorch (.pte) and TorchScript artifacts; with --int8 quantize
    (torchao PT2E), then validate fp32 vs int8 of every shipped format in its own runtime and apply the gate
    (exit 1 when a budget is exceeded for any of them, or a file disagrees with the program it came from)."""
    from dataclasses import replace

    from edgefuse.api import export_model
    from edgefuse.cli import render
    from edgefuse.cli._ui import progress_bars
    from edgefuse.distributed import env_rank
    from edgefuse.errors import GateFailed
    from edgefuse.export import parse_formats
    from edgefuse.quantize import QATConfig
    from edgefuse.quantize.targets import quant_config_for

    fmts = parse_formats(formats)
    qcfg = quant_config_for(target, per_channel=per_channel, calibration=calibration, calib_samples=calib_samples,
                            exclude=tuple(exclude or ()))
    budgets = replace(gate.budgets, min_artifact_agreement=min_artifact_agreement)
    qat_cfg = QATConfig(epochs=epochs, lr=qat_lr, seed=seed, freeze_observer_epoch=max(1, epochs - 1)) if qat else None
    show = show.for_rank(env_rank())
    with progress_bars(show.bars) as progress:
        res = export_model(
            model, out, int8=int8 or qat, calib=calib, data=data, quant_config=qcfg, qat_config=qat_cfg, formats=fmts,
            batch=batch, opset=opset, budgets=budgets, validate=not no_validate, threads=threads, runs=runs,
            force=force, seed=seed, fallback=fallback, latency_search=latency_search, baseline=gate.baseline,
            progress=progress, model_kwargs=source)
    if res.export is None:  # a helper rank under torchrun: QAT done, rank 0 writes and reports
        return
    report = res.report
    show.emit({**(report.to_dict() if report else {"artifacts": res.export.manifest["artifacts"]}),
               "stage_seconds": res.seconds},
              lambda: render.export_result(res))
    if report and not report.passed:
        raise GateFailed("gate failed: " + "; ".join(report.failures))
