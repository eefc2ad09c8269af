"""Small measuring helpers shared by the benchmark scripts: wall time and peak resident memory of a call."""
from __future__ import annotations

import os
import platform
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


@dataclass
class PeakMemory:
    start: int = 0
    peak: int = 0

    @property
    def added_mib(self) -> float:
        return (self.peak - self.start) / 2**20


@contextmanager
def peak_memory(interval_s: float = 0.002) -> Iterator[PeakMemory]:
    """Peak resident memory while the block runs, sampled on a thread (torch's CPU allocations bypass tracemalloc)."""
    record = PeakMemory(resident_bytes(), resident_bytes())
    running = True

    def sample() -> None:
        while running:
            record.peak = max(record.peak, resident_bytes())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield record
    finally:
        running = False
        sampler.join()
        record.peak = max(record.peak, resident_bytes())


def best_time(run: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_line() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
