"""What the commands print: tables and lines on the terminal (rich), from the data the library returns.

Parsing lives in the command modules, computing in the library; this module only renders.
"""

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgefuse.cli._ui import out
from edgefuse.validate.report import (
    fallback_summary,
    latency_precision_summary,
    op_check_summary,
    padding_summary,
    rounds_note,
)


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def db(v) -> str:
    return "—" if v is None else f"{v:.1f}"


def as_json(data) -> None:
    """Data on stdout as indented JSON (``--json``)."""
    typer.echo(json.dumps(data, indent=2))


def line(text: str) -> None:
    out.print(text, highlight=False)


def key_values(title: str, info: dict) -> None:
    """``inspect``: one row per field."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        t.add_row(k, str(v))
    out.print(t)


def training(res: dict) -> None:
    line(f"{res['model']}/{res['fusion']} on {res['data']}: val top-1 {100 * res['val_top1']:.2f}%, "
         f"test top-1 {100 * res['test_top1']:.2f}% ({res['test_samples']} images), "
         f"{res['train_seconds']:.0f} s -> {res['checkpoint']}")
    for g, fl in res.get("gate_flags", {}).items():
        line(f"gate flag {g}: {'; '.join(fl)}")
    line(f"training report (curves, attention gates per epoch): {res['report']}")


def export_result(res) -> None:
    """``export``: the files written, the builders' notes, then the validation report."""
    for a in res.export.artifacts:
        line(f"wrote {res.export.out_dir / a.file}  ({a.bytes / 1024:.0f} KiB)")
    for n in res.export.notes:
        line(f"note: {n}")
    if res.report:
        validation_report(res.report, res.accuracy)
        line(f"report: {res.export.out_dir / 'report.md'} (and report.html)")
    if res.seconds:
        line("time: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in res.seconds.items())
             + f" (stages {sum(res.seconds.values()):.1f} s)")


