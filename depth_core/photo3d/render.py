"""A z-buffered triangle rasterizer in plain torch: no OpenGL, EGL or vispy, so it runs headless, on Windows, on CPU
and on CUDA alike.

How it stays fast without a per-triangle loop: every triangle is projected and given its barycentric and inverse-
depth planes relative to its own bounding-box corner (small numbers, so float32 is exact enough). Triangles are
grouped by the size of their pixel bounding box; each group is expanded to all (triangle, pixel) candidates of that
box size, and the nearest one per pixel wins a single `scatter_reduce(amax)` on a 64-bit key (inverse depth bits in
the high word, triangle index in the low word). Shading then evaluates only the winner at each pixel: colour times
inverse depth and inverse depth are affine in the barycentrics, so their ratio is the perspective-correct colour.
Anti-aliasing: render at `supersampling` times the size and average.

Speed comes from the shape of a photo mesh at supersampling 2: nearly every triangle is half a pixel-grid cell whose
box is 2x2 samples. Those are handled all at once, with no gather, against a z-buffer padded on the right and
bottom so that no candidate needs a box test. Per-face numbers are kept planar ([quantity, F]) so every pass runs
over contiguous memory. A video renders one mesh many times: `prepare(mesh)` keeps what does not depend on the
camera (corner indices, colours, the z-buffer) and every frame reuses it.
"""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..camera import Pinhole
from .inpaint import push_pull_fill

BUCKET_SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
                4096, 6144, 8192, 12288, 16384)
"""Square pixel-box sizes triangles are grouped by (by their longer box side). Few groups means few passes over
all triangles; nearly all triangles of a photo mesh at supersampling 2 fall into the first one."""

PADDED_BUCKETS = 2
"""The first buckets write into a z-buffer padded by their size on the right and bottom, so their candidates need
no per-pixel box test: one that leaves the image lands in the padding and is dropped."""

PAD = BUCKET_SIZES[PADDED_BUCKETS - 1]

CANDIDATES_PER_CHUNK = 1 << 22
"""(triangle, pixel) pairs evaluated at once: bounds memory to roughly 150 MB whatever the mesh."""

INSIDE_TOLERANCE = 1e-5
"""Barycentric slack so pixels exactly on a shared edge are never missed by both triangles."""

LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class Mesh:
    """Triangles in camera-convention world space (+Y up, -Z forward): vertices [V,3], colors [V,3] 0..1, faces [F,3]."""

    vertices: torch.Tensor
    colors: torch.Tensor
    faces: torch.Tensor

    def to(self, device: torch.device | str) -> "Mesh":
        return Mesh(self.vertices.to(device), self.colors.to(device), self.faces.to(device))


@dataclass
class PreparedMesh:
    """What rendering a mesh needs that no camera pose changes: computed once, reused by every frame."""

    vertices: torch.Tensor
    """[V, 3]"""
    colors: torch.Tensor
    """[V, C]"""
    corner_index: torch.Tensor
    """[3F] int64: every face's first corner, then every face's second, then third (planar, for contiguous passes)."""
    colors_and_one: torch.Tensor
    """[C + 1, V] float32: each vertex's colour and a 1; times inverse depth, the numerators and the denominator of
    perspective-correct shading."""
    face_index: torch.Tensor
    """[F] int32: 0..F-1, the low word of the depth keys."""
    _zbuffers: dict = field(default_factory=dict, repr=False)

    def zbuffer(self, height: int, width: int) -> torch.Tensor:
        """The padded key buffer for this size, reset: allocated once per size, not per frame."""
        key = (height, width)
        if key not in self._zbuffers:
            self._zbuffers.clear()
            self._zbuffers[key] = torch.empty((height + PAD) * (width + PAD), dtype=torch.int64,
                                              device=self.vertices.device)
        return self._zbuffers[key].fill_(-1)


_last_prepared: tuple[weakref.ref, PreparedMesh] | None = None
"""The last plain Mesh prepared, held weakly: forgotten (and its buffers freed) as soon as the Mesh is."""


def _forget(reference: weakref.ref) -> None:
    global _last_prepared
    if _last_prepared is not None and _last_prepared[0] is reference:
        _last_prepared = None


