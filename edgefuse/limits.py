"""Bounds edgefuse applies to what it runs and what users pass, in one place."""

import os
from pathlib import Path

from edgefuse.errors import UsageError

#: The largest batch that the symbolic batch dimension of captured programs and exported ONNX files covers.
MAX_BATCH = 4096
#: ONNX opsets ``--opset`` accepts: the dynamo exporter writes 18 and onnx's version converter cannot lower
#: it reliably (no Shape adapter below 15, ReduceMean's axes input breaks at 17); 24 is the newest
#: onnxruntime 1.32 loads.
MIN_OPSET, MAX_OPSET = 18, 24
#: Largest input side (pixels) accepted without ``EDGEFUSE_MAX_INPUT_SIZE``: 2048 covers every mobile model;
#: a 4096x4096 training batch already needs gigabytes, 100000 grew until the kernel's OOM killer stopped it.
MAX_INPUT_SIZE = 2048
MAX_RUNS = 100_000


def _usage(msg: str):
    return UsageError(msg)


def max_input_size() -> int:
    v = os.environ.get("EDGEFUSE_MAX_INPUT_SIZE", "")
    return int(v) if v.isdigit() and int(v) > 0 else MAX_INPUT_SIZE


def check_run_flags(*, threads: int | None = None, runs: int | None = None, batch: int | None = None,
                    input_size: int | tuple[int, int] | None = None) -> None:
    """Refuse impossible flags before any work (one-line :class:`UsageError`, exit 2)."""

    if threads is not None:
        cores = os.cpu_count() or 1
        if not 1 <= threads <= cores:
            raise _usage(f"--threads must be between 1 and this machine's {cores} cores, got {threads}")
    if runs is not None and not 1 <= runs <= MAX_RUNS:
        raise _usage(f"--runs must be between 1 and {MAX_RUNS}, got {runs}")
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise _usage(f"--batch must be between 1 and {MAX_BATCH}, got {batch}")
    sides = input_size if isinstance(input_size, (tuple, list)) else (input_size,)
    if input_size is not None and not all(1 <= side <= max_input_size() for side in sides):
        shown = "x".join(map(str, sides))
        raise _usage(f"--input-size must be between 1 and {max_input_size()} pixels per side, got {shown} "
                     "(set EDGEFUSE_MAX_INPUT_SIZE to allow more)")


def check_output_dir(path, what: str = "--out") -> None:
    """Refuse an output folder that is a file or cannot be created/written, before any work (nothing is created)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _usage(f"{what} {p} exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise _usage(f"cannot write to {what} {p}: {probe} is not a writable folder")
