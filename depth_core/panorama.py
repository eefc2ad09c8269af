"""360° panoramas: seamless depth of equirectangular images, and omni-directional stereo (ODS) for VR.

Depth networks are trained on perspective photos: run on a whole equirectangular image they bend straight lines
and leave a seam where its left and right edges meet. So the panorama is looked at through a set of overlapping
perspective views (the six faces of a cube, or twenty views at the faces of an icosahedron, each padded so it
overlaps its neighbours), depth is estimated for all views in one batch, and the views are put back together:

* Alignment. Each view's prediction has its own unknowns: scale and shift for relative inverse depth, scale for
  metric depth. Every panorama direction seen by two views gives one equation between them, solved by (robust,
  iteratively reweighted) least squares over the whole overlap graph.
* A common quantity. A view predicts depth along *its own* optical axis; two views see the same point at different
  axis depths. Everything is converted to the distance along the ray from the panorama's centre before the
  alignment compares views and before blending.
* Blending. Each panorama pixel is the weighted mean of the views that see it, the weight falling smoothly to zero
  at each view's border, so no view edge can show as a step. The panorama's own wrap-around border and its poles
  are inside views (sampling wraps around), so they are never a seam either.

Geometry follows depth_core.camera: the panorama's centre column looks down -Z, +X right, +Y up; a view's camera
looks down its own -Z axis. Everything runs in torch on any device.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .camera import Pinhole, equirectangular_directions
from .depth import (Depth, DepthKind, fill_non_finite, match_depth_to_images, nearness, normalize_min_max,
                    unit_interval)
from .image import to_rgb
from .progress import ProgressFn, no_progress
from .stereo import warp_pair

logger = logging.getLogger(__name__)

VIEW_SETS: tuple[str, ...] = ("icosahedral", "cube")
"""icosahedral: 20 views of 90° (each direction within 37° of a view centre: the models see little distortion);
cube: 6 faces, each padded to 90° + 2 x padding (fewer, wider views: faster)."""

DEFAULT_CUBE_PADDING_DEGREES = 15.0
"""Extra field of view on each side of a cube face, so neighbouring faces overlap by 30°."""

ICOSAHEDRAL_FOV_DEGREES = 90.0
"""Field of view of the icosahedral views: their centres are at most 37.4° from any direction, so a 90° square
view still has a wide overlap with its neighbours everywhere."""

PANORAMA_ASPECT_TOLERANCE = 0.02
"""How far width / height may be from 2 (relative) before a picture is refused as not equirectangular."""

SEAM_MISMATCH_RATIO = 2.0
"""An image whose left and right edges differ this many times more than its most different neighbouring columns
(99th percentile) does not wrap around: a perspective photo (or a cropped panorama), not a 360° one."""

ALIGNMENT_GRID_HEIGHT = 96
"""Rows of the coarse panorama grid on which views are compared (twice as many columns)."""

ALIGNMENT_ITERATIONS = 6
"""Reweighted least-squares rounds: enough for the Cauchy weights to settle on the overlaps that agree."""

PANORAMA_STEREO_TAG = "_360_TB"
"""File-name tag VR players (Skybox, DeoVR, Pigasus, Moon) read as "360°, top-bottom stereo (left eye on top)"."""

DEFAULT_POLE_MERGE_DEGREES = 60.0
"""Latitude above which the ODS eye distance fades to zero, so the zenith and nadir are seen without a twist."""


class PanoramaEstimator(Protocol):
    """What panorama depth needs from a depth network: depth_core.estimate.DepthEstimator has it."""

    name: str

    @property
    def output_kind(self) -> DepthKind: ...

    def predict(self, images: torch.Tensor, resolution=None, mask=None, progress: ProgressFn = no_progress) -> Depth: ...


# ---------------------------------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True)
class ViewSet:
    """Perspective views of a panorama: square pinhole cameras at the panorama's centre."""

    rotations: torch.Tensor
    """[V,3,3] float64 camera-to-world rotations; columns: the camera's right, up and backward axes."""
    fov_degrees: float

    def __len__(self) -> int:
        return self.rotations.shape[0]

    @property
    def half_extent(self) -> float:
        """tan(half field of view): the largest |x| or |y| of a z = -1 ray inside a view."""
        return math.tan(math.radians(self.fov_degrees) / 2.0)


