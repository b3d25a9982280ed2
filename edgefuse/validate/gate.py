"""The gate: its budgets (:class:`Budgets`), and one pure function from measured reports to a typed verdict.

Measuring (running files, timing them, comparing with PyTorch) happens elsewhere; here nothing runs, so
every rule is testable with numbers alone. A report's ``gate`` is what :func:`judge` returned for it;
``export`` judges its whole set once, after every format has been measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Collection, Mapping, Protocol

from edgefuse.errors import UsageError
from edgefuse.metrics import within

if TYPE_CHECKING:  # a type only: the gate reads its fields
    from edgefuse.quantize.fallback import FallbackResult

#: The gate's label-free floors (see :class:`Budgets`).
DEFAULT_MIN_SQNR_DB = 10.0
DEFAULT_MIN_ARTIFACT_AGREEMENT = 0.99

#: What a failure can be about (``GateFailure.check``).
CHECKS = ("accuracy_drop", "latency_ratio", "output_sqnr", "baseline_top1", "baseline_latency",
          "artifact_agreement", "fallback")


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
        baseline_tolerance: with ``--baseline``, the largest allowed fall of int8 top-1 below the stored
            report's, in percentage points.
        baseline_latency_tolerance: with ``--baseline``, the largest allowed relative rise of the int8/fp32
            latency ratio above the stored report's (0.10 = 10 %); two runs of the same files on one machine
            differ by a few percent, more on a shared one. A ratio over either latency budget is timed again
            over several seconds and the quietest round is judged
            (:func:`edgefuse.runtimes.timing.confirmed_ratio`).
    """

    max_drop: float | None = None
    drop_type: str = "absolute"
    max_latency_ratio: float | None = 1.0
    drop_bound: str = "estimate"
    min_samples: int = 0
    min_sqnr_db: float | None = DEFAULT_MIN_SQNR_DB
    min_artifact_agreement: float | None = DEFAULT_MIN_ARTIFACT_AGREEMENT
    baseline_tolerance: float = 0.0
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
        if not (math.isfinite(self.baseline_tolerance) and self.baseline_tolerance >= 0):
            raise UsageError(f"--baseline-tolerance must be a number >= 0 (percentage points), got {self.baseline_tolerance}")
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


class _File(Protocol):
    file: str
    top1: float | None


class Measured(Protocol):
    """What the gate reads of a report (:class:`edgefuse.validate.report.ValidationReport` has it)."""

    accuracy_drop: float | None
    drop_ci: tuple[float, float] | None
    latency_ratio: float
    sqnr_db: float | None
    int8: _File
    extra: dict


