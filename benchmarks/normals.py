"""Normal-map accuracy and speed on synthetic scenes with analytically known normals.

    .venv/bin/python benchmarks/normals.py

Scenes (rendered exactly through depth_core.camera.Pinhole, 55 degree horizontal field of view): planes tilted by
known angles, and a sphere in front of a wall. Each is given once as metric depth and once as relative inverse
depth (1 / distance, with the true far/near ratio as depth_range). Prints the mean angular error of the geometric
method and of the old extension's Sobel method, the speed in ms per megapixel, peak memory, and the flicker a
synthetic flickering depth video keeps after ClipRenormalize's temporal stabilization.
"""
from __future__ import annotations

import math
import os
import sys
import time
import subprocess
import threading
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depth_core.camera import Pinhole  # noqa: E402
from depth_core.depth import Depth, DepthKind  # noqa: E402
from depth_core.normals import normal_map  # noqa: E402
from depth_core.postprocess import ClipSettings, clip_renormalize, flicker  # noqa: E402

FOV = 55.0


def plane_scene(camera: Pinhole, tilt_x_deg: float, tilt_y_deg: float, distance: float = 4.0):
    """Distances [H,W] and normals [H,W,3] of a plane through (0, 0, -distance) tilted about the x and y axes."""
    ax, ay = math.radians(tilt_x_deg), math.radians(tilt_y_deg)
    normal = torch.tensor([math.sin(ay) * math.cos(ax), math.sin(ax), math.cos(ay) * math.cos(ax)], dtype=torch.float64)
    rays = camera.pixel_rays(dtype=torch.float64)
    point = torch.tensor([0.0, 0.0, -distance], dtype=torch.float64)
    depth = (normal @ point) / (rays @ normal)
    return depth, normal.expand(camera.height, camera.width, 3)


def sphere_scene(camera: Pinhole, radius: float = 1.5, centre_distance: float = 5.0, wall: float = 9.0):
    rays = camera.pixel_rays(dtype=torch.float64)
    centre = torch.tensor([0.0, 0.0, -centre_distance], dtype=torch.float64)
    rr = (rays * rays).sum(-1)
    rc = rays @ centre
    disc = rc * rc - rr * (centre @ centre - radius * radius)
    hit = disc > 0
    depth_sphere = (rc - disc.clamp_min(0).sqrt()) / rr
    depth = torch.where(hit, depth_sphere, torch.full_like(rr, wall))
    points = depth.unsqueeze(-1) * rays
    sphere_normals = (points - centre) / radius
    wall_normals = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(points)
    normals = torch.where(hit.unsqueeze(-1), sphere_normals, wall_normals)
    return depth, normals, hit


def decode(picture: torch.Tensor) -> torch.Tensor:
    normals = picture.double() * 2.0 - 1.0
    return normals / torch.linalg.vector_norm(normals, dim=-1, keepdim=True)