def look_rotation(forward: torch.Tensor) -> torch.Tensor:
    """[3,3] camera-to-world rotation of a camera looking along `forward`, its up as close to +Y as possible
    (+Z-ish for a camera looking straight up or down, where +Y cannot be up)."""
    forward = forward / forward.norm()
    world_up = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype)
    if abs(float(forward @ world_up)) > 0.999:
        world_up = torch.tensor([0.0, 0.0, -1.0 if forward[1] > 0 else 1.0], dtype=forward.dtype)
    right = torch.linalg.cross(forward, world_up)
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return torch.stack([right, up, -forward], dim=1)


def view_set(name: str = "icosahedral", cube_padding_degrees: float = DEFAULT_CUBE_PADDING_DEGREES) -> ViewSet:
    """The views of a panorama: "cube" (6 padded faces) or "icosahedral" (20 views at the faces of an icosahedron,
    i.e. the vertices of a dodecahedron)."""
    if name == "cube":
        if not 0.0 <= cube_padding_degrees <= 40.0:
            raise ValueError(f"Cube padding must be between 0 and 40 degrees, got {cube_padding_degrees}.")
        forwards = [(0, 0, -1), (1, 0, 0), (0, 0, 1), (-1, 0, 0), (0, 1, 0), (0, -1, 0)]
        fov = 90.0 + 2.0 * cube_padding_degrees
    elif name == "icosahedral":
        golden = (1.0 + math.sqrt(5.0)) / 2.0
        forwards = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
        for a in (-1 / golden, 1 / golden):
            for b in (-golden, golden):
                forwards += [(0, a, b), (a, b, 0), (b, 0, a)]
        fov = ICOSAHEDRAL_FOV_DEGREES
    else:
        raise ValueError(f"Unknown view set {name!r}; use one of {', '.join(VIEW_SETS)}.")
    rotations = torch.stack([look_rotation(torch.tensor(f, dtype=torch.float64)) for f in forwards])
    return ViewSet(rotations, fov)


def view_size_for(panorama_width: int, views: ViewSet, limit: int = 2048) -> int:
    """Side of the square views that keeps the panorama's angular resolution at their centres."""
    pixels_per_radian = panorama_width / (2.0 * math.pi)
    return int(max(32, min(limit, round(2.0 * pixels_per_radian * views.half_extent))))


def network_view_size(estimator: "PanoramaEstimator", full_size: int, resolution=None) -> int:
    """The view side actually worth sampling: no more pixels than the network will read at `resolution` (at its
    native 518 px, a 2048 px view would only be shrunk again), never more than the panorama has."""
    input_size = getattr(estimator, "input_size", None)
    if input_size is None:
        return full_size
    return int(min(full_size, max(input_size(full_size, full_size, resolution))))


def blend_width_for(view_size: int, views: ViewSet, panorama_width: int) -> int:
    """Panorama width (even) whose angular resolution matches the views' at their centres: blending at a finer
    grid only interpolates, so larger panoramas are blended at this width and resized."""
    pixels_per_radian = view_size / (2.0 * views.half_extent)
    return int(min(panorama_width, 2 * max(8, round(math.pi * pixels_per_radian))))