def validation_report(report, accuracy: Optional[dict] = None) -> None:
    """The fp32-vs-int8 table, the gate's figures and every shipped format's row."""
    engine = report.runtime.get("engine", "onnxruntime")
    kind = Path(report.int8.file).suffix
    t = Table(title=f"fp32 vs int8 {kind} in {engine} (CPU, batch 1, "
                    f"{report.runtime['threads']} thread(s), {report.fp32.latency['runs']} interleaved runs)",
              title_justify="left")
    t.add_column("")
    t.add_column("fp32", justify="right")
    t.add_column("int8", justify="right")
    t.add_row("top-1", pct(report.fp32.top1), pct(report.int8.top1))
    if report.fp32.top5 is not None:
        t.add_row("top-5", pct(report.fp32.top5), pct(report.int8.top5))
    t.add_row("size", f"{report.fp32.bytes / 1024:.0f} KiB", f"{report.int8.bytes / 1024:.0f} KiB ({report.size_ratio:.2f}x)")
    t.add_row("latency median", f"{report.fp32.latency['median_ms']:.3f} ms", f"{report.int8.latency['median_ms']:.3f} ms")
    t.add_row("latency p90", f"{report.fp32.latency['p90_ms']:.3f} ms", f"{report.int8.latency['p90_ms']:.3f} ms")
    out.print(t)
    speed = (f"int8 is {report.speedup:.2f}x faster" if report.latency_ratio < 1
             else f"int8 is {report.latency_ratio:.2f}x SLOWER than fp32")
    summary = f"latency int8/fp32 = {report.latency_ratio:.3f} ({speed}){rounds_note(report.runtime.get('latency_rounds'))}"
    if report.sqnr_db is not None:
        summary += f"; top-1 agreement {pct(report.agreement)}; output SQNR {report.sqnr_db:.1f} dB"
    line(summary)
    if report.accuracy_drop is not None:
        unit = "pp" if report.budgets.drop_type == "absolute" else "% relative"
        ci = (f" (95% CI {report.drop_ci[0]:.2f} .. {report.drop_ci[1]:.2f})" if report.drop_ci else "")
        out.print(f"accuracy drop {report.accuracy_drop:.2f} {unit}{ci} on {report.data.get('samples')} images",
                  highlight=False)
        if report.per_class:
            w = report.per_class[0]
            out.print(f"worst class: {w['class']} {pct(w['fp32_top1'])} -> {pct(w['int8_top1'])} "
                      f"({w['drop_pp']:+.2f} pp, {w['samples']} images)", highlight=False)
    fb = report.extra.get("fp32_fallback")
    if fb:
        out.print("fp32 fallback: " + fallback_summary(fb), highlight=False)
        for st in (fb.get("latency_ms") or {}).get("steps", []):
            out.print(f"  kept {st['module']} in fp32: int8 latency {st['ms']:.3f} ms ({st['cost_ms']:+.3f} ms)",
                      highlight=False)
    if accuracy:
        out.print("PyTorch top-1: " + ", ".join(f"{k.replace('_pytorch', '')} {pct(v)}" for k, v in accuracy.items()),
                  highlight=False)
    formats = report.extra.get("formats")
    if formats:
        t = Table(title="every shipped format, each in its own runtime (.onnx/.ort: onnxruntime, .pte: ExecuTorch)",
                  title_justify="left")
        for c in ("format", "top-1 fp32 / int8", "agreement", "ms fp32 -> int8", "speed-up", "gate"):
            t.add_column(c, justify="left" if c in ("format", "gate") else "right")
        for fmt, r in formats.items():
            t.add_row(fmt, f"{pct(r['fp32_top1'])} / {pct(r['int8_top1'])}", pct(r["agreement"]),
                      f"{r['fp32_ms']:.3f} -> {r['int8_ms']:.3f}",
                      f"{r['speedup']:.2f}x" if r["latency_ratio"] < 1 else f"[red]{r['speedup']:.2f}x[/]",
                      "[green]passed[/]" if r["passed"] else "[red]FAILED[/]")
        out.print(t)
    for f, c in report.extra.get("latency_precision", {}).items():
        line(f"{f}: {latency_precision_summary(c)}")
    for f, n in report.extra.get("padded_depthwise", {}).items():
        line(f"{f}: {padding_summary(n)}")
    for f, d in report.extra.get("delegation", {}).items():
        left = ", ".join(f"{op} x{n}" for op, n in d["portable_ops"].items()) or "nothing"
        out.print(f"{f}: XNNPACK runs {d['delegated_nodes']}/{d['delegated_nodes'] + d['portable_nodes']} nodes; "
                  f"portable kernels: {left}", highlight=False)
    agree = report.extra.get("pytorch_agreement")
    if agree:
        worst = min(agree, key=agree.get)
        out.print(f"every artifact vs PyTorch: top-1 agreement >= {pct(agree[worst])} (lowest: {worst})", highlight=False)
    for c in (report.extra.get("op_check") or {}).values():
        out.print(op_check_summary(c).replace("`", ""), highlight=False)
    if report.extra.get("doctor"):
        out.print("why int8 is not faster (edgefuse doctor):\n" + report.extra["doctor"], highlight=False)
    out.print(f"gate: {'[green]PASSED[/]' if report.passed else '[red]FAILED[/]'}")




def analysis(res: dict, split: str, top: int) -> None:
    """``analyze``: the headline figures, the most sensitive modules, export drift and gate flags."""
    s, d = res["sensitivity"], res["export_drift"]
    line(f"{s['samples']} images ({split}): fp32 {pct(s['fp32_top1'])}, int8 {pct(s['int8_top1'])}, output "
         f"SQNR {db(s['output_sqnr_db'])} dB; onnxruntime int8 {pct(d['onnxruntime_int8_top1'])} "
         f"(agreement with PyTorch int8 {pct(d['top1_agreement'])}, SQNR {db(d['output_sqnr_db'])} dB)")
    t = Table(title=f"most sensitive modules (top {top})", title_justify="left",
              caption="kept fp32: top-1 with all int8 but this module; alone: top-1 and output SQNR (dB) with only "
                      "this module int8; act: SQNR of its own output (dB); clip: its fp32 outputs outside the int8 range",
              caption_justify="left")
    for c in ("module", "ops", "kept fp32", "alone", "SQNR alone", "act", "clip"):
        t.add_column(c, justify="left" if c in ("module", "ops") else "right", no_wrap=c == "module")
    for m in s["modules"][:top]:
        t.add_row(m["module"], ",".join(m["ops"])[:16], pct(m["fp32_kept_top1"]), pct(m["only_int8_top1"]),
                  db(m["only_int8_sqnr_db"]), db(m["activation_sqnr_db"]),
                  "—" if m["clipped"] is None else f"{100 * m['clipped']:.2f}%")
    out.print(t)
    if d.get("worst_module"):
        w = d["worst_module"]
        line(f"export drift per module ({d['modules_compared']} compared): lowest onnxruntime-vs-PyTorch "
             f"int8 SQNR {db(w['ort_vs_pytorch_sqnr_db'])} dB at {w['module']}")
    g = res["gates"]
    for name, fl in {**g["training_last_epoch_flags"], **g["calibration_flags"]}.items():
        out.print(f"[red]gate flag[/] {name}: {'; '.join(fl)}", highlight=False)
    line(f"report: {res['files']['html']}")


