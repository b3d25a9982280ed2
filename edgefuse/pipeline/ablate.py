"""``edgefuse ablate``: every fusion (x position) trained, quantized, exported and measured alike, in one table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefuse._files import write_json_atomic, write_text_atomic
from edgefuse.checkpoint import load_checkpoint
from edgefuse.data import ImageDataset, load_data
from edgefuse.errors import UsageError
from edgefuse.pipeline.export import ExportRequest, run_export
from edgefuse.pipeline.train import check_model_args, train_model
from edgefuse.progress import NullProgress, Progress
from edgefuse.reports.ablation import ablation_html, ablation_markdown
from edgefuse.runtimes import OrtModel
from edgefuse.training import count_macs, count_params
from edgefuse.validate import Budgets
from edgefuse.validate.core import stream_logits
from edgefuse.validate.latency import interleaved_latency
from edgefuse.validate.stats import bootstrap_drop_ci


def ablate_models(
    out_dir: str | Path,
    *,
    model: str = "resnet",
    fusions: tuple[str, ...] = ("add", "concat", "se", "cbam", "effatt"),
    positions: tuple[str, ...] = ("all",),
    data: str = "digits",
    epochs: int = 8,
    width: float = 1.0,
    input_size: int = 32,
    seed: int = 0,
    threads: int = 1,
    runs: int = 100,
    force: bool = False,
    progress: Progress = NullProgress(),
) -> dict:
    """``edgefuse ablate``: is attention fusion worth it once deployed in int8? Every fusion x position variant is trained
    with the same seed, data and budget, quantized (PTQ, the CPU preset), exported to ONNX and measured in
    onnxruntime: parameters, MACs, fp32 and int8 top-1 on the test split, fp32 and int8 latency (every
    model of the table interleaved in one run, so the rows compare with each other).

    Returns:
        ``{"rows": [...], "files": {...}}``; also writes ``ablation.json``, ``ablation.md`` and ``ablation.html``.
    """
    out = Path(out_dir)
    if (out / "ablation.json").exists() and not force:
        raise UsageError(f"{out} already holds an ablation; pass --force to replace it")
    if not fusions or not positions:
        raise UsageError("--fusions and --positions need at least one name each")
    if len(set(fusions)) != len(fusions) or len(set(positions)) != len(positions):
        raise UsageError("--fusions and --positions must not repeat a name")
    for pos in positions:  # every variant must build before the first one trains
        for fusion in fusions:
            check_model_args(model, fusion, width=width, input_size=input_size, positions=pos)
    # "add" is every stage's default merge, so it builds the same network at every position: train it once.
    variants = list(dict.fromkeys((f, "all" if f == "add" else p) for p in positions for f in fusions))
    rows: list[dict] = []
    files: dict[str, tuple] = {}
    for fusion, pos in variants:
        # a variant is named by its position unless every variant is at the default ("all")
        name = fusion if fusion == "add" or tuple(positions) == ("all",) else f"{fusion}@{pos}"
        vdir = out / name.replace("@", "-")
        tr = train_model(model=model, fusion=fusion, data=data, out=vdir / "model.pt", epochs=epochs, width=width,
                         input_size=input_size, positions=pos, seed=seed, progress=progress)
        loaded = load_checkpoint(vdir / "model.pt")
        params = count_params(loaded.model)
        macs = count_macs(loaded.model, loaded.contract.input_shape)
        # Accuracy here; latency below, all variants interleaved in one run.
        ex = run_export(ExportRequest(vdir / "model.pt", vdir / "build", int8=True, calib=data, formats=("onnx",),
                                      budgets=Budgets(max_latency_ratio=None), threads=threads, runs=5, force=True,
                                      seed=seed, fallback=False), progress=progress)
        r = ex.report
        files[name] = (ex.export.path("onnx", "fp32"), ex.export.path("onnx", "int8"))
        rows.append({
            "variant": name, "fusion": fusion, "positions": pos, "params": params, "macs": macs,
            "train_seconds": round(tr["train_seconds"], 1), "val_top1": tr["val_top1"],
            "fp32_top1": r.fp32.top1, "int8_top1": r.int8.top1, "drop_pp": r.accuracy_drop,
            "drop_ci95": list(r.drop_ci) if r.drop_ci else None, "agreement": r.agreement,
            "int8_bytes": r.int8.bytes, "samples": r.data.get("samples"),
        })
    # every variant was trained on the same data at the same size: one contract prepares the test images for all
    _compare_with_first(rows, files, load_data(data, seed=seed).test, loaded.contract, seed)
    sessions = {(v, p): OrtModel(f, threads) for v, pair in files.items() for p, f in zip(("fp32", "int8"), pair)}
    shape = [d if isinstance(d, int) else 1 for d in next(iter(sessions.values())).input_shape]
    x1 = np.random.default_rng(seed).random(shape, dtype=np.float32)
    lat = interleaved_latency({k: (lambda m=m: m.run(x1)) for k, m in sessions.items()}, runs=runs, progress=progress)
    for row in rows:
        f, q = lat[(row["variant"], "fp32")], lat[(row["variant"], "int8")]
        row.update({"fp32_ms": f["median_ms"], "int8_ms": q["median_ms"], "fp32_p90_ms": f["p90_ms"],
                    "int8_p90_ms": q["p90_ms"], "speedup": f["median_ms"] / q["median_ms"]})
    result = {"schema": "edgefuse.ablation", "schema_version": 2, "model": model, "data": data, "epochs": epochs,
              "width": width, "input_size": input_size, "seed": seed, "threads": threads, "runs": runs, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ablation.json", result)
    write_text_atomic(out / "ablation.md", ablation_markdown(result))
    write_text_atomic(out / "ablation.html", ablation_html(result))
    result["files"] = {k: str(out / f"ablation.{k}") for k in ("json", "md", "html")}
    return result


def _compare_with_first(rows: list[dict], files: dict[str, tuple], test, contract, seed: int) -> None:
    """Each variant's fp32 and int8 top-1 against the first variant's (the baseline, ``add`` by default) on the
    same test images: the difference in pp with its paired 95 % bootstrap interval (resampling images, both
    models seeing the same resample). The interval covers the test set's sampling only: training noise (another
    seed, another model) comes on top of it, so a gain should clear it on more than one ``--seed``."""
    ds = ImageDataset(test, contract)
    right = {}
    for v, pair in files.items():
        logits, labels = stream_logits([OrtModel(f) for f in pair], ds)
        right[v] = [lg.argmax(1) == labels for lg in logits]
    base = rows[0]["variant"]
    for row in rows:
        for i, kind in enumerate(("fp32", "int8")):
            a, b = right[base][i], right[row["variant"]][i]
            lo, hi = bootstrap_drop_ci(a, b, seed=seed)  # "drop" from the baseline to this variant
            row[f"{kind}_vs_baseline_pp"] = round(100 * float(b.mean() - a.mean()), 3)
            row[f"{kind}_vs_baseline_ci95"] = [round(-hi, 3), round(-lo, 3)]
        row["baseline"] = base
