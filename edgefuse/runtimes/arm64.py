"""onnxruntime's aarch64 build on this x86 machine, under QEMU user-mode emulation: the phone's arithmetic.

The environment (prepared once, cached under ``$EDGEFUSE_CACHE`` or ``~/.cache/edgefuse``):

* an arm64 root file system holding Debian 12's python3.11, extracted by ``mmdebstrap --variant=extract``
  from Debian's own packages (nothing runs inside it while it is made: no binfmt_misc is needed);
* the aarch64 manylinux wheels of the onnxruntime and numpy versions installed here, installed for that
  platform with ``pip install --platform manylinux_2_28_aarch64 --only-binary=:all: --target``;
* per emulated CPU, a ``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` of that core inside the root
  (QEMU looks up files under ``-L ROOT`` first; onnxruntime's cpuinfo would otherwise parse the x86 host's
  and crash).

Programs run as ``qemu-aarch64-static -cpu MODEL -L ROOT ROOT/usr/bin/python3.11 worker.py``. Emulated
timings mean nothing; emulated arithmetic is the real aarch64 kernels' arithmetic: the plain NEON kernels on
a Cortex-A53, the dot-product (``sdot``/``udot``) kernels on a Cortex-A76 or Neoverse-N1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from edgefuse.errors import EdgefuseError, UsageError
from edgefuse.progress import NullProgress, Progress

#: Emulated cores: (MIDR part number, the features /proc/cpuinfo lists, what it exercises).
CPU_MODELS = {
    "cortex-a53": ("0xd03", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "NEON without dot product"),
    "cortex-a72": ("0xd08", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "NEON without dot product"),
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                   "dcpop asimddp", "NEON with dot product (sdot/udot)"),
    "neoverse-n1": ("0xd0c", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                    "dcpop asimddp ssbs", "NEON with dot product, server core"),
}
DEFAULT_CPUS = ("cortex-a53", "cortex-a76")
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: What the root file system needs to run python3.11 with onnxruntime's and numpy's wheels.
ROOT_PACKAGES = ("python3.11", "python3.11-minimal", "libpython3.11-stdlib", "libpython3.11-minimal", "libc6",
                 "libstdc++6", "libgcc-s1", "zlib1g", "libffi8", "libexpat1", "libssl3", "libbz2-1.0", "liblzma5")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
_WORKER = Path(__file__).with_name("_arm64_worker.py")


class EmulationError(EdgefuseError):
    """The arm64 environment cannot be prepared or a program failed under emulation."""

    exit_code = 2


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise EmulationError(f"{tool} is not installed: run 'sudo apt-get install {package}' (Debian's package)")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("EDGEFUSE_CACHE") or Path.home() / ".cache" / "edgefuse")


def wheel_versions() -> dict[str, str]:
    """The onnxruntime and numpy versions installed here: the aarch64 side installs the same."""
    return {"onnxruntime": metadata.version("onnxruntime"), "numpy": metadata.version("numpy")}


class Arm64Environment:
    """A prepared arm64 environment (see the module docstring); :meth:`prepare` makes or reuses one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rootfs, self.site = root / "rootfs", root / "site"
        self.qemu = _need("qemu-aarch64-static", "qemu-user-static")

    @classmethod
    def prepare(cls, cache: Path | None = None, progress: Progress = NullProgress()) -> "Arm64Environment":
        """Make the environment once (a minute: Debian packages and two wheels from their registries) or reuse
        the cached one for these versions.

        Raises:
            EmulationError: a missing Debian tool (named with its apt-get command) or a failed download.
        """
        _need("qemu-aarch64-static", "qemu-user-static")
        versions = wheel_versions()
        key = "-".join(f"{k}{v}" for k, v in versions.items())
        root = (cache or cache_root()) / f"arm64-{DEBIAN_SUITE}-py311-{key}"
        if (root / "ready").exists():
            return cls(root)
        mmdebstrap = _need("mmdebstrap", "mmdebstrap")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        progress.start("arm64 environment", 2)
        try:
            _run([mmdebstrap, "--quiet", "--variant=extract", "--architectures=arm64", f"--include={','.join(ROOT_PACKAGES)}",
                  DEBIAN_SUITE, str(tmp / "rootfs"), DEBIAN_MIRROR], "mmdebstrap (the arm64 root file system)")
            progress.advance("arm64 environment")
            _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
                  "--platform", WHEEL_PLATFORM, "--python-version", "3.11", "--implementation", "cp", "--target",
                  str(tmp / "site"), *(f"{k}=={v}" for k, v in versions.items())],
                 "pip (onnxruntime's and numpy's aarch64 wheels)")
            progress.advance("arm64 environment")
            (tmp / "ready").write_text("\n".join(f"{k}=={v}" for k, v in versions.items()) + "\n")
            if root.exists():  # a half-made one from an interrupted run
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            progress.finish("arm64 environment")
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(root)

    def _fake_cpu(self, cpu: str) -> None:
        part, features, _ = CPU_MODELS[cpu]
        cores = 2
        block = "".join(f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n"
                        for i in range(cores))
        (self.rootfs / "proc").mkdir(exist_ok=True)
        (self.rootfs / "proc" / "cpuinfo").write_text(block)
        sysdir = self.rootfs / "sys" / "devices" / "system" / "cpu"
        for i in range(cores):
            (sysdir / f"cpu{i}").mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present", "online"):
            (sysdir / name).write_text(f"0-{cores - 1}\n")

    def run_onnx(self, cpu: str, files: list[Path], inputs: np.ndarray, timeout: float = 1800) -> dict[Path, np.ndarray]:
        """Logits of each ``.onnx``/``.ort`` file on ``inputs`` in aarch64 onnxruntime on an emulated ``cpu``."""
        if cpu not in CPU_MODELS:
            raise UsageError(f"unknown emulated CPU {cpu!r}; choose from: {', '.join(CPU_MODELS)}")
        self._fake_cpu(cpu)
        with tempfile.TemporaryDirectory(prefix="edgefuse-arm64-") as work:
            x, y = Path(work) / "inputs.npy", Path(work) / "logits.npz"
            np.save(x, np.ascontiguousarray(inputs, dtype=np.float32))
            # run from the work folder: beside its source, edgefuse/runtimes/onnxruntime.py would shadow onnxruntime
            worker = Path(work) / "worker.py"
            shutil.copyfile(_WORKER, worker)
            cmd = [self.qemu, "-cpu", cpu, "-L", str(self.rootfs), "-E", f"PYTHONPATH={self.site}",
                   str(self.rootfs / "usr" / "bin" / "python3.11"), str(worker), str(x), str(y),
                   *(str(Path(f).resolve()) for f in files)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise EmulationError(f"onnxruntime failed under emulated {cpu}: {last[:200]}")
            with np.load(y) as out:
                return {Path(f): out[str(i)] for i, f in enumerate(files)}


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip() and "is ignored" not in ln]
        raise EmulationError(f"{what} failed: {(lines or ['no output'])[-1][:200]}")