def ablation(res: dict, model: str, data: str, epochs: int, threads: int) -> None:
    """``ablate``: one row per variant."""
    t = Table(title=f"{model} on {data}: {epochs} epochs each; test top-1 and latency in onnxruntime "
                    f"({threads} thread(s), all models interleaved)", title_justify="left")
    for c in ("fusion", "params", "MMACs", "fp32", "int8", "drop pp", "fp32 ms", "int8 ms", "int8 x"):
        t.add_column(c, justify="left" if c == "fusion" else "right", no_wrap=True)
    for r in res["rows"]:
        t.add_row(r["variant"], f"{r['params'] / 1e3:.1f}k", f"{r['macs'] / 1e6:.2f}", pct(r["fp32_top1"]),
                  pct(r["int8_top1"]), f"{r['drop_pp']:+.2f}", f"{r['fp32_ms']:.3f}", f"{r['int8_ms']:.3f}",
                  f"{r['speedup']:.2f}x")
    out.print(t)
    line(f"report: {res['files']['html']}")


def diagnosis(rep, top: int) -> None:
    """``doctor``: the summary, time per op type, the costliest findings."""
    line(rep.summary())
    t = Table(title="time per op type (ms per run)", title_justify="left")
    t.add_column("op")
    t.add_column("count", justify="right")
    t.add_column("ms", justify="right")
    for op, ms in sorted(rep.op_ms.items(), key=lambda kv: -kv[1])[:12]:
        t.add_row(op, str(rep.op_counts.get(op, "")), f"{ms:.3f}")
    out.print(t)
    if rep.findings:
        t = Table(title=f"costliest findings (top {top})", title_justify="left")
        for c in ("finding", "node", "module", "ms"):
            t.add_column(c, justify="right" if c == "ms" else "left")
        for f in rep.findings[:top]:
            t.add_row(f.kind, f.node[:40], f.module or "-", f"{f.ms:.3f}")
        out.print(t)


def verification(res, folder: Path) -> None:
    for w in res.warnings:
        line(f"warning: {w}")
    if res.ok:
        line(f"{len(res.checked)} files match {folder / 'manifest.json'}")


def arm_parity(res: dict) -> None:
    """``verify-arm``: one row per file and emulated core, ARM vs x86."""
    t = Table(title=f"ARM (emulated aarch64 onnxruntime) vs x86: {res['samples']} {res['data']} images, same tensors",
              title_justify="left")
    for c in ("file", "core", "agree", "max|diff|", "SQNR", "int8~fp32 ARM/x86", "parity"):
        t.add_column(c, justify="left" if c in ("file", "core") else "right", no_wrap=True)
    for r in res["rows"]:
        pair = (f"{pct(r['int8_vs_fp32_agreement_arm'])}/{pct(r['int8_vs_fp32_agreement_x86'])}"
                if "int8_vs_fp32_agreement_arm" in r else "")
        t.add_row(r["file"].removeprefix("model."), r["cpu"], pct(r["agreement"]), f"{r['max_abs_diff']:.2g}",
                  f"{r['sqnr_db']:.1f}", pair, "yes" if r["parity"] else "NO")
    out.print(t)
    for cpu in res["cpus"]:
        line(f"{cpu}: {next(r['kernels'] for r in res['rows'] if r['cpu'] == cpu)} kernels")
    for n in res["notes"]:
        line(f"note: {n}")
    for f in res["failures"]:
        line(f"differs: {f}")
