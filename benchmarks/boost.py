"""BoostMerge: time, peak memory and network passes for one 1024x768 image with Depth Anything V2 Small.

Random weights (the timing does not depend on them, but R20 and the patches depend on the image, so a real photo is
used: scikit-image's "coffee", resized to 1024x768). Reports, in one process: a plain estimate at the native size
(the baseline, what Depth Estimate does), the boosted estimate with the weight-free frequency-split merge, and one
pass of the pix2pix merge network at 1024x1024 (random weights), from which a pix2pix run's extra cost follows.

    .venv/bin/python benchmarks/boost.py [--max-whole-size 1600] [--device cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine_line, peak_memory  # noqa: E402

from depth_core.boost import BoostSettings, FrequencySplitMerger, Pix2PixMerger, boost_depth, plan_boost  # noqa: E402
from depth_core.estimate import DepthEstimator  # noqa: E402
from depth_core.models import depth_anything_v2, pix2pix  # noqa: E402


def test_image(height: int = 768, width: int = 1024) -> torch.Tensor:
    from skimage import data

    photo = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(photo, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-whole-size", type=int, default=1600)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    known = depth_anything_v2.KNOWN_MODELS[0]
    estimator = DepthEstimator(known.card, depth_anything_v2.build(known.config).to(device))
    image = test_image().to(device)
    settings = BoostSettings(max_whole_size=args.max_whole_size)
    print(f"Machine: {machine_line()}, device {device}")
    print(f"Image 1024x768 (skimage coffee), {known.card.name} random weights, receptive field "
          f"{known.card.receptive_field}, Rmax {settings.max_whole_size}")

    start = time.perf_counter()
    plan = plan_boost(image[0].cpu(), known.card.receptive_field, settings)
    plan_s = time.perf_counter() - start
    print(f"Plan (R20 search + patch selection, no network): {plan_s:.2f} s; R20 = {plan.whole.size}, "
          f"factor {plan.factor:.2f}, patch canvas {plan.canvas_size[1]}x{plan.canvas_size[0]}, "
          f"{len(plan.patches)} patches")

    estimator.infer(image, None)  # warm-up
    with peak_memory() as baseline_memory:
        start = time.perf_counter()
        estimator.infer(image, None)
        baseline_s = time.perf_counter() - start
    print(f"Baseline, one estimate at the native size: {baseline_s:.2f} s, peak RSS +{baseline_memory.added_mib:.0f} "
          f"MiB")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with peak_memory() as boost_memory:
        start = time.perf_counter()
        _, report = boost_depth(estimator, image, FrequencySplitMerger(), settings)
        boost_s = time.perf_counter() - start
    gpu = (f", peak CUDA {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else "")
    print(f"BoostMerge, frequency split: {boost_s:.2f} s ({boost_s / baseline_s:.1f}x the baseline), peak RSS "
          f"+{boost_memory.added_mib:.0f} MiB{gpu}")
    print(f"  {report.describe()}")

    generator = pix2pix.build().to(device).eval()
    merger = Pix2PixMerger(generator)
    pair = torch.rand(1, 1, 1024, 1024, device=device)
    merger.merge(pair, pair, 1.0)  # warm-up
    with peak_memory() as merge_memory:
        start = time.perf_counter()
        merger.merge(pair, pair, 1.0)
        merge_s = time.perf_counter() - start
    print(f"One pix2pix merge pass at 1024x1024: {merge_s:.2f} s, peak RSS +{merge_memory.added_mib:.0f} MiB; "
          f"a pix2pix run adds about {report.merge_passes} x that = {report.merge_passes * merge_s:.0f} s")


if __name__ == "__main__":
    main()
