"""The validation report (``report.json``, schema ``edgefuse.report`` v1), its Markdown form, and the gate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgefuse.errors import UsageError
from edgefuse.metrics import drop_of, within  # noqa: F401 -- drop_of: the report's own vocabulary

REPORT_SCHEMA = "edgefuse.report"
REPORT_SCHEMA_VERSION = 1
#: The gate's label-free floors (see :class:`Budgets`).
DEFAULT_MIN_SQNR_DB = 10.0
DEFAULT_MIN_ARTIFACT_AGREEMENT = 0.99


@dataclass(frozen=True)
class Budgets:
    """What the gate enforces.

    Attributes:
        max_drop: largest allowed top-1 drop of int8 below fp32, in percentage points (``absolute``:
            fp32 98.0% -> int8 97.6% is 0.4) or percent of the fp32 accuracy (``relative``:
            0.4 / 98.0 = 0.41%); ``None`` = not gated.
        drop_type: ``absolute`` or ``relative``.
        max_latency_ratio: largest allowed int8 median latency / fp32 median latency (1.0 = int8 must
            not be slower); ``None`` = not gated.
        drop_bound: what is compared with ``max_drop``: ``estimate`` (the measured drop) or ``upper``
            (the upper end of its bootstrap 95% interval: passes only if the data show the drop is
            within budget, so small evaluation sets fail unless int8 agrees with fp32 almost everywhere).
        min_samples: refuse (usage error, exit 2) to gate on fewer evaluation images than this.
        min_sqnr_db: smallest allowed SQNR of the int8 logits against the fp32 logits, in dB; it needs no
            labels, so it also catches a collapsed int8 build of an untrained model or on unlabelled data.
            Working int8 builds measure 14-40 dB; 10 dB means the error carries a tenth of the logits'
            power. ``None`` = not gated.
        min_artifact_agreement: smallest allowed top-1 agreement (0..1) of every exported file with the
            PyTorch program it was exported from (``export`` only): below it the file does not compute what
            was quantized, whatever its accuracy. ``None`` = not gated.
        baseline_latency_tolerance: with ``--baseline``, the largest allowed relative rise of the int8/fp32
            latency ratio above the stored report's (0.10 = 10 %); two runs of the same files on one machine
            differ by a few percent, more on a shared one.
    """

    max_drop: float | None = None
    drop_type: str = "absolute"
    max_latency_ratio: float | None = 1.0
    drop_bound: str = "estimate"
    min_samples: int = 0
    min_sqnr_db: float | None = DEFAULT_MIN_SQNR_DB
    min_artifact_agreement: float | None = DEFAULT_MIN_ARTIFACT_AGREEMENT
    baseline_latency_tolerance: float = 0.10

    def __post_init__(self) -> None:
        if self.max_drop is not None and (not math.isfinite(self.max_drop) or self.max_drop < 0):
            raise UsageError(f"--max-drop must be a number >= 0 (percentage points), got {self.max_drop}")
        if self.drop_type not in ("absolute", "relative"):
            raise UsageError(f"--drop-type must be absolute or relative, got {self.drop_type!r}")
        if self.max_latency_ratio is not None and (not math.isfinite(self.max_latency_ratio) or self.max_latency_ratio <= 0):
            raise UsageError(f"--max-latency-ratio must be > 0, got {self.max_latency_ratio}")
        if self.drop_bound not in ("estimate", "upper"):
            raise UsageError(f"--drop-bound must be estimate or upper, got {self.drop_bound!r}")
        if self.min_samples < 0:
            raise UsageError(f"--min-samples must be >= 0, got {self.min_samples}")
        if self.min_sqnr_db is not None and not math.isfinite(self.min_sqnr_db):
            raise UsageError(f"--min-sqnr must be a finite number of dB, got {self.min_sqnr_db}")
        if not (math.isfinite(self.baseline_latency_tolerance) and self.baseline_latency_tolerance >= 0):
            raise UsageError(f"--baseline-latency-tolerance must be a fraction >= 0 (0.1 = 10%), "
                             f"got {self.baseline_latency_tolerance}")
        if self.min_artifact_agreement is not None and not 0 <= self.min_artifact_agreement <= 1:
            raise UsageError(f"--min-artifact-agreement must be between 0 and 1, got {self.min_artifact_agreement}")

    def require_samples(self, have: int, where: str = "the evaluation split") -> None:
        """Raise :class:`UsageError` when ``have`` evaluation images are fewer than ``min_samples``."""
        if self.min_samples and have < self.min_samples:
            raise UsageError(f"the gate needs at least {self.min_samples} evaluation images (--min-samples) but "
                             f"{where} holds {have}; a drop measured on so few is chance")


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
    failures: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    #: per-image top-1 classes ``{"fp32": array, "int8": array}`` (not serialised; lets callers compare
    #: with other programs without running the files again)
    predictions: dict | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return not self.failures

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
            "gate": {**asdict(self.budgets), "passed": self.passed, "failures": self.failures},
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
            + (f"{self.speedup:.2f}× faster)" if self.latency_ratio < 1 else f"{1 / self.speedup:.2f}× slower)"),
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
                      f"- baseline int8 top-1 {pct(b['int8_top1'])}, latency ratio {b['latency_ratio']:.3f}; "
                      f"allowed: {b['max_top1_regression_pp']:g} pp top-1, {100 * b['max_latency_regression']:.0f}% ratio"]
        if self.extra.get("doctor"):
            lines += ["", "## Why int8 is not faster (edgefuse doctor)", "", self.extra["doctor"]]
        if self.extra.get("notes"):
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.extra["notes"]]
        return "\n".join(lines) + "\n"


def _or_not_gated(value, unit: str = "") -> str:
    return "not gated" if value is None else f"{value:g}{unit}"


def fallback_summary(fb: dict) -> str:
    """One sentence on what the fp32 fallback did."""
    before = 100 * (fb["fp32_top1"] - fb["before_top1"])
    after = 100 * (fb["fp32_top1"] - fb["after_top1"])
    kept = fb.get("kept_fp32") or []
    verdict = "within" if fb.get("met") else "STILL ABOVE"
    return (f"On the {fb['split']} split the all-int8 build dropped {before:.2f} pp (budget {fb['budget_pp']:.2f} pp); "
            f"with {len(kept)} module(s) kept in fp32 ({', '.join(kept) or 'none'}) it drops {after:.2f} pp, "
            f"{verdict} budget. The test split gates the result.")


def gate_failures(budgets: Budgets, accuracy_drop: float | None, latency_ratio: float,
                  drop_ci: tuple[float, float] | None = None, sqnr_db: float | None = None,
                  int8_file: str = "int8") -> list[str]:
    """What the gate refuses: the drop (or its CI's upper end, per ``budgets.drop_bound``) above
    ``max_drop``, the latency ratio above ``max_latency_ratio``, and the int8 output SQNR below
    ``min_sqnr_db``."""
    fails = []
    unit = "pp" if budgets.drop_type == "absolute" else "% (relative)"
    if budgets.max_drop is not None and accuracy_drop is not None:
        if budgets.drop_bound == "upper" and drop_ci is not None:
            if not within(drop_ci[1], budgets.max_drop):
                fails.append(f"accuracy drop {accuracy_drop:.2f} {unit} has a 95% CI reaching {drop_ci[1]:.2f}, "
                             f"above --max-drop {budgets.max_drop:g} (--drop-bound upper)")
        elif not within(accuracy_drop, budgets.max_drop):
            fails.append(f"accuracy drop {accuracy_drop:.2f} {unit} exceeds --max-drop {budgets.max_drop:g} "
                         f"by {accuracy_drop - budgets.max_drop:.2f}")
    if budgets.max_latency_ratio is not None and latency_ratio > budgets.max_latency_ratio:
        fails.append(f"int8/fp32 latency ratio {latency_ratio:.3f} exceeds --max-latency-ratio "
                     f"{budgets.max_latency_ratio:g} by {latency_ratio - budgets.max_latency_ratio:.3f}")
    if budgets.min_sqnr_db is not None and sqnr_db is not None and sqnr_db < budgets.min_sqnr_db:
        fails.append(f"{int8_file}: int8 output SQNR {sqnr_db:.1f} dB against fp32 is below --min-sqnr "
                     f"{budgets.min_sqnr_db:g} dB: its outputs are mostly quantization error (a broken or "
                     "collapsed int8 build; `edgefuse doctor` and `edgefuse analyze` say where)")
    return fails


def artifact_failures(agreement: dict[str, float], budgets: Budgets, samples: int) -> list[str]:
    """Files whose top-1 agreement with the PyTorch program they were exported from is below
    ``budgets.min_artifact_agreement``: they do not compute what was quantized (a broken export)."""
    floor = budgets.min_artifact_agreement
    if floor is None:
        return []
    fails = []
    for name, a in agreement.items():
        if a < floor:
            hint = f"; `edgefuse doctor {name}` shows what onnxruntime runs" if name.endswith(".onnx") else ""
            fails.append(f"{name} agrees with the PyTorch program it was exported from on {100 * a:.1f}% of "
                         f"{samples} images (floor {100 * floor:g}%, --min-artifact-agreement): the file does not "
                         f"compute what was quantized{hint}")
    return fails
