"""The validation report (``report.json``, schema ``edgefuse.report`` v1), its Markdown form, and the budgets
the gate (:mod:`edgefuse.validate.gate`) holds it to."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgefuse.export.channel_padding import CHANNEL_BLOCK
from edgefuse.export.kernel_choice import PAYS
from edgefuse.metrics import drop_of  # noqa: F401 -- the report's own vocabulary
from edgefuse.validate.gate import Budgets, GateResult  # noqa: F401 -- Budgets: the report's own vocabulary

REPORT_SCHEMA = "edgefuse.report"
REPORT_SCHEMA_VERSION = 1


@dataclass
class ModelResult:
    file: str
    precision: str
    bytes: int
    top1: float | None
    top5: float | None
    latency: dict


@dataclass
class ValidationReport:
    """fp32 vs int8 in onnxruntime on one evaluation split, and the gate's verdict."""

    data: dict
    runtime: dict
    fp32: ModelResult
    int8: ModelResult
    agreement: float | None
    sqnr_db: float | None
    size_ratio: float
    latency_ratio: float
    accuracy_drop: float | None
    budgets: Budgets
    drop_ci: tuple[float, float] | None = None
    per_class: list[dict] = field(default_factory=list)
    #: the gate's verdict on this report (or, for ``export``, on the whole shipped set)
    gate: GateResult = field(default_factory=GateResult)
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    #: per-image top-1 classes ``{"fp32": array, "int8": array}`` (not serialised; lets callers compare
    #: with other programs without running the files again)
    predictions: dict | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def failures(self) -> list[str]:
        """The gate's failures as the sentences a user reads."""
        return self.gate.messages

    @property
    def speedup(self) -> float:
        return 1.0 / self.latency_ratio if self.latency_ratio else float("nan")

    def to_dict(self) -> dict:
        d = {
            "schema": REPORT_SCHEMA,
            "schema_version": REPORT_SCHEMA_VERSION,
            "data": self.data,
            "runtime": self.runtime,
            "models": {"fp32": asdict(self.fp32), "int8": asdict(self.int8)},
            "comparison": {
                "top1_agreement": self.agreement,
                "output_sqnr_db": None if self.sqnr_db is None or math.isinf(self.sqnr_db) else round(self.sqnr_db, 3),
                "size_ratio": round(self.size_ratio, 4),
                "latency_ratio": round(self.latency_ratio, 4),
                "speedup": round(self.speedup, 4),
                "accuracy_drop": None if self.accuracy_drop is None else round(self.accuracy_drop, 4),
                "accuracy_drop_ci95": None if self.drop_ci is None else [round(v, 4) for v in self.drop_ci],
                "worst_class": self.per_class[0] if self.per_class else None,
                "per_class": self.per_class,
            },
            "gate": {**asdict(self.budgets), **self.gate.to_dict()},
            "versions": self.versions,
        }
        d.update(self.extra)
        return d

    def to_markdown(self) -> str:
        def pct(v):
            return "—" if v is None else f"{100 * v:.2f}%"

        f, i = self.fp32, self.int8
        unit = "pp" if self.budgets.drop_type == "absolute" else "% rel."
        lines = [
            "# edgefuse validation report",
            "",
            f"Data: {self.data.get('source')} ({self.data.get('split')} split, {self.data.get('samples')} images). "
            f"Runtime: {self.runtime.get('engine', 'onnxruntime')} "
            f"{self.runtime.get('engine_version') or self.runtime.get('onnxruntime')} "
            f"CPU, {self.runtime.get('threads')} thread(s), "
            f"batch 1, {f.latency.get('runs')} interleaved runs. CPU: {self.runtime.get('cpu')}.",
            "",
            "| | fp32 | int8 |",
            "|---|---|---|",
            f"| file | `{f.file}` | `{i.file}` |",
            f"| top-1 | {pct(f.top1)} | {pct(i.top1)} |",
        ]
        if f.top5 is not None:
            lines.append(f"| top-5 | {pct(f.top5)} | {pct(i.top5)} |")
        lines += [
            f"| size | {f.bytes / 1024:.1f} KiB | {i.bytes / 1024:.1f} KiB ({self.size_ratio:.2f}×) |",
            f"| latency median | {f.latency['median_ms']:.3f} ms | {i.latency['median_ms']:.3f} ms |",
            f"| latency p90 | {f.latency['p90_ms']:.3f} ms | {i.latency['p90_ms']:.3f} ms |",
            "",
            f"- int8 / fp32 latency: **{self.latency_ratio:.3f}** (int8 is "
            + (f"{self.speedup:.2f}× faster)" if self.latency_ratio < 1 else f"{1 / self.speedup:.2f}× slower)")
            + rounds_note(self.runtime.get("latency_rounds")),
            f"- top-1 agreement: {pct(self.agreement)}; output SQNR: "
            + ("—" if self.sqnr_db is None else f"{self.sqnr_db:.1f} dB"),
            "- accuracy drop: " + ("—" if self.accuracy_drop is None else f"{self.accuracy_drop:.2f} {unit}")
            + ("" if self.drop_ci is None else
               f" (bootstrap 95% CI {self.drop_ci[0]:.2f} … {self.drop_ci[1]:.2f}, {self.data.get('samples')} images)"),
        ]
        if self.per_class:
            w = self.per_class[0]
            lines.append(f"- worst class: {w['class']} ({w['samples']} images): {pct(w['fp32_top1'])} → "
                         f"{pct(w['int8_top1'])} ({w['drop_pp']:+.2f} pp)")
        lines += [
            "",
            f"## Gate: {'PASSED' if self.passed else 'FAILED'}",
            "",
            f"- max drop: {self.budgets.max_drop if self.budgets.max_drop is not None else 'not gated'}"
            + (f" {unit}, compared with the drop's "
               + ("measured value" if self.budgets.drop_bound == "estimate" else "95% CI upper end")
               if self.budgets.max_drop is not None else ""),
            f"- max latency ratio: {_or_not_gated(self.budgets.max_latency_ratio)}",
            f"- min int8 output SQNR: {_or_not_gated(self.budgets.min_sqnr_db, ' dB')}",
        ]
        if self.extra.get("pytorch_agreement") is not None:
            floor = self.budgets.min_artifact_agreement
            lines.append("- min agreement of every file with its PyTorch program: "
                         + (f"{100 * floor:g}%" if floor is not None else "not gated"))
        lines += [f"- **{msg}**" for msg in self.failures]
        if self.extra.get("formats"):
            lines += ["", "## Every shipped format", "",
                      "| format | runtime | fp32 top-1 | int8 top-1 | agreement | fp32 ms | int8 ms | int8 speed-up | gate |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for fmt, r in self.extra["formats"].items():
                lines.append(
                    f"| {fmt} | {r['engine']} | {pct(r['fp32_top1'])} | {pct(r['int8_top1'])} | {pct(r['agreement'])} | "
                    f"{r['fp32_ms']:.3f} | {r['int8_ms']:.3f} | {r['speedup']:.2f}× | "
                    f"{'passed' if r['passed'] else 'FAILED'} |")
        if self.extra.get("pytorch_agreement"):
            lines += ["", "## Each artifact against PyTorch (top-1 agreement on the evaluation split)", ""]
            lines += [f"- `{f}`: {pct(v)}" for f, v in self.extra["pytorch_agreement"].items()]
        if self.extra.get("op_check"):
            lines += ["", "## Files below the agreement floor, checked op for op", ""]
            lines += [f"- {op_check_summary(c)}" for c in self.extra["op_check"].values()]
        if self.extra.get("latency_precision"):
            lines += ["", "## Latency-aware precision (measured on this CPU)", ""]
            lines += [f"- `{f}`: {latency_precision_summary(c)}" for f, c in self.extra["latency_precision"].items()]
        if self.extra.get("padded_depthwise"):
            lines += ["", "## Depthwise convs fitted to onnxruntime's int8 kernel", ""]
            lines += [f"- `{f}`: {padding_summary(n)}" for f, n in self.extra["padded_depthwise"].items()]
        if self.extra.get("delegation"):
            lines += ["", "## ExecuTorch: what XNNPACK runs", ""]
            for f, d in self.extra["delegation"].items():
                left = ", ".join(f"{op} ×{n}" for op, n in d["portable_ops"].items()) or "none"
                lines.append(f"- `{f}`: {d['delegated_nodes']} of {d['delegated_nodes'] + d['portable_nodes']} nodes "
                             f"in {d['delegated_subgraphs']} XNNPACK subgraph(s); left to portable kernels: {left}")
        if self.extra.get("mobile_usability"):
            lines += ["", "## ONNX Runtime Mobile: NNAPI / CoreML usability", ""]
            for f, u in self.extra["mobile_usability"].items():
                verdicts = ", ".join(f"{ep} {r['verdict']} ({r['supported_nodes']}/{r['nodes']} nodes, "
                                     f"{r['partitions']} partitions)" for ep, r in u.items() if ep != "limit")
                lines.append(f"- `{f}`: {verdicts}")
            lines.append(f"- limit: {next(iter(self.extra['mobile_usability'].values()))['limit']}")
        fb = self.extra.get("fp32_fallback")
        if fb:
            lines += ["", "## fp32 fallback (--max-drop)", "", fallback_summary(fb)]
            lat = fb.get("latency_ms") or {}
            if fb.get("kept_fp32"):
                lines += ["", f"| module kept in fp32 | {fb['split']} top-1 after | int8 ms after | latency cost |",
                          "|---|---|---|---|"]
                tops = {tuple(s["kept_fp32"]): s["top1"] for s in fb.get("steps", [])}
                timed = lat.get("steps") or []
                for i, m in enumerate(fb["kept_fp32"]):
                    top = tops.get(tuple(fb["kept_fp32"][: i + 1]))
                    cost = (f"{timed[i]['ms']:.3f} | {timed[i]['cost_ms']:+.3f} ms" if i < len(timed) else "— | —")
                    lines.append(f"| `{m}` | {pct(top)} | {cost} |")
                if lat:
                    lines.append(f"\nAll-int8 build: {lat['all_int8_ms']:.3f} ms; with the fallback: {lat['final_ms']:.3f} ms "
                                 f"(onnxruntime, {lat['threads']} thread(s), interleaved medians).")
        if self.extra.get("baseline"):
            b = self.extra["baseline"]
            lines += ["", "## Against the baseline report", "",
                      f"- baseline int8 top-1 {pct(b['int8_top1'])}, latency ratio "
                      f"{'—' if b['latency_ratio'] is None else format(b['latency_ratio'], '.3f')}; allowed: "
                      f"{self.budgets.baseline_tolerance:g} pp top-1, "
                      f"{100 * self.budgets.baseline_latency_tolerance:.0f}% ratio"]
        if self.extra.get("doctor"):
            lines += ["", "## Why int8 is not faster (edgefuse doctor)", "", self.extra["doctor"]]
        if self.extra.get("notes"):
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.extra["notes"]]
        return "\n".join(lines) + "\n"


