"""``edgefuse validate``."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefuse.cli.options import (Gate, Output, Runs, Seed, Threads, contract_options, gate_options, option_group,
                                  output_options)


@option_group("show", output_options)
@option_group("gate", gate_options)
@option_group("contract", contract_options)
def validate(
    fp32: Annotated[Path, typer.Option(help="fp32 model: .onnx or .ort (onnxruntime) or .pte (ExecuTorch).")],
    int8: Annotated[Path, typer.Option(help="int8 model of the same kind as --fp32.")],
    data: Annotated[Optional[str], typer.Option(
        help="Labelled data: digits, fashion-mnist, IDX or image folder, .npz (omit: latency, size and "
             "SQNR on noise only).")] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on: train, val or test.")] = "test",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for report.json, report.md and report.html.")] = None,
    gate: Gate = None,
    threads: Threads = 1,
    runs: Runs = 100,
    contract: dict = None,
    seed: Seed = 0,
    show: Output = None,
) -> None:
    """Compare fp32 and int8 model files in their runtime on the CPU (onnxruntime for .onnx/.ort, ExecuTorch for
    .pte): accuracy, agreement, SQNR, size, latency.
    Exit 0 when every budget holds, 1 when one is exceeded, 2 on bad input."""
    from edgefuse.api import validate_files
    from edgefuse.cli import render
    from edgefuse.cli._ui import progress_bars
    from edgefuse.errors import GateFailed

    with progress_bars(show.bars) as progress:
        report = validate_files(fp32, int8, data=data, split=split, out_dir=out, budgets=gate.budgets, threads=threads,
                                runs=runs, seed=seed, progress=progress, baseline=gate.baseline,
                                contract_flags=contract)
    show.emit(report.to_dict(), lambda: render.validation_report(report))
    if not report.passed:
        raise GateFailed("gate failed: " + "; ".join(report.failures))
