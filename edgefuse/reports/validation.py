"""``report.html`` for ``export`` and ``validate``: the gate's verdict, every shipped format, latency
distributions, per-class accuracy, the drop's interval, latency-aware precision, the fp32 fallback and
doctor's diagnosis, from ``report.json``'s data. Self-contained: inline SVG and CSS, nothing fetched."""

from __future__ import annotations

from pathlib import Path

from edgefuse._files import write_text_atomic
from edgefuse.reports import html as H
from edgefuse.validate.core import write_report
from edgefuse.validate.report import ValidationReport


def _pct(v) -> str:
    return H.value(v, pct=True)


def _ms(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _number(v) -> str:
    return H.value(v, nd=4) if isinstance(v, (int, float)) else "—"


def validation_html(d: dict) -> str:
    """The report page for a ``report.json`` dict (:meth:`ValidationReport.to_dict`)."""
    models, cmp_, gate = d["models"], d["comparison"], d["gate"]
    f32, i8 = models["fp32"], models["int8"]
    unit = "pp" if gate.get("drop_type", "absolute") == "absolute" else "% rel."
    sections = []

    verdict = (f"<p class='{'pass' if gate['passed'] else 'fail'}'>{'PASSED' if gate['passed'] else 'FAILED'}</p>")
    if gate.get("checks"):
        verdict += H.table(["check", "subject", "value", "limit", "what failed"],
                           [[c.get("check"), c.get("subject") or "", _number(c.get("value")), _number(c.get("limit")),
                             c.get("message")] for c in gate["checks"]])
    else:
        verdict += H.paragraph("Every budget holds: " + "; ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in gate.items()
            if k not in ("passed", "failures", "checks") and v is not None) + ".")
    data, rt = d.get("data", {}), d.get("runtime", {})
    verdict += H.paragraph(f"Data: {data.get('source')} ({data.get('split', '—')} split, {data.get('samples')} "
                           f"images). Runtime: {rt.get('engine', 'onnxruntime')} {rt.get('engine_version', '')}, "
                           f"{rt.get('threads')} thread(s), batch 1, {f32['latency'].get('runs')} interleaved runs; "
                           f"CPU {rt.get('cpu')}.")
    sections.append(("Gate verdict", verdict))

    rows = [["fp32", Path(f32["file"]).name, f"{f32['bytes'] / 1024:.1f}", _pct(f32.get("top1")),
             _ms(f32["latency"]["median_ms"]), _ms(f32["latency"]["p90_ms"])],
            ["int8", Path(i8["file"]).name, f"{i8['bytes'] / 1024:.1f}", _pct(i8.get("top1")),
             _ms(i8["latency"]["median_ms"]), _ms(i8["latency"]["p90_ms"])]]
    files = H.table(["precision", "file", "KiB", "top-1", "median ms", "p90 ms"], rows)
    files += H.paragraph(f"int8 / fp32 latency {cmp_['latency_ratio']:.3f} (speed-up {cmp_['speedup']:.2f}x), "
                         f"size ratio {cmp_['size_ratio']:.2f}, top-1 agreement {_pct(cmp_.get('top1_agreement'))}, "
                         f"output SQNR {H.value(cmp_.get('output_sqnr_db'))} dB.")
    if d.get("formats"):
        files += H.table(["format", "runtime", "fp32 top-1", "int8 top-1", "agreement", "fp32 ms", "int8 ms",
                          "speed-up", "gate"],
                         [[fmt, r.get("engine"), _pct(r.get("fp32_top1")), _pct(r.get("int8_top1")),
                           _pct(r.get("agreement")), _ms(r.get("fp32_ms")), _ms(r.get("int8_ms")),
                           f"{r.get('speedup', 0):.2f}x", "pass" if r.get("passed") else "FAIL"]
                          for fmt, r in d["formats"].items()])
    if d.get("pytorch_agreement"):
        files += H.table(["file", "top-1 agreement with the PyTorch program it came from"],
                         [[k, _pct(v)] for k, v in d["pytorch_agreement"].items()])
    sections.append(("Files", files))

    samples = {p: models[p]["latency"].get("samples_ms") for p in ("fp32", "int8")}
    if all(samples.values()):
        lat = H.overlaid_histograms({"fp32": samples["fp32"], "int8": samples["int8"]},
                                    title="latency per run, batch 1 (interleaved)", xlabel="ms")
    else:
        lat = H.paragraph("This report has medians only (no per-run samples).")
    sections.append(("Latency distribution", lat))

    acc = H.paragraph(
        f"top-1 fp32 {_pct(f32.get('top1'))} → int8 {_pct(i8.get('top1'))}; drop "
        + ("—" if cmp_.get("accuracy_drop") is None else f"{cmp_['accuracy_drop']:.2f} {unit}")
        + ("" if not cmp_.get("accuracy_drop_ci95") else
           f" (paired bootstrap 95 % interval {cmp_['accuracy_drop_ci95'][0]:.2f} … {cmp_['accuracy_drop_ci95'][1]:.2f})")
        + ".")
    per_class = cmp_.get("per_class") or []
    if per_class:
        ordered = sorted(per_class, key=lambda r: str(r["class"]))
        acc += H.bar_chart([str(r["class"]) for r in ordered], [r["drop_pp"] for r in ordered],
                           title="top-1 drop per class (pp; above 0: int8 loses)", ylabel="pp")
        acc += H.table(["class", "images", "fp32 top-1", "int8 top-1", "drop pp"],
                       [[r["class"], r["samples"], _pct(r["fp32_top1"]), _pct(r["int8_top1"]), f"{r['drop_pp']:+.2f}"]
                        for r in per_class])
    sections.append(("Accuracy", acc if data.get("samples") else H.paragraph("No labelled data: latency, size "
                                                                            "and SQNR on noise only.")))

    prec = ""
    for file, c in (d.get("latency_precision") or {}).items():
        cands = c.get("candidates_ms") or {}
        prec += H.paragraph(f"{file}: shipped '{c.get('chosen')}'"
                            + (f", {c['saved_ms']:.3f} ms faster than all-int8" if c.get("saved_ms") else "")
                            + f" ({len(c.get('fp32_modules') or [])} module(s) in fp32).")
        if cands:
            prec += H.bar_chart(list(cands), list(cands.values()), title=f"{file}: measured candidates",
                                ylabel="median ms")
    sections.append(("Latency-aware precision", prec or H.paragraph("Not searched for these files.")))

    fb = d.get("fp32_fallback")
    if fb:
        steps = H.table(["step", "kept in fp32", "top-1", "drop pp"],
                        [[i + 1, ", ".join(s.get("kept_fp32", [])), _pct(s.get("top1")), f"{s.get('drop_pp', 0):+.2f}"]
                         for i, s in enumerate(fb.get("steps", []))])
        sections.append(("Accuracy fallback", H.paragraph(
            f"Budget {fb.get('budget_pp')} pp on the {fb.get('split')} split: {_pct(fb.get('before_top1'))} → "
            f"{_pct(fb.get('after_top1'))}, {'met' if fb.get('met') else 'MISSED'}.") + steps))
    else:
        sections.append(("Accuracy fallback", H.paragraph("Not needed: the int8 build was within the accuracy "
                                                          "budget (or none was set).")))
    doctor = d.get("doctor")
    sections.append(("Doctor", H.preformatted(doctor) if doctor else
                     H.paragraph("Not run: int8 is faster than fp32 here (edgefuse doctor FILE diagnoses any file).")))
    for note in d.get("notes") or []:
        sections[-1] = (sections[-1][0], sections[-1][1] + H.paragraph(f"note: {note}"))
    return H.page("edgefuse validation report", sections)


def write_reports(report: ValidationReport, out_dir: str | Path) -> tuple[Path, Path, Path]:
    """``report.json``, ``report.md`` and ``report.html`` into ``out_dir`` (each written atomically)."""
    js, md = write_report(report, out_dir)
    page = write_text_atomic(Path(out_dir) / "report.html", validation_html(report.to_dict()))
    return js, md, page
