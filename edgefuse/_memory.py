"""Keep freed memory in the process instead of handing it back to the kernel (the command line only).

glibc's ``malloc`` serves every block over its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap`` on free, so each such PyTorch tensor is page-faulted and zeroed by the kernel
again. At 224x224 an evaluation batch's activations are far over that: on this project's 2-core VMs a new
13x96x112x112 float tensor (62 MiB, EfficientNet-B0's widest) costs 22-24 ms to fill against 2-4 ms for
the same op into reused memory, which made PyTorch evaluation and calibration of such networks
memory-fault-bound (``torch.sigmoid`` on it: 23.9 ms -> 4.5 ms with the heap reused; EfficientNet-B0 at
batch 13, fp32 14.0 -> 12.1 ms per image, its int8 program 32.2 -> 28.3 ms, PTQ on 96 images (capture,
calibration, convert) 8.9 -> 7.8 s; peak resident memory 1.05 -> 1.12 GiB).

:func:`keep_freed_memory` tells glibc to serve large blocks from its heap and not to trim it, the effect
of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` set from inside the process (``mallopt(3)``). It is a
process-wide setting, so only the ``edgefuse`` command (and the benchmarks) call it, never the library
nor ``main(argv)`` called in someone else's process; it does nothing
off glibc (macOS, musl), and ``EDGEFUSE_SYSTEM_MALLOC=1`` or a ``MALLOC_*``/``GLIBC_TUNABLES`` setting of
the user's own leaves the allocator as configured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Freed memory at the top of the heap is kept up to this much (the largest activations of a 224x224 batch
#: are tens of MiB; a few of them are alive at once).
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Make glibc reuse freed large blocks (see the module docstring); True when the setting took effect."""
    if os.environ.get("EDGEFUSE_SYSTEM_MALLOC", "") not in ("", "0"):
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False  # the user tuned malloc already
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc still falls back to mmap when the heap cannot grow, so this never turns into an allocation failure
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
