"""Stereo fill quality against iw3's weight-free converter (forward warp + shift fill), in space and over time.

Scenes: layered textured planes whose hidden background is exactly known (benchmarks/stereo_scenes.py, four
arrangements of real photographs) and the real Middlebury motorcycle pair with its ground-truth disparity. For each,
the right view is synthesized from the left view and the true disparity by iw3's algorithm (benchmarks/
iw3_reference.py, a reimplementation for comparison) and by every depth_core fill; PSNR over all pixels and inside
the holes only. Over time: a panning shot of the first layered scene (each plane moves by its parallax, 1/48 of its
disparity per frame); flicker = mean |error(t) - error(t-1)| inside holes of both frames, in 8-bit levels (0 = the
fill moves exactly like the hidden truth).

    .venv/bin/python benchmarks/stereo_quality.py [--frames 12]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from iw3_reference import forward_fill_view  # noqa: E402
from stereo_scenes import LayeredScene, Plane  # noqa: E402

from depth_core.image import image_to_uint8, psnr_uint8  # noqa: E402
from depth_core.stereo import fill_invalid_along_rows, warp_by_disparity  # noqa: E402

SCENES = {
    "planes A": (),
    "planes B": (Plane("rocket", 1.0), Plane("coffee", 12.0, (0.1, 0.3, 0.7, 0.6)),
                 Plane("chelsea", 20.0, (0.5, 0.55, 0.95, 0.9), ellipse=True)),
    "planes C": (Plane("astronaut", 3.0), Plane("rocket", 15.0, (0.2, 0.2, 0.8, 0.5)),
                 Plane("coffee", 25.0, (0.3, 0.6, 0.7, 0.8))),
    "planes D": (Plane("chelsea", 4.0), Plane("astronaut", 14.0, (0.1, 0.1, 0.6, 0.45)),
                 Plane("rocket", 22.0, (0.45, 0.5, 0.9, 0.85), ellipse=True)),
}
FILLS = ("background", "polylines_sharp", "interpolate", "nearest")


def uint8(view: torch.Tensor) -> np.ndarray:
    return image_to_uint8(view.permute(1, 2, 0))


def hole_psnr(view: torch.Tensor, truth: torch.Tensor, holes: torch.Tensor) -> float:
    error = (uint8(view).astype(np.float64) - uint8(truth).astype(np.float64))[holes.numpy()]
    return 10.0 * math.log10(255.0 ** 2 / max(1e-12, float(np.mean(error ** 2))))


def renderers():
    yield "iw3 forward_fill", lambda image, disparity: forward_fill_view(image, disparity, "right")
    for fill in FILLS:
        yield fill, lambda image, disparity, fill=fill: warp_by_disparity(image[None], disparity[None], "right",
                                                                          fill).images[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12, help="frames of the panning shot")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from skimage import data

    cases = {name: LayeredScene(planes=planes) if planes else LayeredScene() for name, planes in SCENES.items()}
    inputs = {name: scene.stereo() for name, scene in cases.items()}
    left, right, disparity = data.stereo_motorcycle()
    inputs["motorcycle"] = (torch.from_numpy(left).float().permute(2, 0, 1) / 255.0,
                            fill_invalid_along_rows(torch.from_numpy(np.asarray(disparity, dtype=np.float32))),
                            torch.from_numpy(right).float().permute(2, 0, 1) / 255.0)
    print("PSNR dB of the synthesized right view, all pixels / holes only (8-bit); ms = one view")
    print(f"{'renderer':18s} " + " ".join(f"{name:>20s}" for name in inputs))
    for name, render in renderers():
        cells = []
        for image, disparity, truth in inputs.values():
            holes = warp_by_disparity(image[None], disparity[None], "right", "none").holes[0] > 0.5
            start = time.perf_counter()
            view = render(image, disparity)
            elapsed = time.perf_counter() - start
            cells.append(f"{psnr_uint8(uint8(view), uint8(truth)):6.2f} /{hole_psnr(view, truth, holes):6.2f}"
                         f" {elapsed * 1e3:5.0f}")
        print(f"{name:18s} " + " ".join(f"{cell:>20s}" for cell in cells), flush=True)

    frames = [cases["planes A"].stereo(pan=step / 48) for step in range(args.frames)]
    holes = [warp_by_disparity(image[None], disparity[None], "right", "none").holes[0] > 0.5
             for image, disparity, _ in frames]
    truth_change = np.mean([(frames[t][2] - frames[t - 1][2]).abs().mean(0)[holes[t] & holes[t - 1]].mean().item()
                            for t in range(1, len(frames))]) * 255
    print(f"\npanning shot, {len(frames)} frames of planes A: fill flicker (8-bit levels per frame inside holes; "
          f"the true view itself changes by {truth_change:.2f} there)")
    for name, render in renderers():
        errors = [render(image, disparity) - truth for image, disparity, truth in frames]
        flicker = np.mean([(errors[t] - errors[t - 1]).abs().mean(0)[holes[t] & holes[t - 1]].mean().item()
                           for t in range(1, len(frames))]) * 255
        print(f"{name:18s} {flicker:6.2f}")


if __name__ == "__main__":
    main()
