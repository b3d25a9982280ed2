"""The models users bring, through `export --int8`: torchvision/timm/hand-written SE and attention CNNs.

    .venv/bin/python benchmarks/third_party.py [--size 224] [--runs 100] [--threads 1,2] [--rows a,b]
                                               [--json benchmarks/results-third-party-224.json]

Each network of ``edgefuse.models.third_party`` is built with random weights and ``num_classes=10``,
gets batch-norm statistics from 256 digits images (as RGB, resized, ImageNet mean/std) and is saved as a
``.pt2`` with a dynamic batch, as a user would hand it over. Then, in one process:

- ``edgefuse export m.pt2 --int8 --format onnx`` through the library (wall time measured; the default
  budgets, latency aside, so the gate's own floors are exercised; the process reuses freed memory as the
  ``edgefuse`` command does, :mod:`edgefuse._memory`);
- onnxruntime's ``quant_pre_process`` + ``quantize_static`` (QDQ, per-channel, u8/s8, MinMax) on the plain
  ``torch.onnx.export`` file, calibrated on the same images as edgefuse;
- fp32 (edgefuse's file and the plain one), onnxruntime's int8 and edgefuse's int8 timed interleaved
  (batch 1, 10 warm-up runs, then ``--runs`` each; medians), at each ``--threads``;
- agreement of edgefuse's int8 file with its own PyTorch int8 program, and top-1 agreement and logit SQNR
  of both int8 files against fp32 on the digits test split (269 images).

The tests (``tests/thirdparty``) call :func:`measure` at 64x64 with no timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch

from edgefuse._memory import keep_freed_memory
from edgefuse.api import export_model
from edgefuse.data import ImageDataset, PreprocessContract, load_data
from edgefuse.export import export_onnx
from edgefuse.export.onnx_checks import unread_nodes
from edgefuse.models.third_party import calibrate_batch_norm, create_third_party, list_third_party
from edgefuse.quantize.targets import quant_config_for
from edgefuse.validate import Budgets, OrtModel, cpu_name, interleaved_latency
from edgefuse.metrics import agreement, sqnr_db
from edgefuse.validate.reference import ort_quantize_static

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CALIB = 128


def _stack(ds, n):
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])


def measure(name: str, size: int, work: Path, *, formats=("onnx",), threads=(), runs: int = 100) -> dict:
    """Build, save as .pt2, export with edgefuse and with onnxruntime's quantizer; compare (and time)."""
    work.mkdir(parents=True, exist_ok=True)
    data = load_data("digits")
    contract = PreprocessContract(size, 3, MEAN, STD, data.class_names)
    train, test = ImageDataset(data.train, contract), ImageDataset(data.test, contract)
    torch.manual_seed(0)
    model = create_third_party(name, 10)
    calibrate_batch_norm(model, (torch.stack([train[j][0] for j in range(i, i + 32)]) for i in range(0, 256, 32)))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (_stack(train, 2),), dynamic_shapes=({0: batch},)),
                      work / "model.pt2")
    t0 = time.perf_counter()
    res = export_model(work / "model.pt2", work / "build", calib="digits", formats=tuple(formats), runs=3,
                       force=True, quant_config=quant_config_for(calib_samples=CALIB),
                       budgets=Budgets(max_latency_ratio=None),
                       model_kwargs={"input_size": size, "channels": 3, "mean": list(MEAN), "std": list(STD)})
    export_s = time.perf_counter() - t0
    report, exported = res.report, res.export
    plain = export_onnx(model, (_stack(train, 1),), work / "plain.fp32.onnx")
    ort_int8 = ort_quantize_static(plain, work / "plain.ort-int8.onnx", _stack(train, CALIB).numpy())
    x = _stack(test, len(test)).numpy()
    files = {"fp32": exported.path("onnx", "fp32"), "plain_fp32": plain, "ort_int8": ort_int8,
             "edgefuse_int8": exported.path("onnx", "int8")}
    sessions = {k: OrtModel(p) for k, p in files.items()}
    logits = {k: s.run(x) for k, s in sessions.items()}
    int8_details = next(a.details for a in exported.artifacts if a.file == files["edgefuse_int8"].name)
    row = {
        "model": name, "size": size,
        "export_s": round(export_s, 1),
        "export_stage_s": res.seconds,
        "gate_failures": report.failures,
        "artifact_agreement": report.extra["pytorch_agreement"],
        "edgefuse_vs_program": report.extra["pytorch_agreement"][files["edgefuse_int8"].name],
        "agree_edgefuse": round(agreement(logits["fp32"], logits["edgefuse_int8"]), 4),
        "agree_ort": round(agreement(logits["fp32"], logits["ort_int8"]), 4),
        "sqnr_edgefuse_db": round(sqnr_db(logits["fp32"], logits["edgefuse_int8"]), 2),
        "sqnr_ort_db": round(sqnr_db(logits["fp32"], logits["ort_int8"]), 2),
        "fp32_files_agree": round(agreement(logits["fp32"], logits["plain_fp32"]), 4),
        "weights": {k: v for k, v in int8_details.items() if k.endswith("_weights")},
        # depthwise convs widened to onnxruntime's 16-channel blocks (edgefuse.export.channel_padding)
        "padded_depthwise": int8_details.get("padded_depthwise"),
        # what latency-aware precision measured and chose (fp32 prefix, if any)
        "latency_precision": int8_details.get("latency_precision"),
        # nodes whose outputs nothing reads: onnxruntime runs them anyway
        "unread_nodes": {f.name: len(unread_nodes(onnx.load(str(f)).graph))
                         for f in (files["fp32"], files["edgefuse_int8"])},
    }
    for t in threads:
        ms = {k: OrtModel(p, t) for k, p in files.items()}
        x1 = x[:1]
        lat = interleaved_latency({k: (lambda m=m: m.run(x1)) for k, m in ms.items()}, runs=runs)
        med = {k: v["median_ms"] for k, v in lat.items()}
        row[f"t{t}"] = {**{f"{k}_ms": round(v, 3) for k, v in med.items()},
                        "edgefuse_vs_fp32": round(med["fp32"] / med["edgefuse_int8"], 3),
                        "edgefuse_vs_plain_fp32": round(med["plain_fp32"] / med["edgefuse_int8"], 3),
                        "ort_vs_plain_fp32": round(med["plain_fp32"] / med["ort_int8"], 3),
                        "edgefuse_vs_ort": round(med["ort_int8"] / med["edgefuse_int8"], 3)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rows", default=",".join(list_third_party()))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    keep_freed_memory()  # as the command line does, so export_s is what `edgefuse export` takes
    threads = [int(t) for t in args.threads.split(",") if t]
    tmp = Path(tempfile.mkdtemp(prefix="edgefuse-third-party-"))
    rows = []
    for name in args.rows.split(","):
        r = measure(name, args.size, tmp / name, threads=threads, runs=args.runs)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(f"\nCPU: {cpu_name()}; onnxruntime CPU, batch 1, {args.size}x{args.size}, {args.runs} interleaved runs; "
          f"SQNR/agreement against fp32 on 269 digits test images\n")
    head = "| model | int8 file vs its PyTorch program | agreement edgefuse / ORT | SQNR dB edgefuse / ORT | export s |"
    cols = "".join(f" t{t}: fp32 / ORT int8 / edgefuse int8 ms | t{t}: edgefuse vs fp32, vs ORT |" for t in threads)
    print(head + cols)
    print("|" + "---|" * (5 + 2 * len(threads)))
    for r in rows:
        line = (f"| {r['model']} | {100 * r['edgefuse_vs_program']:.1f}% | {100 * r['agree_edgefuse']:.1f}% / "
                f"{100 * r['agree_ort']:.1f}% | {r['sqnr_edgefuse_db']:.1f} / {r['sqnr_ort_db']:.1f} | {r['export_s']:.0f} |")
        for t in threads:
            m = r[f"t{t}"]
            line += (f" {m['plain_fp32_ms']:.2f} / {m['ort_int8_ms']:.2f} / {m['edgefuse_int8_ms']:.2f} |"
                     f" {m['edgefuse_vs_plain_fp32']:.2f}x, {m['edgefuse_vs_ort']:.2f}x |")
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "size": args.size, "rows": rows}, indent=2) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
