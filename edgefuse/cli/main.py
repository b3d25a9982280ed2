"""``edgefuse``: build, train, quantize, export and gate attention-fusion CNNs for edge CPUs and phones.

Commands import the heavy libraries (torch, onnxruntime) inside their bodies so ``--help`` is instant.
Errors from the library become one line on stderr and an exit code: 0 success, 1 a gate failed,
2 bad input or usage. ``EDGEFUSE_DEBUG=1`` prints the full traceback instead.
"""

from __future__ import annotations

import os
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
    """Train a zoo model on labelled images and save model.pt (weights + preprocessing contract)."""
    from edgefuse.api import train_model
    from edgefuse.errors import UsageError

    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    fusion_kwargs = {"gate": gate} if gate else {}
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


@app.command()
def inspect(path: Path = typer.Argument(..., help="A model.pt checkpoint."),
            json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show what a model file holds: model, parameters, MACs, preprocessing, metrics."""
    from edgefuse.api import describe_checkpoint

    info = describe_checkpoint(path)
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map errors to one line and an exit code."""
    debug = os.environ.get("EDGEFUSE_DEBUG", "") not in ("", "0")
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and --help; our errors reach us.
        app(args=argv, prog_name="edgefuse")
    except KeyboardInterrupt:
        print("edgefuse: interrupted", file=sys.stderr)
        sys.exit(130)
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
    sys.exit(0)


if __name__ == "__main__":
    main()
