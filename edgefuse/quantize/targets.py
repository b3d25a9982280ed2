"""CPU presets: which int8 flavour a target's kernels run best and correctly."""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace

from edgefuse.errors import UsageError
from edgefuse.quantize.config import QuantConfig


@dataclass(frozen=True)
class Target:
    """An int8 deployment target.

    Attributes:
        name: ``x86-vnni``, ``x86-avx2`` or ``arm64``.
        activation_dtype: ``uint8`` (x86: u8 x s8 dot products) or ``int8`` (ARM: s8 x s8 dot products).
        reduce_range: 7-bit weights; x86 without VNNI computes u8 x s8 products with
            ``vpmaddubsw``, whose 16-bit pair sums saturate with full-range weights.
        why: one line for the manifest.
    """

    name: str
    activation_dtype: str
    reduce_range: bool
    why: str


TARGETS = {
    "x86-vnni": Target("x86-vnni", "uint8", False, "AVX-512 VNNI / AVX-VNNI / AMX: u8 x s8 dot products without saturation"),
    "x86-avx2": Target("x86-avx2", "uint8", True, "AVX2 without VNNI: vpmaddubsw pair sums saturate int16, "
                                                         "so weights use 7 bits"),
    "arm64": Target("arm64", "int8", False, "ARMv8 dot product (sdot): signed int8 activations and weights"),
}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_target(flags: set[str] | None = None, machine: str | None = None) -> Target:
    """Pick the preset for this CPU (or for the given ``/proc/cpuinfo`` flags and machine name)."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return TARGETS["arm64"]
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return TARGETS["x86-vnni"]
    return TARGETS["x86-avx2"]


def quant_config_for(target: str | Target | None = None, **options):
    """A :class:`QuantConfig` with ``target``'s int8 flavour (``None``/``auto``: this CPU's) and ``options``."""
    t = target if isinstance(target, Target) else get_target(target)
    return QuantConfig(activation_dtype=t.activation_dtype, reduce_range=t.reduce_range, target=t.name, **options)


def measurable_here(target_name: str, machine: str | None = None) -> bool:
    """Whether latency measured on this machine says anything about ``target_name``'s CPU: an x86 preset on
    an x86 host, ``arm64`` on an ARM host (what is fast here is not what is fast on a phone core)."""
    machine = (machine or platform.machine()).lower()
    arm = machine in ("aarch64", "arm64")
    return target_name == "arm64" if arm else target_name.startswith("x86")


def xnnpack_preset(config: QuantConfig) -> QuantConfig:
    """The recipe of ``.pte`` files: ``config``'s calibration, exclusions and gate rules, in the int8 flavour
    ExecuTorch's XNNPACK kernels run (signed int8 activations, full-range weights, XNNPACK's quantizer)."""
    return replace(config, backend="xnnpack", activation_dtype="int8", reduce_range=False, target="xnnpack")


def get_target(name: str | None) -> Target:
    """``None`` or ``auto`` detects; otherwise a name from :data:`TARGETS`."""
    if name in (None, "auto"):
        return detect_target()
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown target {name!r}; choose one of: auto, {', '.join(TARGETS)}") from None