@dataclass(frozen=True)
class GateFailure:
    """One budget a build exceeded.

    Attributes:
        check: which rule (one of :data:`CHECKS`).
        message: the sentence a user reads (CLI, report.md, manifest).
        subject: the format or file it concerns; None for the first (primary) pair or the whole set.
        value, limit: the measured figure and the budget it was held against, in the budget's unit.
    """

    check: str
    message: str
    subject: str | None = None
    value: float | None = None
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"unknown gate check {self.check!r}; known: {', '.join(CHECKS)}")

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}" if self.subject else self.message

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("value", "limit"):  # report.json is strict JSON
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: passed when no budget was exceeded."""

    failures: tuple[GateFailure, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def messages(self) -> list[str]:
        return [str(f) for f in self.failures]

    def to_dict(self) -> dict:
        """The verdict as the manifest and report.json record it."""
        return {"passed": self.passed, "failures": self.messages, "checks": [f.to_dict() for f in self.failures]}


def latency_ratio_change(ratio: float, baseline_ratio: float | None) -> float | None:
    """The relative rise of an int8/fp32 latency ratio above a baseline's (0.1 = 10 % higher); None when
    the baseline has no finite ratio."""
    if not baseline_ratio or not math.isfinite(baseline_ratio):
        return None
    return ratio / baseline_ratio - 1.0


def _ratio_over(ratio: float, budgets: Budgets) -> bool:
    return budgets.max_latency_ratio is not None and ratio > budgets.max_latency_ratio


def _rise_over(rel: float | None, budgets: Budgets) -> bool:
    return rel is not None and rel > budgets.baseline_latency_tolerance


def latency_over_budget(ratio: float, budgets: Budgets, baseline_ratio: float | None = None) -> bool:
    """Whether a measured latency ratio fails ``--max-latency-ratio`` or, beside a baseline's ratio, the
    baseline's latency tolerance: the gate's own two latency rules, asked before the report exists, so the
    re-timing (:func:`edgefuse.runtimes.timing.confirmed_ratio`) and the verdict cannot disagree."""
    return _ratio_over(ratio, budgets) or _rise_over(latency_ratio_change(ratio, baseline_ratio), budgets)


def _pair_failures(report: Measured, budgets: Budgets, subject: str | None) -> list[GateFailure]:
    """The drop (or its interval's upper end, per ``drop_bound``), the latency ratio, the output SQNR and
    the comparison with a stored baseline, for one fp32/int8 pair."""
    fails = []
    drop, ci = report.accuracy_drop, report.drop_ci
    unit = "pp" if budgets.drop_type == "absolute" else "% (relative)"
    if budgets.max_drop is not None and drop is not None:
        if budgets.drop_bound == "upper" and ci is not None:
            if not within(ci[1], budgets.max_drop):
                fails.append(GateFailure(
                    "accuracy_drop", f"accuracy drop {drop:.2f} {unit} has a 95% CI reaching {ci[1]:.2f}, "
                    f"above --max-drop {budgets.max_drop:g} (--drop-bound upper)", subject, ci[1], budgets.max_drop))
        elif not within(drop, budgets.max_drop):
            fails.append(GateFailure(
                "accuracy_drop", f"accuracy drop {drop:.2f} {unit} exceeds --max-drop {budgets.max_drop:g} "
                f"by {drop - budgets.max_drop:.2f}", subject, drop, budgets.max_drop))
    ratio = report.latency_ratio
    if _ratio_over(ratio, budgets):
        fails.append(GateFailure(
            "latency_ratio", f"int8/fp32 latency ratio {ratio:.3f} exceeds --max-latency-ratio "
            f"{budgets.max_latency_ratio:g} by {ratio - budgets.max_latency_ratio:.3f}", subject, ratio,
            budgets.max_latency_ratio))
    sq = report.sqnr_db
    if budgets.min_sqnr_db is not None and sq is not None and sq < budgets.min_sqnr_db:
        name = report.int8.file.replace("\\", "/").rsplit("/", 1)[-1]
        fails.append(GateFailure(
            "output_sqnr", f"{name}: int8 output SQNR {sq:.1f} dB against fp32 is below --min-sqnr "
            f"{budgets.min_sqnr_db:g} dB: its outputs are mostly quantization error (a broken or collapsed int8 "
            "build; `edgefuse doctor` and `edgefuse analyze` say where)", subject, sq, budgets.min_sqnr_db))
    cmp = report.extra.get("baseline")
    if cmp:
        reg = cmp.get("top1_regression_pp")
        if reg is not None and not within(reg, budgets.baseline_tolerance):
            fails.append(GateFailure(
                "baseline_top1", f"int8 top-1 {100 * report.int8.top1:.2f}% regressed {reg:.2f} pp below the "
                f"baseline's {100 * cmp['int8_top1']:.2f}% (allowed {budgets.baseline_tolerance:g} pp)", subject,
                reg, budgets.baseline_tolerance))
        rel = cmp.get("latency_ratio_change")
        if _rise_over(rel, budgets):
            fails.append(GateFailure(
                "baseline_latency", f"int8/fp32 latency ratio {ratio:.3f} is {100 * rel:.0f}% above the baseline's "
                f"{cmp['latency_ratio']:.3f} (allowed {100 * budgets.baseline_latency_tolerance:.0f}%)", subject,
                rel, budgets.baseline_latency_tolerance))
    return fails


def _artifact_failures(agreement: Mapping[str, float], budgets: Budgets, samples: int,
                       cleared: Collection[str] = ()) -> list[GateFailure]:
    """Files whose top-1 agreement with the PyTorch program they were exported from is below the floor:
    they do not compute what was quantized (a broken export), whatever their accuracy -- unless the
    op-by-op check showed that they do (``cleared``)."""
    floor = budgets.min_artifact_agreement
    if floor is None:
        return []
    fails = []
    for name, a in agreement.items():
        if a < floor and name not in cleared:
            hint = f"; `edgefuse doctor {name}` shows what onnxruntime runs" if name.endswith(".onnx") else ""
            fails.append(GateFailure(
                "artifact_agreement", f"{name} agrees with the PyTorch program it was exported from on "
                f"{100 * a:.1f}% of {samples} images (floor {100 * floor:g}%, --min-artifact-agreement): the file "
                f"does not compute what was quantized{hint}", None, a, floor))
    return fails


def _fallback_failures(fb: FallbackResult | None) -> list[GateFailure]:
    if fb is None or fb.met:
        return []
    drop = 100 * (fb.fp32_top1 - fb.after_top1)
    return [GateFailure("fallback", f"the fp32 fallback could not bring the {fb.split}-split drop within budget: "
                                    f"{drop:.2f} pp with {len(fb.kept_fp32)} module(s) in fp32", None, drop,
                        fb.budget_pp)]


def judge(reports: Mapping[str, Measured], budgets: Budgets, *,
          agreement: Mapping[str, float] | None = None, samples: int = 0,
          fallback: FallbackResult | None = None, cleared: Collection[str] = ()) -> GateResult:
    """The gate over a measured set.

    Args:
        reports: one report per fp32/int8 pair, keyed by format (or any name); the first is the primary
            pair, whose failures read without a prefix; the others' are prefixed with their key.
        budgets: what is enforced (every report is held to these, not to the budgets it was measured with).
        agreement: each shipped file's top-1 agreement with the PyTorch program it came from.
        samples: how many images ``agreement`` was measured on (for the message).
        fallback: the fp32 fallback's outcome, when it ran; a fallback that missed its budget fails the gate.
        cleared: files below the agreement floor that :func:`edgefuse.validate.opcheck.check_ops` showed to
            compute their program op for op (their end-to-end differences are amplified rounding).

    Returns:
        Every exceeded budget, in a stable order: the pairs (in ``reports`` order), the files, the fallback.
    """
    fails: list[GateFailure] = []
    for i, (name, r) in enumerate(reports.items()):
        fails += _pair_failures(r, budgets, None if i == 0 else name)
    fails += _artifact_failures(agreement or {}, budgets, samples, cleared)
    fails += _fallback_failures(fallback)
    return GateResult(tuple(fails))
