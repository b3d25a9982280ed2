"""The models users bring, trained: torchvision/timm networks fine-tuned on Fashion-MNIST, then PTQ and QAT.

    sudo apt-get install dataset-fashion-mnist      # once: the data, from Debian (nothing is downloaded here)
    .venv/bin/python benchmarks/third_party_accuracy.py [--size 48] [--train-samples 6000] [--epochs 2] [--rows a,b]
                                                        [--json out.json] [--keep DIR]

``benchmarks/third_party.py`` measures the third-party matrix with random weights (batch-norm statistics from
data), which shows whether an int8 file computes its program but not what int8 costs a *trained* network.
Here each network (``num_classes=10``, random init: nothing is downloaded) is trained briefly with edgefuse's
recipe on the first ``--train-samples`` images of the seeded Fashion-MNIST training split, the 28x28 grey
images stretched to ``--size`` and repeated to RGB, then

* PTQ: saved as a ``.pt2`` with a dynamic batch and exported exactly as a user would,
  ``export model.pt2 --int8 --format onnx --calib fashion-mnist`` with the default recipe (300 calibration
  images, histogram ranges, the third-party int8 forms, latency-aware precision);
* QAT: ``--qat-epochs`` of quantization-aware fine-tuning on ``--qat-samples`` training images, exported to
  ONNX;

and both int8 files are compared in onnxruntime with the fp32 file on the 10,000 official test images:
top-1, the drop with its paired 95 % bootstrap interval, the worst class, agreement and logit SQNR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from accuracy import INT8_HEADER, int8_cells, int8_metrics, logits, save_rows, targets_line, training_data

from edgefuse.api import export_model
from edgefuse.data import ImageDataset, PreprocessContract, norm_stats
from edgefuse.export import export_artifacts
from edgefuse.models.third_party import create_third_party
from edgefuse.quantize import QATConfig, quantize_qat
from edgefuse.training import TrainConfig, train
from edgefuse.validate import Budgets, cpu_name

ROWS = ["tv_mobilenet_v3_small", "tv_mobilenet_v3_large", "timm_efficientnet_b0", "timm_seresnet18",
        "timm_cbam_resnet18", "timm_eca_resnet18", "timm_lcnet_050", "user_se_cbam"]


@torch.no_grad()
def precise_bn(model: nn.Module, batches) -> nn.Module:
    """Replace every batch-norm layer's running statistics with their plain average over ``batches``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average, not an exponential one
    model.train()
    for x in batches:
        model(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return model.eval()


def row(name: str, data, contract, args, work: Path) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = create_third_party(name, 10)
    hist = train(model, data, contract, TrainConfig(epochs=args.epochs)).history
    tr, te = ImageDataset(data.train, contract), ImageDataset(data.test, contract)
    # Brief training leaves batch-norm running statistics behind the weights (torchvision's MobileNetV3 and
    # EfficientNet use momentum 0.01): recompute them as an exact average over training images ("precise BN",
    # Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"), as one would before shipping such a model.
    precise_bn(model, (torch.stack([tr[j][0] for j in range(i, min(i + 100, len(tr)))])
                       for i in range(0, min(2000, len(tr)), 100)))
    train_s = time.perf_counter() - t0
    labels, classes = np.asarray(data.test.labels), list(data.class_names)
    d = work / name
    d.mkdir(parents=True)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (torch.stack([tr[0][0], tr[1][0]]),), dynamic_shapes=({0: batch},)),
                      d / "model.pt2")
    if args.keep is not None:  # the trained network, for `edgefuse analyze` and other follow-ups
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(d / "model.pt2", args.keep / f"{name}.pt2")
    t1 = time.perf_counter()
    ptq = export_model(d / "model.pt2", d / "ptq", calib=args.data, formats=("onnx",), force=True,
                       budgets=Budgets(max_latency_ratio=None),
                       model_kwargs={"input_size": contract.input_size, "channels": 3, "mean": list(contract.mean),
                                     "std": list(contract.std)})
    export_s = time.perf_counter() - t1
    fp32 = logits(ptq.export.path("onnx", "fp32"), te)
    int8_file = ptq.export.path("onnx", "int8")
    r = {"model": name, "size": args.size, "train_s": round(train_s, 1), "export_s": round(export_s, 1),
         "train_top1_last_epoch": hist[-1]["train_top1"],
         "fp32": float((fp32.argmax(1) == labels).mean()),
         "export_verdict": "passed" if not ptq.report.failures else "; ".join(ptq.report.failures),
         "precision": next((a.details.get("latency_precision") for a in ptq.export.artifacts
                            if a.file == int8_file.name), None),
         "ptq": int8_metrics(fp32, logits(int8_file, te), labels, classes)}
    t2 = time.perf_counter()
    qat_ds = torch.utils.data.Subset(tr, range(min(args.qat_samples, len(tr))))
    qat = quantize_qat(model, qat_ds, qat=QATConfig(epochs=args.qat_epochs,
                                                    freeze_observer_epoch=max(1, args.qat_epochs - 1)))
    res = export_artifacts(model, contract, d / "qat", quantized=qat, formats=("onnx",), force=True)
    r["qat_s"] = round(time.perf_counter() - t2, 1)
    r["qat"] = int8_metrics(fp32, logits(res.path("onnx", "int8"), te), labels, classes)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


def table(rows: list[dict]) -> str:
    out = [f"| model | fp32 top-1 | {INT8_HEADER} | export gate | train / export / QAT s |", "|" + "---|" * 11]
    for r in rows:
        out.append(f"| {r['model']} | {100 * r['fp32']:.2f} % | {int8_cells(r)} | {r['export_verdict']} "
                   f"| {r['train_s']:.0f} / {r['export_s']:.0f} / {r['qat_s']:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--train-samples", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat-samples", type=int, default=3000)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--data", default="fashion-mnist", help="named source or IDX folder")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep each trained network in, as NAME.pt2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = training_data(args.data, args.train_samples)
    mean, std = norm_stats(data.train, 3, args.size)
    contract = PreprocessContract(args.size, 3, mean, std, data.class_names)
    work = Path(tempfile.mkdtemp(prefix="edgefuse-third-party-accuracy-"))
    rows = []
    for name in args.rows.split(","):
        rows.append(row(name, data, contract, args, work))
        print(json.dumps(rows[-1]), flush=True)
        save_rows(args, data, args.size, rows)  # after every row: a long run keeps what it measured
    print(f"\n{data.source}: {len(data.train)} training images, {args.epochs} epochs at {args.size}x{args.size} "
          f"(RGB); {len(data.test)} test images; onnxruntime; CPU {cpu_name()}\n")
    print(table(rows))
    print(targets_line([(r["model"], r) for r in rows]))


if __name__ == "__main__":
    main()
