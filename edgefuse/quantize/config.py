"""Quantization configuration: one frozen, validated dataclass."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from edgefuse.errors import UsageError

CALIBRATION_METHODS = ("minmax", "moving_average", "histogram")
BACKENDS = ("onnxruntime", "xnnpack")


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized to int8.

    Attributes:
        per_channel: int8 weights with one scale per output channel (default; per-tensor weights
            collapse depthwise convs).
        calibration: activation range estimator: ``minmax``, ``moving_average`` (min-max averaged
            over batches) or ``histogram`` (range minimising the L2 quantization error).
        calib_samples: number of calibration images.
        calib_batch_size: images per calibration forward pass.
        fixed_gate_qparams: gate outputs (sigmoid, hard-sigmoid; always in [0, 1]) get the fixed
            scale 2/511 (1/255 inside a hard-swish) and zero point 0 (uint8; -128 for int8) instead of
            calibrated ones.
        activation_dtype: ``uint8`` (asymmetric, what onnxruntime's x86 int8 kernels expect) or
            ``int8``.
        reduce_range: 7-bit weights (for x86 CPUs without VNNI, whose u8 x s8 pair sums saturate int16).
        exclude: regular expressions over module paths (``stages.2.0.fusion``) kept in fp32.
        target: CPU preset name the dtype/range came from (recorded in the manifest).
        backend: whose int8 kernels the graph is annotated for: ``onnxruntime`` (QDQ ONNX, edgefuse's
            quantizer) or ``xnnpack`` (ExecuTorch ``.pte``: XNNPACK's quantizer plus edgefuse's gate
            rules; signed int8 activations).
    """

    per_channel: bool = True
    calibration: str = "histogram"
    calib_samples: int = 300
    calib_batch_size: int = 32
    fixed_gate_qparams: bool = True
    activation_dtype: str = "uint8"
    reduce_range: bool = False
    exclude: tuple[str, ...] = field(default=())
    target: str = "x86-vnni"
    backend: str = "onnxruntime"

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise UsageError(
                f"unknown calibration method {self.calibration!r}; choose one of: {', '.join(CALIBRATION_METHODS)}"
            )
        if self.calib_samples < 1:
            raise UsageError(f"--calib-samples (calibration images) must be >= 1, got {self.calib_samples}")
        if self.calib_batch_size < 1:
            raise UsageError(f"calibration batch size must be >= 1, got {self.calib_batch_size}")
        if self.activation_dtype not in ("uint8", "int8"):
            raise UsageError(f"activation dtype must be uint8 or int8, got {self.activation_dtype!r}")
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown quantization backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.backend == "xnnpack" and (self.activation_dtype != "int8" or self.reduce_range):
            raise UsageError("the xnnpack backend takes signed int8 activations and full-range weights")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as e:
                raise UsageError(f"invalid --exclude pattern {pattern!r}: {e}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        return d
