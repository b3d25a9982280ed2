"""``edgefuse analyze``."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefuse.cli.options import (CalibSamples, Force, ModelFile, Output, Seed, Target, option_group, output_options,
                                  source_options)


@option_group("show", output_options)
@option_group("source", source_options)
def analyze(
    model: ModelFile,
    data: Annotated[str, typer.Option(
        help="Labelled data: digits, fashion-mnist, an IDX or image folder or an .npz (calibration uses "
             "its train split).")] = "digits",
    split: Annotated[str, typer.Option(help="Split to analyse: val (default; test is the gate's), train or test.")] = (
        "val"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for analysis.json and analysis.html.")] = Path(
        "analysis"),
    samples: Annotated[Optional[int], typer.Option(help="Analyse only the first N images of the split.")] = None,
    calib_samples: CalibSamples = 300,
    target: Target = "auto",
    top: Annotated[int, typer.Option(
        help="Rows of the terminal table, and modules with histograms in the report.")] = 10,
    source: dict = None,
    seed: Seed = 0,
    force: Force = False,
    show: Output = None,
) -> None:
    """Which module's int8 costs the accuracy: every quantized module switched to int8 alone and back to fp32
    alone (accuracy, or output SQNR), each module's activation SQNR and clipping, PyTorch int8 vs onnxruntime
    int8 (export drift), and the attention gates (saturated / collapsed flags). Writes analysis.json and an
    HTML report with plots."""
    from edgefuse.api import analyze_model
    from edgefuse.cli import render
    from edgefuse.cli._ui import progress_bars
    from edgefuse.quantize.targets import quant_config_for

    qcfg = quant_config_for(target, calib_samples=calib_samples)
    with progress_bars(show.bars) as progress:
        res = analyze_model(model, out, data=data, split=split, samples=samples, quant_config=qcfg, seed=seed,
                            top=top, force=force, progress=progress, model_kwargs=source)
    show.emit({k: v for k, v in res.items() if k != "files"}, lambda: render.analysis(res, split, top))
