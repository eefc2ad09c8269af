"""Stereo view synthesis on real data: skimage.data.stereo_motorcycle() (Middlebury 2014 Motorcycle).

Synthesizes the real right view from the left photo and its ground-truth disparity (invalid disparity filled by
linear interpolation along each row) with every fill mode, and prints the PSNR over all pixels and channels
(uint8, data range 255) against the real right photo, plus the throughput for a full stereo pair (both eyes
warped, in megapixels of the input image per second) and peak memory.

Reference figures of the old depthmap extension on this task: best fill (polylines_sharp) 22.65 dB, simplest
fill 16.65 dB, unchanged left photo 12.65 dB, about 2 MP/s for a pair.

    .venv/bin/python benchmarks/stereo.py [--repeats 15] [--threads N]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine_line, peak_memory  # noqa: E402
from depth_core.stereo import FILL_MODES, fill_invalid_along_rows, warp_by_disparity  # noqa: E402

OLD_EXTENSION_PAIR_MPS = 2.0
OLD_EXTENSION_BEST_DB = 22.65


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(255.0 ** 2 / mse)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed stereo pairs per fill mode (best and median)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    height, width = disparity.shape
    megapixels = height * width / 1e6
    image = torch.from_numpy(left).float().permute(2, 0, 1)[None] / 255.0
    filled = fill_invalid_along_rows(torch.from_numpy(np.asarray(disparity, dtype=np.float32)))[None]
    invalid = float((~np.isfinite(disparity)).mean())
    print(f"motorcycle {width}x{height} ({megapixels:.3f} MP), {invalid:.1%} invalid disparity filled along rows; "
          f"{machine_line()}")
    print("A pair = left and right eye warped from the same image (what StereoSBS does per frame). MP/s = input "
          "megapixels per second; wall = perf_counter (best / median of the repeats); CPU = process time per pair "
          "(all threads), the cost of the work itself on a machine shared with other jobs.")
    with peak_memory() as memory:   # first, while nothing has been warped yet in this process
        warp_by_disparity(image, filled, "left", "background")
        warp_by_disparity(image, filled, "right", "background")
    print(f"peak memory above the inputs for the first pair (background fill): {memory.added_mib:.1f} MiB "
          f"(input image {image.numel() * 4 / 2**20:.1f} MiB as float32)")
    print(f"unchanged left photo: {psnr_uint8(left, right):.2f} dB (reference 12.65 dB)")
    print(f"{'fill':16s} {'PSNR dB':>8s} {'wall best ms':>13s} {'wall median ms':>15s} {'CPU ms':>8s} "
          f"{'MP/s best':>10s} {'MP/s median':>12s} {'MP/s CPU':>9s} {'CPU MP/s / old 2':>17s}")
    best_fill, best_db = None, -1.0
    for fill in FILL_MODES:
        view = warp_by_disparity(image, filled, "right", fill).images[0]
        db = psnr_uint8(to_uint8(view), right)
        if db > best_db:
            best_fill, best_db = fill, db
        times = []
        cpu_start = time.process_time()
        for _ in range(args.repeats):
            start = time.perf_counter()
            warp_by_disparity(image, filled, "left", fill)
            warp_by_disparity(image, filled, "right", fill)
            times.append(time.perf_counter() - start)
        cpu = (time.process_time() - cpu_start) / args.repeats
        best, median = min(times), statistics.median(times)
        print(f"{fill:16s} {db:8.2f} {best * 1e3:13.1f} {median * 1e3:15.1f} {cpu * 1e3:8.1f} "
              f"{megapixels / best:10.1f} {megapixels / median:12.1f} {megapixels / cpu:9.1f} "
              f"{megapixels / cpu / OLD_EXTENSION_PAIR_MPS:17.1f}")
    print(f"best fill: {best_fill} {best_db:.2f} dB (old extension's best: {OLD_EXTENSION_BEST_DB} dB, "
          f"{best_db - OLD_EXTENSION_BEST_DB:+.2f} dB)")


if __name__ == "__main__":
    main()
