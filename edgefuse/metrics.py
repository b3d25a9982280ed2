"""Accuracy, agreement and SQNR on logits, accuracy drops, and the one tolerance budgets are compared with."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    # A stable sort breaks ties as argmax does (first index): int8 logits tie often, and an unstable sort
    # made top-1 disagree with the argmax-based drop interval and agreement by an image now and then.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of inputs where two models' top-1 classes agree."""
    return float((a.argmax(1) == b.argmax(1)).mean())


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference``, in dB (higher is better)."""
    noise = float(np.mean((reference.astype(np.float64) - test) ** 2))
    signal = float(np.mean(reference.astype(np.float64) ** 2))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


#: Budgets in percentage points are compared with this slack: a drop computed as 100 * (a - b) from two
#: accuracies that are ratios of image counts is exact only to float rounding (0.5 may come out 0.5000000001).
BUDGET_EPS = 1e-9


def within(value: float, budget: float) -> bool:
    """``value <= budget`` up to float rounding (:data:`BUDGET_EPS`)."""
    return value <= budget + BUDGET_EPS


def drop_of(fp32_top1: float, int8_top1: float, drop_type: str) -> float:
    """Accuracy drop in percentage points (absolute) or percent of fp32 (relative); negative = int8 better."""
    pp = 100.0 * (fp32_top1 - int8_top1)
    return pp if drop_type == "absolute" else (100.0 * pp / (100.0 * fp32_top1) if fp32_top1 > 0 else 0.0)
