"""int8 speed at 224x224: fp32 ONNX vs onnxruntime's own quantize_static vs edgefuse int8, one run.

    .venv/bin/python benchmarks/int8_speed.py [--threads 1,2] [--runs 100] [--rows resnet/effatt,...]
                                              [--width 1.0] [--json out.json]

For each zoo model (architecture built for 224x224 inputs, weights from a fixed seed: latency does
not depend on their values) the fp32 model is exported once; onnxruntime's quantizer
(``quant_pre_process`` then ``quantize_static``: QDQ, per-channel, uint8 activations / int8 weights,
MinMax) and edgefuse (torchao PT2E + edgefuse's quantizer and export passes) both calibrate on the
same 64 digits images resized to 224. onnxruntime's quantizer runs twice: on edgefuse's fp32 ONNX
(already rewritten for int8, e.g. mean pooling as GlobalAveragePool) and on the plain
``torch.onnx.export`` file a user would have today. ``mobilenetv3-paper`` is MobileNetV3 with the
paper's hard-swish and 8-aligned channels (``act=None, dw_divisor=8``). The three models are timed interleaved in
one loop (batch 1,
10 warm-up runs, then --runs runs each; medians and p90). Each int8 model is compared with fp32 on 128
digits test images: top-1 agreement and the SQNR of the logits (the weights are not trained at 224x224,
so agreement alone can be trivially high; the SQNR is not). Accuracy against labels, with trained
weights, is ``benchmarks/int8_pipeline.py``'s job (32x32, same recipe).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.export import export_artifacts, export_onnx
from edgefuse.models import create_model
from edgefuse.quantize import TensorBatches, quantize_ptq
from edgefuse.validate import OrtModel, cpu_name, interleaved_latency
from edgefuse.metrics import agreement, sqnr_db
from edgefuse.validate.reference import ort_quantize_static

ROWS = ["resnet/add", "resnet/se", "resnet/cbam", "resnet/effatt", "mobilenetv3/add", "mobilenetv3-paper/add",
        "fpn/effatt"]
VARIANTS = {"mobilenetv3-paper": ("mobilenetv3", {"act": None, "dw_divisor": 8})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier of every model (4: ResNet-18 widths)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    data = load_data("digits")
    c = PreprocessContract(224, 1, [0.306], [0.324], data.class_names)
    calib_ds = ImageDataset(data.train, c)
    calib = np.stack([calib_ds[i][0].numpy() for i in range(64)])
    test_ds = ImageDataset(data.test, c)
    test = np.stack([test_ds[i][0].numpy() for i in range(128)])
    tmp = Path(tempfile.mkdtemp(prefix="edgefuse-speed-"))
    rows = []
    for row in args.rows.split(","):
        name, fusion = row.split("/")
        torch.manual_seed(0)
        arch, kwargs = VARIANTS.get(name, (name, {}))
        model = create_model(arch, 10, fusion=fusion, width=args.width, input_size=224, **kwargs).eval()
        q = quantize_ptq(model, TensorBatches(calib_ds, 64, 16))
        stem = tmp / row.replace("/", "-")
        res = export_artifacts(model, c, stem, quantized=q, formats=("onnx",), force=True)
        f32_path, ef_path = res.path("onnx", "fp32"), res.path("onnx", "int8")
        ort_path = ort_quantize_static(f32_path, stem.with_suffix(".ort.onnx"), calib)
        plain = export_onnx(model, (torch.zeros(1, 1, 224, 224),), stem.with_suffix(".plain.onnx"))
        ort_plain_path = ort_quantize_static(plain, stem.with_suffix(".plain-ort.onnx"), calib)
        for threads in [int(t) for t in args.threads.split(",")]:
            models = {"fp32": OrtModel(f32_path, threads), "ort_int8": OrtModel(ort_path, threads),
                      "ort_plain_int8": OrtModel(ort_plain_path, threads), "edgefuse_int8": OrtModel(ef_path, threads)}
            x = test[:1]
            lat = interleaved_latency({k: (lambda m=m: m.run(x)) for k, m in models.items()}, runs=args.runs)
            ref = models["fp32"].run(test)
            r = {"model": name, "fusion": fusion, "width": args.width, "threads": threads,
                 **{f"{k}_ms": round(v["median_ms"], 3) for k, v in lat.items()},
                 **{f"{k}_p90_ms": round(v["p90_ms"], 3) for k, v in lat.items()},
                 "fp32_over_edgefuse": round(lat["fp32"]["median_ms"] / lat["edgefuse_int8"]["median_ms"], 3),
                 "fp32_over_ort": round(lat["fp32"]["median_ms"] / lat["ort_int8"]["median_ms"], 3),
                 "ort_over_edgefuse": round(lat["ort_int8"]["median_ms"] / lat["edgefuse_int8"]["median_ms"], 3),
                 "fp32_over_ort_plain": round(lat["fp32"]["median_ms"] / lat["ort_plain_int8"]["median_ms"], 3),
                 "ort_plain_over_edgefuse": round(lat["ort_plain_int8"]["median_ms"] / lat["edgefuse_int8"]["median_ms"], 3),
                 "agree_edgefuse": round(agreement(ref, models["edgefuse_int8"].run(test)), 4),
                 "agree_ort": round(agreement(ref, models["ort_int8"].run(test)), 4),
                 "sqnr_edgefuse_db": round(sqnr_db(ref, models["edgefuse_int8"].run(test)), 1),
                 "sqnr_ort_db": round(sqnr_db(ref, models["ort_int8"].run(test)), 1)}
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(f"\nCPU: {cpu_name()}; onnxruntime CPU, batch 1, 224x224, width {args.width:g}, {args.runs} interleaved runs\n")
    print("ms: median (p90)\n")
    print("ORT = onnxruntime's quantize_static on edgefuse's fp32 ONNX; ORT (plain) = on torch.onnx.export's file\n")
    print("| model | fusion | threads | fp32 ms | ORT int8 ms | ORT (plain) int8 ms | edgefuse int8 ms "
          "| edgefuse speed-up vs fp32 | edgefuse vs ORT / ORT (plain) | ORT / ORT (plain) speed-up vs fp32 "
          "| agreement edgefuse / ORT | logit SQNR dB edgefuse / ORT |")
    print("|" + "---|" * 12)
    for r in rows:
        ms = {k: f"{r[k + '_ms']:.2f} ({r[k + '_p90_ms']:.2f})" for k in ("fp32", "ort_int8", "ort_plain_int8",
                                                                          "edgefuse_int8")}
        print(f"| {r['model']} | {r['fusion']} | {r['threads']} | {ms['fp32']} | {ms['ort_int8']} | {ms['ort_plain_int8']} "
              f"| {ms['edgefuse_int8']} | {r['fp32_over_edgefuse']:.2f}x "
              f"| {r['ort_over_edgefuse']:.2f}x / {r['ort_plain_over_edgefuse']:.2f}x "
              f"| {r['fp32_over_ort']:.2f}x / {r['fp32_over_ort_plain']:.2f}x "
              f"| {100 * r['agree_edgefuse']:.0f}% / {100 * r['agree_ort']:.0f}% "
              f"| {r['sqnr_edgefuse_db']:.1f} / {r['sqnr_ort_db']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