def _or_not_gated(value, unit: str = "") -> str:
    return "not gated" if value is None else f"{value:g}{unit}"


def op_check_summary(c: dict) -> str:
    """One sentence on the op-by-op check of a file below the agreement floor
    (:func:`edgefuse.validate.shipped.check_below_floor`)."""
    f = f"`{c['file']}`"
    if "same_as" in c:
        return (f"{f}: converted from `{c['same_as']}`, which passed the op-by-op check, and agrees with it on "
                f"{100 * c['agreement_with_it']:.2f}% of the images" + ("" if c["passed"] else " -- too few: refused"))
    if not c["passed"]:
        return f"{f}: the op-by-op check did not clear it ({c['reason']})"
    return (f"{f}: each of its {c['paired']} quantized tensors, recomputed by the program from the file's own input "
            f"codes on {c['images']} images, matches (at most {100 * c['worst_fraction']:.3f}% of a tensor's codes one "
            f"step apart, worst: {c['worst_tensor']}; outputs within {100 * c['output_error']:.3f}% of their range). "
            "The file computes its program op for op; its end-to-end differences are one-step roundings on boundary "
            "values, carried through the network")


def rounds_note(ratios: list[float] | None) -> str:
    """What a re-timed latency ratio was made of (:func:`edgefuse.runtimes.timing.confirmed_ratio`); empty
    when one round was enough."""
    if not ratios or len(ratios) < 2:
        return ""
    seen = (", ".join(f"{r:.3f}" for r in ratios) if len(ratios) <= 8 else
            f"{min(ratios):.3f} to {max(ratios):.3f}, median {sorted(ratios)[len(ratios) // 2]:.3f}")
    return (f"; the first round's {ratios[0]:.3f} was over budget, so it was timed {len(ratios)} times over "
            f"several seconds ({seen}) and the quietest round (least total time) is reported")


