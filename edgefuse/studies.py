"""``edgefuse analyze`` and ``edgefuse ablate``: the research loop around int8 attention fusion.

Both return plain data and write JSON plus a self-contained HTML report; neither prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from edgefuse._files import write_text_atomic
from edgefuse.progress import NullProgress, Progress
from edgefuse.reports.training import gate_plots, read_gate_log
from edgefuse.training import GATE_HEALTH, gate_flags


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def analyze_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    data: str = "digits",
    split: str = "val",
    samples: int | None = None,
    quant_config=None,
    seed: int = 0,
    top: int = 10,
    threads: int = 1,
    force: bool = False,
    model_kwargs: dict | None = None,
    progress: Progress = NullProgress(),
) -> dict:
    """``edgefuse analyze``: per-module int8 sensitivity of a model, the activation ranges of its worst
    modules, PyTorch int8 vs onnxruntime int8 (export drift), and its attention gates.

    Args:
        source: a model file as for ``export`` (model.pt, .pt2, --factory/--trust-pickle forms).
        out_dir: folder for ``analysis.json`` and ``analysis.html``.
        data: labelled data (calibration uses its train split).
        split: the split analysed (``val`` by default: the test split is the gate's).
        samples: analyse the first ``samples`` images of the split (default all).
        quant_config: :class:`QuantConfig` (default: the CPU preset, as ``export`` does).
        top: how many of the worst modules get activation histograms.

    Returns:
        The analysis dict (also written to ``analysis.json``).
    """
    import numpy as np
    import torch

    from edgefuse.api import gate_log_path
    from edgefuse.pipeline.source import load_model_source
    from edgefuse.data import ImageDataset, check_same_classes, load_data
    from edgefuse.errors import DataError, UsageError
    import copy

    from edgefuse.quantize import TensorBatches
    from edgefuse.quantize.analysis import batched_logits, module_sensitivity, switch_prepared
    from edgefuse.quantize.pt2e import calibrate, convert_calibrated
    from edgefuse.training import GateMonitor
    from edgefuse.metrics import sqnr_db

    out = Path(out_dir)
    if (out / "analysis.json").exists() and not force:
        raise UsageError(f"{out} already holds an analysis; pass --force to replace it")
    if split not in ("train", "val", "test"):
        raise UsageError(f"--split must be train, val or test, got {split!r}")
    if samples is not None and samples < 1:
        raise UsageError("--samples must be >= 1")
    model, contract, info = load_model_source(source, **(model_kwargs or {}))
    splits = load_data(data, seed=seed)
    check_same_classes(contract.class_names, splits.class_names, data)
    if quant_config is None:
        from edgefuse.quantize.targets import quant_config_for

        quant_config = quant_config_for()
    calib_ds = ImageDataset(splits.train, contract)
    eval_ds = ImageDataset(splits.split(split), contract)
    if len(eval_ds) == 0:
        raise DataError(f"the {split} split of {data} is empty")
    model.eval()
    reader = TensorBatches(calib_ds, quant_config.calib_samples, quant_config.calib_batch_size)
    # One calibration serves both the switchable program and the plain int8 one that gets exported.
    prepared, _, _ = calibrate(model, reader, quant_config, progress)
    q = convert_calibrated(copy.deepcopy(prepared), quant_config)
    prog = switch_prepared(prepared, quant_config)
    sens = module_sensitivity(prog, eval_ds, samples=samples, progress=progress)

    # Gates at calibration time (fp32 model, calibration images).
    reader.rewind()
    with GateMonitor(model) as mon, torch.no_grad():
        while (x := reader.get_next()) is not None:
            model(x)
    cal_gates = mon.stats()
    history = read_gate_log(gate_log_path(source))
    train_gates = history[-1].get("gates", {}) if history else {}

    # Export drift: the same int8 program in PyTorch and in onnxruntime.
    import tempfile

    from edgefuse.export import export_onnx
    from edgefuse.runtimes import OrtModel

    n = sens.samples
    xs = torch.stack([eval_ds[i][0] for i in range(n)])
    ys = np.asarray([int(eval_ds[i][1]) for i in range(n)])
    pt = batched_logits(q, xs).numpy()
    with tempfile.TemporaryDirectory(prefix="edgefuse-analyze-") as tmp:
        onnx_path = export_onnx(q, (xs[:1],), Path(tmp) / "int8.onnx")
        ort_model = OrtModel(onnx_path, threads)
        ortv = np.concatenate([ort_model.run(xs[i : i + 64].numpy()) for i in range(0, n, 64)])
        per_module = onnxruntime_module_drift(prog, onnx_path, xs[:64], threads)
    drift = {"top1_agreement": float((pt.argmax(1) == ortv.argmax(1)).mean()),
             "output_sqnr_db": sqnr_db(pt, ortv),
             "pytorch_int8_top1": float((pt.argmax(1) == ys).mean()),
             "onnxruntime_int8_top1": float((ortv.argmax(1) == ys).mean())}

    sens_dict = sens.to_dict()
    for row in sens_dict["modules"]:
        row.update(per_module.get(row["module"], {"ort_sqnr_db": None, "pytorch_sqnr_db": None,
                                                   "ort_vs_pytorch_sqnr_db": None}))
    if per_module:
        worst = min(per_module, key=lambda k: _finite_db(per_module[k]["ort_vs_pytorch_sqnr_db"]))
        drift["modules_compared"] = len(per_module)
        drift["worst_module"] = {"module": worst, **per_module[worst]}
    result = _clean({
        "schema": "edgefuse.analysis", "schema_version": 1,
        "source": {k: v for k, v in info.items() if k != "metrics"},
        "data": {"source": data, "split": split, "samples": n, "fingerprint": splits.fingerprint},
        "quant_config": quant_config.to_dict(),
        "sensitivity": sens_dict,
        "export_drift": drift,
        "gates": {"calibration": cal_gates, "calibration_flags": gate_flags(cal_gates),
                  "training_last_epoch_flags": gate_flags(train_gates), "training_epochs": len(history)},
        "method": ("One calibrated int8 program; each module's quantization switched on alone (only_int8_*) "
                   "and off alone (fp32_kept_*). Ranked by top-1 regained when kept in fp32, then top-1 lost "
                   "when alone in int8, then output SQNR when alone in int8. activation_sqnr_db compares the "
                   "module's own output, all-int8 vs all-fp32; clipped is the share of its fp32 outputs outside "
                   "its int8 range. ort_sqnr_db / pytorch_sqnr_db: the module's de-quantized int8 output in "
                   "onnxruntime / PyTorch against fp32; ort_vs_pytorch_sqnr_db: the two int8 computations against "
                   "each other (export drift). SQNR null = identical (infinite) or, for the onnxruntime columns, "
                   "no quantized output to tap."),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "analysis.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out / "analysis.html", _analysis_html(result, sens, history, top))
    result["files"] = {"json": str(out / "analysis.json"), "html": str(out / "analysis.html")}
    return result


def _finite_db(v) -> float:
    return 1e9 if v is None or not math.isfinite(v) else v


def _fmt(v, pct=False, nd=1):
    if v is None:
        return "—"
    return f"{100 * v:.2f}%" if pct else f"{v:.{nd}f}"


def _analysis_html(result: dict, sens, history: list[dict], top: int) -> str:
    from edgefuse.reports import html as H

    s = result["sensitivity"]
    mods = s["modules"]
    d = result["export_drift"]
    summary = (f"{result['data']['samples']} images of the {result['data']['split']} split of {result['data']['source']}. "
               f"fp32 top-1 {_fmt(s['fp32_top1'], True)}, int8 (PyTorch) {_fmt(s['int8_top1'], True)}, output SQNR "
               f"{_fmt(s['output_sqnr_db'])} dB. onnxruntime int8 top-1 {_fmt(d['onnxruntime_int8_top1'], True)}; "
               f"PyTorch int8 vs onnxruntime int8: top-1 agreement {_fmt(d['top1_agreement'], True)}, output SQNR "
               f"{_fmt(d['output_sqnr_db'])} dB (a low value means the export changed the arithmetic)."
               + (f" Per module ({d['modules_compared']} compared where the export quantizes their output), the "
                  f"largest difference is at {d['worst_module']['module']}: "
                  f"{_fmt(d['worst_module']['ort_vs_pytorch_sqnr_db'])} dB." if d.get("worst_module") else ""))
    rows = [[m["module"], ", ".join(m["ops"]), _fmt(m["fp32_kept_top1"], True), _fmt(m["only_int8_top1"], True),
             _fmt(m["only_int8_sqnr_db"]), _fmt(m["activation_sqnr_db"]), _fmt(m["clipped"], True),
             _fmt(m.get("ort_sqnr_db")), _fmt(m.get("ort_vs_pytorch_sqnr_db"))] for m in mods]
    worst = mods[: min(20, len(mods))]
    gain = [0.0 if m["fp32_kept_top1"] is None or s["int8_top1"] is None else 100 * (m["fp32_kept_top1"] - s["int8_top1"])
            for m in worst]
    sections = [
        ("Summary", H.paragraph(summary) + H.paragraph(result["method"])),
        ("Sensitivity", H.bar_chart([m["module"] for m in worst], gain, title="top-1 regained when kept in fp32 (pp)",
                                    ylabel="pp")
         + H.bar_chart([m["module"] for m in worst], [m["only_int8_sqnr_db"] or 0 for m in worst],
                       title="output SQNR with only this module in int8 (dB; lower = more sensitive)", ylabel="dB")
         + H.table(["module", "ops", "top-1, all int8 but this", "top-1, only this int8", "output SQNR only this (dB)",
                    "activation SQNR (dB)", "clipped", "onnxruntime activation SQNR (dB)",
                    "onnxruntime vs PyTorch int8 (dB)"], rows)),
    ]
    hists = "".join(H.histogram(m["histogram"]["counts"], m["histogram"]["min"], m["histogram"]["max"],
                                title=f"{m['module']}: fp32 output values", marks=tuple(m["histogram"]["qrange"])
                                if m["histogram"].get("qrange") else None)
                    for m in mods[:top] if m.get("histogram"))
    sections.append((f"Activation ranges of the {top} most sensitive modules", hists or H.paragraph("none recorded")))
    g = result["gates"]
    flags = [f"{n}: {'; '.join(f)}" for n, f in {**g["training_last_epoch_flags"], **g["calibration_flags"]}.items()]
    gate_html = "".join(H.paragraph("flag — " + f, "flag") for f in flags) or H.paragraph(
        f"No gate is {GATE_HEALTH}.")
    gate_html += gate_plots(history) + gate_plots([], g["calibration"])
    sections.append(("Attention gates", gate_html if g["calibration"] or history else H.paragraph("The model has no gates.")))
    return H.page("edgefuse analysis", sections)


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
    from edgefuse.api import check_model_args, export_model, train_model
    from edgefuse.checkpoint import load_checkpoint
    from edgefuse.errors import UsageError
    from edgefuse.training import count_macs, count_params
    from edgefuse.validate import Budgets

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
    rows: list[dict] = []
    files: dict[str, tuple] = {}
    for pos in positions:
        for fusion in fusions:
            name = fusion if len(positions) == 1 else f"{fusion}@{pos}"
            vdir = out / name.replace("@", "-")
            tr = train_model(model=model, fusion=fusion, data=data, out=vdir / "model.pt", epochs=epochs, width=width,
                             input_size=input_size, positions=pos, seed=seed, progress=progress)
            loaded = load_checkpoint(vdir / "model.pt")
            params = count_params(loaded.model)
            macs = count_macs(loaded.model, loaded.contract.input_shape)
            # Accuracy here; latency below, all variants interleaved in one run.
            ex = export_model(vdir / "model.pt", vdir / "build", int8=True, calib=data, formats=("onnx",),
                              budgets=Budgets(max_latency_ratio=None), threads=threads, runs=5, force=True,
                              seed=seed, fallback=False, progress=progress)
            r = ex.report
            files[name] = (ex.export.path("onnx", "fp32"), ex.export.path("onnx", "int8"))
            rows.append({
                "variant": name, "fusion": fusion, "positions": pos, "params": params, "macs": macs,
                "train_seconds": round(tr["train_seconds"], 1), "val_top1": tr["val_top1"],
                "fp32_top1": r.fp32.top1, "int8_top1": r.int8.top1, "drop_pp": r.accuracy_drop,
                "drop_ci95": list(r.drop_ci) if r.drop_ci else None, "agreement": r.agreement,
                "int8_bytes": r.int8.bytes, "samples": r.data.get("samples"),
            })
    import numpy as np

    from edgefuse.validate.latency import interleaved_latency
    from edgefuse.runtimes import OrtModel

    sessions = {(v, p): OrtModel(f, threads) for v, pair in files.items() for p, f in zip(("fp32", "int8"), pair)}
    shape = [d if isinstance(d, int) else 1 for d in next(iter(sessions.values())).input_shape]
    x1 = np.random.default_rng(seed).random(shape, dtype=np.float32)
    lat = interleaved_latency({k: (lambda m=m: m.run(x1)) for k, m in sessions.items()}, runs=runs, progress=progress)
    for row in rows:
        f, q = lat[(row["variant"], "fp32")], lat[(row["variant"], "int8")]
        row.update({"fp32_ms": f["median_ms"], "int8_ms": q["median_ms"], "fp32_p90_ms": f["p90_ms"],
                    "int8_p90_ms": q["p90_ms"], "speedup": f["median_ms"] / q["median_ms"]})
    result = {"schema": "edgefuse.ablation", "schema_version": 1, "model": model, "data": data, "epochs": epochs,
              "width": width, "input_size": input_size, "seed": seed, "threads": threads, "runs": runs, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "ablation.json", json.dumps(_clean(result), indent=2) + "\n")
    write_text_atomic(out / "ablation.md", ablation_markdown(result))
    write_text_atomic(out / "ablation.html", _ablation_html(result))
    result["files"] = {k: str(out / f"ablation.{k}") for k in ("json", "md", "html")}
    return result


def ablation_markdown(result: dict) -> str:
    """The ablation table in Markdown (as pasted into the README)."""
    lines = [f"{result['model']} on {result['data']}, {result['epochs']} epochs, seed {result['seed']}, "
             f"{result['input_size']}x{result['input_size']}; int8 = edgefuse PTQ; accuracy on the test split "
             f"({result['rows'][0]['samples'] if result['rows'] else 0} images) in onnxruntime; latency batch 1, "
             f"{result['threads']} thread(s), every model of the table interleaved in one run of {result['runs']} rounds "
             f"(medians).", "",
             "| fusion | params | MMACs | fp32 top-1 | int8 top-1 | drop (95% CI) | fp32 ms | int8 ms | int8 speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = f" ({r['drop_ci95'][0]:+.2f} … {r['drop_ci95'][1]:+.2f})" if r.get("drop_ci95") else ""
        lines.append(f"| {r['variant']} | {r['params'] / 1e3:.1f} k | {r['macs'] / 1e6:.2f} | {100 * r['fp32_top1']:.2f}% | "
                     f"{100 * r['int8_top1']:.2f}% | {r['drop_pp']:+.2f} pp{ci} | {r['fp32_ms']:.3f} | "
                     f"{r['int8_ms']:.3f} | {r['speedup']:.2f}× |")
    return "\n".join(lines) + "\n"


def _ablation_html(result: dict) -> str:
    from edgefuse.reports import html as H

    rows = result["rows"]
    table = H.table(["fusion", "params", "MMACs", "fp32 top-1", "int8 top-1", "drop pp", "fp32 ms", "int8 ms",
                     "speed-up"],
                    [[r["variant"], r["params"], f"{r['macs'] / 1e6:.2f}", _fmt(r["fp32_top1"], True),
                      _fmt(r["int8_top1"], True), _fmt(r["drop_pp"], nd=2), _fmt(r["fp32_ms"], nd=3),
                      _fmt(r["int8_ms"], nd=3), f"{r['speedup']:.2f}×"] for r in rows])
    plot = H.scatter([(r["int8_ms"], 100 * r["int8_top1"], r["variant"]) for r in rows],
                     title="int8 top-1 vs int8 latency (up and left is better)", xlabel="int8 latency, ms (onnxruntime)",
                     ylabel="int8 top-1 %")
    plot2 = H.scatter([(r["fp32_ms"], 100 * r["fp32_top1"], r["variant"]) for r in rows],
                      title="fp32 top-1 vs fp32 latency", xlabel="fp32 latency, ms", ylabel="fp32 top-1 %")
    return H.page("edgefuse ablation: fusion types, deployed in int8",
                  [("Setup", H.paragraph(ablation_markdown(result).splitlines()[0])), ("Results", table),
                   ("Accuracy vs latency", plot + plot2)])


def onnxruntime_module_drift(program, onnx_path: str | Path, x, threads: int = 1) -> dict[str, dict]:
    """Per module: its int8 output as onnxruntime computes it (full graph optimisation, int8 kernels)
    against the same value in the PyTorch int8 program and in fp32.

    The module's output is tapped where the exported graph quantizes it (a QuantizeLinear whose producer
    carries the module's path in the exporter's ``pkg.torch.onnx.name_scopes``), so onnxruntime still fuses
    its int8 kernels around it; modules whose output is not quantized, or not found, are left out.

    Args:
        program: the :class:`~edgefuse.quantize.analysis.SwitchedProgram` the ONNX file was exported from
            (same calibration).
        onnx_path: the raw int8 ONNX export (before onnxsim, which drops the name scopes).
        x: one batch of inputs.

    Returns:
        ``{module: {"ort_sqnr_db", "pytorch_sqnr_db", "ort_vs_pytorch_sqnr_db"}}`` (dB against fp32, and
        between the two int8 computations; a low last value is a drift the export introduced).
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import helper, numpy_helper

    from edgefuse.quantize.analysis import sqnr

    m = onnx.load(str(onnx_path))
    producers = {o: n for n in m.graph.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def module_of(node) -> str:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            return ""
        try:
            names = json.loads(scopes.replace("'", '"'))
        except json.JSONDecodeError:
            return ""
        return names[-2] if len(names) >= 2 else ""

    taps: dict[str, onnx.NodeProto] = {}
    for n in m.graph.node:  # topological order: the last match is the module's output quantization
        if n.op_type != "QuantizeLinear" or n.input[1] not in consts or n.input[2] not in consts:
            continue
        src = producers.get(n.input[0])
        mod = module_of(src) if src is not None else ""
        if mod in program.units and program.units[mod].output_q:
            taps[mod] = n
    if not taps:
        return {}
    have = {o.name for o in m.graph.output}
    for q in taps.values():
        if q.output[0] not in have:
            elem = helper.np_dtype_to_tensor_dtype(consts[q.input[2]].dtype)
            m.graph.output.append(helper.make_tensor_value_info(q.output[0], elem, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [q.output[0] for q in taps.values()]
    got = sess.run(names, {sess.get_inputs()[0].name: np.ascontiguousarray(x.numpy(), dtype=np.float32)})
    wanted = [program.units[u].output_q for u in taps] + [program.units[u].output for u in taps]
    with program.quantized(None):
        pt_q = program.capture(x, wanted)
    with program.quantized(set()):
        pt_f = program.capture(x, wanted)
    out = {}
    for (mod, q), val in zip(taps.items(), got):
        unit = program.units[mod]
        scale = consts[q.input[1]].astype(np.float64)
        zp = consts[q.input[2]].astype(np.float64)
        deq = torch.from_numpy(((val.astype(np.float64) - zp) * scale).astype(np.float32))
        ref, pq = pt_f.get(unit.output), pt_q.get(unit.output_q)
        if ref is None or pq is None or ref.shape != deq.shape:
            continue
        out[mod] = {"ort_sqnr_db": sqnr(ref, deq), "pytorch_sqnr_db": sqnr(ref, pq), "ort_vs_pytorch_sqnr_db": sqnr(pq, deq)}
    return out
