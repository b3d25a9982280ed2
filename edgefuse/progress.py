"""A tiny progress protocol: library code reports progress, the CLI decides how to show it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, task: str, total: int) -> None: ...

    def advance(self, task: str, n: int = 1, **info: object) -> None: ...

    def finish(self, task: str) -> None: ...


class NullProgress:
    """Reports nothing (library default)."""

    def start(self, task: str, total: int) -> None:
        pass

    def advance(self, task: str, n: int = 1, **info: object) -> None:
        pass

    def finish(self, task: str) -> None:
        pass
