"""Benchmark of the 3D photo (InpaintedMeshVideo): novel-view quality on real stereo data, and speed.

Quality: the left Middlebury "motorcycle" photo (skimage.data.stereo_motorcycle) with its ground-truth disparity as
depth, rendered from the right camera's position and compared with the real right photo (PSNR over all pixels,
uint8, all channels). Depth is metric-like: distance = baseline * focal / disparity with focal = the dataset's
994.978 px and baseline = 1 unit, so a camera moved by exactly one unit to the right sees every point shifted by
its disparity, as the right camera did. Invalid disparity is filled by linear interpolation along rows.
Baselines in the same process: the left photo itself, a plain forward warp with holes filled by the nearest pixel on
the row (what a stereo node without inpainting does), and this pack's stereo node with its best fill ("background").

Speed: layered mesh of a 1-megapixel photo, and frames per second at 512x512 with supersampling 2.

    .venv/bin/python benchmarks/inpainted_video.py
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from depth_core.image import image_to_uint8, psnr_uint8  # noqa: E402
from depth_core.camera import Pinhole  # noqa: E402
from depth_core.photo3d import build_photo3d, camera_path, render_frame, render_path  # noqa: E402

FOCAL = 994.978
BASELINE = 1.0


def fill_rows(disparity: np.ndarray) -> np.ndarray:
    filled = disparity.copy()
    columns = np.arange(disparity.shape[1])
    for row in filled:
        valid = np.isfinite(row)
        row[~valid] = np.interp(columns[~valid], columns[valid], row[valid])
    return filled


def forward_warp_baseline(left: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Nearest-pixel forward warp (nearer wins), holes filled from the nearest warped pixel to their left/right."""
    height, width = disparity.shape
    out = np.zeros_like(left)
    best = np.full((height, width), -np.inf)
    target = np.rint(np.arange(width)[None, :] - disparity).astype(int)
    rows = np.repeat(np.arange(height)[:, None], width, 1)
    order = np.argsort(disparity, axis=None)  # far first, near overwrites
    r, c = rows.flatten()[order], np.arange(width)[None, :].repeat(height, 0).flatten()[order]
    t = target.flatten()[order]
    ok = (t >= 0) & (t < width)
    out[r[ok], t[ok]] = left[r[ok], c[ok]]
    best[r[ok], t[ok]] = 1
    for y in range(height):
        known = np.flatnonzero(best[y] > 0)
        if known.size:
            nearest = known[np.clip(np.searchsorted(known, np.arange(width)), 0, known.size - 1)]
            out[y] = out[y, nearest]
    return out


def quality(args) -> None:
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    height, width = disparity.shape
    disparity = fill_rows(disparity)
    camera = Pinhole(width, height, FOCAL, FOCAL, width / 2.0, height / 2.0)
    distance = torch.from_numpy(BASELINE * FOCAL / disparity).float()
    image = torch.from_numpy(left).permute(2, 0, 1).float() / 255.0
    print(f"motorcycle {width}x{height}, disparity {disparity.min():.1f}..{disparity.max():.1f} px")
    print(f"  baseline: left photo as the right view        PSNR {psnr_uint8(left, right):6.3f} dB")
    print(f"  baseline: forward warp + nearest row fill      PSNR {psnr_uint8(forward_warp_baseline(left, disparity), right):6.3f} dB")
    from depth_core.stereo import warp_by_disparity

    stereo = warp_by_disparity(image[None], torch.from_numpy(disparity).float(), "right", "background").images[0]
    print(f"  baseline: stereo node, background fill          PSNR {psnr_uint8(image_to_uint8(stereo.permute(1, 2, 0)), right):6.3f} dB")
    start = time.perf_counter()
    ldi, layered = build_photo3d(image, distance, camera, sharpen_iterations=args.sharpen)
    build_seconds = time.perf_counter() - start
    print(f"  layered mesh: {layered.mesh.vertices.shape[0]} vertices, {layered.mesh.faces.shape[0]} faces, "
          f"{int(ldi.inpainted.sum())} inpainted pixels, built in {build_seconds:.2f} s")
    position = torch.tensor([BASELINE, 0.0, 0.0])
    for supersampling in (1, 2, 3):
        frame, coverage = render_frame(layered.mesh, camera, position, supersampling)
        print(f"  3D photo, right camera, supersampling {supersampling}:    PSNR {psnr_uint8(image_to_uint8(frame.permute(1, 2, 0)), right):6.3f} dB "
              f"(mesh covers {100 * float(coverage.mean()):.1f} % of the view)")
    if args.save:
        from PIL import Image

        frame, _ = render_frame(layered.mesh, camera, position, 2)
        Image.fromarray(image_to_uint8(frame.permute(1, 2, 0))).save(args.save)


