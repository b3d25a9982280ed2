"""``edgefuse verify``."""

from pathlib import Path
from typing import Annotated

import typer

from edgefuse.cli.options import JsonOut


def verify(
    folder: Annotated[Path, typer.Argument(help="An export folder holding manifest.json.")],
    json_out: JsonOut = False,
) -> None:
    """Recheck every artifact in FOLDER against manifest.json (size, sha256; sidecars against their files).
    Exit 0 when all match, 1 on any mismatch or missing file, 2 when FOLDER is not an export folder."""
    from edgefuse.cli import render
    from edgefuse.errors import VerifyFailed
    from edgefuse.export import verify_artifacts

    res = verify_artifacts(folder)
    if json_out:
        render.as_json({"folder": str(res.out_dir), "ok": res.ok, "checked": res.checked, "problems": res.problems,
                        "warnings": res.warnings})
    else:
        render.verification(res, folder)
    if not res.ok:
        raise VerifyFailed(f"{folder}: " + "; ".join(res.problems))
