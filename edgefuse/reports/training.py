"""The training report: accuracy and loss per epoch and the attention gates' statistics, from the gate log
``edgefuse train`` writes (``model.gates.jsonl``, one JSON record per epoch)."""

from __future__ import annotations

import json
from pathlib import Path

from edgefuse._files import write_text_atomic
from edgefuse.reports import html as H
from edgefuse.training import GATE_HEALTH, NEAR_END, gate_flags


def read_gate_log(path: str | Path) -> list[dict]:
    """Per-epoch records of ``edgefuse train``'s gate log (``model.gates.jsonl``); [] when absent."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a log cut short by an interrupted run: keep the complete epochs
    return rows


def gate_plots(history: list[dict], calibration: dict[str, dict] | None = None) -> str:
    """SVG plots of the gate statistics: mean and saturated share per gate over epochs, and the final
    (or calibration-time) histogram of each gate."""
    parts = []
    if history:
        names = sorted({g for r in history for g in r.get("gates", {})})
        for key, label in (("mean", "mean gate output"), ("std", "std of gate outputs"),
                           ("saturated", f"share within {NEAR_END} of 0 or 1")):
            series = {n: [(r["epoch"], r["gates"][n][key]) for r in history if n in r.get("gates", {})] for n in names}
            parts.append(H.line_chart(series, title=f"{label} per epoch (validation split)", xlabel="epoch",
                                      ylabel=key, ylim=(0.0, 1.0) if key != "std" else None))
    stats = calibration or (history[-1].get("gates", {}) if history else {})
    for name, s in stats.items():
        z = s.get("zoom")  # over the outputs' own range (logs before it have only the [0, 1] bins)
        counts, lo, hi = (z["counts"], z["min"], z["max"]) if z else (s["hist"], 0.0, 1.0)
        parts.append(H.histogram(counts, lo, hi, title=f"{name}: gate outputs "
                                 + ("at calibration" if calibration else "after the last epoch")
                                 + f" (mean {s['mean']:.3g}, std {s['std']:.3g})", xlabel="gate value"))
    return "".join(parts)


def training_report(gate_log: str | Path, out_html: str | Path, title: str) -> dict[str, list[str]]:
    """Write the training report (curves, attention-gate statistics per epoch, flags) from a gate log.

    Returns:
        The flags of the last epoch's gates (``{gate: [reason, ...]}``; empty when all are healthy).
    """
    history = read_gate_log(gate_log)
    flags = gate_flags(history[-1].get("gates", {})) if history else {}
    curves = H.line_chart({"train top-1": [(r["epoch"], r["train_top1"]) for r in history],
                           "val top-1": [(r["epoch"], r["val_top1"]) for r in history]},
                          title="accuracy per epoch", xlabel="epoch", ylabel="top-1", ylim=(0.0, 1.0))
    loss = H.line_chart({"train loss": [(r["epoch"], r["train_loss"]) for r in history]},
                        title="training loss per epoch", xlabel="epoch", ylabel="loss")
    flag_html = "".join(H.paragraph(f"flag — {g}: {'; '.join(f)}", "flag") for g, f in flags.items()) or H.paragraph(
        f"No gate is {GATE_HEALTH} after the last epoch.")
    gates = gate_plots(history) if any(r.get("gates") for r in history) else H.paragraph("The model has no gates.")
    write_text_atomic(Path(out_html), H.page(title, [("Training", curves + loss), ("Attention gates", flag_html + gates)]))
    return flags
