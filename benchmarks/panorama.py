"""Panorama depth speed and memory on the CPU: a 4096x2048 equirectangular panorama with Depth Anything V2 Small
(random weights, built like the tests do: speed does not depend on their values), fp32, native resolution.

Baseline, in the same process: the same network run once on the whole equirectangular image (what a user gets
without panorama mode: one 518x1036 pass, bent lines and a seam). Panorama mode runs the network on every view,
so its cost is about (number of views) x (one square pass) plus the sampling, alignment and blending, which are
timed separately from the progress reports.

    .venv/bin/python benchmarks/panorama.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine_line, peak_memory  # noqa: E402

from depth_core.estimate import DepthEstimator  # noqa: E402
from depth_core.models import depth_anything_v2  # noqa: E402
from depth_core.panorama import estimate_panorama_depth  # noqa: E402

HEIGHT, WIDTH = 2048, 4096


def panorama() -> torch.Tensor:
    """A real photo mirrored side by side and scaled to 4096x2048, so its edges meet like a panorama's."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).float().div(255.0).permute(2, 0, 1)[None]
    half = torch.nn.functional.interpolate(photo, size=(HEIGHT, WIDTH // 2), mode="bilinear", align_corners=False)
    return torch.cat([half, half.flip(-1)], dim=-1).permute(0, 2, 3, 1).clamp(0, 1).contiguous()


def main() -> None:
    print(machine_line())
    torch.manual_seed(0)
    estimator = DepthEstimator(depth_anything_v2.KNOWN_MODELS[0].card, depth_anything_v2.build(depth_anything_v2.SMALL))
    image = panorama()
    with peak_memory() as memory:
        start = time.perf_counter()
        estimator.predict(image)
        baseline = time.perf_counter() - start
    print(f"baseline, one pass on the whole 4096x2048 image: {baseline:6.1f} s, peak +{memory.added_mib:6.0f} MiB")
    for views in ("cube", "icosahedral"):
        marks: list[float] = []
        with peak_memory() as memory:
            start = time.perf_counter()
            _, report = estimate_panorama_depth(estimator, image, view_set_name=views,
                                                progress=lambda done, total: marks.append(time.perf_counter()))
            total = time.perf_counter() - start
        sampling, network, assembly = marks[0] - start, marks[1] - marks[0], marks[2] - marks[1]
        print(f"{views:11s} {report.views:2d} views of {report.view_size}px: {total:6.1f} s "
              f"({total / baseline:4.1f}x the baseline; sampling {sampling:.1f} s, network {network:.1f} s = "
              f"{network / report.views:.2f} s/view, alignment + blending {assembly:.1f} s), "
              f"peak +{memory.added_mib:6.0f} MiB, process peak {memory.peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
