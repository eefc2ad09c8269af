"""Progress reporting without a dependency on ComfyUI.

Long loops in depth_core take a `ProgressFn` and call it as `progress(done, total)`. The ComfyUI nodes pass one
that drives a ComfyUI progress bar and raises when the user cancels, so every progress call is also an interrupt
point; outside ComfyUI the default does nothing.
"""
from __future__ import annotations

import time
from typing import Callable

ProgressFn = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The default ProgressFn: report nothing, never interrupt."""


class RateMeter:
    """Frames done out of a total, their rate and the time left, for progress lines of long runs. Frames found
    already done (a resumed run) count towards the total but not towards the rate."""

    def __init__(self, total: int) -> None:
        self._clock = time.perf_counter
        self.total, self.done, self.resumed = total, 0, 0
        self.started = self._clock()

    def skip(self, frames: int) -> None:
        self.done += frames
        self.resumed += frames

    def advance(self, frames: int) -> None:
        self.done += frames

    @property
    def fps(self) -> float:
        elapsed = self._clock() - self.started
        return (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        fps = self.fps
        return (self.total - self.done) / fps if fps > 0 else None

    def line(self) -> str:
        left = self.seconds_left
        eta = "--:--" if left is None else f"{int(left) // 60:02d}:{int(left) % 60:02d}"
        percent = 100 * self.done // max(1, self.total)
        return f"{percent:3d}% {self.done}/{self.total} frames, {self.fps:.1f} fps, {eta} left"
