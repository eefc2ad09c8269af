"""Progress reporting without a dependency on ComfyUI.

Long loops in depth_core take a `ProgressFn` and call it as `progress(done, total)`. The ComfyUI nodes pass one
that drives a ComfyUI progress bar and raises when the user cancels, so every progress call is also an interrupt
point; outside ComfyUI the default does nothing.
"""
from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The default ProgressFn: report nothing, never interrupt."""
