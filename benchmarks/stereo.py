"""Stereo view synthesis on real data: skimage.data.stereo_motorcycle() (Middlebury 2014 Motorcycle).

Synthesizes the real right view from the left photo and its ground-truth disparity (invalid disparity filled by
linear interpolation along each row) with every fill mode, and prints the PSNR over all pixels and channels
(uint8, data range 255) against the real right photo, plus the throughput for a full stereo pair (both eyes
warped, in megapixels of the input image per second) and peak memory.

Reference figures of the old depthmap extension on this task: best fill (polylines_sharp) 22.65 dB, simplest
fill 16.65 dB, unchanged left photo 12.65 dB, about 2 MP/s for a pair.

    .venv/bin/python benchmarks/stereo.py [--repeats 15] [--threads N] [--baseline PATH]

--baseline PATH loads another version of depth_core/stereo.py (e.g. a copy of an earlier commit's, kept outside the
repository) as a module of this depth_core package and times it in the same process: each row then also shows the
baseline's PSNR, its CPU time per pair and the speed-up (baseline CPU time / ours).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine_line, peak_memory  # noqa: E402
from depth_core.image import image_to_uint8, psnr_uint8  # noqa: E402
from depth_core.stereo import FILL_MODES, fill_invalid_along_rows, warp_by_disparity, warp_pair  # noqa: E402

OLD_EXTENSION_PAIR_MPS = 2.0
OLD_EXTENSION_BEST_DB = 22.65


def load_baseline(path: str):
    """Another version of stereo.py, imported as depth_core._baseline_stereo so its relative imports resolve."""
    spec = importlib.util.spec_from_file_location("depth_core._baseline_stereo", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def time_pairs(pair, repeats: int) -> tuple[float, float, float]:
    """(best wall, median wall, CPU time) per call of pair(), in seconds, after one warm-up call."""
    pair()
    times = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        pair()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), (time.process_time() - cpu_start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed stereo pairs per fill mode (best and median)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--baseline", default="", help="path of another stereo.py to compare with in this process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    baseline = load_baseline(args.baseline) if args.baseline else None

    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    height, width = disparity.shape
    megapixels = height * width / 1e6
    image = torch.from_numpy(left).float().permute(2, 0, 1)[None] / 255.0
    filled = fill_invalid_along_rows(torch.from_numpy(np.asarray(disparity, dtype=np.float32)))[None]
    invalid = float((~np.isfinite(disparity)).mean())
    print(f"motorcycle {width}x{height} ({megapixels:.3f} MP), {invalid:.1%} invalid disparity filled along rows; "
          f"{machine_line()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("A pair = left and right eye warped from the same image (warp_pair, what StereoSBS does per frame). MP/s = "
          "input megapixels per second; wall = perf_counter (best / median of the repeats); CPU = process time per "
          "pair (all threads), the cost of the work itself on a machine shared with other jobs.")
    with peak_memory() as memory:   # first, while nothing has been warped yet in this process
        warp_pair(image, filled, filled, "background")
    print(f"peak memory above the inputs for the first pair (background fill): {memory.added_mib:.1f} MiB "
          f"(input image {image.numel() * 4 / 2**20:.1f} MiB as float32)")
    print(f"unchanged left photo: {psnr_uint8(left, right):.2f} dB (reference 12.65 dB)")
    header = (f"{'fill':16s} {'PSNR dB':>8s} {'wall best ms':>13s} {'wall median ms':>15s} {'CPU ms':>8s} "
              f"{'MP/s best':>10s} {'MP/s median':>12s} {'MP/s CPU':>9s} {'CPU MP/s / old 2':>17s}")
    if baseline is not None:
        header += f" {'base dB':>8s} {'base CPU ms':>12s} {'base MP/s best':>15s} {'speed-up CPU':>13s}"
    print(header)
    best_fill, best_db = None, -1.0
    for fill in FILL_MODES:
        view = warp_by_disparity(image, filled, "right", fill).images[0]
        db = psnr_uint8(image_to_uint8(view.permute(1, 2, 0)), right)
        if db > best_db:
            best_fill, best_db = fill, db
        best, median, cpu = time_pairs(lambda: warp_pair(image, filled, filled, fill), args.repeats)
        line = (f"{fill:16s} {db:8.2f} {best * 1e3:13.1f} {median * 1e3:15.1f} {cpu * 1e3:8.1f} "
                f"{megapixels / best:10.1f} {megapixels / median:12.1f} {megapixels / cpu:9.1f} "
                f"{megapixels / cpu / OLD_EXTENSION_PAIR_MPS:17.1f}")
        if baseline is not None:
            base_db = psnr_uint8(image_to_uint8(baseline.warp_by_disparity(image, filled, "right", fill).images[0].permute(1, 2, 0)), right)
            base_best, _, base_cpu = time_pairs(lambda: (baseline.warp_by_disparity(image, filled, "left", fill),
                                                         baseline.warp_by_disparity(image, filled, "right", fill)),
                                                args.repeats)
            line += (f" {base_db:8.2f} {base_cpu * 1e3:12.1f} {megapixels / base_best:15.1f} "
                     f"{base_cpu / cpu:13.2f}")
        print(line, flush=True)
    print(f"best fill: {best_fill} {best_db:.2f} dB (old extension's best: {OLD_EXTENSION_BEST_DB} dB, "
          f"{best_db - OLD_EXTENSION_BEST_DB:+.2f} dB); load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
