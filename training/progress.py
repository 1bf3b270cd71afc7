"""The progress callback every long-running ML function accepts: (done, total, message)."""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Callable[[int, int, str], None]


def report(progress: Optional[ProgressCallback], done: int, total: int, message: str) -> None:
    if progress is not None:
        progress(done, total, message)
