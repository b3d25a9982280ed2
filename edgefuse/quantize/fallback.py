"""Accuracy-driven fp32 fallback: keep the most sensitive modules in fp32 until the int8 drop fits the budget."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from edgefuse.errors import DataError
from edgefuse.metrics import drop_of, within
from edgefuse.progress import NullProgress, Progress
from edgefuse.quantize.analysis import (
    batched_logits,
    exclude_pattern,
    greedy_fallback,
    module_sensitivity,
    switched_program,
    top1,
)
from edgefuse.quantize.config import QuantConfig
from edgefuse.quantize.eval_twin import eval_twin
from edgefuse.quantize.pt2e import QuantizedModel, TensorBatches, quantize_ptq, quantize_qat
from edgefuse.training import evaluate


@dataclass
class FallbackResult:
    """What the fallback did.

    Attributes:
        split: the data the modules were chosen on (never the split the gate judges).
        budget_pp: the budget in percentage points on that split.
        fp32_top1, before_top1, after_top1: accuracy on ``split`` of fp32, the all-int8 build, the final build.
        kept_fp32: modules kept in fp32, in the order they were added (most sensitive first).
        met: whether the final build is within budget on ``split``.
        steps: one record per module added (``module``, ``top1``, ``drop_pp``), measured on rebuilt programs.
        ranking: the sensitivity ranking used (most sensitive first, at most 10).
    """

    split: str
    budget_pp: float
    fp32_top1: float
    before_top1: float
    after_top1: float
    kept_fp32: list[str]
    met: bool
    steps: list[dict] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)
    latency_ms: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _top1(fn, x: torch.Tensor, y: torch.Tensor) -> float:
    return top1(batched_logits(fn, x), y)


def accuracy_fallback(
    model: torch.nn.Module,
    calibration_data,
    select_data,
    config: QuantConfig,
    quantize: Callable[[QuantConfig], QuantizedModel],
    *,
    max_drop: float,
    drop_type: str = "absolute",
    split_name: str = "val",
    max_modules: int = 12,
    before_top1: float | None = None,
    progress: Progress = NullProgress(),
) -> tuple[QuantizedModel | None, FallbackResult]:
    """Rebuild the int8 program with its most sensitive modules in fp32 until the top-1 drop on
    ``select_data`` is at most ``max_drop``.

    The ranking comes from :func:`module_sensitivity` on one calibrated switchable program; the greedy
    search runs on it (cheap), then the chosen modules are excluded for real with ``quantize`` (PTQ or
    QAT, as the caller built the original) and checked; if the real build is still over budget, the
    next-ranked modules are added one at a time, rebuilding each time.

    Args:
        model: the fp32 model.
        calibration_data: ``(input, label)`` items the int8 build calibrates on.
        select_data: labelled items the modules are chosen on (the validation split).
        config: the quantization config of the original build (its ``exclude`` is kept and extended).
        quantize: builds a :class:`QuantizedModel` from a config (the caller's PTQ or QAT).
        max_drop: the budget (percentage points, or percent of fp32 accuracy when ``drop_type`` is relative).
        before_top1: top-1 of the caller's int8 build on ``select_data`` (a QAT build differs from the PTQ
            program the ranking is measured on); default: that PTQ program's.

    Returns:
        ``(program, result)``: the rebuilt program (None when the original already fits) and a report.
    """
    n = len(select_data)
    if n == 0:
        raise DataError(f"the accuracy fallback chooses modules on the {split_name} split, which is empty")
    x = torch.stack([select_data[i][0] for i in range(n)])
    y = torch.as_tensor([int(select_data[i][1]) for i in range(n)])
    model.eval()
    fp32 = _top1(model, x, y)
    budget_pp = max_drop if drop_type == "absolute" else max_drop * fp32
    reader = TensorBatches(calibration_data, config.calib_samples, config.calib_batch_size)
    prog = switched_program(model, reader, config, progress=progress)
    sens = module_sensitivity(prog, select_data, progress=progress)
    ranking = sens.ranked()
    before = sens.int8_top1 if before_top1 is None else before_top1
    result = FallbackResult(split_name, budget_pp, fp32, before, before, [], True, ranking=ranking[:10])
    if within(100 * (fp32 - before), budget_pp):
        return None, result
    chosen, _ = greedy_fallback(prog, ranking, select_data, budget_pp, max_modules=max_modules)
    built = None
    kept = list(chosen)
    tried = set(kept)
    while True:
        cfg = replace(config, exclude=tuple(config.exclude) + tuple(exclude_pattern(k) for k in kept))
        built = quantize(cfg)
        acc = _top1(eval_twin(built.program), x, y)
        result.steps.append({"kept_fp32": list(kept), "top1": acc, "drop_pp": 100 * (fp32 - acc)})
        if within(100 * (fp32 - acc), budget_pp) or len(kept) >= max_modules:
            break
        nxt = next((m for m in ranking if m not in tried), None)
        if nxt is None:
            break
        kept.append(nxt)
        tried.add(nxt)
    result.kept_fp32, result.after_top1 = kept, acc
    result.met = within(100 * (fp32 - acc), budget_pp)
    return built, result


def fallback_within_budget(model: torch.nn.Module, quantized: QuantizedModel, calibration_data, select_data,
                           config: QuantConfig, *, max_drop: float, drop_type: str = "absolute", qat_config=None,
                           progress: Progress = NullProgress(), dist=None) -> tuple[QuantizedModel | None,
                                                                                    FallbackResult | None]:
    """:func:`accuracy_fallback` when ``quantized`` loses more than ``max_drop`` on ``select_data`` (the
    validation split), rebuilding the way ``quantized`` was built (PTQ, or QAT with ``qat_config``).

    Returns:
        ``(None, None)`` when the build is within budget (or there is nothing to select on); else the
        rebuilt program (None when none fits) and the search's record.
    """
    if len(select_data) == 0:
        return None, None
    fp32, int8 = evaluate(model, select_data), evaluate(eval_twin(quantized.program), select_data)
    if within(drop_of(fp32, int8, drop_type), max_drop):
        return None, None

    def rebuild(cfg: QuantConfig) -> QuantizedModel:
        if qat_config is not None:
            return quantize_qat(model, calibration_data, cfg, qat_config, progress=progress, dist=dist)
        return quantize_ptq(model, TensorBatches(calibration_data, cfg.calib_samples, cfg.calib_batch_size), cfg,
                            progress=progress)

    return accuracy_fallback(model, calibration_data, select_data, config, rebuild, max_drop=max_drop,
                             drop_type=drop_type, progress=progress, before_top1=int8)