def speed(args) -> None:
    generator = torch.Generator().manual_seed(0)
    # 1 megapixel: a smooth scene with a few foreground blocks, so there are plenty of edges to extend.
    height, width = 1000, 1000
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    distance = 4.0 + xs
    for index in range(8):
        y0, x0 = (torch.rand(2, generator=generator) * 0.8).tolist()
        block = (ys > y0) & (ys < y0 + 0.15) & (xs > x0) & (xs < x0 + 0.15)
        distance = torch.where(block, torch.full_like(distance, 1.5 + 0.2 * index), distance)
    image = torch.rand(3, height, width, generator=generator)
    camera = Pinhole.from_fov(width, height, 55.0)
    build_photo3d(image[:, :64, :64], distance[:64, :64], Pinhole.from_fov(64, 64))  # warm-up
    start = time.perf_counter()
    ldi, layered = build_photo3d(image, distance, camera)
    seconds = time.perf_counter() - start
    print(f"layered mesh, 1000x1000 photo: {seconds:.2f} s ({layered.mesh.faces.shape[0]} faces, "
          f"{int(ldi.inpainted.sum())} inpainted pixels)  goal < 10 s")

    size = 512
    small_distance = torch.nn.functional.interpolate(distance[None, None], size=(size, size), mode="nearest")[0, 0]
    small_image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear")[0]
    small_camera = Pinhole.from_fov(size, size, 55.0)
    _, small = build_photo3d(small_image, small_distance, small_camera)
    path = camera_path("circle", args.frames, (0.1, 0.05, 0.1), small.mean_location)
    render_path(small.mesh, small_camera, camera_path("circle", 2, (0.1, 0.05, 0.1)), supersampling=2)  # warm-up
    default_threads = torch.get_num_threads()
    # On a CPU shared with other jobs, two OpenMP threads can be slower than one: measure both, alternating, a few
    # rounds each, and print every round (the spread shows how much the other jobs took).
    rounds: dict[int, list[float]] = {threads: [] for threads in sorted({1, default_threads})}
    for _ in range(args.rounds):
        for threads in rounds:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            frames = render_path(small.mesh, small_camera, path, supersampling=2)
            rounds[threads].append(args.frames / (time.perf_counter() - start))
            assert frames.shape == (args.frames, size, size, 3)
    for threads, speeds in rounds.items():
        print(f"rendering 512x512, supersampling 2, {small.mesh.faces.shape[0]} faces, {threads} thread(s), "
              f"{args.frames} frames per round: " + ", ".join(f"{speed:.2f}" for speed in speeds) +
              f" frames/s (median {sorted(speeds)[len(speeds) // 2]:.2f}, best {max(speeds):.2f})  goal >= 5")
    torch.set_num_threads(default_threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sharpen", type=int, default=2, help="edge sharpening passes (default 2, as the node)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rendering rounds per thread count")
    parser.add_argument("--save", default="", help="save the supersampling-2 right view here (PNG)")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    quality(args)
    if not args.skip_speed:
        speed(args)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"peak memory (max RSS of this process): {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
