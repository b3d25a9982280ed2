"""Side-by-side CPU latency: callables timed interleaved in one run, so all see the same machine state."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgefuse.progress import NullProgress, Progress


def interleaved_latency(
    runners: dict[str, Callable[[], object]],
    runs: int = 100,
    warmup: int = 10,
    progress: Progress = NullProgress(),
) -> dict[str, dict[str, float]]:
    """Time each runner ``runs`` times, alternating between them, after ``warmup`` calls each.

    Returns:
        ``{name: {"median_ms", "p90_ms", "mean_ms", "runs", "samples_ms"}}``; ``samples_ms`` is every timed
        run in order (0.1 us resolution), for distributions in reports.
    """
    names = list(runners)
    for _ in range(warmup):
        for n in names:
            runners[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    progress.start("benchmark", runs)
    try:
        for i in range(runs):
            # Alternate the order too, so neither model always runs on a cache warmed by the other.
            for n in names if i % 2 == 0 else reversed(names):
                t0 = time.perf_counter()
                runners[n]()
                times[n].append((time.perf_counter() - t0) * 1e3)
            progress.advance("benchmark")
    finally:
        progress.finish("benchmark")
    return {
        n: {
            "median_ms": float(np.median(t)),
            "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(np.mean(t)),
            "runs": len(t),
            "samples_ms": [round(v, 4) for v in t],
        }
        for n, t in times.items()
    }
