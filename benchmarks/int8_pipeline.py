"""fp32 / PTQ / QAT for every zoo model: accuracy on digits, agreement, size, and int8 speed at 224x224.

    .venv/bin/python benchmarks/int8_pipeline.py [--epochs 10] [--qat-epochs 2] [--threads 1] [--runs 100] [--json out.json]

Accuracy: each model is trained on digits at 32x32, quantized (PTQ: 300 calibration images,
histogram; QAT: --qat-epochs fine-tuning), exported to ONNX and evaluated in onnxruntime on the
269-image test split. Speed: the same architecture built for 224x224 inputs (weights from a fixed
seed; latency does not depend on their values), calibrated on digits resized to 224, exported,
and timed fp32 vs int8 interleaved in one run (batch 1, medians).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from edgefuse.data import ImageDataset, PreprocessContract, load_data, norm_stats
from edgefuse.export import export_artifacts
from edgefuse.models import create_model
from edgefuse.quantize import QATConfig, TensorBatches, quantize_ptq, quantize_qat
from edgefuse.training import TrainConfig, train
from edgefuse.validate import OrtModel, cpu_name, interleaved_latency
from edgefuse.metrics import agreement, topk_accuracy

ROWS = [("resnet", "effatt"), ("resnet", "se"), ("resnet", "cbam"), ("mobilenetv3", "add"), ("fpn", "effatt")]


def onnx_eval(path, ds):
    m = OrtModel(path)
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    return m.run(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rows", default=",".join(f"{m}/{f}" for m, f in ROWS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_data("digits")
    mean, std = norm_stats(data.train, 1, 32)
    c32 = PreprocessContract(32, 1, mean, std, data.class_names)
    c224 = PreprocessContract(224, 1, mean, std, data.class_names)
    labels = data.test.labels
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="edgefuse-bench-"))
    for row in args.rows.split(","):
        name, fusion = row.split("/")
        t0 = time.time()
        torch.manual_seed(0)
        model = create_model(name, 10, fusion=fusion, input_size=32)
        train(model, data, c32, TrainConfig(epochs=args.epochs))
        tr, te = ImageDataset(data.train, c32), ImageDataset(data.test, c32)
        ptq = quantize_ptq(model, TensorBatches(tr, 300))
        qat = quantize_qat(model, tr, qat=QATConfig(epochs=args.qat_epochs, freeze_observer_epoch=max(1, args.qat_epochs - 1)))
        acc = {}
        for tag, q in (("ptq", ptq), ("qat", qat)):
            res = export_artifacts(model, c32, tmp / f"{name}-{fusion}-{tag}", quantized=q, formats=("onnx",), force=True)
            lf = onnx_eval(res.path("onnx", "fp32"), te)
            lq = onnx_eval(res.path("onnx", "int8"), te)
            with torch.no_grad():
                pt = q.program(torch.stack([te[i][0] for i in range(len(te))])).numpy()
            acc["fp32"] = topk_accuracy(lf, labels)
            acc[tag] = topk_accuracy(lq, labels)
            acc[f"{tag}_agree_fp32"] = agreement(lf, lq)
            acc[f"{tag}_agree_pytorch"] = agreement(pt, lq)
            acc["size_ratio"] = res.path("onnx", "int8").stat().st_size / res.path("onnx", "fp32").stat().st_size
        # speed at 224x224
        torch.manual_seed(0)
        big = create_model(name, 10, fusion=fusion, input_size=224).eval()
        q224 = quantize_ptq(big, TensorBatches(ImageDataset(data.train, c224), 32, 8))
        res = export_artifacts(big, c224, tmp / f"{name}-{fusion}-224", quantized=q224, formats=("onnx",), force=True)
        f32, i8 = OrtModel(res.path("onnx", "fp32"), args.threads), OrtModel(res.path("onnx", "int8"), args.threads)
        x = ImageDataset(data.test, c224)[0][0][None].numpy()
        lat = interleaved_latency({"fp32": lambda: f32.run(x), "int8": lambda: i8.run(x)}, runs=args.runs)
        r = {"model": name, "fusion": fusion, **{k: round(v, 4) for k, v in acc.items()},
             "fp32_ms_224": round(lat["fp32"]["median_ms"], 3), "int8_ms_224": round(lat["int8"]["median_ms"], 3),
             "speedup_224": round(lat["fp32"]["median_ms"] / lat["int8"]["median_ms"], 3),
             "seconds": round(time.time() - t0, 1)}
        results.append(r)
        print(json.dumps(r), flush=True)
    hdr = ("| model | fusion | fp32 top-1 | PTQ top-1 | QAT top-1 | PTQ agree | ORT vs PyTorch int8 | size int8/fp32 "
           "| fp32 ms @224 | int8 ms @224 | int8 speed-up |")
    print(f"\nCPU: {cpu_name()}, onnxruntime {args.threads} thread(s), batch 1, {args.runs} interleaved runs, "
          f"digits test split ({len(labels)} images)\n")
    print(hdr)
    print("|" + "---|" * 11)
    for r in results:
        print(f"| {r['model']} | {r['fusion']} | {100 * r['fp32']:.2f}% | {100 * r['ptq']:.2f}% | {100 * r['qat']:.2f}% "
              f"| {100 * r['ptq_agree_fp32']:.2f}% | {100 * r['ptq_agree_pytorch']:.2f}% | {r['size_ratio']:.2f} "
              f"| {r['fp32_ms_224']:.2f} | {r['int8_ms_224']:.2f} | {r['speedup_224']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
