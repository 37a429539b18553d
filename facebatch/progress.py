"""A one-line progress bar for terminals; silent everywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_SECONDS = 0.2


class ProgressBar:
    """Items done of total (faces found, errors when given), items/s and time left; redrawn in place."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool | None = None, unit: str = "photos") -> None:
        self.stream = stream
        self.unit = unit
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started: float | None = None  # at the first update: the rate leaves out start-up
        self.last_drawn = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int, faces: int | None = None, errors: int = 0) -> None:
        now = time.monotonic()
        self.started = self.started or now
        if not self.enabled or (now - self.last_drawn < REDRAW_SECONDS and done < total):
            return
        self.last_drawn = now
        self.stream.write("\r" + render(done, total, faces, errors, now - self.started, self.unit) + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def render(done: int, total: int, faces: int | None, errors: int, elapsed: float, unit: str = "photos") -> str:
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    rate = done / elapsed if elapsed > 0 else 0.0
    left = f"{format_seconds((total - done) / rate)} left" if rate > 0 and done < total else ""
    parts = [f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {unit}"]
    if faces is not None:
        parts.append(f"{faces} faces")
    if errors:
        parts.append(f"{errors} errors")
    parts.append(f"{rate:.1f} {unit}/s")
    if left:
        parts.append(left)
    return "  ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
