"""Terminal output helpers for the CLI (rich). The library never prints; only this module does."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

out = Console()
err = Console(stderr=True)

_LABELS = {"train": "training", "calibrate": "calibrating", "qat": "QAT fine-tuning", "benchmark": "timing"}


class RichProgress:
    """Implements ``edgefuse.progress.Progress`` with rich progress bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Progress | None = None
        self._tasks: dict[str, int] = {}

    def start(self, task: str, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=err, transient=False,
            )
            self._bar.start()
        self._tasks[task] = self._bar.add_task(_LABELS.get(task, task), total=total, info="")

    def advance(self, task: str, n: int = 1, **info: object) -> None:
        if self._bar is not None and task in self._tasks:
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            self._bar.update(self._tasks[task], advance=n, info=text)

    def finish(self, task: str) -> None:
        if self._bar is not None and task in self._tasks:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[RichProgress]:
    """Progress bars for the duration of a command (closed on any exit, so the terminal is left clean)."""
    bars = RichProgress(enabled=enabled)
    try:
        yield bars
    finally:
        bars.close()
