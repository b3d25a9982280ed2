"""Accuracy and agreement metrics on logits."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
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
