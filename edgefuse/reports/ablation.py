"""``ablation.md`` and ``ablation.html``: what ``edgefuse ablate`` writes."""

from __future__ import annotations

from edgefuse.reports import html as H


def ablation_markdown(result: dict) -> str:
    """The ablation table in Markdown (as pasted into the README)."""
    lines = [f"{result['model']} on {result['data']}, {result['epochs']} epochs, seed {result['seed']}, "
             f"{result['input_size']}x{result['input_size']}; int8 = edgefuse PTQ; accuracy on the test split "
             f"({result['rows'][0]['samples'] if result['rows'] else 0} images) in onnxruntime; latency batch 1, "
             f"{result['threads']} thread(s), every model of the table interleaved in one run of {result['runs']} rounds "
             f"(medians).", "",
             "| fusion | params | MMACs | fp32 top-1 | int8 top-1 | drop (95% CI) | fp32 ms | int8 ms | int8 speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    paired = bool(result["rows"]) and "fp32_vs_baseline_pp" in result["rows"][0]  # schema 2
    if paired:
        base = result["rows"][0]["baseline"]
        lines[-2] += f" fp32 vs {base} (95% CI) | int8 vs {base} (95% CI) |"
        lines[-1] += "---|---|"
    for r in result["rows"]:
        ci = f" ({r['drop_ci95'][0]:+.2f} … {r['drop_ci95'][1]:+.2f})" if r.get("drop_ci95") else ""
        line = (f"| {r['variant']} | {r['params'] / 1e3:.1f} k | {r['macs'] / 1e6:.2f} | {100 * r['fp32_top1']:.2f}% | "
                f"{100 * r['int8_top1']:.2f}% | {r['drop_pp']:+.2f} pp{ci} | {r['fp32_ms']:.3f} | "
                f"{r['int8_ms']:.3f} | {r['speedup']:.2f}× |")
        if paired:
            line += "".join(f" {_vs(r, kind)} |" for kind in ("fp32", "int8"))
        lines.append(line)
    if paired:
        lines += ["", f"The last two columns: the difference from {base} on the same test images, with its paired "
                      "95% bootstrap interval. It covers the test set's sampling, not training noise: a fusion beats "
                      f"{base} where the interval excludes 0 with more than one --seed."]
    return "\n".join(lines) + "\n"


def _vs(row: dict, kind: str) -> str:
    if row["variant"] == row["baseline"]:
        return "—"
    lo, hi = row[f"{kind}_vs_baseline_ci95"]
    return f"{row[f'{kind}_vs_baseline_pp']:+.2f} pp ({lo:+.2f} … {hi:+.2f})"


def ablation_html(result: dict) -> str:
    """``ablation.html``: the table and accuracy-vs-latency plots."""
    rows = result["rows"]
    table = H.table(["fusion", "params", "MMACs", "fp32 top-1", "int8 top-1", "drop pp", "fp32 ms", "int8 ms",
                     "speed-up"],
                    [[r["variant"], r["params"], f"{r['macs'] / 1e6:.2f}", H.value(r["fp32_top1"], True),
                      H.value(r["int8_top1"], True), H.value(r["drop_pp"], nd=2), H.value(r["fp32_ms"], nd=3),
                      H.value(r["int8_ms"], nd=3), f"{r['speedup']:.2f}×"] for r in rows])
    plot = H.scatter([(r["int8_ms"], 100 * r["int8_top1"], r["variant"]) for r in rows],
                     title="int8 top-1 vs int8 latency (up and left is better)", xlabel="int8 latency, ms (onnxruntime)",
                     ylabel="int8 top-1 %")
    plot2 = H.scatter([(r["fp32_ms"], 100 * r["fp32_top1"], r["variant"]) for r in rows],
                      title="fp32 top-1 vs fp32 latency", xlabel="fp32 latency, ms", ylabel="fp32 top-1 %")
    return H.page("edgefuse ablation: fusion types, deployed in int8",
                  [("Setup", H.paragraph(ablation_markdown(result).splitlines()[0])), ("Results", table),
                   ("Accuracy vs latency", plot + plot2)])
