"""A one-line progress bar on stderr, redrawn at most a few times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
REDRAW_INTERVAL_S = 0.2


class ProgressBar:
    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self._label = label
        self._total = total
        self._stream = stream
        self._done = 0
        self._errors = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._draw()

    def advance(self, errors: int = 0) -> None:
        self._done += 1
        self._errors += errors
        if time.monotonic() - self._drawn >= REDRAW_INTERVAL_S or self._done == self._total:
            self._draw()

    def close(self) -> None:
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        filled = BAR_WIDTH * self._done // max(self._total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        elapsed = self._drawn - self._started
        errors = f"  errors {self._errors}" if self._errors else ""
        self._stream.write(f"\r{self._label} [{bar}] {self._done}/{self._total} "
                           f"{elapsed:6.1f}s{errors}")
        self._stream.flush()
