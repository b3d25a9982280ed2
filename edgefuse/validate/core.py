"""``validate``: fp32 vs int8 model files in onnxruntime on labelled data, and the gate."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgefuse._files import write_text_atomic
from edgefuse._versions import cpu_name, versions
from edgefuse.data import eval_batch_size
from edgefuse.errors import DataError
from edgefuse.metrics import agreement, sqnr_db, topk_accuracy
from edgefuse.progress import NullProgress, Progress
from edgefuse.runtimes import OrtModel, PteModel, load_runtime
from edgefuse.runtimes.timing import confirmed_ratio
from edgefuse.validate.doctor import diagnose
from edgefuse.validate.gate import judge, latency_over_budget
from edgefuse.validate.latency import interleaved_latency
from edgefuse.validate.report import Budgets, ModelResult, ValidationReport, drop_of
from edgefuse.validate.stats import bootstrap_drop_ci, compare_baseline, per_class_drops


def stream_logits(models: list[OrtModel], dataset, batch_size: int | None = None):
    """Run every model over the dataset in batches (memory bounded by two batches of inputs).

    onnxruntime sessions run side by side, one thread each, while the next batch is read: a session's
    ``run`` releases the GIL, so on 2 cores the fp32 and int8 files of EfficientNet-B0 at 224x224 go over
    269 images in 4.1-4.7 s instead of 6.5 s (MobileNetV3-large 1.7-2.0 s instead of 2.7 s), with the same
    logits bit for bit: each session computes its batch alone, as before. Other runtimes take turns.
    """
    batch_size = batch_size or eval_batch_size(dataset)
    outs: list[list[np.ndarray]] = [[] for _ in models]
    labels: list[int] = []
    n = len(dataset)

    def read(start: int) -> np.ndarray:
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        labels.extend(int(it[1]) for it in items)
        return np.stack([np.asarray(it[0], dtype=np.float32) for it in items])

    starts = range(0, n, batch_size)
    if len(models) < 2 or not all(isinstance(m, OrtModel) for m in models):
        for start in starts:
            x = read(start)
            for o, m in zip(outs, models):
                o.append(m.run(x))
    else:
        with ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="edgefuse-eval") as pool:
            running: list = []
            for start in starts:
                x = read(start)  # while the previous batch runs
                for o, f in zip(outs, running):
                    o.append(f.result())
                running = [pool.submit(m.run, x) for m in models]
            for o, f in zip(outs, running):
                o.append(f.result())
    return [np.concatenate(o) for o in outs], np.asarray(labels)


def _class_names(dataset) -> list[str] | None:
    names = getattr(dataset, "class_names", None) or getattr(getattr(dataset, "contract", None), "class_names", None)
    return list(names) if names else None


def validate_models(
    fp32_path: str | Path,
    int8_path: str | Path,
    dataset=None,
    *,
    data_info: dict | None = None,
    num_classes: int | None = None,
    threads: int = 1,
    runs: int = 100,
    warmup: int = 10,
    budgets: Budgets = Budgets(),
    latency_input: np.ndarray | None = None,
    baseline: dict | None = None,
    progress: Progress = NullProgress(),
) -> ValidationReport:
    """Compare an fp32 and an int8 model file on the CPU, in the runtime that ships them.

    Args:
        fp32_path, int8_path: ``.onnx`` or ``.ort`` files (onnxruntime), or ``.pte`` programs (ExecuTorch
            with XNNPACK); both of the same kind.
        dataset: indexable of ``(input CHW float32, label)``, preprocessed by the models' contract;
            ``None`` skips accuracy (latency and size only).
        data_info: description of the data for the report (source, split).
        threads: onnxruntime intra-op threads.
        runs, warmup: latency runs per model (>= 50 recommended) after warm-up calls.
        budgets: what the gate enforces.
        latency_input: one batch-1 input for timing (default: the first dataset item).
        baseline: a stored report (:func:`edgefuse.validate.stats.load_baseline`); the gate also fails when
            int8 top-1 falls more than ``budgets.baseline_tolerance`` pp below it, or the latency ratio rises
            more than ``budgets.baseline_latency_tolerance`` above it.

    Raises:
        UsageError: fewer evaluation images than ``budgets.min_samples``.

    Returns:
        The report; ``report.passed`` is the gate's verdict. Nothing is raised for a failed gate.
    """
    if runs < 1 or warmup < 0:
        raise DataError("latency runs must be >= 1 and warm-up >= 0")
    budgets.require_samples(0 if dataset is None else len(dataset))
    kinds = {Path(fp32_path).suffix.lower() == ".pte", Path(int8_path).suffix.lower() == ".pte"}
    if len(kinds) != 1:
        raise DataError("compare files of the same runtime: both .onnx/.ort or both .pte")
    fp32, int8 = load_runtime(fp32_path, threads), load_runtime(int8_path, threads)
    engine = "executorch" if isinstance(fp32, PteModel) else "onnxruntime"
    top1 = {"fp32": None, "int8": None}
    top5 = {"fp32": None, "int8": None}
    agree = sq = drop = ci = None
    per_class: list[dict] = []
    preds = None
    samples = 0
    if dataset is not None:
        if len(dataset) == 0:
            raise DataError("the evaluation split is empty")
        (lf, lq), labels = stream_logits([fp32, int8], dataset)
        samples = len(labels)
        n_classes = lf.shape[1]
        if labels.max() >= n_classes:
            raise DataError(f"labels go up to {labels.max()} but the model has {n_classes} outputs")
        for name, logits in (("fp32", lf), ("int8", lq)):
            top1[name] = topk_accuracy(logits, labels, 1)
            top5[name] = topk_accuracy(logits, labels, 5) if n_classes > 5 else None
        agree, sq = agreement(lf, lq), sqnr_db(lf, lq)
        drop = drop_of(top1["fp32"], top1["int8"], budgets.drop_type)
        pf, pq = lf.argmax(1), lq.argmax(1)
        preds = {"fp32": pf, "int8": pq}
        ci = bootstrap_drop_ci(pf == labels, pq == labels, drop_type=budgets.drop_type)
        per_class = per_class_drops(labels, pf, pq, _class_names(dataset))
    if latency_input is None:
        if dataset is None:
            shape = [d if isinstance(d, int) else 1 for d in fp32.input_shape]
            latency_input = np.zeros(shape, np.float32)
        else:
            latency_input = np.asarray(dataset[0][0], np.float32)[None]
    x1 = np.ascontiguousarray(latency_input, dtype=np.float32)
    b_ratio = baseline["comparison"]["latency_ratio"] if baseline is not None else None

    lat, ratio, rounds = confirmed_ratio(
        lambda: interleaved_latency({"fp32": lambda: fp32.run(x1), "int8": lambda: int8.run(x1)},
                                    runs=runs, warmup=warmup, progress=progress),
        lambda r: latency_over_budget(r, budgets, b_ratio))
    size_f, size_q = Path(fp32_path).stat().st_size, Path(int8_path).stat().st_size
    v = versions()
    extra = {}
    if ratio >= 1.0 and Path(int8_path).suffix == ".onnx":
        # int8 is not faster: say why, next to the numbers (the same diagnosis as `edgefuse doctor`).

        extra["doctor"] = diagnose(int8_path, threads=threads, runs=20).summary()
    report = ValidationReport(
        data={**(data_info or {}), "samples": samples},
        runtime={"engine": engine, "engine_version": v.get(engine), "onnxruntime": v.get("onnxruntime"),
                 "threads": threads, "batch": 1, "cpu": cpu_name(),
                 "runs": runs, "warmup": warmup, "latency_rounds": [round(r, 4) for r in rounds]},
        fp32=ModelResult(str(fp32_path), "fp32", size_f, top1["fp32"], top5["fp32"], lat["fp32"]),
        int8=ModelResult(str(int8_path), "int8", size_q, top1["int8"], top5["int8"], lat["int8"]),
        agreement=agree, sqnr_db=sq, size_ratio=size_q / size_f, latency_ratio=ratio, accuracy_drop=drop,
        budgets=budgets, drop_ci=ci, per_class=per_class,
        versions=v, predictions=preds,
    )
    if baseline is not None:
        extra["baseline"] = compare_baseline(baseline, int8_top1=top1["int8"], latency_ratio=ratio, samples=samples,
                                             source=(data_info or {}).get("source"))
    report.extra.update(extra)
    report.gate = judge({"int8": report}, budgets)
    return report


def write_report(report: ValidationReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return (write_text_atomic(out / "report.json", json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"),
            write_text_atomic(out / "report.md", report.to_markdown()))
