"""A z-buffered triangle rasterizer in plain torch: no OpenGL, EGL or vispy, so it runs headless, on Windows, on CPU
and on CUDA alike.

How it stays fast without a per-triangle loop: every triangle is projected and given its barycentric and inverse-
depth planes relative to its own bounding-box corner (small numbers, so float32 is exact enough). Triangles are
grouped by the size of their pixel bounding box; each group is expanded to all (triangle, pixel) candidates of that
box size in one matrix product, and the nearest one per pixel wins a single `scatter_reduce(amax)` on a 64-bit key
(inverse depth bits in the high word, triangle index in the low word). A last pass interpolates vertex colours
perspective-correctly at every covered pixel. Anti-aliasing: render at `supersampling` times the size and average.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..camera import Pinhole
from .inpaint import push_pull_fill

BUCKET_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                4096, 6144, 8192)
"""Pixel-box sizes triangles are grouped by; a box is padded up to the next size, so at most half is wasted."""

CANDIDATES_PER_CHUNK = 1 << 22
"""(triangle, pixel) pairs evaluated at once: bounds memory to roughly 150 MB whatever the mesh."""

INSIDE_TOLERANCE = 1e-5
"""Barycentric slack so pixels exactly on a shared edge are never missed by both triangles."""


@dataclass(frozen=True)
class Mesh:
    """Triangles in camera-convention world space (+Y up, -Z forward): vertices [V,3], colors [V,3] 0..1, faces [F,3]."""

    vertices: torch.Tensor
    colors: torch.Tensor
    faces: torch.Tensor

    def to(self, device: torch.device | str) -> "Mesh":
        return Mesh(self.vertices.to(device), self.colors.to(device), self.faces.to(device))


def scaled_camera(camera: Pinhole, scale: float, focal_scale: float = 1.0) -> Pinhole:
    """The same view at `scale` times the pixel size; `focal_scale` zooms (dolly zoom) about the principal point."""
    width, height = max(1, round(camera.width * scale)), max(1, round(camera.height * scale))
    return Pinhole(width, height, camera.fx * scale * focal_scale, camera.fy * scale * focal_scale,
                   camera.cx * width / camera.width, camera.cy * height / camera.height)


def rasterize(mesh: Mesh, camera: Pinhole, position: torch.Tensor, near: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [3,H,W] and coverage [H,W] (bool) of the mesh seen from a camera at `position` looking down -Z."""
    device = mesh.vertices.device
    height, width = camera.height, camera.width
    points = mesh.vertices - position.to(device=device, dtype=mesh.vertices.dtype)
    depth = -points[:, 2]
    safe_depth = depth.clamp_min(near)
    screen_x = camera.fx * points[:, 0] / safe_depth + camera.cx
    screen_y = -camera.fy * points[:, 1] / safe_depth + camera.cy

    faces = mesh.faces
    face_x, face_y, face_depth = screen_x[faces], screen_y[faces], depth[faces]
    in_front = (face_depth > near).all(dim=1)
    x_low = torch.ceil(face_x.amin(1) - 0.5).clamp(0, width - 1)
    x_high = torch.floor(face_x.amax(1) - 0.5).clamp(-1, width - 1)
    y_low = torch.ceil(face_y.amin(1) - 0.5).clamp(0, height - 1)
    y_high = torch.floor(face_y.amax(1) - 0.5).clamp(-1, height - 1)
    keep = in_front & (x_high >= x_low) & (y_high >= y_low)
    # Relative to the box corner pixel centre: small coordinates keep float32 barycentrics exact.
    origin_x, origin_y = x_low + 0.5, y_low + 0.5
    local_x, local_y = face_x - origin_x[:, None], face_y - origin_y[:, None]
    area = (local_x[:, 1] - local_x[:, 0]) * (local_y[:, 2] - local_y[:, 0]) - \
           (local_x[:, 2] - local_x[:, 0]) * (local_y[:, 1] - local_y[:, 0])
    keep &= area.abs() > 1e-12
    kept = keep.nonzero().squeeze(1)
    empty = (torch.zeros(3, height, width, device=device), torch.zeros(height, width, dtype=torch.bool, device=device))
    if kept.numel() == 0:
        return empty
    local_x, local_y, face_depth, area = local_x[kept], local_y[kept], face_depth[kept], area[kept]
    x_low, y_low = x_low[kept].long(), y_low[kept].long()
    box_w = (x_high[kept].long() - x_low + 1)
    box_h = (y_high[kept].long() - y_low + 1)
    origin_x, origin_y = origin_x[kept], origin_y[kept]

    inv_area = 1.0 / area
    x0, x1, x2 = local_x.unbind(1)
    y0, y1, y2 = local_y.unbind(1)
    # w0 = a0*x + b0*y + c0, w1 likewise, at pixel offsets (x, y) from the corner pixel centre.
    a0, b0, c0 = (y1 - y2) * inv_area, (x2 - x1) * inv_area, (x1 * y2 - x2 * y1) * inv_area
    a1, b1, c1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area, (x2 * y0 - x0 * y2) * inv_area
    inverse_depth = 1.0 / face_depth
    e0, e1 = inverse_depth[:, 0] - inverse_depth[:, 2], inverse_depth[:, 1] - inverse_depth[:, 2]
    planes = torch.stack([
        torch.stack([c0, a0, b0], 1),
        torch.stack([c1, a1, b1], 1),
        torch.stack([c0 * e0 + c1 * e1 + inverse_depth[:, 2], a0 * e0 + a1 * e1, b0 * e0 + b1 * e1], 1),
    ])  # [3 (w0, w1, 1/z), n, 3 (constant, x, y)]

    sizes = torch.tensor(BUCKET_SIZES, device=device)
    bucket_w = torch.searchsorted(sizes, box_w)
    bucket_h = torch.searchsorted(sizes, box_h)
    bucket = bucket_w * len(BUCKET_SIZES) + bucket_h
    order = torch.argsort(bucket)
    counts = torch.bincount(bucket, minlength=len(BUCKET_SIZES) ** 2).tolist()
    base_pixel = y_low * width + x_low
    keys = torch.full((height * width,), -1, dtype=torch.int64, device=device)
    start = 0
    for bucket_id, count in enumerate(counts):
        if count == 0:
            continue
        size_w, size_h = BUCKET_SIZES[bucket_id // len(BUCKET_SIZES)], BUCKET_SIZES[bucket_id % len(BUCKET_SIZES)]
        members = order[start:start + count]
        start += count
        _scatter_bucket(keys, members, size_w, size_h, planes, box_w, box_h, base_pixel, width, height)

    covered = keys >= 0
    pixels = covered.nonzero().squeeze(1)
    triangle = (keys[pixels] & 0xFFFFFFFF)
    pixel_x = (pixels % width).to(local_x.dtype) + 0.5 - origin_x[triangle]
    pixel_y = torch.div(pixels, width, rounding_mode="floor").to(local_x.dtype) + 0.5 - origin_y[triangle]
    w0 = (c0[triangle] + a0[triangle] * pixel_x + b0[triangle] * pixel_y).clamp(0, 1)
    w1 = (c1[triangle] + a1[triangle] * pixel_x + b1[triangle] * pixel_y).clamp(0, 1)
    w2 = (1.0 - w0 - w1).clamp(0, 1)
    corner_inverse = inverse_depth[triangle]
    weights = torch.stack([w0, w1, w2], 1) * corner_inverse
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    corner_colors = mesh.colors[faces[kept[triangle]]]  # [P,3 corners,3 channels]
    shaded = (weights.unsqueeze(-1) * corner_colors).sum(1)
    image = torch.zeros(height * width, 3, device=device, dtype=shaded.dtype)
    image[pixels] = shaded
    return image.T.reshape(3, height, width), covered.reshape(height, width)


def _scatter_bucket(keys: torch.Tensor, members: torch.Tensor, size_w: int, size_h: int, planes: torch.Tensor,
                    box_w: torch.Tensor, box_h: torch.Tensor, base_pixel: torch.Tensor, width: int, height: int) -> None:
    device = keys.device
    offset_x = torch.arange(size_w, device=device).repeat(size_h)
    offset_y = torch.arange(size_h, device=device).repeat_interleave(size_w)
    basis = torch.stack([torch.ones_like(offset_x), offset_x, offset_y]).to(planes.dtype)  # [3, K]
    linear_offset = offset_y * width + offset_x
    exact = size_w <= 4 and size_h <= 4
    per_chunk = max(1, CANDIDATES_PER_CHUNK // (size_w * size_h))
    for chunk_start in range(0, members.numel(), per_chunk):
        chunk = members[chunk_start:chunk_start + per_chunk]
        w0 = planes[0, chunk] @ basis
        w1 = planes[1, chunk] @ basis
        inverse_depth = planes[2, chunk] @ basis
        inside = (w0 >= -INSIDE_TOLERANCE) & (w1 >= -INSIDE_TOLERANCE) & (w0 + w1 <= 1.0 + INSIDE_TOLERANCE)
        inside &= inverse_depth > 0
        if not exact:
            inside &= (offset_x[None, :] < box_w[chunk, None]) & (offset_y[None, :] < box_h[chunk, None])
        key = (inverse_depth.view(torch.int32).to(torch.int64) << 32) | chunk[:, None]
        key = torch.where(inside, key, torch.full_like(key, -1))
        pixel = (base_pixel[chunk, None] + linear_offset[None, :]).clamp_(0, width * height - 1)
        keys.scatter_reduce_(0, pixel.flatten(), key.flatten(), reduce="amax")


def render_frame(mesh: Mesh, camera: Pinhole, position: torch.Tensor, supersampling: int = 1,
                 focal_scale: float = 1.0, fill_holes: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One anti-aliased frame: (image [3,H,W] 0..1, coverage [H,W] float 0..1) at the camera's size.

    Pixels no triangle covers (a camera that leaves the scene) are filled from their surroundings when
    `fill_holes`, so every frame is complete.
    """
    if supersampling < 1:
        raise ValueError(f"supersampling must be at least 1, got {supersampling}.")
    render_camera = scaled_camera(camera, supersampling, focal_scale)
    image, covered = rasterize(mesh, render_camera, position)
    coverage = covered.to(image.dtype)
    if supersampling > 1:
        image = F.adaptive_avg_pool2d((image * coverage)[None], (camera.height, camera.width))[0]
        coverage = F.adaptive_avg_pool2d(coverage[None, None], (camera.height, camera.width))[0, 0]
        image = image / coverage.clamp_min(1e-6)
    if fill_holes:
        image = push_pull_fill(image, coverage > 0)
    return image.clamp(0, 1), coverage
