"""The options every command shares, declared once.

Single options are ``Annotated`` types (``quiet: Quiet = False``); a command picks its own default. Groups
of options that build one library value -- the gate's budgets, a model source's contract flags -- are
declared as a builder function and added to a command by :func:`option_group`, which puts the builder's
options into the command's signature (typer reads ``__signature__``) and hands the command the built value.
Nothing heavy is imported here: ``--help`` must not load torch.
"""

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

# --- single options ---------------------------------------------------------------------------------

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Force = Annotated[bool, typer.Option("--force", help="Replace what --out already holds.")]
Seed = Annotated[int, typer.Option(help="Seed of the data split (and of training, where there is any).")]
Threads = Annotated[int, typer.Option(help="onnxruntime / ExecuTorch intra-op threads for the latency measurement.")]
Runs = Annotated[int, typer.Option(help="Timed runs per model (interleaved, after 10 warm-up runs).")]
Data = Annotated[str, typer.Option(help="Labelled data: 'digits' (bundled smoke-test data), 'fashion-mnist' (apt-get "
                                        "install dataset-fashion-mnist), a folder of IDX files, an image folder (one "
                                        "sub-folder per class) or an .npz (x, y).")]
ZooModel = Annotated[str, typer.Option(help="Zoo model: see `edgefuse list`.")]
Epochs = Annotated[int, typer.Option(min=1, help="Training epochs.")]
Width = Annotated[float, typer.Option(help="Channel multiplier of the model.")]
InputSide = Annotated[int, typer.Option(help="Square input side in pixels; images are resized to it.")]
CalibSamples = Annotated[int, typer.Option(help="Calibration images.")]
Target = Annotated[str, typer.Option(help="CPU preset: auto (detect), x86-vnni, x86-avx2 (7-bit weights) or arm64 "
                                          "(signed int8 activations).")]
ModelFile = Annotated[Path, typer.Argument(help="model.pt from `edgefuse train`, a torch.export archive (.pt2), or "
                                                "a state_dict with --factory.")]


def csv_floats(text: Optional[str]) -> Optional[list[float]]:
    """``"0.5,0.5,0.5"`` -> ``[0.5, 0.5, 0.5]``; ``None`` stays ``None``."""
    if text is None:
        return None
    from edgefuse.errors import UsageError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"expected comma-separated numbers, got {text!r}") from None


