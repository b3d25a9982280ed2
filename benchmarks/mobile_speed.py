"""Mobile artifacts, fp32 vs int8, each in its own runtime on this CPU, one run.

    .venv/bin/python benchmarks/mobile_speed.py [--size 224] [--threads 1] [--runs 100] [--rows resnet/se,...] [--json out.json]

For each zoo model (built for --size inputs, weights from a fixed seed: latency does not depend on
their values) edgefuse exports ``.ort`` (ONNX Runtime Mobile, fixed batch 1) and ``.pte`` (ExecuTorch,
XNNPACK) files in fp32 and int8; the int8 builds calibrate on the same 64 digits images resized to
--size (``.ort``: edgefuse's onnxruntime quantizer; ``.pte``: XNNPACK's quantizer with edgefuse's gate
rules). The four files are timed interleaved in one loop (batch 1, 10 warm-up runs, then --runs runs
each; medians and p90) in onnxruntime and in ExecuTorch's runtime, and top-1 agreement of each int8
file with its fp32 file is measured on 128 digits test images. Needs ``pip install 'edgefuse[executorch]'``.

The ``.ort`` files are optimised for an ARM target (what ships to phones: no x86 NCHWc layout), so
their x86 timings here are a lower bound of what onnxruntime does on this CPU with ``.onnx`` files.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.export import export_artifacts
from edgefuse.models import create_model
from edgefuse.quantize import QuantConfig, TensorBatches, quantize_ptq
from edgefuse.validate import cpu_name, interleaved_latency
from edgefuse.metrics import agreement
from edgefuse.runtimes import load_runtime

ROWS = ["resnet/add", "resnet/se", "resnet/cbam", "resnet/effatt", "mobilenetv3/add", "fpn/effatt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    data = load_data("digits")
    c = PreprocessContract(args.size, 1, [0.306], [0.324], data.class_names)
    calib_ds = ImageDataset(data.train, c)
    test_ds = ImageDataset(data.test, c)
    test = np.stack([test_ds[i][0].numpy() for i in range(128)])
    tmp = Path(tempfile.mkdtemp(prefix="edgefuse-mobile-"))
    base = QuantConfig(calib_samples=64, calib_batch_size=16)
    xnn = replace(base, backend="xnnpack", activation_dtype="int8", target="xnnpack")
    rows = []
    for row in args.rows.split(","):
        name, fusion = row.split("/")
        torch.manual_seed(0)
        model = create_model(name, 10, fusion=fusion, input_size=args.size).eval()
        q_ort = quantize_ptq(model, TensorBatches(calib_ds, 64, 16), base)
        q_pte = quantize_ptq(model, TensorBatches(calib_ds, 64, 16), xnn)
        res = export_artifacts(model, c, tmp / row.replace("/", "-"), quantized=q_ort, pte_quantized=q_pte,
                               formats=("ort", "pte"), force=True)
        files = {f"{kind}_{p}": res.path(kind, p) for kind in ("ort", "pte") for p in ("fp32", "int8")}
        models = {k: load_runtime(f, args.threads) for k, f in files.items()}
        x = test[:1]
        lat = interleaved_latency({k: (lambda m=m: m.run(x)) for k, m in models.items()}, runs=args.runs)
        outs = {k: m.run(test) for k, m in models.items()}
        delegation = next(a.details["delegation"] for a in res.artifacts if a.kind == "pte" and a.precision == "int8")
        r = {"model": name, "fusion": fusion, "size": args.size, "threads": args.threads,
             **{f"{k}_ms": lat[k]["median_ms"] for k in files},
             **{f"{k}_p90_ms": lat[k]["p90_ms"] for k in files},
             "ort_speedup": lat["ort_fp32"]["median_ms"] / lat["ort_int8"]["median_ms"],
             "pte_speedup": lat["pte_fp32"]["median_ms"] / lat["pte_int8"]["median_ms"],
             "ort_agreement": agreement(outs["ort_fp32"], outs["ort_int8"]),
             "pte_agreement": agreement(outs["pte_fp32"], outs["pte_int8"]),
             "pte_int8_portable_ops": delegation["portable_ops"],
             "pte_int8_delegated_fraction": delegation["delegated_fraction"],
             "bytes": {k: f.stat().st_size for k, f in files.items()}}
        rows.append(r)
        print(f"{row:16s} ort {r['ort_fp32_ms']:.2f}->{r['ort_int8_ms']:.2f} ms ({r['ort_speedup']:.2f}x)  "
              f"pte {r['pte_fp32_ms']:.2f}->{r['pte_int8_ms']:.2f} ms ({r['pte_speedup']:.2f}x)  "
              f"agreement ort {100 * r['ort_agreement']:.1f}% pte {100 * r['pte_agreement']:.1f}%", flush=True)
    print()
    print(f"CPU: {cpu_name()}; {args.size}x{args.size}, batch 1, {args.threads} thread(s), {args.runs} interleaved runs, medians")
    print("| model | fusion | .ort fp32 ms | .ort int8 ms | .ort speed-up | .pte fp32 ms | .pte int8 ms | .pte speed-up "
          "| .pte int8 ops left to portable kernels |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        left = ", ".join(f"{op.split('::')[-1].split('.')[0]}×{n}" for op, n in r["pte_int8_portable_ops"].items()) or "none"
        print(f"| {r['model']} | {r['fusion']} | {r['ort_fp32_ms']:.2f} | {r['ort_int8_ms']:.2f} | "
              f"{r['ort_speedup']:.2f}x | {r['pte_fp32_ms']:.2f} | {r['pte_int8_ms']:.2f} | {r['pte_speedup']:.2f}x | {left} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "runs": args.runs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
