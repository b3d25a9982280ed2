"""What an export format declares (:class:`Format`) and what its builder receives (:class:`BuildContext`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgefuse.data.contract import PreprocessContract


@dataclass
class Artifact:
    """One exported file."""

    file: str
    kind: str
    precision: str
    bytes: int = 0
    sha256: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class BuildContext:
    """Everything a format's builder may read, and where it writes.

    Attributes:
        folder: the staging folder; builders write their files here.
        contract: the preprocessing contract the files must carry.
        variants: ``(precision, module)`` for the onnxruntime-scheme programs: fp32 and, with int8, the
            converted PT2E program.
        xnnpack_variants: the same for formats whose ``int8_scheme`` is ``"xnnpack"``.
        example: a zero input of the shipped batch (1 when the batch is dynamic).
        mobile_shape: the fixed input shape of mobile files.
        dynamic_batch: whether non-mobile files keep a symbolic batch.
        opset: the ONNX opset to write.
        simplify: run onnxsim (checked: reverted when it de-quantizes weights).
        check_inputs: images a converter compares its output with its source on.
        notes: what could not be produced, or was changed, and why (builders append).
        built: artifacts of the formats built before this one (a converter reads its source files here).
        latency_threads: measure latency-aware precision with this many threads (None: not measured,
            e.g. when the target CPU is not this one); see :mod:`edgefuse.export.kernel_choice`.
    """

    folder: Path
    contract: PreprocessContract
    variants: list[tuple[str, nn.Module]]
    xnnpack_variants: list[tuple[str, nn.Module]]
    example: torch.Tensor
    mobile_shape: list[int]
    dynamic_batch: bool
    opset: int
    simplify: bool
    check_inputs: torch.Tensor
    notes: list[str]
    built: list[Artifact]
    latency_threads: int | None = None


@dataclass(frozen=True)
class Format:
    """An export format, declared in one place (see :mod:`edgefuse.export.formats`).

    Attributes:
        name: what ``--format`` takes.
        help: one line for ``--format`` help and the README table.
        build: writes the format's files into ``ctx.folder`` and returns them (fp32, and int8 when the
            context holds an int8 variant); raises :class:`~edgefuse.errors.UnsupportedModelError` when the
            model cannot be expressed, :class:`~edgefuse.errors.ExportError` when a written file fails its check.
        runtime: the :data:`edgefuse.runtimes.RUNTIMES` entry that runs and validates its files here; None for
            files edgefuse does not validate (TorchScript).
        mobile: phone files: a fixed batch and a JSON contract sidecar (written for every file of this kind).
        needs: formats whose files this one converts; they are built first, shipped only when asked for.
        requires: raises :class:`~edgefuse.errors.MissingExtraError` when an optional extra is absent
            (called before any work).
        int8_scheme: the quantized program its int8 file comes from: ``"onnxruntime"`` (uint8 activations,
            VNNI-friendly) or ``"xnnpack"`` (ExecuTorch's signed int8).
        sidecar_versions: the packages whose versions a sidecar records.
        suffixes: how the names of its files end (``inspect`` finds the format of a file by them).
        describe: what ``edgefuse inspect`` shows of one of its files (shapes, precision, contract), read
            without executing anything in the file; None when edgefuse cannot read it back.
    """

    name: str
    help: str
    build: Callable[[BuildContext], list[Artifact]]
    runtime: str | None = None
    mobile: bool = False
    needs: tuple[str, ...] = ()
    requires: Callable[[], None] | None = None
    int8_scheme: str = "onnxruntime"
    sidecar_versions: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    describe: Callable[[Path], dict] | None = None
