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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..camera import Pinhole
from .inpaint import push_pull_fill

BUCKET_SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                4096, 6144, 8192, 12288, 16384)
"""Square pixel-box sizes triangles are grouped by (by their longer box side). Few groups means few passes over
all triangles; nearly all triangles of a photo mesh fall into the first two."""

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


def face_colors(mesh: Mesh) -> torch.Tensor:
    """[F, 3 corners * C] colours per face: the same for every frame, so a video computes it once."""
    return mesh.colors.index_select(0, mesh.faces.reshape(-1)).view(mesh.faces.shape[0], 3 * mesh.colors.shape[1])


def rasterize(mesh: Mesh, camera: Pinhole, position: torch.Tensor, near: float = 1e-4,
              corner_colors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [3,H,W] and coverage [H,W] (bool) of the mesh seen from a camera at `position` looking down -Z.

    corner_colors: `face_colors(mesh)`, when rendering many frames of one mesh.
    """
    device = mesh.vertices.device
    height, width = camera.height, camera.width
    if mesh.faces.shape[0] == 0:
        return (torch.zeros(mesh.colors.shape[1], height, width, device=device),
                torch.zeros(height, width, dtype=torch.bool, device=device))
    points = mesh.vertices - position.to(device=device, dtype=mesh.vertices.dtype)
    inverse_depth = -1.0 / points[:, 2]  # > 0 in front of the camera
    screen = torch.stack([points[:, 0] * inverse_depth * camera.fx + camera.cx,
                          points[:, 1] * inverse_depth * -camera.fy + camera.cy, inverse_depth], 1)

    faces = mesh.faces
    # One row gather (index_select) per face corner: several times faster on CPU than advanced indexing.
    corners = screen.index_select(0, faces.reshape(-1)).view(-1, 3, 3)
    face_x, face_y, face_inverse = corners.unbind(2)
    x_low = torch.ceil(face_x.amin(1) - 0.5).clamp_(0, width - 1)
    x_high = torch.floor(face_x.amax(1) - 0.5).clamp_(-1, width - 1)
    y_low = torch.ceil(face_y.amin(1) - 0.5).clamp_(0, height - 1)
    y_high = torch.floor(face_y.amax(1) - 0.5).clamp_(-1, height - 1)
    # Relative to the box corner pixel centre: small coordinates keep float32 barycentrics exact.
    origin_x, origin_y = x_low + 0.5, y_low + 0.5
    local_x, local_y = face_x - origin_x[:, None], face_y - origin_y[:, None]
    # Edge i is opposite vertex i: (i+1) -> (i+2).
    next_x, next_y = local_x.roll(-1, 1), local_y.roll(-1, 1)
    last_x, last_y = local_x.roll(-2, 1), local_y.roll(-2, 1)
    cross = next_x * last_y - last_x * next_y  # [F,3]: twice the signed area of (origin, i+1, i+2)
    area = cross.sum(1)
    visible = (face_inverse > 1.0 / 1e6).all(1) & (face_inverse < 1.0 / near).all(1)
    visible &= (x_high >= x_low) & (y_high >= y_low) & (area.abs() > 1e-12)
    inv_area = 1.0 / torch.where(visible, area, torch.ones_like(area))
    # Barycentric w_i = constant_i + slope_x_i * x + slope_y_i * y, at offsets from the corner pixel centre.
    constant = cross * inv_area[:, None]
    slope_x = (next_y - last_y) * inv_area[:, None]
    slope_y = (last_x - next_x) * inv_area[:, None]
    planes = torch.stack([
        torch.stack([constant[:, 0], slope_x[:, 0], slope_y[:, 0]], 1),
        torch.stack([constant[:, 1], slope_x[:, 1], slope_y[:, 1]], 1),
        torch.stack([(constant * face_inverse).sum(1), (slope_x * face_inverse).sum(1),
                     (slope_y * face_inverse).sum(1)], 1),
    ])  # [3 (w0, w1, 1/z), F, 3 (constant, x, y)]

    box_w = (x_high - x_low).long() + 1
    box_h = (y_high - y_low).long() + 1
    sizes = torch.tensor(BUCKET_SIZES, device=device)
    bucket = torch.searchsorted(sizes, torch.maximum(box_w, box_h))
    bucket = torch.where(visible, bucket, torch.full_like(bucket, len(BUCKET_SIZES)))
    counts = torch.bincount(bucket, minlength=len(BUCKET_SIZES) + 1)[:-1]
    base_pixel = y_low.long() * width + x_low.long()
    keys = torch.full((height * width,), -1, dtype=torch.int64, device=device)
    for bucket_id in counts.nonzero().squeeze(1).tolist():
        size = BUCKET_SIZES[bucket_id]
        members = (bucket == bucket_id).nonzero().squeeze(1)
        _scatter_bucket(keys, members, size, planes, box_w, box_h, base_pixel, width, height)

    covered = keys >= 0
    # Shade every pixel (an empty one borrows face 0 and is discarded): cheaper than compacting the covered ones.
    triangle = torch.where(covered, keys & 0xFFFFFFFF, 0)
    # Everything shading needs per face in one row, gathered once per pixel.
    per_face = torch.cat([constant, slope_x, slope_y, face_inverse, origin_x[:, None], origin_y[:, None]], 1)
    face = per_face.index_select(0, triangle)
    centres_x = torch.arange(width, device=device, dtype=face.dtype).add_(0.5)
    centres_y = torch.arange(height, device=device, dtype=face.dtype).add_(0.5)
    pixel_x = (centres_x[None, :] - face[:, 12].view(height, width)).view(-1)
    pixel_y = (centres_y[:, None] - face[:, 13].view(height, width)).view(-1)
    weights = torch.addcmul(torch.addcmul(face[:, 0:3], face[:, 3:6], pixel_x[:, None]), face[:, 6:9], pixel_y[:, None])
    # Perspective-correct: barycentrics weighted by each corner's inverse depth.
    weights = weights.clamp_(0, 1).mul_(face[:, 9:12])
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    if corner_colors is None:
        corner_colors = face_colors(mesh)
    corner_colors = corner_colors.index_select(0, triangle).view(-1, 3, mesh.colors.shape[1])  # [P,3 corners,C]
    shaded = (weights.unsqueeze(-1) * corner_colors).sum(1)
    # where, not a product: face 0 may be a culled face whose numbers are inf or NaN.
    shaded = torch.where(covered[:, None], shaded, 0.0)
    return shaded.T.reshape(-1, height, width), covered.reshape(height, width)


def _scatter_bucket(keys: torch.Tensor, members: torch.Tensor, size: int, planes: torch.Tensor,
                    box_w: torch.Tensor, box_h: torch.Tensor, base_pixel: torch.Tensor, width: int, height: int) -> None:
    device = keys.device
    offset_x = torch.arange(size, device=device).repeat(size)
    offset_y = torch.arange(size, device=device).repeat_interleave(size)
    basis = torch.stack([torch.ones_like(offset_x), offset_x, offset_y]).to(planes.dtype)  # [3, K]
    linear_offset = offset_y * width + offset_x
    per_chunk = max(1, CANDIDATES_PER_CHUNK // (size * size))
    for chunk_start in range(0, members.numel(), per_chunk):
        chunk = members[chunk_start:chunk_start + per_chunk]
        chunk_planes = planes.index_select(1, chunk)
        w0 = chunk_planes[0] @ basis
        w1 = chunk_planes[1] @ basis
        inverse_depth = chunk_planes[2] @ basis
        inside = (w0 >= -INSIDE_TOLERANCE) & (w1 >= -INSIDE_TOLERANCE) & ((w0 + w1) <= 1.0 + INSIDE_TOLERANCE)
        # The box test also keeps triangles that stick out of the image from wrapping onto the next row.
        inside &= (offset_x[None, :] < box_w.index_select(0, chunk)[:, None]) & \
                  (offset_y[None, :] < box_h.index_select(0, chunk)[:, None])
        # Inverse depth > 0 is an ordered int32 bit pattern: nearest = largest key; the face index breaks ties.
        key = (inverse_depth.view(torch.int32).to(torch.int64) << 32) | chunk[:, None]
        key = torch.where(inside, key, -1)
        pixel = (base_pixel.index_select(0, chunk)[:, None] + linear_offset[None, :]).clamp_(0, width * height - 1)
        keys.scatter_reduce_(0, pixel.flatten(), key.flatten(), reduce="amax")


def render_frame(mesh: Mesh, camera: Pinhole, position: torch.Tensor, supersampling: int = 1,
                 focal_scale: float = 1.0, fill_holes: bool = True,
                 corner_colors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One anti-aliased frame: (image [3,H,W] 0..1, coverage [H,W] float 0..1) at the camera's size.

    Pixels no triangle covers (a camera that leaves the scene) are filled from their surroundings when
    `fill_holes`, so every frame is complete.
    """
    if supersampling < 1:
        raise ValueError(f"supersampling must be at least 1, got {supersampling}.")
    render_camera = scaled_camera(camera, supersampling, focal_scale)
    image, covered = rasterize(mesh, render_camera, position, corner_colors=corner_colors)
    coverage = covered.to(image.dtype)
    if supersampling > 1:
        image = F.adaptive_avg_pool2d((image * coverage)[None], (camera.height, camera.width))[0]
        coverage = F.adaptive_avg_pool2d(coverage[None, None], (camera.height, camera.width))[0, 0]
        image = image / coverage.clamp_min(1e-6)
    if fill_holes:
        if bool((coverage > 0).any()):
            image = push_pull_fill(image, coverage > 0)
        elif mesh.colors.shape[0] > 0:
            # Nothing in view (or a mesh without triangles, e.g. a one-pixel photo): the scene's average colour.
            image = mesh.colors.mean(0)[:, None, None].expand_as(image).clone()
    return image.clamp(0, 1), coverage