def prepare(mesh: Mesh | PreparedMesh) -> PreparedMesh:
    """The camera-independent part of rendering `mesh`. The last mesh's is remembered, so a loop that passes the
    same Mesh to every frame pays for it once."""
    global _last_prepared
    if isinstance(mesh, PreparedMesh):
        return mesh
    if _last_prepared is not None and _last_prepared[0]() is mesh:
        return _last_prepared[1]
    faces = mesh.faces.to(torch.int64)
    colors = mesh.colors.to(torch.float32)
    colors_and_one = torch.cat([colors.T, torch.ones_like(colors[:, 0])[None]]).contiguous()
    face_index = torch.arange(faces.shape[0], device=faces.device, dtype=torch.int32)
    prepared = PreparedMesh(mesh.vertices, mesh.colors, faces.T.reshape(-1).contiguous(), colors_and_one, face_index)
    _last_prepared = (weakref.ref(mesh, _forget), prepared)
    return prepared


def scaled_camera(camera: Pinhole, scale: float, focal_scale: float = 1.0) -> Pinhole:
    """The same view at `scale` times the pixel size; `focal_scale` zooms (dolly zoom) about the principal point."""
    width, height = max(1, round(camera.width * scale)), max(1, round(camera.height * scale))
    return Pinhole(width, height, camera.fx * scale * focal_scale, camera.fy * scale * focal_scale,
                   camera.cx * width / camera.width, camera.cy * height / camera.height)


def face_colors(mesh: Mesh) -> torch.Tensor:
    """[F, 3 corners * C] colours per face (kept for callers that pass `corner_colors`; `prepare` supersedes it)."""
    return mesh.colors.index_select(0, mesh.faces.reshape(-1)).view(mesh.faces.shape[0], 3 * mesh.colors.shape[1])


