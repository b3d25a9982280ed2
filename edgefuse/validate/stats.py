"""The statistics behind the gate: a paired bootstrap interval for the accuracy drop, per-class drops,
and the comparison with a stored baseline report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefuse.errors import InputFileError, UsageError
from edgefuse.validate.gate import latency_ratio_change
from edgefuse.validate.report import REPORT_SCHEMA


def bootstrap_drop_ci(
    fp32_correct: np.ndarray,
    int8_correct: np.ndarray,
    *,
    drop_type: str = "absolute",
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the top-1 drop, resampling images (paired: fp32 and int8 see
    the same resample).

    Each image falls in one of four cells (fp32 right/wrong x int8 right/wrong), so a resample of n
    images is one multinomial draw of the four cell counts: exact, and O(resamples) for any n.

    Args:
        fp32_correct, int8_correct: per-image booleans.
        drop_type: ``absolute`` (percentage points) or ``relative`` (percent of the fp32 accuracy).

    Returns:
        ``(low, high)`` in the unit of ``drop_type``.
    """
    f = np.asarray(fp32_correct, bool)
    q = np.asarray(int8_correct, bool)
    if f.shape != q.shape or f.ndim != 1 or len(f) == 0:
        raise UsageError("bootstrap needs two equal-length, non-empty vectors of per-image results")
    n = len(f)
    cells = np.array([(f & q).sum(), (f & ~q).sum(), (~f & q).sum(), (~f & ~q).sum()], dtype=np.float64)
    draws = np.random.default_rng(seed).multinomial(n, cells / n, size=resamples)
    acc_f = (draws[:, 0] + draws[:, 1]) / n
    acc_q = (draws[:, 0] + draws[:, 2]) / n
    pp = 100.0 * (acc_f - acc_q)
    if drop_type == "relative":
        with np.errstate(divide="ignore", invalid="ignore"):
            pp = np.where(acc_f > 0, 100.0 * pp / (100.0 * acc_f), 0.0)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(pp, [alpha, 1 - alpha])
    return float(lo), float(hi)


def per_class_drops(labels: np.ndarray, fp32_pred: np.ndarray, int8_pred: np.ndarray,
                    class_names: list[str] | None = None) -> list[dict]:
    """Top-1 per class for fp32 and int8, and the drop in percentage points, worst first."""
    rows = []
    for c in np.unique(labels):
        m = labels == c
        af, aq = float((fp32_pred[m] == c).mean()), float((int8_pred[m] == c).mean())
        name = class_names[c] if class_names and c < len(class_names) else str(int(c))
        rows.append({"class": name, "samples": int(m.sum()), "fp32_top1": af, "int8_top1": aq,
                     "drop_pp": 100.0 * (af - aq)})
    rows.sort(key=lambda r: (-r["drop_pp"], r["class"]))
    return rows


def load_baseline(path: str | Path) -> dict:
    """Read a stored ``report.json`` to compare against (``--baseline``)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"baseline report {p} does not exist")
    try:
        d = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"baseline {p} is not a JSON report ({e})") from None
    if not isinstance(d, dict) or d.get("schema") != REPORT_SCHEMA:
        raise InputFileError(f"baseline {p} is not an edgefuse report.json (no schema {REPORT_SCHEMA!r})")
    try:
        top1, ratio, samples = d["models"]["int8"]["top1"], d["comparison"]["latency_ratio"], d["data"]["samples"]
    except (KeyError, TypeError):
        raise InputFileError(f"baseline {p} lacks models.int8.top1 / comparison.latency_ratio / data.samples") from None

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    # A hand-edited report must fail here, in one line, not as a TypeError inside the comparison.
    if not ((top1 is None or (number(top1) and 0 <= top1 <= 1)) and (ratio is None or (number(ratio) and ratio > 0))
            and isinstance(samples, int) and not isinstance(samples, bool)
            and isinstance(d["data"].get("source"), (str, type(None)))):
        raise InputFileError(f"baseline {p} holds invalid values (models.int8.top1 must be in [0, 1] or null, "
                             "comparison.latency_ratio > 0 or null, data.samples an integer, data.source a string)")
    return d


def compare_baseline(baseline: dict, *, int8_top1: float | None, latency_ratio: float, samples: int,
                     source: str | None) -> dict:
    """Set a run beside a stored report: the baseline's figures, the fall of int8 top-1 below it in
    percentage points (``top1_regression_pp``) and the relative rise of the latency ratio
    (``latency_ratio_change``); the gate holds these to the budgets. Comparing different data is a usage
    error."""
    b_samples, b_source = baseline["data"].get("samples"), baseline["data"].get("source")
    if b_samples != samples or (b_source and source and b_source != source):
        raise UsageError(f"--baseline was measured on other data ({b_source}, {b_samples} samples; "
                         f"this run: {source}, {samples}); compare reports of the same evaluation split")
    b_top1 = baseline["models"]["int8"]["top1"]
    b_ratio = baseline["comparison"]["latency_ratio"]
    cmp = {"int8_top1": b_top1, "latency_ratio": b_ratio}
    if b_top1 is not None and int8_top1 is not None:
        cmp["top1_regression_pp"] = 100.0 * (b_top1 - int8_top1)
    change = latency_ratio_change(latency_ratio, b_ratio)
    if change is not None:
        cmp["latency_ratio_change"] = change
    return cmp
