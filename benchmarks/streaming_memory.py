"""Peak memory of `edgefuse validate` as the evaluation set grows 10x (it should stay flat).

    .venv/bin/python benchmarks/streaming_memory.py [--base 300] [--size 224] [--json out.json]

Writes image folders of --base and 10 x --base real PNG files (digits images upscaled to --size, RGB,
so each decoded image is --size x --size x 3 bytes), exports one small fp32/int8 ONNX pair for them,
then runs `edgefuse validate` on each folder in a fresh process and reports that process's peak
resident memory (ru_maxrss) and the evaluated image count. Evaluation reads image files on demand
and runs them in batches, so only one batch of images is ever decoded at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root: Path, n: int, size: int) -> Path:
    """A pre-split folder: small train/ and val/ parts, and a test/ part of ``n`` images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for split, count in (("train", 20), ("val", 20), ("test", n)):
        for i in range(count):
            j = i % len(d.images)
            img = Image.fromarray(np.round(d.images[j] * (255 / 16)).astype(np.uint8), "L").convert("RGB")
            folder = root / split / str(d.target[j])
            folder.mkdir(parents=True, exist_ok=True)
            img.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i}.png")
    return root


CHILD = """
import resource, sys, json
from edgefuse.api import validate_files
from edgefuse.validate import Budgets
rep = validate_files(sys.argv[1], sys.argv[2], data=sys.argv[3], split="test", runs=5,
                     budgets=Budgets(max_drop=None, max_latency_ratio=None))
print(json.dumps({"samples": rep.data["samples"], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from edgefuse.data import PreprocessContract
    from edgefuse.export import export_artifacts
    from edgefuse.models import create_model
    from edgefuse.quantize import QuantConfig, quantize_ptq

    tmp = Path(tempfile.mkdtemp(prefix="edgefuse-mem-"))
    contract = PreprocessContract(args.size, 3, [0.3] * 3, [0.3] * 3, [str(i) for i in range(10)])
    torch.manual_seed(0)
    model = create_model("resnet", 10, fusion="se", in_chans=3, input_size=args.size).eval()

    class Calib:
        def __init__(self):
            self.left = 4

        def get_next(self):
            self.left -= 1
            return torch.randn(8, 3, args.size, args.size) if self.left >= 0 else None

    q = quantize_ptq(model, Calib(), QuantConfig(calib_samples=32))
    res = export_artifacts(model, contract, tmp / "build", quantized=q, formats=("onnx",))
    rows = []
    for n in (args.base, 10 * args.base):
        folder = write_folder(tmp / f"data{n}", n, args.size)
        out = subprocess.run([sys.executable, "-c", CHILD, str(res.path("onnx", "fp32")), str(res.path("onnx", "int8")),
                              str(folder)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"validate failed: {out.stderr.strip().splitlines()[-1]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        disk = sum(p.stat().st_size for p in folder.rglob("*.png"))
        r.update({"images": n, "decoded_mib": n * args.size * args.size * 3 / 2**20, "png_mib": disk / 2**20})
        rows.append(r)
        print(f"{n:6d} images ({r['decoded_mib']:.0f} MiB decoded): peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    growth = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print("\n| images | decoded size | peak RSS of `validate` |\n|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['decoded_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB |")
    print(f"\n10x the images -> peak memory x{growth:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "growth": growth}, indent=2))


if __name__ == "__main__":
    main()