def angular_error_deg(picture: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    cosine = (decode(picture) * truth).sum(-1).clamp(-1.0, 1.0)
    errors = torch.rad2deg(torch.acos(cosine))
    return float(errors[mask].mean() if mask is not None else errors.mean())


def as_inputs(depth: torch.Tensor):
    metric = Depth(depth.float()[None], DepthKind.METRIC)
    relative = Depth((1.0 / depth).float()[None], DepthKind.RELATIVE_INVERSE)
    ratio = max(float(depth.max() / depth.min()), 1.01)  # a fronto-parallel plane is flat: any range works
    return metric, relative, ratio


def accuracy(width: int = 640, height: int = 480) -> dict[str, tuple[float, float]]:
    camera = Pinhole.from_fov(width, height, FOV)
    scenes = []
    for tilt_x, tilt_y in ((0, 0), (30, 0), (0, 45), (-20, 35), (60, 10)):
        depth, truth = plane_scene(camera, tilt_x, tilt_y)
        scenes.append((f"plane tilt x={tilt_x:+d} y={tilt_y:+d} deg", depth, truth, None))
    depth, truth, hit = sphere_scene(camera)
    silhouette = torch.nn.functional.max_pool2d(hit[None, None].double(), 5, 1, 2)[0, 0] > 0
    silhouette &= torch.nn.functional.max_pool2d((~hit)[None, None].double(), 5, 1, 2)[0, 0] > 0
    scenes.append(("sphere + wall, all pixels", depth, truth, None))
    scenes.append(("sphere + wall, without 2 px silhouette band", depth, truth, ~silhouette))
    results = {}
    print(f"Accuracy, {width}x{height}, noise-free, mean angular error in degrees")
    print(f"{'scene':46s} {'geometric metric':>17s} {'geometric relative':>19s} {'sobel (old ext.)':>17s}")
    for name, depth, truth, mask in scenes:
        metric, relative, ratio = as_inputs(depth)
        geo_metric = angular_error_deg(normal_map(metric, "geometric", FOV)[0], truth, mask)
        geo_relative = angular_error_deg(normal_map(relative, "geometric", FOV, depth_range=ratio)[0], truth, mask)
        sobel = angular_error_deg(normal_map(relative, "sobel")[0], truth, mask)
        results[name] = (geo_metric, geo_relative, sobel)
        print(f"{name:46s} {geo_metric:17.3f} {geo_relative:19.3f} {sobel:17.3f}")
    means = [sum(r[i] for r in results.values()) / len(results) for i in range(3)]
    print(f"{'MEAN over scenes':46s} {means[0]:17.3f} {means[1]:19.3f} {means[2]:17.3f}")
    print(f"goal: geometric < 2 deg -> {'met' if max(means[:2]) < 2 else 'NOT met'}; "
          f"Sobel / geometric error ratio = {means[2] / max(means[0], 1e-9):.0f}x")
    return results


def speed(width: int = 2048, height: int = 1024, repeats: int = 10) -> None:
    torch.manual_seed(0)
    camera = Pinhole.from_fov(width, height, FOV)
    depth, _ = plane_scene(camera, 20, 30)
    noisy = depth.float() * (1 + 0.01 * torch.rand(height, width))
    metric = Depth(noisy[None], DepthKind.METRIC)
    relative = Depth(1.0 / noisy[None], DepthKind.RELATIVE_INVERSE)
    megapixels = width * height / 1e6
    print(f"\nSpeed, {width}x{height} ({megapixels:.2f} MP), torch CPU threads = {torch.get_num_threads()}, "
          f"best of {repeats} (Sobel: of 3)")
    for label, value, method in (("geometric, metric", metric, "geometric"),
                                 ("geometric, relative", relative, "geometric"),
                                 ("sobel k=3 (old ext.), float64", relative, "sobel")):
        normal_map(value, method)
        walls, cpus = [], []
        for _ in range(repeats if method == "geometric" else 3):
            wall, cpu = time.perf_counter(), time.process_time()
            normal_map(value, method)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        print(f"{label:32s} wall {min(walls) * 1000:8.1f} ms = {min(walls) * 1000 / megapixels:7.1f} ms/MP   "
              f"CPU time (all threads) {min(cpus) * 1000 / megapixels:7.1f} ms/MP")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: CPU time is then free of the thread pool's spin-waiting
    for label, value in (("geometric, metric, 1 thread", metric), ("geometric, relative, 1 thread", relative)):
        cpus = []
        for _ in range(repeats):
            cpu = time.process_time()
            normal_map(value, "geometric")
            cpus.append(time.process_time() - cpu)
        print(f"{label:32s} CPU time {min(cpus) * 1000 / megapixels:7.1f} ms/MP")
    torch.set_num_threads(threads)
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall time stretches with other jobs; one-thread CPU time is what the work itself costs)")
    child = subprocess.run([sys.executable, __file__, "--peak", str(width), str(height)], capture_output=True,
                           text=True, check=True)
    print(child.stdout.strip())


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(width: int, height: int) -> None:
    """Run in a fresh process: the highest resident memory above the starting point during one geometric normal map,
    sampled every millisecond (large tensors are mmapped and unmapped on free, so resident memory tracks them)."""
    # Random metres straight in float32: building an analytic scene would itself peak higher than the normals.
    metric = Depth(1.0 + torch.rand(1, height, width), DepthKind.METRIC)
    normal_map(Depth(metric.values[:, :8, :8].clone(), DepthKind.METRIC), "geometric")  # load kernels first
    baseline = resident_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    result = normal_map(metric, "geometric")
    done.set()
    sampler.join()
    peak[0] = max(peak[0], resident_bytes())
    megapixels = width * height / 1e6
    print(f"peak memory above the input, geometric {megapixels:.2f} MP: {(peak[0] - baseline) / 2**20:.1f} MiB "
          f"(input {metric.values.numel() * 4 / 2**20:.1f} MiB, output {result.numel() * 4 / 2**20:.1f} MiB)")


def stabilization(frames: int = 24, size: int = 96) -> None:
    generator = torch.Generator().manual_seed(1)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    scene = 0.3 + 0.5 * x + 0.2 * torch.sin(6 * y)
    scales = 0.7 + 0.6 * torch.rand(frames, generator=generator)
    shifts = -0.3 + 0.6 * torch.rand(frames, generator=generator)
    video = scene * scales.view(-1, 1, 1) + shifts.view(-1, 1, 1)
    speckles = torch.rand(frames, size, size, generator=generator) < 0.002
    video = torch.where(speckles, video + 3.0 * torch.rand(frames, size, size, generator=generator), video)
    depth = Depth(video, DepthKind.RELATIVE_INVERSE)
    print(f"\nTemporal stabilization, {frames} frames {size}x{size}, random scale 0.7-1.3, shift +-0.3, "
          "0.2% bright speckles; mean |frame(t+1) - frame(t)| of the 0..1 picture (static scene: ideal 0)")
    for label, settings in (("per image normalization", ClipSettings(per_image=True)),
                            ("whole batch normalization", ClipSettings(per_image=False)),
                            ("stabilized (window 2)", ClipSettings(stabilize=True))):
        picture = clip_renormalize(depth, settings).picture
        print(f"{label:28s} flicker = {flicker(picture):.4f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        peak_memory(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    accuracy()
    speed()
    stabilization()