def csv_names(text: str) -> tuple[str, ...]:
    """``"add, se,"`` -> ``("add", "se")``."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


# --- groups -----------------------------------------------------------------------------------------


def option_group(name: str, build: Callable):
    """Decorator: give the command ``build``'s options and pass it ``name=build(**those options)``.

    ``build``'s parameters must be ``Annotated`` typer options with defaults; the command declares
    ``name`` as a parameter (its position is where the options appear in ``--help``).
    """
    group = list(inspect.signature(build).parameters.values())

    def deco(command: Callable) -> Callable:
        sig = inspect.signature(command, eval_str=True)
        if name not in sig.parameters:
            raise TypeError(f"{command.__name__} has no parameter {name!r} for the option group")
        taken = set(sig.parameters) & {p.name for p in group}
        if taken:
            raise TypeError(f"{command.__name__} declares {sorted(taken)} twice")
        params = []
        for p in sig.parameters.values():
            params.extend(group if p.name == name else [p])

        @functools.wraps(command)
        def wrapper(**kwargs):
            kwargs[name] = build(**{p.name: kwargs.pop(p.name) for p in group})
            return command(**kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco


@dataclass(frozen=True)
class Output:
    """What the output options build: how a command reports (``--quiet``, ``--json``)."""

    quiet: bool = False
    json: bool = False

    @property
    def bars(self) -> bool:
        """Progress bars: only for a person reading the terminal."""
        return not (self.quiet or self.json)

    def for_rank(self, rank: int) -> "Output":
        """Under ``torchrun`` only rank 0 reports."""
        return self if rank == 0 else Output(quiet=True)

    def emit(self, data, text: Callable[[], None]) -> None:
        """``data`` as JSON with ``--json``; else ``text()`` renders it, unless ``--quiet``."""
        if self.json:
            from edgefuse.cli.render import as_json

            as_json(data)
        elif not self.quiet:
            text()


def output_options(quiet: Quiet = False, json_out: JsonOut = False) -> Output:
    return Output(quiet, json_out)


@dataclass(frozen=True)
class Gate:
    """What the gate options build: the budgets and the stored report to compare with."""

    budgets: object  # edgefuse.validate.Budgets (not imported here: --help stays light)
    baseline: Optional[dict]


def gate_options(
    max_drop: Annotated[Optional[float], typer.Option(
        help="Gate: largest top-1 drop of int8 vs fp32 (percentage points; see --drop-type).")] = None,
    drop_type: Annotated[str, typer.Option(help="absolute (pp) or relative (% of fp32 accuracy).")] = "absolute",
    drop_bound: Annotated[str, typer.Option(
        help="What --max-drop is compared with: estimate (the measured drop) or upper (the upper end of its bootstrap "
             "95% CI: passes only when the data show the drop is within budget).")] = "estimate",
    max_latency_ratio: Annotated[float, typer.Option(
        help="Gate: largest int8/fp32 median latency (1.0 = parity).")] = 1.0,
    min_sqnr: Annotated[float, typer.Option(
        help="Gate: smallest int8-vs-fp32 output SQNR in dB (needs no labels: catches a collapsed or broken int8 "
             "build; working ones measure 14-40 dB).")] = 10.0,
    min_samples: Annotated[int, typer.Option(help="Refuse (exit 2) to gate on fewer evaluation images than this.")] = 0,
    baseline: Annotated[Optional[Path], typer.Option(
        help="A stored report.json: also fail when int8 top-1 falls more than --baseline-tolerance pp below it or "
             "the latency ratio rises more than --baseline-latency-tolerance above it (same data required).")] = None,
    baseline_tolerance: Annotated[float, typer.Option(
        help="Allowed int8 top-1 regression against --baseline (pp).")] = 0.0,
    baseline_latency_tolerance: Annotated[float, typer.Option(
        help="Allowed relative rise of the int8/fp32 latency ratio against --baseline (0.1 = 10%).")] = 0.10,
) -> Gate:
    from edgefuse.validate import Budgets
    from edgefuse.validate.stats import load_baseline

    budgets = Budgets(max_drop=max_drop, drop_type=drop_type, max_latency_ratio=max_latency_ratio,
                      drop_bound=drop_bound, min_samples=min_samples, min_sqnr_db=min_sqnr,
                      baseline_tolerance=baseline_tolerance, baseline_latency_tolerance=baseline_latency_tolerance)
    return Gate(budgets, None if baseline is None else load_baseline(baseline))


def input_size_of(text: Optional[str]):
    """``"224"`` -> 224, ``"48x192"`` -> (48, 192) (height x width); ``None`` stays ``None``."""
    if text is None:
        return None
    from edgefuse.errors import UsageError

    parts = text.lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--input-size takes a side (224) or HEIGHTxWIDTH (48x192), got {text!r}")
    sides = [int(p) for p in parts]
    return sides[0] if len(sides) == 1 or sides[0] == sides[1] else (sides[0], sides[1])


def contract_options(
    input_size: Annotated[Optional[str], typer.Option(
        help="Input size in pixels, 224 or HEIGHTxWIDTH (48x192): defines the contract of a model without one "
             "(.pt2, --factory, foreign ONNX), or overrides it.")] = None,
    channels: Annotated[Optional[int], typer.Option(help="Input channels (1 grey or 3 RGB), as --input-size.")] = None,
    mean: Annotated[Optional[str], typer.Option(
        help="Per-channel mean after scaling to [0, 1], comma-separated, as --input-size.")] = None,
    std: Annotated[Optional[str], typer.Option(help="Per-channel std, comma-separated, as --input-size.")] = None,
    resize: Annotated[Optional[str], typer.Option(
        help="How images reach the input size: stretch (default), shorter-side (keep the aspect ratio, cover, "
             "centre-crop: torchvision/timm evaluation) or letterbox (fit inside, pad).")] = None,
    crop_pct: Annotated[Optional[float], typer.Option(
        help="shorter-side only: share of the resized image kept by the centre crop (timm's crop_pct, e.g. "
             "0.875 = Resize(256) + CenterCrop(224)).")] = None,
    interpolation: Annotated[Optional[str], typer.Option(
        help="Pillow filter for resizing: nearest, bilinear (default) or bicubic.")] = None,
) -> dict:
    return {"input_size": input_size_of(input_size), "channels": channels, "mean": csv_floats(mean),
            "std": csv_floats(std), "resize": resize, "crop_pct": crop_pct, "interpolation": interpolation}


def source_options(
    factory: Annotated[Optional[str], typer.Option(
        help="package.module:function building the model for a state_dict (runs that code: only for code you "
             "trust).")] = None,
    trust_pickle: Annotated[bool, typer.Option(
        "--trust-pickle", help="Accept a whole pickled nn.Module (torch.save(model)), or a .pt2 whose pickled parts "
                               "are not weights-only. Unpickling can run arbitrary code hidden in the file: only for "
                               "files you trust. Needs --input-size and --channels.")] = False,
    **contract,
) -> dict:
    return {"factory": factory, "trust_pickle": trust_pickle, **contract_options(**contract)}


# source_options takes the contract options too (one group: a model source is a file and its contract).
source_options.__signature__ = inspect.signature(source_options).replace(parameters=[
    *list(inspect.signature(source_options).parameters.values())[:2],
    *inspect.signature(contract_options).parameters.values()])
