"""``edgefuse verify-arm``."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefuse.cli.options import Data, JsonOut, Seed


def verify_arm(
    folder: Annotated[Path, typer.Argument(help="An export folder (model.*.onnx / model.*.ort).")],
    cpus: Annotated[str, typer.Option(
        help="Emulated cores, comma-separated: cortex-a53 / cortex-a72 (NEON), cortex-a76 / neoverse-n1 "
             "(NEON + dot product).")] = "cortex-a53,cortex-a76",
    data: Data = "digits",
    samples: Annotated[int, typer.Option(min=1, help="Test images compared (the first of the test split).")] = 64,
    require_arm_parity: Annotated[bool, typer.Option(
        "--require-arm-parity", help="Exit 1 when a file's ARM outputs differ from x86 beyond --min-arm-agreement / "
                                     "--min-arm-sqnr (int8) or float rounding (fp32) on any core.")] = False,
    min_arm_agreement: Annotated[float, typer.Option(help="int8 parity: top-1 agreement ARM vs x86.")] = 0.99,
    min_arm_sqnr: Annotated[float, typer.Option(help="int8 parity: logit SQNR of ARM vs x86, dB.")] = 30.0,
    seed: Seed = 0,
    json_out: JsonOut = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write arm_report.json here.")] = None,
) -> None:
    """Run every .onnx/.ort file of FOLDER in onnxruntime's aarch64 build under QEMU (emulated cores; the
    arithmetic of the phone's CPU kernels, not its speed) and compare each with this machine's run, image for
    image. The first run prepares an arm64 environment under ~/.cache/edgefuse (Debian's qemu-user-static and
    mmdebstrap, aarch64 wheels from PyPI; about a minute)."""
    from edgefuse._files import write_json_atomic
    from edgefuse.cli import render
    from edgefuse.cli._ui import progress_bars
    from edgefuse.api import verify_arm as run
    from edgefuse.limits import check_output_dir

    if out is not None:
        check_output_dir(out)  # before a minute of emulation, not after it
    with progress_bars(not quiet and not json_out) as progress:
        res = run(folder, cpus=[c.strip() for c in cpus.split(",") if c.strip()], data=data, samples=samples,
                  seed=seed, require_parity=require_arm_parity, min_agreement=min_arm_agreement,
                  min_sqnr=min_arm_sqnr, progress=progress)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out) / "arm_report.json", res)
    if json_out:
        render.as_json(res)
    else:
        render.arm_parity(res)
