"""``edgefuse``: build, train, quantize, export and gate attention-fusion CNNs for edge CPUs and phones.

Commands import the heavy libraries (torch, onnxruntime) inside their bodies so ``--help`` is instant.
Errors from the library become one line on stderr and an exit code: 0 success, 1 a gate failed,
2 bad input or usage. ``EDGEFUSE_DEBUG=1`` prints the full traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="edgefuse",
    help=(
        "Attention-fusion CNNs (SE, CBAM, non-local, dynamic, cross-modal, EfficientAttention) to int8 on "
        "phones and edge CPUs: train, quantize, export, validate, gate.\n\n"
        "Exit codes: 0 ok, 1 a validation gate failed, 2 bad input or usage. "
        "Set EDGEFUSE_DEBUG=1 for tracebacks."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# The gate's options, shared by `export` and `validate`.
_GATE = {
    "drop_type": typer.Option("absolute", help="absolute (pp) or relative (% of fp32 accuracy)."),
    "max_latency_ratio": typer.Option(1.0, help="Gate: largest int8/fp32 median latency (1.0 = parity)."),
    "drop_bound": typer.Option("estimate", help="What --max-drop is compared with: estimate (the measured drop) or "
                                                "upper (the upper end of its bootstrap 95% CI: passes only when the "
                                                "data show the drop is within budget)."),
    "min_samples": typer.Option(0, help="Refuse (exit 2) to gate on fewer evaluation images than this."),
    "baseline": typer.Option(None, help="A stored report.json: also fail when int8 top-1 falls more than "
                                        "--baseline-tolerance pp below it or the latency ratio rises more than "
                                        "--baseline-latency-tolerance above it (same data required)."),
    "baseline_tolerance": typer.Option(0.0, help="Allowed int8 top-1 regression against --baseline (pp)."),
    "baseline_latency_tolerance": typer.Option(
        0.10, help="Allowed relative rise of the int8/fp32 latency ratio against --baseline (0.1 = 10%)."),
    "min_sqnr": typer.Option(10.0, help="Gate: smallest int8-vs-fp32 output SQNR in dB (needs no labels: catches a "
                                        "collapsed or broken int8 build; working ones measure 14-40 dB)."),
}


def _progress(quiet: bool):
    from edgefuse.cli._ui import RichProgress

    return RichProgress(enabled=not quiet)


@app.command("list")
def list_cmd() -> None:
    """List the zoo models, fusions and gates."""
    from edgefuse.blocks import GATES, list_fusions
    from edgefuse.models import list_models

    typer.echo("models:  " + ", ".join(list_models()))
    typer.echo("fusions: " + ", ".join(list_fusions()))
    typer.echo("gates:   " + ", ".join(GATES))


@app.command()
def train(
    out: Path = typer.Option(Path("model.pt"), "--out", "-o", help="Checkpoint to write (a gate log goes beside it)."),
    model: str = typer.Option("resnet", help="Zoo model: see `edgefuse list`."),
    fusion: str = typer.Option("effatt", help="Fusion at the model's merge points: see `edgefuse list`."),
    data: str = typer.Option("digits", help="'digits' (bundled), an image folder (one sub-folder per class) or an .npz (x, y)."),
    epochs: int = typer.Option(15, min=1, help="Passes over the training split."),
    width: float = typer.Option(1.0, help="Channel multiplier of the model."),
    input_size: int = typer.Option(32, help="Square input side in pixels; images are resized to it."),
    channels: Optional[int] = typer.Option(None, help="1 (grey) or 3 (RGB); default: what the data holds."),
    gate: Optional[str] = typer.Option(None, help="Gate of the attention blocks: sigmoid or hard_sigmoid."),
    positions: str = typer.Option("all", help="resnet only: stages that use the fusion (all, early, late)."),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(3e-3, help="Peak learning rate; attention parameters get lr x --attention-lr-scale."),
    attention_lr_scale: float = typer.Option(0.2, help="LR multiplier of attention parameters (seed: 5-10x lower)."),
    seed: int = typer.Option(0, help="Seed of the data split, initialisation and shuffling."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train a zoo model on labelled images and save model.pt (weights + preprocessing contract).

    Data-parallel on N processes (gloo on CPU, nccl on GPU) with PyTorch's launcher:
    `torchrun --nproc_per_node N --no-python edgefuse train ...` (multi-node: add --nnodes, --node_rank,
    --rdzv_endpoint). --batch-size stays the global batch; only rank 0 writes and prints."""
    from edgefuse.api import train_model
    from edgefuse.distributed import env_rank
    from edgefuse.errors import UsageError

    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    fusion_kwargs = {"gate": gate} if gate else {}
    if env_rank() != 0:
        quiet, json_out = True, False
    progress = _progress(quiet or json_out)
    try:
        res = train_model(
            model=model, fusion=fusion, data=data, out=out, epochs=epochs, width=width,
            input_size=input_size, channels=channels, fusion_kwargs=fusion_kwargs, positions=positions,
            batch_size=batch_size, lr=lr, attention_lr_scale=attention_lr_scale, seed=seed, progress=progress,
        )
    finally:
        progress.close()
    if json_out:
        import json

        typer.echo(json.dumps(res, indent=2))
    elif not quiet:
        typer.echo(
            f"{res['model']}/{res['fusion']} on {res['data']}: val top-1 {100 * res['val_top1']:.2f}%, "
            f"test top-1 {100 * res['test_top1']:.2f}% ({res['test_samples']} images), "
            f"{res['train_seconds']:.0f} s -> {res['checkpoint']}"
        )
        for g, fl in res.get("gate_flags", {}).items():
            typer.echo(f"gate flag {g}: {'; '.join(fl)}")
        typer.echo(f"training report (curves, attention gates per epoch): {res['report']}")