def latency_precision_summary(c: dict) -> str:
    """One sentence on what the latency-aware precision search chose (``Artifact.details["latency_precision"]``)."""
    ms = c.get("candidates_ms", {})
    ref = f"fp32 file {ms['fp32']:.3f} ms" if "fp32" in ms else "fp32 not timed"
    if c.get("chosen", "all int8") == "all int8":
        tried = len([k for k in ms if k not in ("fp32", "all int8")])
        if "fp32" in ms and ms.get("all int8", float("inf")) < PAYS * ms["fp32"]:
            why = f"int8 at least {1 / PAYS:.1f}x faster, nothing else timed"
        else:
            why = f"no fp32 prefix was faster ({tried} timed)" if tried else "no fp32 prefix to try"
        return f"every layer int8 ({ms.get('all int8', float('nan')):.3f} ms; {ref}; {why})."
    return (f"{c['chosen']}: {len(c['fp32_modules'])} module(s), {c['fp32_weight_nodes']} conv/linear weights in fp32; "
            f"{ms[c['chosen']]:.3f} ms against {ms['all int8']:.3f} ms all int8 ({ref}), batch 1, "
            f"{c['threads']} thread(s), {c['runs']} interleaved runs.")


def padding_summary(n: int) -> str:
    """One sentence on the depthwise convs :mod:`edgefuse.export.channel_padding` widened in a file."""
    return (f"{n} int8 depthwise conv(s) widened to {CHANNEL_BLOCK}-channel blocks with zero-weight channels, for "
            "onnxruntime's fast int8 depthwise kernel (exact: every real channel keeps its codes).")


def fallback_summary(fb: dict) -> str:
    """One sentence on what the fp32 fallback did."""
    before = 100 * (fb["fp32_top1"] - fb["before_top1"])
    after = 100 * (fb["fp32_top1"] - fb["after_top1"])
    kept = fb.get("kept_fp32") or []
    verdict = "within" if fb.get("met") else "STILL ABOVE"
    return (f"On the {fb['split']} split the all-int8 build dropped {before:.2f} pp (budget {fb['budget_pp']:.2f} pp); "
            f"with {len(kept)} module(s) kept in fp32 ({', '.join(kept) or 'none'}) it drops {after:.2f} pp, "
            f"{verdict} budget. The test split gates the result.")
