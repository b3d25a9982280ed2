"""``analysis.html``: the page ``edgefuse analyze`` writes."""

from __future__ import annotations

from edgefuse.reports import html as H
from edgefuse.reports.training import gate_plots
from edgefuse.training import GATE_HEALTH


def analysis_html(result: dict, history: list[dict], top: int) -> str:
    """``analysis.html``: the summary, the sensitivity ranking with plots, activation ranges, the gates."""
    s = result["sensitivity"]
    mods = s["modules"]
    d = result["export_drift"]
    summary = (f"{result['data']['samples']} images of the {result['data']['split']} split of {result['data']['source']}. "
               f"fp32 top-1 {H.value(s['fp32_top1'], True)}, int8 (PyTorch) {H.value(s['int8_top1'], True)}, output SQNR "
               f"{H.value(s['output_sqnr_db'])} dB. onnxruntime int8 top-1 {H.value(d['onnxruntime_int8_top1'], True)}; "
               f"PyTorch int8 vs onnxruntime int8: top-1 agreement {H.value(d['top1_agreement'], True)}, output SQNR "
               f"{H.value(d['output_sqnr_db'])} dB (a low value means the export changed the arithmetic)."
               + (f" Per module ({d['modules_compared']} compared where the export quantizes their output), the "
                  f"largest difference is at {d['worst_module']['module']}: "
                  f"{H.value(d['worst_module']['ort_vs_pytorch_sqnr_db'])} dB." if d.get("worst_module") else ""))
    rows = [[m["module"], ", ".join(m["ops"]), H.value(m["fp32_kept_top1"], True), H.value(m["only_int8_top1"], True),
             H.value(m["only_int8_sqnr_db"]), H.value(m["activation_sqnr_db"]), H.value(m["clipped"], True),
             H.value(m.get("ort_sqnr_db")), H.value(m.get("ort_vs_pytorch_sqnr_db"))] for m in mods]
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