@app.command()
def inspect(path: Path = typer.Argument(..., help="model.pt, .onnx, .ort, .pte (with its .json sidecar) or "
                                                   "TorchScript file."),
            json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show what a model file holds and the preprocessing contract an app needs: input name, shape, layout,
    channel order, scale, mean/std, class labels; for checkpoints also parameters, MACs and metrics.
    Nothing in the file is executed."""
    from edgefuse.api import describe_artifact

    info = describe_artifact(path)
    if json_out:
        import json

        typer.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    from edgefuse.cli._ui import out

    t = Table(title=str(path), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        t.add_row(k, str(v))
    out.print(t)


def _floats(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    from edgefuse.errors import UsageError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"expected comma-separated numbers, got {text!r}") from None


def _print_report(report, accuracy: dict | None = None) -> None:
    from rich.table import Table

    from edgefuse.cli._ui import out

    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}%"

    engine = report.runtime.get("engine", "onnxruntime")
    kind = Path(report.int8.file).suffix
    t = Table(title=f"fp32 vs int8 {kind} in {engine} (CPU, batch 1, "
                    f"{report.runtime['threads']} thread(s), {report.fp32.latency['runs']} interleaved runs)",
              title_justify="left")
    t.add_column("")
    t.add_column("fp32", justify="right")
    t.add_column("int8", justify="right")
    t.add_row("top-1", pct(report.fp32.top1), pct(report.int8.top1))
    if report.fp32.top5 is not None:
        t.add_row("top-5", pct(report.fp32.top5), pct(report.int8.top5))
    t.add_row("size", f"{report.fp32.bytes / 1024:.0f} KiB", f"{report.int8.bytes / 1024:.0f} KiB ({report.size_ratio:.2f}x)")
    t.add_row("latency median", f"{report.fp32.latency['median_ms']:.3f} ms", f"{report.int8.latency['median_ms']:.3f} ms")
    t.add_row("latency p90", f"{report.fp32.latency['p90_ms']:.3f} ms", f"{report.int8.latency['p90_ms']:.3f} ms")
    out.print(t)
    speed = (f"int8 is {report.speedup:.2f}x faster" if report.latency_ratio < 1
             else f"int8 is {report.latency_ratio:.2f}x SLOWER than fp32")
    line = f"latency int8/fp32 = {report.latency_ratio:.3f} ({speed})"
    if report.sqnr_db is not None:
        line += f"; top-1 agreement {pct(report.agreement)}; output SQNR {report.sqnr_db:.1f} dB"
    out.print(line, highlight=False)
    if report.accuracy_drop is not None:
        unit = "pp" if report.budgets.drop_type == "absolute" else "% relative"
        ci = (f" (95% CI {report.drop_ci[0]:.2f} .. {report.drop_ci[1]:.2f})" if report.drop_ci else "")
        out.print(f"accuracy drop {report.accuracy_drop:.2f} {unit}{ci} on {report.data.get('samples')} images",
                  highlight=False)
        if report.per_class:
            w = report.per_class[0]
            out.print(f"worst class: {w['class']} {pct(w['fp32_top1'])} -> {pct(w['int8_top1'])} "
                      f"({w['drop_pp']:+.2f} pp, {w['samples']} images)", highlight=False)
    fb = report.extra.get("fp32_fallback")
    if fb:
        from edgefuse.validate.report import fallback_summary

        out.print("fp32 fallback: " + fallback_summary(fb), highlight=False)
        for st in (fb.get("latency_ms") or {}).get("steps", []):
            out.print(f"  kept {st['module']} in fp32: int8 latency {st['ms']:.3f} ms ({st['cost_ms']:+.3f} ms)",
                      highlight=False)
    if accuracy:
        out.print("PyTorch top-1: " + ", ".join(f"{k.replace('_pytorch', '')} {pct(v)}" for k, v in accuracy.items()),
                  highlight=False)
    formats = report.extra.get("formats")
    if formats:
        t = Table(title="every shipped format, each in its own runtime (.onnx/.ort: onnxruntime, .pte: ExecuTorch)",
                  title_justify="left")
        for c in ("format", "top-1 fp32 / int8", "agreement", "ms fp32 -> int8", "speed-up", "gate"):
            t.add_column(c, justify="left" if c in ("format", "gate") else "right")
        for fmt, r in formats.items():
            t.add_row(fmt, f"{pct(r['fp32_top1'])} / {pct(r['int8_top1'])}", pct(r["agreement"]),
                      f"{r['fp32_ms']:.3f} -> {r['int8_ms']:.3f}",
                      f"{r['speedup']:.2f}x" if r["latency_ratio"] < 1 else f"[red]{r['speedup']:.2f}x[/]",
                      "[green]passed[/]" if r["passed"] else "[red]FAILED[/]")
        out.print(t)
    for f, d in report.extra.get("delegation", {}).items():
        left = ", ".join(f"{op} x{n}" for op, n in d["portable_ops"].items()) or "nothing"
        out.print(f"{f}: XNNPACK runs {d['delegated_nodes']}/{d['delegated_nodes'] + d['portable_nodes']} nodes; "
                  f"portable kernels: {left}", highlight=False)
    agree = report.extra.get("pytorch_agreement")
    if agree:
        worst = min(agree, key=agree.get)
        out.print(f"every artifact vs PyTorch: top-1 agreement >= {pct(agree[worst])} (lowest: {worst})", highlight=False)
    if report.extra.get("doctor"):
        out.print("why int8 is not faster (edgefuse doctor):\n" + report.extra["doctor"], highlight=False)
    out.print(f"gate: {'[green]PASSED[/]' if report.passed else '[red]FAILED[/]'}")


def _baseline(path: Optional[Path]):
    if path is None:
        return None
    from edgefuse.validate.stats import load_baseline

    return load_baseline(path)


def _gate_exit(report) -> None:
    from edgefuse.errors import GateFailed

    if not report.passed:
        raise GateFailed("gate failed: " + "; ".join(report.failures))


@app.command()
def export(
    model: Path = typer.Argument(..., help="model.pt from `edgefuse train`, a torch.export archive (.pt2), or a "
                                            "state_dict with --factory."),
    out: Path = typer.Option(Path("build"), "--out", "-o", help="Output folder for artifacts, manifest and report."),
    int8: bool = typer.Option(False, "--int8", help="Also build an int8 model (PTQ, or QAT with --qat)."),
    calib: str = typer.Option("digits", help="Calibration (and QAT training) data: digits, an image folder or an .npz; "
                                             "its train split is used, preprocessed exactly as for evaluation."),
    data: Optional[str] = typer.Option(None, help="Labelled evaluation data (test split); default: --calib."),
    calib_samples: int = typer.Option(300, help="Calibration images."),
    calibration: str = typer.Option("histogram", help="Activation ranges: minmax, moving_average or histogram."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="int8 weight scales per output channel."),
    target: str = typer.Option("auto", help="CPU preset: auto (detect), x86-vnni, x86-avx2 (7-bit weights) or "
                                            "arm64 (signed int8 activations)."),
    exclude: Optional[list[str]] = typer.Option(None, help="Regex over module paths to keep in fp32 (repeatable)."),
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware fine-tuning instead of PTQ alone."),
    epochs: int = typer.Option(3, help="QAT epochs."),
    qat_lr: float = typer.Option(5e-5, help="QAT learning rate."),
    formats: str = typer.Option("onnx,ort,torchscript", "--format",
                                help="Comma-separated: onnx (QDQ int8), ort (ONNX Runtime Mobile, fixed batch, with "
                                     "required_operators.config), pte (ExecuTorch + XNNPACK; needs "
                                     "`pip install 'edgefuse[executorch]'`), torchscript (server-side only)."),
    batch: Optional[int] = typer.Option(None, help="Fixed batch size (default: dynamic batch dimension)."),
    opset: int = typer.Option(18, help="ONNX opset of the written files, 18-24 (the exporter writes 18; newer ones are converted "
                                       "with onnx's version converter and checked)."),
    max_drop: Optional[float] = typer.Option(None, help="Gate: largest top-1 drop of int8 vs fp32 (percentage points)."),
    drop_type: str = _GATE["drop_type"],
    max_latency_ratio: float = _GATE["max_latency_ratio"],
    drop_bound: str = _GATE["drop_bound"],
    min_samples: int = _GATE["min_samples"],
    baseline: Optional[Path] = _GATE["baseline"],
    baseline_tolerance: float = _GATE["baseline_tolerance"],
    baseline_latency_tolerance: float = _GATE["baseline_latency_tolerance"],
    min_sqnr: float = _GATE["min_sqnr"],
    min_artifact_agreement: float = typer.Option(
        0.99, help="Gate: smallest top-1 agreement (0-1) of every exported file with the PyTorch program it came from "
                   "on the evaluation images; below it the file does not compute what was quantized."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="With --max-drop: when int8 loses more than the budget on the validation split, "
                                       "keep the most sensitive modules in fp32 (greedy, by measured sensitivity) until "
                                       "it fits; the test split then gates the result."),
    threads: int = typer.Option(1, help="onnxruntime threads for the latency measurement."),
    runs: int = typer.Option(100, help="Timed runs per model (interleaved, after 10 warm-up runs)."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the onnxruntime validation and gate."),
    factory: Optional[str] = typer.Option(None, help="package.module:function building the model for a state_dict "
                                                     "(runs that code: only for code you trust)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                      help="Accept a whole pickled nn.Module (torch.save(model)), or a .pt2 whose pickled "
                                           "parts are not weights-only. Unpickling can run arbitrary code hidden in "
                                           "the file: only for files you trust. Needs --input-size and --channels."),
    input_size: Optional[int] = typer.Option(None, help="Input side in pixels (overrides/defines the contract)."),
    channels: Optional[int] = typer.Option(None, help="Input channels (1 or 3)."),
    mean: Optional[str] = typer.Option(None, help="Per-channel mean after scaling to [0, 1], comma-separated."),
    std: Optional[str] = typer.Option(None, help="Per-channel std, comma-separated."),
    seed: int = typer.Option(0, help="Seed of the data split."),
    force: bool = typer.Option(False, "--force", help="Replace artifacts already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Export ONNX, ONNX Runtime Mobile (.ort), ExecuTorch (.pte) and TorchScript artifacts; with --int8 quantize
    (torchao PT2E), then validate fp32 vs int8 of every shipped format in its own runtime and apply the gate
    (exit 1 when a budget is exceeded for any of them, or a file disagrees with the program it came from)."""
    from edgefuse.api import export_model
    from edgefuse.export import parse_formats
    from edgefuse.quantize import QATConfig
    from edgefuse.validate import Budgets

    fmts = parse_formats(formats)
    from edgefuse.quantize.targets import quant_config_for

    qcfg = quant_config_for(target, per_channel=per_channel, calibration=calibration, calib_samples=calib_samples,
                            exclude=tuple(exclude or ()))
    budgets = Budgets(max_drop=max_drop, drop_type=drop_type, max_latency_ratio=max_latency_ratio,
                      drop_bound=drop_bound, min_samples=min_samples, min_sqnr_db=min_sqnr,
                      min_artifact_agreement=min_artifact_agreement,
                      baseline_latency_tolerance=baseline_latency_tolerance)
    base = _baseline(baseline)
    qat_cfg = QATConfig(epochs=epochs, lr=qat_lr, seed=seed, freeze_observer_epoch=max(1, epochs - 1)) if qat else None
    if qat and not int8:
        int8 = True
    from edgefuse.distributed import env_rank

    if env_rank() != 0:  # under torchrun only rank 0 reports
        quiet, json_out = True, False
    progress = _progress(quiet or json_out)
    try:
        res = export_model(
            model, out, int8=int8, calib=calib, data=data, quant_config=qcfg, qat_config=qat_cfg, formats=fmts,
            batch=batch, opset=opset, budgets=budgets, validate=not no_validate, threads=threads, runs=runs,
            force=force, seed=seed, fallback=fallback, baseline=base, baseline_tolerance=baseline_tolerance,
            progress=progress,
            model_kwargs={"factory": factory, "trust_pickle": trust_pickle, "input_size": input_size,
                          "channels": channels, "mean": _floats(mean), "std": _floats(std)},
        )
    finally:
        progress.close()
    if res.export is None:  # a helper rank under torchrun: QAT done, rank 0 writes and reports
        return
    report = res.report
    if json_out:
        import json

        typer.echo(json.dumps(report.to_dict() if report else {"artifacts": res.export.manifest["artifacts"]}, indent=2))
    elif not quiet:
        from edgefuse.cli._ui import out as console

        for a in res.export.artifacts:
            console.print(f"wrote {res.export.out_dir / a.file}  ({a.bytes / 1024:.0f} KiB)", highlight=False)
        for n in res.export.notes:
            console.print(f"note: {n}", highlight=False)
        if report:
            _print_report(report, res.accuracy)
            console.print(f"report: {res.export.out_dir / 'report.md'}", highlight=False)
    if report:
        _gate_exit(report)


@app.command()
def validate(
    fp32: Path = typer.Option(..., help="fp32 model: .onnx or .ort (onnxruntime) or .pte (ExecuTorch)."),
    int8: Path = typer.Option(..., help="int8 model of the same kind as --fp32."),
    data: Optional[str] = typer.Option(None, help="Labelled data: digits, image folder or .npz (omit: latency and size only)."),
    split: str = typer.Option("test", help="Split to evaluate on: train, val or test."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.json and report.md."),
    max_drop: Optional[float] = typer.Option(None, help="Gate: largest top-1 drop (percentage points)."),
    drop_type: str = _GATE["drop_type"],
    max_latency_ratio: float = _GATE["max_latency_ratio"],
    drop_bound: str = _GATE["drop_bound"],
    min_samples: int = _GATE["min_samples"],
    baseline: Optional[Path] = _GATE["baseline"],
    baseline_tolerance: float = _GATE["baseline_tolerance"],
    baseline_latency_tolerance: float = _GATE["baseline_latency_tolerance"],
    min_sqnr: float = _GATE["min_sqnr"],
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    runs: int = typer.Option(100, help="Timed runs per model (interleaved, after 10 warm-up runs)."),
    input_size: Optional[int] = typer.Option(None, help="Input side, for models without an edgefuse contract."),
    channels: Optional[int] = typer.Option(None, help="Input channels, for models without an edgefuse contract."),
    mean: Optional[str] = typer.Option(None, help="Per-channel mean, comma-separated."),
    std: Optional[str] = typer.Option(None, help="Per-channel std, comma-separated."),
    seed: int = typer.Option(0, help="Seed of the data split (must match training's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Compare fp32 and int8 model files in their runtime on the CPU (onnxruntime for .onnx/.ort, ExecuTorch for
    .pte): accuracy, agreement, SQNR, size, latency.
    Exit 0 when every budget holds, 1 when one is exceeded, 2 on bad input."""
    from edgefuse.api import validate_files
    from edgefuse.validate import Budgets

    budgets = Budgets(max_drop=max_drop, drop_type=drop_type, max_latency_ratio=max_latency_ratio,
                      drop_bound=drop_bound, min_samples=min_samples, min_sqnr_db=min_sqnr,
                      baseline_latency_tolerance=baseline_latency_tolerance)
    base = _baseline(baseline)
    progress = _progress(quiet or json_out)
    try:
        report = validate_files(fp32, int8, data=data, split=split, out_dir=out, budgets=budgets, threads=threads,
                                runs=runs, seed=seed, progress=progress, baseline=base,
                                baseline_tolerance=baseline_tolerance,
                                contract_flags={"input_size": input_size, "channels": channels,
                                                "mean": _floats(mean), "std": _floats(std)})
    finally:
        progress.close()
    if json_out:
        import json

        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif not quiet:
        _print_report(report)
    _gate_exit(report)


@app.command()
def analyze(
    model: Path = typer.Argument(..., help="model.pt, a .pt2 archive, or a state_dict with --factory."),
    data: str = typer.Option("digits", help="Labelled data: digits, an image folder or an .npz (calibration uses "
                                            "its train split)."),
    split: str = typer.Option("val", help="Split to analyse: val (default; test is the gate's), train or test."),
    out: Path = typer.Option(Path("analysis"), "--out", "-o", help="Folder for analysis.json and analysis.html."),
    samples: Optional[int] = typer.Option(None, help="Analyse only the first N images of the split."),
    calib_samples: int = typer.Option(300, help="Calibration images."),
    target: str = typer.Option("auto", help="CPU preset, as for export."),
    top: int = typer.Option(10, help="Rows of the terminal table, and modules with histograms in the report."),
    factory: Optional[str] = typer.Option(None, help="package.module:function building the model for a state_dict."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Accept a whole pickled nn.Module (runs code)."),
    input_size: Optional[int] = typer.Option(None, help="Input side (for .pt2/--factory models)."),
    channels: Optional[int] = typer.Option(None, help="Input channels (for .pt2/--factory models)."),
    mean: Optional[str] = typer.Option(None, help="Per-channel mean, comma-separated (for .pt2/--factory models)."),
    std: Optional[str] = typer.Option(None, help="Per-channel std, comma-separated (for .pt2/--factory models)."),
    seed: int = typer.Option(0, help="Seed of the data split."),
    force: bool = typer.Option(False, "--force", help="Replace an analysis already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json", help="Print analysis.json on stdout."),
) -> None:
    """Which module's int8 costs the accuracy: every quantized module switched to int8 alone and back to fp32
    alone (accuracy, or output SQNR), each module's activation SQNR and clipping, PyTorch int8 vs onnxruntime
    int8 (export drift), and the attention gates (saturated / collapsed flags). Writes analysis.json and an
    HTML report with plots."""
    from edgefuse.quantize.targets import quant_config_for
    from edgefuse.studies import analyze_model

    qcfg = quant_config_for(target, calib_samples=calib_samples)
    progress = _progress(quiet or json_out)
    try:
        res = analyze_model(model, out, data=data, split=split, samples=samples, quant_config=qcfg, seed=seed,
                            top=top, force=force, progress=progress,
                            model_kwargs={"factory": factory, "trust_pickle": trust_pickle, "input_size": input_size,
                                          "channels": channels, "mean": _floats(mean), "std": _floats(std)})
    finally:
        progress.close()
    if json_out:
        import json

        typer.echo(json.dumps({k: v for k, v in res.items() if k != "files"}, indent=2))
        return
    if quiet:
        return
    from rich.table import Table

    from edgefuse.cli._ui import out as console

    s, d = res["sensitivity"], res["export_drift"]

    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}%"

    def db(v):
        return "—" if v is None else f"{v:.1f}"

    console.print(f"{s['samples']} images ({split}): fp32 {pct(s['fp32_top1'])}, int8 {pct(s['int8_top1'])}, output "
                  f"SQNR {db(s['output_sqnr_db'])} dB; onnxruntime int8 {pct(d['onnxruntime_int8_top1'])} "
                  f"(agreement with PyTorch int8 {pct(d['top1_agreement'])}, SQNR {db(d['output_sqnr_db'])} dB)",
                  highlight=False)
    t = Table(title=f"most sensitive modules (top {top})", title_justify="left",
              caption="kept fp32: top-1 with all int8 but this module; alone: top-1 and output SQNR (dB) with only "
                      "this module int8; act: SQNR of its own output (dB); clip: its fp32 outputs outside the int8 range",
              caption_justify="left")
    for c in ("module", "ops", "kept fp32", "alone", "SQNR alone", "act", "clip"):
        t.add_column(c, justify="left" if c in ("module", "ops") else "right", no_wrap=c == "module")
    for m in s["modules"][:top]:
        t.add_row(m["module"], ",".join(m["ops"])[:16], pct(m["fp32_kept_top1"]), pct(m["only_int8_top1"]),
                  db(m["only_int8_sqnr_db"]), db(m["activation_sqnr_db"]),
                  "—" if m["clipped"] is None else f"{100 * m['clipped']:.2f}%")
    console.print(t)
    if d.get("worst_module"):
        w = d["worst_module"]
        console.print(f"export drift per module ({d['modules_compared']} compared): lowest onnxruntime-vs-PyTorch "
                      f"int8 SQNR {db(w['ort_vs_pytorch_sqnr_db'])} dB at {w['module']}", highlight=False)
    g = res["gates"]
    for name, fl in {**g["training_last_epoch_flags"], **g["calibration_flags"]}.items():
        console.print(f"[red]gate flag[/] {name}: {'; '.join(fl)}", highlight=False)
    console.print(f"report: {res['files']['html']}", highlight=False)


@app.command()
def ablate(
    model: str = typer.Option("resnet", help="Zoo model: see `edgefuse list`."),
    fusions: str = typer.Option("add,concat,se,cbam,effatt", help="Comma-separated fusions to compare."),
    positions: str = typer.Option("all", help="Comma-separated resnet stages using the fusion: all, early, late."),
    data: str = typer.Option("digits", help="Labelled data: digits, an image folder or an .npz."),
    epochs: int = typer.Option(8, min=1, help="Training epochs of every variant (same seed and budget)."),
    width: float = typer.Option(1.0, help="Channel multiplier."),
    input_size: int = typer.Option(32, help="Input side in pixels."),
    out: Path = typer.Option(Path("ablation"), "--out", "-o", help="Folder for the variants and ablation.{json,md,html}."),
    threads: int = typer.Option(1, help="onnxruntime threads for latency."),
    runs: int = typer.Option(100, help="Timed runs per fp32/int8 pair (interleaved)."),
    seed: int = typer.Option(0, help="Seed of training and the data split."),
    force: bool = typer.Option(False, "--force", help="Replace an ablation already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_out: bool = typer.Option(False, "--json", help="Print ablation.json on stdout."),
) -> None:
    """Is attention fusion worth it over Add/Concat once deployed in int8? Trains every fusion (x position) with
    the same seed and budget, quantizes and exports each, and tabulates parameters, MACs, fp32/int8 accuracy
    and fp32/int8 latency in onnxruntime, with a plot of accuracy against int8 latency."""
    from edgefuse.studies import ablate_models

    progress = _progress(quiet or json_out)
    try:
        res = ablate_models(out, model=model, fusions=tuple(f.strip() for f in fusions.split(",") if f.strip()),
                            positions=tuple(p.strip() for p in positions.split(",") if p.strip()), data=data,
                            epochs=epochs, width=width, input_size=input_size, seed=seed, threads=threads, runs=runs,
                            force=force, progress=progress)
    finally:
        progress.close()
    if json_out:
        import json

        typer.echo(json.dumps({k: v for k, v in res.items() if k != "files"}, indent=2))
    elif not quiet:
        from rich.table import Table

        from edgefuse.cli._ui import out as console

        t = Table(title=f"{model} on {data}: {epochs} epochs each; test top-1 and latency in onnxruntime "
                        f"({threads} thread(s), all models interleaved)", title_justify="left")
        for c in ("fusion", "params", "MMACs", "fp32", "int8", "drop pp", "fp32 ms", "int8 ms", "int8 x"):
            t.add_column(c, justify="left" if c == "fusion" else "right", no_wrap=True)
        for r in res["rows"]:
            t.add_row(r["variant"], f"{r['params'] / 1e3:.1f}k", f"{r['macs'] / 1e6:.2f}", f"{100 * r['fp32_top1']:.2f}%",
                      f"{100 * r['int8_top1']:.2f}%", f"{r['drop_pp']:+.2f}", f"{r['fp32_ms']:.3f}",
                      f"{r['int8_ms']:.3f}", f"{r['speedup']:.2f}x")
        console.print(t)
        console.print(f"report: {res['files']['html']}", highlight=False)


@app.command()
def verify(
    folder: Path = typer.Argument(..., help="An export folder holding manifest.json."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Recheck every artifact in FOLDER against manifest.json (size, sha256; sidecars against their files).
    Exit 0 when all match, 1 on any mismatch or missing file, 2 when FOLDER is not an export folder."""
    from edgefuse.errors import VerifyFailed
    from edgefuse.export import verify_artifacts

    res = verify_artifacts(folder)
    if json_out:
        import json

        typer.echo(json.dumps({"folder": str(res.out_dir), "ok": res.ok, "checked": res.checked,
                               "problems": res.problems, "warnings": res.warnings}, indent=2))
    else:
        from edgefuse.cli._ui import out as console

        for w in res.warnings:
            console.print(f"warning: {w}", highlight=False)
        if res.ok:
            console.print(f"{len(res.checked)} files match {folder / 'manifest.json'}", highlight=False)
    if not res.ok:
        raise VerifyFailed(f"{folder}: " + "; ".join(res.problems))


@app.command()
def doctor(
    model: Path = typer.Argument(..., help="An .onnx model (int8 or fp32)."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
    runs: int = typer.Option(50, help="Profiled runs."),
    top: int = typer.Option(12, help="How many of the costliest findings to list."),
    json_out: bool = typer.Option(False, "--json", help="Print the full diagnosis as JSON."),
) -> None:
    """Explain an int8 model's speed: what onnxruntime runs after fusion (int8 ops, fp32 islands, Q/DQ pairs,
    transposes), where the time goes, and which nodes (and source modules) keep int8 from paying off."""
    from edgefuse.validate.doctor import diagnose

    rep = diagnose(model, threads=threads, runs=runs)
    if json_out:
        import json

        typer.echo(json.dumps(rep.to_dict(), indent=2))
        return
    from rich.table import Table

    from edgefuse.cli._ui import out as console

    console.print(rep.summary(), highlight=False)
    t = Table(title="time per op type (ms per run)", title_justify="left")
    t.add_column("op")
    t.add_column("count", justify="right")
    t.add_column("ms", justify="right")
    for op, ms in sorted(rep.op_ms.items(), key=lambda kv: -kv[1])[:12]:
        t.add_row(op, str(rep.op_counts.get(op, "")), f"{ms:.3f}")
    console.print(t)
    if rep.findings:
        t = Table(title=f"costliest findings (top {top})", title_justify="left")
        for c in ("finding", "node", "module", "ms"):
            t.add_column(c, justify="right" if c == "ms" else "left")
        for f in rep.findings[:top]:
            t.add_row(f.kind, f.node[:40], f.module or "-", f"{f.ms:.3f}")
        console.print(t)


class _Interrupted(BaseException):
    """A stop signal arrived; ``code`` is the conventional exit status (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map errors to one line and an exit code."""
    from edgefuse._quiet import debug_enabled

    debug = debug_enabled()
    import signal

    def _stop(signum, frame):
        # Ctrl-C and a CI runner's kill (SIGTERM) unwind like an exception, so every ``finally`` runs and
        # temporary files go. A BaseException, not KeyboardInterrupt: typer would swallow that silently.
        raise _Interrupted(128 + signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread (embedded use)
            pass
    try:
        _run(argv, debug)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv: list[str] | None, debug: bool) -> None:
    try:
        # Not standalone: click's usage errors (typer vendors click) reach us too, so they get the same one
        # line as ours instead of click's four-line usage block.
        rc = app(args=argv, prog_name="edgefuse", standalone_mode=False)
    except typer.Abort:
        print("edgefuse: interrupted", file=sys.stderr)
        sys.exit(130)
    except (KeyboardInterrupt, _Interrupted) as e:
        print("edgefuse: interrupted", file=sys.stderr)
        sys.exit(e.code if isinstance(e, _Interrupted) else 130)
    except typer.TyperException as e:  # click's UsageError / BadParameter / MissingParameter, exit code 2
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "edgefuse"
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"edgefuse: error: {message.strip().splitlines()[0]} (see `{where} --help`)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except Exception as e:  # noqa: BLE001 -- the one place that turns errors into exit codes
        from edgefuse.errors import EdgefuseError

        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(e, EdgefuseError):
            print(f"edgefuse: error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        print(
            f"edgefuse: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(rerun with EDGEFUSE_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        sys.exit(3)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