def resize_equirectangular(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of equirectangular maps [B,h,w] that wraps around the 360° border (no seam from clamping)."""
    if tuple(values.shape[-2:]) == (height, width):
        return values
    source_height, source_width = values.shape[-2:]
    columns = (torch.arange(width, device=values.device, dtype=torch.float32) + 0.5) * source_width / width + 1.0
    rows = (torch.arange(height, device=values.device, dtype=torch.float32) + 0.5) * source_height / height
    grid_y, grid_x = torch.meshgrid(rows / source_height * 2 - 1, columns / (source_width + 2) * 2 - 1, indexing="ij")
    grid = torch.stack([grid_x, grid_y], -1)[None].expand(values.shape[0], -1, -1, -1).to(values.dtype)
    padded = _wrap_pad(values[:, None])
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def _equirectangular_grid(directions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample coordinates (align_corners=False) of world directions [...,3] in a panorama padded by one wrapped
    column on each side (see _wrap_pad)."""
    longitude = torch.atan2(directions[..., 0], -directions[..., 2])
    latitude = torch.asin((directions[..., 1] / directions.norm(dim=-1)).clamp(-1.0, 1.0))
    column = (longitude + math.pi) / (2.0 * math.pi) * width + 1.0        # +1: the wrapped column on the left
    row = (math.pi / 2.0 - latitude) / math.pi * height
    return torch.stack([column / (width + 2) * 2.0 - 1.0, row / height * 2.0 - 1.0], dim=-1)


def _wrap_pad(panorama: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] with its last column copied to the left and its first to the right: bilinear sampling then wraps
    around the 360° border instead of clamping at it."""
    return torch.cat([panorama[..., -1:], panorama, panorama[..., :1]], dim=-1)


def view_rays(size: int, views: ViewSet, device: torch.device | str = "cpu") -> torch.Tensor:
    """[S,S,3] camera-space rays (z = -1) through the pixel centres of a square view."""
    return Pinhole.from_fov(size, size, views.fov_degrees).pixel_rays(device, torch.float32)


def sample_directions(panorama: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [C,...] of an equirectangular panorama [C,H,W] in world directions [...,3], wrapping around
    the 360° border."""
    channels, height, width = panorama.shape
    grid = _equirectangular_grid(directions.reshape(1, -1, 1, 3), height, width).to(panorama.dtype)
    sampled = F.grid_sample(_wrap_pad(panorama[None]), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled.reshape(channels, *directions.shape[:-1])


def sample_views(panorama: torch.Tensor, views: ViewSet, size: int) -> torch.Tensor:
    """Perspective views [V,C,S,S] of one equirectangular panorama [C,H,W] (bilinear, wrapping around)."""
    rays = view_rays(size, views, panorama.device)
    world = torch.einsum("vij,hwj->vhwi", views.rotations.to(panorama.device, torch.float32), rays)
    return sample_directions(panorama, world).transpose(0, 1)


@dataclass(frozen=True)
class ViewSamples:
    """Where panorama directions fall in every view."""

    grid: torch.Tensor
    """[V,...,2] grid_sample coordinates in the view (align_corners=False)."""
    weight: torch.Tensor
    """[V,...] blending weight: 1 at the view's centre, falling smoothly to 0 at its border, 0 outside or behind."""
    ray_length: torch.Tensor
    """[V,...] |ray| of the direction in the view's camera with z = -1: distance = axis depth x ray_length."""


def locate_in_views(directions: torch.Tensor, views: ViewSet) -> ViewSamples:
    """Project world directions [...,3] into every view."""
    rotations = views.rotations.to(directions.device, directions.dtype)
    camera = torch.einsum("vji,...j->v...i", rotations, directions)       # R^T d: world to camera
    in_front = camera[..., 2] < -1e-6
    depth = torch.where(in_front, -camera[..., 2], torch.ones_like(camera[..., 2]))
    x, y = camera[..., 0] / depth, camera[..., 1] / depth
    extent = views.half_extent
    grid = torch.stack([x / extent, -y / extent], dim=-1)
    # Chebyshev distance to the centre in the image plane: 1 on the view's square border.
    border = torch.maximum(x.abs(), y.abs()) / extent
    weight = torch.where(in_front, (1.0 - border).clamp_min(0.0).pow(2), torch.zeros_like(border))
    ray_length = torch.sqrt(x * x + y * y + 1.0)
    return ViewSamples(grid, weight, ray_length)


def _sample(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of per-view maps [V,S,S] at grid [V,...,2], [V,...]."""
    shape = grid.shape[:-1]
    flat = grid.reshape(grid.shape[0], 1, -1, 2)
    sampled = F.grid_sample(values[:, None], flat, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# Alignment


@dataclass(frozen=True)
class Alignment:
    """Per-view corrections: aligned = scale x prediction + shift (shift is 0 for metric depth)."""

    scale: torch.Tensor
    shift: torch.Tensor
    residual: float
    """Robust (median) relative disagreement of overlapping views after alignment: ~0 when they fit together."""


def _overlap_pairs(weight: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """Pairs of views that share directions on the alignment grid, with those directions' flat indices."""
    covered = (weight > 0).reshape(weight.shape[0], -1)
    pairs = []
    for a in range(covered.shape[0]):
        for b in range(a + 1, covered.shape[0]):
            shared = (covered[a] & covered[b]).nonzero().squeeze(1)
            if shared.numel():
                pairs.append((a, b, shared))
    return pairs


def _robust_least_squares(rows: torch.Tensor, target: torch.Tensor, base_weight: torch.Tensor,
                          anchor: torch.Tensor, anchor_value: float) -> torch.Tensor:
    """Minimize sum w_i (rows_i . x - target_i)^2 with Cauchy weights re-estimated from the residuals (so views that
    disagree somewhere, e.g. a network's mistake in one view, do not pull the rest), under the gauge
    anchor . x = anchor_value."""
    weight = base_weight.clone()
    gauge = anchor[:, None] * anchor[None, :]
    for _ in range(ALIGNMENT_ITERATIONS):
        # Normal equations: the unknowns are a handful per view, the rows tens of thousands.
        weighted = rows * weight[:, None]
        scale = float(weight.sum())
        normal = weighted.T @ rows + scale * gauge
        rhs = weighted.T @ target + scale * anchor * anchor_value
        solution, info = torch.linalg.solve_ex(normal, rhs)
        if int(info) != 0:
            # A view whose prediction is flat (a clear sky, a plain wall) leaves its scale and shift undetermined:
            # any pair that puts it at its neighbours' level fits, and the smallest such pair is taken.
            solution = torch.linalg.lstsq(normal.cpu(), rhs.cpu()[:, None], driver="gelsd").solution[:, 0]
            solution = solution.to(normal.device)
        residual = rows @ solution - target
        spread = 1.4826 * residual.abs().median().clamp_min(1e-9)
        weight = base_weight / (1.0 + (residual / (2.0 * spread)) ** 2)
    return solution


def align_views(predictions: torch.Tensor, kind: DepthKind, views: ViewSet,
                grid_height: int = ALIGNMENT_GRID_HEIGHT) -> Alignment:
    """Scale and shift (relative inverse depth) or scale (metric) of every view [V,S,S] prediction, so that all views
    give the same distance wherever they overlap.

    Relative: view v's inverse distance is (s_v p_v + t_v) / ray_length_v, and two views must agree on it, which is
    linear in (s, t); the mean scale is fixed at 1. The shift is fixed by the geometry itself (ray lengths differ
    across an overlap), which a plain per-pixel comparison would lose. Metric: log s_a + log d_a = log s_b + log d_b,
    with the mean log scale fixed at 0 so the views' own metric scale is kept.
    """
    count = predictions.shape[0]
    directions = equirectangular_directions(2 * grid_height, grid_height, predictions.device, torch.float32)
    located = locate_in_views(directions, views)
    # The system is small (a coarse grid, a few unknowns per view): solved on the CPU in double precision.
    sampled = _sample(predictions.float(), located.grid).reshape(count, -1).double().cpu()
    ray_length = located.ray_length.reshape(count, -1).double().cpu()
    weight = located.weight.reshape(count, -1).double().cpu()
    # Rows of the equirectangular grid shrink towards the poles: weigh them by their solid angle.
    latitude_weight = torch.cos(torch.asin(directions[..., 1].clamp(-1, 1))).reshape(-1).double().cpu()
    pairs = _overlap_pairs(weight)
    if not pairs:
        raise ValueError("The panorama's views do not overlap; use more padding.")
    rows, targets, weights = [], [], []
    if kind is DepthKind.METRIC:
        log_distance = torch.log(sampled.clamp_min(1e-6) * ray_length)
        for a, b, shared in pairs:
            block = torch.zeros(shared.numel(), count, dtype=torch.float64)
            block[:, a], block[:, b] = 1.0, -1.0
            rows.append(block)
            targets.append(log_distance[b, shared] - log_distance[a, shared])
            weights.append(weight[a, shared] * weight[b, shared] * latitude_weight[shared])
        rows_all, target_all, weight_all = torch.cat(rows), torch.cat(targets), torch.cat(weights)
        log_scale = _robust_least_squares(rows_all, target_all, weight_all,
                                                    torch.full((count,), 1.0 / count, dtype=torch.float64), 0.0)
        scale = torch.exp(log_scale)
        shift = torch.zeros_like(scale)
        common = scale[:, None] * sampled * ray_length
        return Alignment(scale.float(), shift.float(), _disagreement(common, pairs))
    # Relative: standardize each view first so the unknowns are of order 1 whatever the network's output range.
    centre = sampled.median(dim=1, keepdim=True).values
    spread = (sampled - centre).abs().median(dim=1, keepdim=True).values.clamp_min(1e-9)
    standard = (sampled - centre) / spread
    for a, b, shared in pairs:
        block = torch.zeros(shared.numel(), 2 * count, dtype=torch.float64)
        block[:, 2 * a] = standard[a, shared] / ray_length[a, shared]
        block[:, 2 * a + 1] = 1.0 / ray_length[a, shared]
        block[:, 2 * b] = -standard[b, shared] / ray_length[b, shared]
        block[:, 2 * b + 1] = -1.0 / ray_length[b, shared]
        rows.append(block)
        weights.append(weight[a, shared] * weight[b, shared] * latitude_weight[shared])
    rows_all, weight_all = torch.cat(rows), torch.cat(weights)
    anchor = torch.zeros(2 * count, dtype=torch.float64)
    anchor[0::2] = 1.0 / count
    solution = _robust_least_squares(rows_all, torch.zeros(rows_all.shape[0], dtype=torch.float64),
                                               weight_all, anchor, 1.0)
    s, t = solution[0::2], solution[1::2]
    # Back to the raw prediction: s (p - c) / m + t = (s / m) p + (t - s c / m).
    scale = s / spread[:, 0]
    shift = t - scale * centre[:, 0]
    common = (scale[:, None] * sampled + shift[:, None]) / ray_length
    return Alignment(scale.float(), shift.float(), _disagreement(common, pairs))


def _disagreement(common: torch.Tensor, pairs: list[tuple[int, int, torch.Tensor]]) -> float:
    """Median relative difference of two views' values [V,N] where they overlap."""
    differences = [(common[a, shared] - common[b, shared]).abs()
                   / (0.5 * (common[a, shared].abs() + common[b, shared].abs())).clamp_min(1e-12)
                   for a, b, shared in pairs]
    return float(torch.cat(differences).median())


# ---------------------------------------------------------------------------------------------------------------
# Blending


def blend_views(values: torch.Tensor, views: ViewSet, height: int, width: int, rows_per_chunk: int = 256,
                progress: ProgressFn = no_progress) -> torch.Tensor:
    """One equirectangular map [H,W] from per-view maps [V,S,S] of a quantity that does not depend on the view
    (distance or inverse distance along the panorama's rays), feathered by each view's border weight."""
    result = values.new_empty(height, width)
    for start in range(0, height, rows_per_chunk):
        band = range(start, min(height, start + rows_per_chunk))
        located = locate_in_views(equirectangular_directions(width, height, values.device, torch.float32, band), views)
        sampled = _sample(values, located.grid)
        result[band.start:band.stop] = (sampled * located.weight).sum(0) / located.weight.sum(0).clamp_min(1e-12)
        progress(band.stop, height)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Checks


def is_equirectangular_size(height: int, width: int) -> bool:
    """Whether a picture is 2:1 (within PANORAMA_ASPECT_TOLERANCE), as a 360° x 180° equirectangular one is."""
    return height > 0 and abs(width / height - 2.0) <= 2.0 * PANORAMA_ASPECT_TOLERANCE


def check_panorama(images: torch.Tensor) -> list[str]:
    """Refuse pictures that cannot be equirectangular (not 2:1), and return warnings for pictures that are 2:1 but
    do not wrap around (a perspective photo): their left and right edges should meet."""
    height, width = images.shape[1], images.shape[2]
    if not is_equirectangular_size(height, width):
        raise ValueError(f"Panorama mode needs an equirectangular 360° x 180° image, which is twice as wide as it is "
                         f"high; this one is {width}x{height} ({width / height:.2f}:1). Turn panorama mode off for "
                         "perspective photos, or give the full 2:1 panorama.")
    gray = to_rgb(images).float().mean(-1)
    seam_step = (gray[:, :, 0] - gray[:, :, -1]).abs().mean(-1)
    # Compared with the strongest column-to-column steps inside the picture, so a panorama with a door frame or a
    # wall corner exactly at its border is not mistaken for a photo.
    column_steps = (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(-2)
    strong_step = torch.quantile(column_steps, 0.99, dim=-1)
    warnings = []
    for index in range(images.shape[0]):
        ratio = float(seam_step[index] / strong_step[index].clamp_min(1e-6))
        if seam_step[index] > 0.01 and ratio > SEAM_MISMATCH_RATIO:
            warnings.append(
                f"Image {index} does not look like a 360° panorama: its left and right edges do not meet (they differ "
                f"{ratio:.1f}x more than the most different neighbouring columns inside it). A perspective photo in "
                "panorama mode gets bent geometry; turn panorama mode off for it.")
    for message in warnings:
        logger.warning(message)
    return warnings


# ---------------------------------------------------------------------------------------------------------------
# Depth of a panorama


@dataclass(frozen=True)
class PanoramaDepthReport:
    views: int
    view_size: int
    residuals: list[float]
    """Per image: the median relative disagreement of overlapping views after alignment."""
    warnings: list[str]


def estimate_panorama_depth(estimator: PanoramaEstimator, images: torch.Tensor, resolution=None,
                            view_set_name: str = "icosahedral",
                            cube_padding_degrees: float = DEFAULT_CUBE_PADDING_DEGREES,
                            view_size: int | None = None, device: torch.device | str | None = None,
                            progress: ProgressFn = no_progress) -> tuple[Depth, PanoramaDepthReport]:
    """Depth of equirectangular panoramas IMAGE [B,H,W,C] (2:1) from any depth network, seamless all around.

    Relative networks give relative inverse *distance* from the centre (larger = nearer); metric networks give the
    distance from the centre in metres. Either is what MeshExport's equirectangular sphere and the 360° stereo
    expect. `resolution` is passed to the estimator for every view (None: the network's native size).
    """
    warnings = check_panorama(images)
    rgb = to_rgb(images)
    batch, height, width = rgb.shape[:3]
    views = view_set(view_set_name, cube_padding_degrees)
    size = view_size or network_view_size(estimator, view_size_for(width, views), resolution)
    blend_width = blend_width_for(size, views, width)
    device = torch.device(device) if device is not None else _estimator_device(estimator)
    rays = view_rays(size, views, device)
    ray_length = rays.norm(dim=-1)
    kind = estimator.output_kind
    steps = batch * 3
    results, residuals = [], []
    for index in range(batch):
        panorama = rgb[index].to(device).permute(2, 0, 1).float()
        view_images = sample_views(panorama, views, size).clamp(0.0, 1.0).permute(0, 2, 3, 1)
        progress(3 * index + 1, steps)
        prediction = estimator.predict(view_images, resolution).values.to(device).float()
        prediction = fill_non_finite(prediction, "far", kind)
        progress(3 * index + 2, steps)
        alignment = align_views(prediction, kind, views)
        scale = alignment.scale.to(device).view(-1, 1, 1)
        shift = alignment.shift.to(device).view(-1, 1, 1)
        if kind is DepthKind.METRIC:
            common = prediction * scale * ray_length
        else:
            inverse_depth = (prediction * scale + shift).clamp_min(0.0)
            common = inverse_depth / ray_length
        blended = blend_views(common, views, blend_width // 2, blend_width)
        results.append(resize_equirectangular(blended[None], height, width)[0].cpu())
        residuals.append(alignment.residual)
        progress(3 * index + 3, steps)
    values = torch.stack(results)
    if kind is not DepthKind.METRIC:
        # Relative values keep only their shape; give them a readable range (like the networks' own outputs).
        values = values / values.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    source = getattr(estimator, "name", "model")
    return (Depth(values, kind, f"{source} (360° panorama)"),
            PanoramaDepthReport(len(views), size, residuals, warnings))


def _estimator_device(estimator: PanoramaEstimator) -> torch.device:
    try:
        return torch.device(estimator.device)
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------
# Omni-directional stereo


@dataclass(frozen=True)
class OdsSettings:
    """How strong a 360° stereo panorama is.

    divergence: relative depth: total shift between the eyes for the nearest point on the horizon, % of the
        panorama's width (a 360° panorama spans far more than a screen: 0.5-1 is comfortable).
    exponent: relative depth: shift ~ nearness ** exponent.
    ipd_mm: metric depth: distance between the eyes (65 mm for people).
    depth_mode: "auto" (metric for metric depth), "relative" or "metric".
    pole_merge_degrees: above this latitude the eye distance fades to 0 at the poles, so looking straight up or
        down shows no twisted double image (ODS cannot be right there).
    per_image: normalize relative depth per panorama or over the whole batch (video).
    """

    divergence: float = 0.75
    exponent: float = 1.0
    ipd_mm: float = 65.0
    depth_mode: str = "auto"
    pole_merge_degrees: float = DEFAULT_POLE_MERGE_DEGREES
    per_image: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.divergence <= 20.0:
            raise ValueError(f"divergence must be between 0 and 20 % of the width, got {self.divergence}.")
        if self.exponent <= 0.0:
            raise ValueError(f"The depth exponent must be positive, got {self.exponent}; 1 keeps depth linear.")
        if self.ipd_mm <= 0.0:
            raise ValueError(f"The eye distance must be positive, got {self.ipd_mm} mm.")
        if self.depth_mode not in ("auto", "relative", "metric"):
            raise ValueError(f"Unknown depth mode {self.depth_mode!r}; use auto, relative or metric.")
        if not 0.0 <= self.pole_merge_degrees <= 90.0:
            raise ValueError(f"pole_merge_degrees must be between 0 and 90, got {self.pole_merge_degrees}.")


def pole_merge(latitude: torch.Tensor, start_degrees: float) -> torch.Tensor:
    """1 below `start_degrees` of latitude, easing to 0 at the poles (a half cosine)."""
    start = math.radians(start_degrees)
    span = max(1e-6, math.pi / 2.0 - start)
    t = ((latitude.abs() - start) / span).clamp(0.0, 1.0)
    return 0.5 + 0.5 * torch.cos(math.pi * t)


def ods_shifts(depth: Depth, width: int, settings: OdsSettings = OdsSettings(),
               nearness_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Per-pixel shift in pixels [B,H,W] of each eye in an ODS panorama (left eye: to the right, right eye: left).

    The eyes sit on a circle of radius ipd/2 around the centre and look tangentially; a point at horizontal distance
    rho appears asin(r / rho) away in longitude. Relative depth uses nearness as 1 / rho, scaled so the nearest point
    on the horizon shifts divergence / 2 % of the width. `nearness_range` (low, high): a fixed range for relative
    nearness instead of each image's (or the batch's) own, so that the pieces of a video share one scale.
    """
    metric = settings.depth_mode == "metric" or (settings.depth_mode == "auto" and depth.is_metric)
    if metric and not depth.is_metric:
        raise ValueError("depth mode 'metric' needs metric depth (metres); this depth is relative. Use depth mode "
                         "'relative' or 'auto'.")
    height = depth.size[0]
    latitude = math.pi / 2.0 - (torch.arange(height, dtype=torch.float32) + 0.5) / height * math.pi
    fade = pole_merge(latitude, settings.pole_merge_degrees).view(1, -1, 1)
    # True ODS parallax grows as 1 / cos(latitude) towards the poles; above the merge latitude it is held at its
    # value there while it fades out, so it reaches 0 at the poles.
    cos_latitude = torch.cos(latitude).clamp_min(math.cos(math.radians(settings.pole_merge_degrees)) + 1e-6)
    cos_latitude = cos_latitude.view(1, -1, 1)
    if metric:
        metres = fill_non_finite(depth.values.float(), "far", DepthKind.METRIC).clamp_min(1e-3)
        ratio = (settings.ipd_mm / 2000.0) / (metres * cos_latitude)
    else:
        if nearness_range is None:
            unit = normalize_min_max(nearness(depth).float(), settings.per_image)
        else:
            unit = unit_interval(nearness(depth).float(), *(torch.tensor(value) for value in nearness_range))
        unit = unit.pow(settings.exponent)
        ratio = unit * math.sin(math.pi * settings.divergence / 100.0) / cos_latitude
    angle = torch.asin((ratio * fade).clamp(0.0, 0.99))
    return angle * (width / (2.0 * math.pi))


def ods_views(images: torch.Tensor, depth: Depth, settings: OdsSettings = OdsSettings(), fill: str = "background",
              device: torch.device | str = "cpu", progress: ProgressFn = no_progress,
              nearness_range: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right eye panoramas [B,H,W,3] (CPU) of equirectangular IMAGE [B,H,W,C] and its depth (distance from
    the centre, any size), warped by the stereo module with its fills and wrapped around the 360° border.
    `nearness_range`: see ods_shifts."""
    rgb = to_rgb(images)
    batch, height, width = rgb.shape[:3]
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a depth map for the panorama.")
    depth = match_depth_to_images(depth, batch, (height, width))
    shifts = ods_shifts(depth.to("cpu"), width, settings, nearness_range)
    # Columns shifted across the 360° border come in from the other side: warp a panorama extended by that many
    # wrapped columns on each side, then cut the middle out.
    pad = min(width, int(math.ceil(float(shifts.max()))) + 4)
    lefts, rights = [], []
    for index in range(batch):
        frame = rgb[index:index + 1].to(device).permute(0, 3, 1, 2)
        shift = shifts[index:index + 1].to(device)
        frame = torch.cat([frame[..., -pad:], frame, frame[..., :pad]], dim=-1)
        shift = torch.cat([shift[..., -pad:], shift, shift[..., :pad]], dim=-1)
        left, right = warp_pair(frame, shift, shift, fill)
        lefts.append(left.images[..., pad:pad + width].permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu())
        rights.append(right.images[..., pad:pad + width].permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu())
        progress(index + 1, batch)
    return torch.cat(lefts), torch.cat(rights)


# ---------------------------------------------------------------------------------------------------------------
# 3D photo of a panorama


LOOK_AROUND_FOV_DEGREES = 90.0
"""Default horizontal field of view of a panorama 3D photo's look-around video."""

PHOTO3D_FACE_PADDING_DEGREES = 1.0
"""Cube faces of a panorama 3D photo overlap by this much on each side, so no crack opens between their meshes."""


def panorama_photo3d(image: torch.Tensor, distance: torch.Tensor, face_size: int | None = None,
                     band_fraction: float = 0.05, relative_threshold: float | None = None, inpainter=None,
                     progress: ProgressFn = no_progress):
    """A layered, inpainted 3D photo of a 360° panorama: image [3,H,W] 0..1 and its distance from the centre [H,W].

    The 3D photo is built on each of the six (slightly padded) faces of a cube around the centre, the way a photo
    is (layered depth image, background extended and inpainted behind foreground edges), and the six meshes are
    turned into place and joined. Returns a photo3d LayeredMesh whose field of view is the whole sphere.
    """
    from .photo3d import DEFAULT_RELATIVE_THRESHOLD, LayeredMesh, Mesh, build_photo3d

    views = view_set("cube", PHOTO3D_FACE_PADDING_DEGREES)
    size = face_size or min(1024, view_size_for(image.shape[-1], views))
    faces_rgb = sample_views(image.float(), views, size).clamp(0.0, 1.0)
    ray_length = view_rays(size, views, image.device).norm(dim=-1)
    face_depth = sample_views(distance.float()[None], views, size)[:, 0] / ray_length
    camera = Pinhole.from_fov(size, size, views.fov_degrees)
    vertices, colors, faces, tags = [], [], [], []
    offset = 0
    threshold = DEFAULT_RELATIVE_THRESHOLD if relative_threshold is None else relative_threshold
    for index in range(len(views)):
        _, layered = build_photo3d(faces_rgb[index], face_depth[index].clamp_min(1e-4), camera,
                                   band_fraction=band_fraction, border_fraction=0.0,
                                   relative_threshold=threshold, inpainter=inpainter)
        rotation = views.rotations[index].to(image.device, torch.float32)
        vertices.append(layered.mesh.vertices.float() @ rotation.T)
        colors.append(layered.mesh.colors)
        faces.append(layered.mesh.faces + offset)
        tags.append(layered.tags)
        offset += layered.mesh.vertices.shape[0]
        progress(index + 1, len(views))
    mesh = Mesh(torch.cat(vertices), torch.cat(colors), torch.cat(faces))
    centre = float(distance.float().median())
    return LayeredMesh(mesh, torch.cat(tags), image.shape[-2], image.shape[-1], 2.0 * math.pi, math.pi, centre)


def look_around_frames(mesh, frames: int, width: int, height: int, fov_degrees: float, path: str,
                       translate: tuple[float, float, float], supersampling: int = 2,
                       progress: ProgressFn = no_progress) -> torch.Tensor:
    """Frames [N,h,w,3] of a panorama 3D photo seen from its centre while the view turns one full circle to the
    right (a loop with no repeated frame) and the camera follows a photo3d camera path (moves relative to the way
    it looks)."""
    from .photo3d import Mesh, camera_path, render_frame

    camera = Pinhole.from_fov(width, height, fov_degrees)
    moves = camera_path(path, frames, translate)
    device = mesh.vertices.device
    rendered = []
    for index in range(frames):
        yaw = 2.0 * math.pi * index / frames
        forward = torch.tensor([math.sin(yaw), 0.0, -math.cos(yaw)], dtype=torch.float64)
        rotation = look_rotation(forward).to(device, torch.float32)
        position = rotation @ moves.positions[index].to(device, torch.float32)
        # The rasterizer's camera looks down -Z from the origin: turn the world into this frame's camera space.
        vertices = (mesh.vertices.float() - position) @ rotation
        turned = Mesh(vertices, mesh.colors, mesh.faces[_faces_in_view(vertices, mesh.faces, camera)])
        image, _ = render_frame(turned, camera, torch.zeros(3, device=device), supersampling,
                                float(moves.focal_scales[index]))
        rendered.append(image.permute(1, 2, 0))
        progress(index + 1, frames)
    return torch.stack(rendered)


def _faces_in_view(vertices: torch.Tensor, faces: torch.Tensor, camera: Pinhole, margin: float = 1.1) -> torch.Tensor:
    """Faces with a corner inside (a little more than) the camera's view: most of a sphere is behind or beside the
    camera, and the rasterizer need not look at it."""
    depth = -vertices[:, 2]
    inside = (depth > 1e-4) & (vertices[:, 0].abs() <= depth * margin * camera.width / (2 * camera.fx)) \
        & (vertices[:, 1].abs() <= depth * margin * camera.height / (2 * camera.fy))
    return inside[faces].any(1)


def look_around_frame_size(panorama_width: int, fov_degrees: float) -> tuple[int, int]:
    """(width, height), even, 16:9, of frames that keep the panorama's angular resolution at `fov_degrees`."""
    width = max(64, 2 * round(panorama_width * fov_degrees / 360.0 / 2))
    return width, max(36, 2 * round(width * 9 / 16 / 2))