def rasterize(mesh: Mesh | PreparedMesh, camera: Pinhole, position: torch.Tensor, near: float = 1e-4,
              corner_colors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [C,H,W] and coverage [H,W] (bool) of the mesh seen from a camera at `position` looking down -Z.

    mesh: a Mesh, or `prepare(mesh)` when rendering many frames of one mesh. corner_colors: ignored (the prepared
    mesh holds the colours); accepted so older callers keep working.
    """
    prepared = prepare(mesh)
    device = prepared.vertices.device
    height, width = camera.height, camera.width
    channels = prepared.colors.shape[1]
    face_count = prepared.face_index.shape[0]
    if face_count == 0:
        return (torch.zeros(channels, height, width, device=device),
                torch.zeros(height, width, dtype=torch.bool, device=device))

    # Project the vertices once; faces then gather their corners in one index_select: [quantity, corner, F].
    points = prepared.vertices.to(torch.float32) - position.to(device=device, dtype=torch.float32)
    inverse_depth = points[:, 2].reciprocal().neg_()  # > 0 in front of the camera
    screen = torch.stack([points[:, 0] * inverse_depth, points[:, 1] * inverse_depth, inverse_depth])
    screen[0].mul_(camera.fx).add_(camera.cx)
    screen[1].mul_(-camera.fy).add_(camera.cy)
    face_x, face_y, face_inverse = screen.index_select(1, prepared.corner_index).view(3, 3, face_count).unbind(0)

    x_min, x_max = torch.aminmax(face_x, dim=0)
    y_min, y_max = torch.aminmax(face_y, dim=0)
    inverse_min, inverse_max = torch.aminmax(face_inverse, dim=0)
    x_low = x_min.sub_(0.5).ceil_().clamp_(0, width - 1)
    x_high = x_max.sub_(0.5).floor_().clamp_(-1, width - 1)
    y_low = y_min.sub_(0.5).ceil_().clamp_(0, height - 1)
    y_high = y_max.sub_(0.5).floor_().clamp_(-1, height - 1)
    visible = (inverse_min > 1.0 / 1e6) & (inverse_max < 1.0 / near) & (x_high >= x_low) & (y_high >= y_low)
    box_w = (x_high - x_low).to(torch.int32).add_(1)
    box_h = (y_high - y_low).to(torch.int32).add_(1)

    # Relative to the box corner pixel centre: small coordinates keep float32 barycentrics exact.
    origin_x, origin_y = x_low.add_(0.5), y_low.add_(0.5)
    x0, x1, x2 = (face_x - origin_x).unbind(0)
    y0, y1, y2 = (face_y - origin_y).unbind(0)
    # Barycentrics w0, w1 = constant + slope_x * x + slope_y * y at offsets from the corner pixel centre (w2 is
    # 1 - w0 - w1): twice the signed areas of (pixel, 1, 2) and (pixel, 2, 0) over twice the triangle's area.
    cross0 = x1 * y2 - x2 * y1
    cross1 = x2 * y0 - x0 * y2
    area = (x0 * y1 - x1 * y0).add_(cross0).add_(cross1)
    visible &= area.abs() > 1e-12
    inv_area = torch.where(visible, area, 1.0).reciprocal_()
    barycentric = torch.stack([cross0, y1 - y2, x2 - x1, cross1, y2 - y0, x0 - x2]).mul_(inv_area)  # [6, F]
    # Inverse depth = corner 2 + w0 * (corner 0 - corner 2) + w1 * (corner 1 - corner 2): its plane [3, F].
    inverse0, inverse1, inverse2 = face_inverse.unbind(0)
    inverse_plane = (barycentric[0:3] * (inverse0 - inverse2)).addcmul_(barycentric[3:6], inverse1 - inverse2)
    inverse_plane[0] += inverse2

    sizes = torch.tensor(BUCKET_SIZES, device=device, dtype=torch.int32)
    bucket = torch.searchsorted(sizes, torch.maximum(box_w, box_h))
    bucket = torch.where(visible, bucket, len(BUCKET_SIZES))
    counts = torch.bincount(bucket, minlength=len(BUCKET_SIZES) + 1)[:-1].tolist()
    padded_width = width + PAD
    base_pixel = origin_y.to(torch.int64).mul_(padded_width).add_(origin_x.to(torch.int64))
    keys = prepared.zbuffer(height, width)
    if counts[0] > 0:
        # The common case: all faces at once, no gather; faces of other buckets, and culled ones, write into the
        # padding past the last row, which is never read.
        dump = torch.tensor(height * padded_width + width, device=device)
        _scatter_two_by_two(keys, barycentric, inverse_plane, torch.where(bucket == 0, base_pixel, dump),
                            prepared.face_index, padded_width)
    if sum(counts[1:]) > 0:
        # The rest (larger or clipped boxes): few faces, so only theirs are gathered.
        others = ((bucket > 0) & (bucket < len(BUCKET_SIZES))).nonzero().squeeze(1)
        other_bucket = bucket.index_select(0, others)
        for bucket_id, count in enumerate(counts):
            if bucket_id > 0 and count > 0:
                members = others[other_bucket == bucket_id]
                _scatter_bucket(keys, members, BUCKET_SIZES[bucket_id], bucket_id < PADDED_BUCKETS, barycentric,
                                inverse_plane, box_w, box_h, base_pixel, padded_width)

    covered, triangle = _winners(keys, height, width)
    # Shade every pixel (an empty one borrows face 0 and is discarded): cheaper than compacting the covered ones.
    # Colour * inverse depth and inverse depth (a last "colour" of 1) are affine in the barycentrics, so in screen
    # space: value = corner 2 + w0 * (corner 0 - corner 2) + w1 * (corner 1 - corner 2). Their planes
    # [3 coef, C + 1, F] are gathered per pixel one quantity at a time (1-D gathers of contiguous rows), so every
    # pass stays planar and the image comes out [C, H, W] with no transpose.
    weighted = prepared.colors_and_one * inverse_depth  # [C + 1, V]
    shading = torch.empty(3, channels + 1, face_count, device=device)
    for channel in range(channels + 1):
        corner0, corner1, last = weighted[channel].index_select(0, prepared.corner_index).view(3, face_count)
        towards0, towards1 = corner0 - last, corner1 - last
        for coefficient in range(3):
            torch.mul(towards0, barycentric[coefficient], out=shading[coefficient, channel])
            shading[coefficient, channel].addcmul_(towards1, barycentric[3 + coefficient])
        shading[0, channel] += last
    triangle = triangle.view(-1)
    centres_x = torch.arange(width, device=device, dtype=torch.float32).add_(0.5)
    centres_y = torch.arange(height, device=device, dtype=torch.float32).add_(0.5)
    pixel_x = (centres_x[None, :] - origin_x.index_select(0, triangle).view(height, width)).view(-1)
    pixel_y = (centres_y[:, None] - origin_y.index_select(0, triangle).view(height, width)).view(-1)
    planes = [[shading[coefficient, channel].index_select(0, triangle) for coefficient in range(3)]
              for channel in range(channels + 1)]
    values = [torch.addcmul(constant, slope_x, pixel_x).addcmul_(slope_y, pixel_y) for constant, slope_x, slope_y in planes]
    inverse = values[channels].reciprocal_()
    # where, not a product: face 0 may be a culled face whose numbers are inf or NaN.
    if bool(covered.all()):
        image = torch.stack([value.mul_(inverse) for value in values[:channels]])
    else:
        image = torch.stack([torch.where(covered.view(-1), value.mul_(inverse), 0.0) for value in values[:channels]])
    return image.view(channels, height, width), covered


def _winners(keys: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(covered [H,W] bool, winning face [H,W], 0 where empty) from the padded key buffer."""
    keys = keys.view(height + PAD, width + PAD)[:height, :width]
    if LITTLE_ENDIAN:
        # The face is the low word: read it in place, no int64 pass (an empty key, -1, has low word -1).
        low = keys.view(torch.int32)[:, 0::2]
        return low >= 0, low.clamp_min(0)
    covered = keys >= 0
    return covered, torch.where(covered, keys & 0xFFFFFFFF, 0)


def _candidate_values(plane: torch.Tensor) -> torch.Tensor:
    """[4, F] values of planes [3 (constant, x, y), F] at the 2x2 offsets (0,0), (1,0), (0,1), (1,1)."""
    constant, slope_x, slope_y = plane.unbind(0)
    values = torch.empty(4, plane.shape[1], device=plane.device, dtype=plane.dtype)
    values[0] = constant
    torch.add(constant, slope_x, out=values[1])
    torch.add(constant, slope_y, out=values[2])
    torch.add(values[1], slope_y, out=values[3])
    return values


def _depth_keys(inverse_depth: torch.Tensor, face_index: torch.Tensor, outside: torch.Tensor | None) -> torch.Tensor:
    """int64 keys: inverse depth bits (> 0 is an ordered int32 pattern) in the high word, the face in the low one,
    so the nearest face is the largest key and the face index breaks ties; -1 where outside."""
    if LITTLE_ENDIAN:
        # Written as two int32 words (low word first): one copy per word instead of a widening and two int64 passes.
        words = torch.empty(*inverse_depth.shape, 2, device=inverse_depth.device, dtype=torch.int32)
        words[..., 1] = inverse_depth.view(torch.int32)
        words[..., 0] = face_index
        key = words.view(torch.int64).squeeze(-1)
    else:
        key = inverse_depth.view(torch.int32).to(torch.int64).mul_(1 << 32).add_(face_index)
    return key if outside is None else key.masked_fill_(outside, -1)


def _scatter_two_by_two(keys: torch.Tensor, barycentric: torch.Tensor, inverse_plane: torch.Tensor,
                        base_pixel: torch.Tensor, face_index: torch.Tensor, padded_width: int) -> None:
    w0 = _candidate_values(barycentric[0:3])
    w1 = _candidate_values(barycentric[3:6])
    outside = torch.minimum(w0, w1) < -INSIDE_TOLERANCE
    outside |= w0.add_(w1) > 1.0 + INSIDE_TOLERANCE
    # A negative inverse depth makes a negative key, which never beats an empty pixel's -1: cheaper than masking
    # the int64 keys.
    inverse_depth = _candidate_values(inverse_plane).masked_fill_(outside, -1.0)
    key = _depth_keys(inverse_depth, face_index, None)
    offsets = torch.tensor([0, 1, padded_width, padded_width + 1], device=keys.device)
    pixel = base_pixel + offsets[:, None]
    keys.scatter_reduce_(0, pixel.view(-1), key.view(-1), reduce="amax")


def _scatter_bucket(keys: torch.Tensor, members: torch.Tensor, size: int, padded: bool, barycentric: torch.Tensor,
                    inverse_plane: torch.Tensor, box_w: torch.Tensor, box_h: torch.Tensor, base_pixel: torch.Tensor,
                    padded_width: int) -> None:
    """General path: the faces `members` of one box size, their (face, pixel) candidates in chunks."""
    device = keys.device
    offset_x = torch.arange(size, device=device).repeat(size)
    offset_y = torch.arange(size, device=device).repeat_interleave(size)
    basis = torch.stack([torch.ones_like(offset_x), offset_x, offset_y]).to(barycentric.dtype)  # [3, K]
    linear_offset = offset_y * padded_width + offset_x
    per_chunk = max(1, CANDIDATES_PER_CHUNK // (size * size))
    for start in range(0, members.numel(), per_chunk):
        chunk = members[start:start + per_chunk]
        chunk_planes = torch.cat([barycentric.index_select(1, chunk), inverse_plane.index_select(1, chunk)])
        chunk_planes = chunk_planes.T.reshape(-1, 3)  # [n * 3 (w0, w1, 1/z), 3 coef]
        w0, w1, inverse_depth = (chunk_planes @ basis).view(-1, 3, size * size).unbind(1)
        outside = (w0 < -INSIDE_TOLERANCE) | (w1 < -INSIDE_TOLERANCE) | ((w0 + w1) > 1.0 + INSIDE_TOLERANCE)
        if not padded:
            # The box test keeps triangles that stick out of the image from wrapping onto the next row.
            outside |= (offset_x[None, :] >= box_w.index_select(0, chunk)[:, None]) | \
                       (offset_y[None, :] >= box_h.index_select(0, chunk)[:, None])
        key = _depth_keys(inverse_depth.contiguous(), chunk.to(torch.int32)[:, None], outside)
        pixel = base_pixel.index_select(0, chunk)[:, None] + linear_offset[None, :]
        if not padded:
            pixel.clamp_(0, keys.numel() - 1)
        keys.scatter_reduce_(0, pixel.view(-1), key.view(-1), reduce="amax")


def render_frame(mesh: Mesh | PreparedMesh, camera: Pinhole, position: torch.Tensor, supersampling: int = 1,
                 focal_scale: float = 1.0, fill_holes: bool = True,
                 corner_colors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One anti-aliased frame: (image [3,H,W] 0..1, coverage [H,W] float 0..1) at the camera's size.

    Pixels no triangle covers (a camera that leaves the scene) are filled from their surroundings when
    `fill_holes`, so every frame is complete. Pass `prepare(mesh)` when rendering many frames of one mesh
    (a plain Mesh passed again is recognised too); corner_colors is ignored, kept for older callers.
    """
    if supersampling < 1:
        raise ValueError(f"supersampling must be at least 1, got {supersampling}.")
    prepared = prepare(mesh)
    render_camera = scaled_camera(camera, supersampling, focal_scale)
    image, covered = rasterize(prepared, render_camera, position)
    coverage = covered.to(image.dtype)
    if supersampling > 1:
        # The image is already 0 where not covered: pooling it is the coverage-weighted sum.
        exact = (render_camera.height, render_camera.width) == (camera.height * supersampling, camera.width * supersampling)
        if exact:
            image = F.avg_pool2d(image[None], supersampling)[0]  # the usual case, cheaper than adaptive pooling
            coverage = F.avg_pool2d(coverage[None, None], supersampling)[0, 0]
        else:
            image = F.adaptive_avg_pool2d(image[None], (camera.height, camera.width))[0]
            coverage = F.adaptive_avg_pool2d(coverage[None, None], (camera.height, camera.width))[0, 0]
        image = image / coverage.clamp_min(1e-6)
    if fill_holes:
        known = coverage > 0
        if bool(known.all()):
            pass  # the usual frame: nothing to fill
        elif bool(known.any()):
            image = push_pull_fill(image, known)
        elif prepared.colors.shape[0] > 0:
            # Nothing in view (or a mesh without triangles, e.g. a one-pixel photo): the scene's average colour.
            image = prepared.colors.mean(0)[:, None, None].expand_as(image).clone()
    return image.clamp(0, 1), coverage
