"""Stereo pairs from one image and its depth: forward warping with occlusion ordering and gap filling.

A view from a camera moved sideways sees every pixel shifted horizontally by its disparity; nearer pixels shift
more and cover farther ones, and farther pixels revealed beside a near object ("disocclusions") have no source at
all and must be filled.

The kernel treats each image row as a polyline through the landing positions of its pixels (the old depthmap
extension's best idea) and rasterizes it with exact box filtering, fully vectorized:

* Occlusion without a z-buffer. For a view that shifts pixels to the left (the right eye), pixel i lands at
  f_i = i - d_i. A pixel further right that lands at or left of f_i has a larger disparity, so it is nearer and hides
  pixel i. Hence pixel i is visible exactly where f_i is below the suffix minimum of f, and the visible part of the
  row is the monotone curve g = suffix-min(f): one `cummin` per row instead of a depth test per pixel. This holds
  for any per-pixel disparity, so an added constant (separation, convergence) changes nothing. The left eye is the
  mirror image of the same problem.
* Exact area sampling. Along the visible curve every segment between two neighbouring pixels carries a colour
  profile; an output pixel is the integral of that profile over its footprint [j - 0.5, j + 0.5], taken from a
  prefix sum of segment areas. Integer disparities reproduce the source exactly, sub-pixel ones interpolate,
  squeezed surfaces are averaged instead of aliased.
* Gaps. A visible segment stretched wider than `gap_threshold` pixels is a depth discontinuity; the fill mode
  decides what lies between its two ends. The "background" fill takes the colour of the farther end (averaged over
  a few pixels into the background) and smooths it across neighbouring rows, so holes look like the surface behind
  the object instead of a stretched copy of its edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .depth import Depth, DepthKind, fill_non_finite, normalize_min_max

FILL_MODES: tuple[str, ...] = ("background", "polylines_sharp", "polylines_soft", "interpolate", "nearest", "none")
"""Gap fills, best first. background: depth-aware (the background's side of every hole, smoothed);
polylines_sharp / polylines_soft: the old extension's polyline rasterization (pixels as 0.9-wide plateaus / as
points joined by straight lines, holes stretched between both sides); interpolate: a linear ramp across the hole;
nearest: each side stretched to the middle of the hole; none: holes stay black."""

LAYOUTS: tuple[str, ...] = ("side-by-side", "side-by-side half", "top-bottom", "top-bottom half", "left only",
                            "right only")

EYES: tuple[str, ...] = ("left", "right")

DEFAULT_GAP_THRESHOLD = 2.0
"""A visible segment wider than this many pixels is a hole, narrower ones are a stretched (slanted) surface."""

_SHARP_HALF_WIDTH = 0.45
"""Half-width of a pixel's flat plateau in the polylines_sharp profile, as in the old extension."""

_FLOAT32_PREFIX_WIDTH = 2048
"""Rows wider than this accumulate their prefix sums in float64."""

_BACKGROUND_SAMPLES = 3
"""Pixels into the background averaged for the colour of a hole: one pixel is mostly noise or a thin edge."""


class WarpResult(NamedTuple):
    images: torch.Tensor
    """[B,C,H,W] the new view."""
    holes: torch.Tensor
    """[B,H,W] 0..1: the fraction of each pixel that no source pixel covered (disocclusions and the image border)."""


def warp_by_disparity(images: torch.Tensor, disparity: torch.Tensor, eye: str = "right", fill: str = "background",
                      gap_threshold: float = DEFAULT_GAP_THRESHOLD, smoothing: float | None = None) -> WarpResult:
    """Render the view of a camera moved sideways, given each source pixel's disparity in pixels.

    images: [B,C,H,W] float; disparity: [B,H,W] (or [H,W]) pixels, larger = nearer, may be negative and fractional.
    eye "right": pixel x lands at x - disparity (the camera moved right); "left": at x + disparity.
    smoothing: radius of the background fill's smoothing in pixels; None = 1 % of the width (at least 1).
    """
    if fill not in FILL_MODES:
        raise ValueError(f"Unknown fill {fill!r}; use one of {', '.join(FILL_MODES)}.")
    if eye not in EYES:
        raise ValueError(f"Unknown eye {eye!r}; use 'left' or 'right'.")
    if images.ndim != 4:
        raise ValueError(f"images must be [B,C,H,W], got shape {tuple(images.shape)}.")
    batch, channels, height, width = images.shape
    if disparity.ndim == 2:
        disparity = disparity.unsqueeze(0)
    if disparity.shape[-2:] != (height, width) or disparity.shape[0] not in (1, batch):
        raise ValueError(f"disparity {tuple(disparity.shape)} does not match images {tuple(images.shape)}: give one "
                         "[H,W] map per image (or one for the whole batch) at the image's size.")
    if not math.isfinite(gap_threshold) or gap_threshold < 1.0:
        raise ValueError(f"gap_threshold must be at least 1 pixel, got {gap_threshold}.")
    values = images if images.is_floating_point() else images.float()
    disparity = disparity.to(device=values.device, dtype=values.dtype).expand(batch, -1, -1)
    disparity = torch.nan_to_num(disparity, nan=0.0, posinf=0.0, neginf=0.0)
    if smoothing is None:
        smoothing = max(1.0, 0.01 * width)

    rows = values.permute(0, 2, 1, 3).reshape(batch * height, channels, width)
    row_disparity = disparity.reshape(batch * height, width)
    mirrored = eye == "left"
    if mirrored:  # the left eye is the right eye's problem seen in a mirror
        rows, row_disparity = rows.flip(-1), row_disparity.flip(-1)
    out, holes, fill_sum = _rasterize_rows(rows, row_disparity, fill, gap_threshold)
    if fill == "background":
        out = out + _smooth_fill(fill_sum, holes, batch, height, int(round(smoothing)))
    if mirrored:
        out, holes = out.flip(-1), holes.flip(-1)
    out = out.reshape(batch, height, channels, width).permute(0, 2, 1, 3)
    return WarpResult(out, holes.reshape(batch, height, width))


DEPTH_MODES: tuple[str, ...] = ("auto", "relative", "metric")


@dataclass(frozen=True)
class StereoSettings:
    """How strong the 3D effect is and where the scene sits relative to the screen.

    divergence: total shift between the eyes for the nearest point, % of the image width (old extension: 2.5);
        negative values reverse depth. Used for relative depth.
    separation: extra shift of each eye in opposite directions, % of width; positive pushes the scene back.
    convergence: 0..1, which depth lies at the screen plane (zero parallax): 0 the farthest point (everything pops
        out, the old extension's behaviour), 1 the nearest (everything behind the screen).
    balance: -1..1, how the shift is split: -1 the left eye is the original image, 0 both eyes share it, 1 the right
        eye is the original.
    exponent: depth curve for relative depth: shift ~ nearness ** exponent (> 1 flattens the background).
    depth_mode: "auto" (metric for metric depth, else relative), "relative" (normalized nearness, divergence),
        "metric" (disparity = baseline x focal / depth, needs metric depth).
    baseline_mm, fov_degrees: camera distance between the eyes and horizontal field of view, for metric depth.
    per_image: normalize relative depth per image (True) or over the whole batch (steadier for video frames).
    """

    divergence: float = 2.5
    separation: float = 0.0
    convergence: float = 0.0
    balance: float = 0.0
    exponent: float = 1.0
    depth_mode: str = "auto"
    baseline_mm: float = 65.0
    fov_degrees: float = 55.0
    per_image: bool = True

    def __post_init__(self) -> None:
        for name in ("divergence", "separation", "convergence", "balance", "exponent", "baseline_mm", "fov_degrees"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Stereo setting {name} must be a finite number, got {getattr(self, name)}.")
        if not -1.0 <= self.balance <= 1.0:
            raise ValueError(f"balance must be between -1 and 1, got {self.balance}.")
        if not 0.0 <= self.convergence <= 1.0:
            raise ValueError(f"convergence must be between 0 and 1, got {self.convergence}.")
        if self.exponent <= 0.0:
            raise ValueError(f"The depth exponent must be positive, got {self.exponent}; 1 keeps depth linear.")
        if self.depth_mode not in DEPTH_MODES:
            raise ValueError(f"Unknown depth mode {self.depth_mode!r}; use one of {', '.join(DEPTH_MODES)}.")
        if not 0.0 < self.fov_degrees < 180.0:
            raise ValueError(f"The field of view must be between 0 and 180 degrees, got {self.fov_degrees}.")


def eye_disparities(depth: Depth, width: int, settings: StereoSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel disparity in pixels [B,H,W] for the left and the right eye (larger = nearer), for
    `warp_by_disparity(..., eye="left")` and `(..., eye="right")`.

    Both eyes move away from the original viewpoint in opposite directions; `balance` splits the total between them.
    """
    metric = settings.depth_mode == "metric" or (settings.depth_mode == "auto" and depth.is_metric)
    if metric and not depth.is_metric:
        raise ValueError("depth mode 'metric' needs metric depth (metres, e.g. from a metric depth model); this depth "
                         "is relative. Use depth mode 'relative' or 'auto'.")
    if metric:
        metres = fill_non_finite(depth.values.float(), "far", DepthKind.METRIC).clamp_min(1e-3)
        focal = 0.5 * width / math.tan(math.radians(settings.fov_degrees) / 2.0)
        total = (settings.baseline_mm / 1000.0) * focal / metres            # disparity = baseline x focal / depth
        dims = (1, 2) if settings.per_image else (0, 1, 2)
        low, high = total.amin(dim=dims, keepdim=True), total.amax(dim=dims, keepdim=True)
        total = total - (low + settings.convergence * (high - low))
    else:
        nearness = normalize_min_max(_nearness(depth), settings.per_image).pow(settings.exponent)
        total = (nearness - settings.convergence) * (settings.divergence / 100.0 * width)
    separation = settings.separation / 100.0 * width
    left_share = (settings.balance + 1.0) / 2.0
    return total * left_share - separation, total * (1.0 - left_share) - separation


def _nearness(depth: Depth) -> torch.Tensor:
    values = fill_non_finite(depth.values.float(), "far", depth.kind)
    return 1.0 / values.clamp_min(1e-6) if depth.is_metric else values


def stereo_pair(images: torch.Tensor, depth: Depth, settings: StereoSettings = StereoSettings(),
                fill: str = "background") -> tuple[WarpResult, WarpResult]:
    """Left and right eye views of images [B,C,H,W] with their depth (already at the images' size and batch)."""
    if depth.size != tuple(images.shape[-2:]) or depth.batch_size not in (1, images.shape[0]):
        raise ValueError(f"Depth {depth.describe()} does not match images {tuple(images.shape)}; resize it first "
                         "(depth.match_depth_to_images).")
    left_disparity, right_disparity = eye_disparities(depth.to(images.device), images.shape[-1], settings)
    return (warp_by_disparity(images, left_disparity, "left", fill),
            warp_by_disparity(images, right_disparity, "right", fill))


def compose_layout(left: torch.Tensor, right: torch.Tensor, layout: str, swap_eyes: bool = False) -> torch.Tensor:
    """Arrange two eye views [B,H,W,C] into one image per frame. Half layouts squeeze each eye to half the width or
    height (what most 3D TVs and players expect as "half SBS / half OU"); swap_eyes puts the right eye first
    (cross-eyed viewing) or shows the other eye for the single-eye layouts."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    first, second = (right, left) if swap_eyes else (left, right)
    if layout == "left only":
        return first
    if layout == "right only":
        return second
    height, width = left.shape[1], left.shape[2]
    if layout == "side-by-side":
        return torch.cat([first, second], dim=2)
    if layout == "top-bottom":
        return torch.cat([first, second], dim=1)
    if layout == "side-by-side half":
        size = (height, max(1, width // 2))
        return torch.cat([_resize(first, size), _resize(second, size)], dim=2)
    size = (max(1, height // 2), width)
    return torch.cat([_resize(first, size), _resize(second, size)], dim=1)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,H,W,C] to `size` with area averaging (a 2:1 squeeze averages pixel pairs, no aliasing)."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    return F.interpolate(images.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)


def fill_invalid_along_rows(disparity: torch.Tensor) -> torch.Tensor:
    """Replace NaN/inf in [...,H,W] by linear interpolation between the nearest valid values in the same row (the
    nearest valid value beyond the ends); a row with no valid value becomes 0. Vectorized over all rows."""
    valid = torch.isfinite(disparity)
    width = disparity.shape[-1]
    columns = torch.arange(width, device=disparity.device).expand_as(disparity)
    previous = torch.where(valid, columns, torch.full_like(columns, -1)).cummax(-1).values
    following = torch.where(valid, columns, torch.full_like(columns, width)).flip(-1).cummin(-1).values.flip(-1)
    safe = torch.where(valid, disparity, torch.zeros_like(disparity))
    before = safe.gather(-1, previous.clamp(0, width - 1))
    after = safe.gather(-1, following.clamp(0, width - 1))
    before = torch.where(previous >= 0, before, after)
    after = torch.where(following < width, after, before)
    t = (columns - previous).to(disparity.dtype) / (following - previous).clamp_min(1).to(disparity.dtype)
    filled = torch.where((previous >= 0) & (following < width), before + (after - before) * t, before)
    return torch.where(valid, disparity, filled)


def _suffix_min(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: min over j >= i of values[j], and the index where it is reached."""
    width = values.shape[-1]
    reversed_min, reversed_index = values.flip(-1).cummin(-1)
    return reversed_min.flip(-1), (width - 1) - reversed_index.flip(-1)


def _profile_weights(s: torch.Tensor, plateau_a: torch.Tensor, plateau_b: torch.Tensor, length: torch.Tensor):
    """Integral from 0 to s of a segment profile: colour A on [0, a), a linear ramp M0 -> M1 on
    [a, length - b), colour B on [length - b, length). Returns the weights of A, B, M0 and M1."""
    ramp = (length - plateau_a - plateau_b).clamp_min(0.0)
    into_ramp = (s - plateau_a).clamp_min(0.0).minimum(ramp)
    ramp_end = into_ramp * into_ramp / (2.0 * ramp.clamp_min(1e-12))
    weight_a = s.minimum(plateau_a)
    weight_b = (s - length + plateau_b).clamp_min(0.0)
    return weight_a, weight_b, into_ramp - ramp_end, ramp_end


def _rasterize_rows(rows: torch.Tensor, disparity: torch.Tensor, fill: str,
                    gap_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Warp rows [N,C,W] to the left by disparity [N,W]; see the module docstring.

    Every pixel i is a flat box [f_i - w, f_i + w] (w = 0.5; 0.45 / 0 for the old polyline profiles) joined to its
    neighbour by a connecting segment. Segments, in row order: s = 0 the empty space left of everything, s = 2i + 1
    pixel i's box, s = 2i + 2 the joint from pixel i to i + 1 (for i = W - 1: the empty space on the right).
    Returns (colours [N,C,W] with holes black for the "none" and "background" fills, hole fraction [N,W], and for
    "background" each pixel's hole fraction times its hole colour [N,C,W], else None).
    """
    n_rows, channels, width = rows.shape
    device, dtype = rows.device, rows.dtype
    half_width = {"polylines_soft": 0.0, "polylines_sharp": _SHARP_HALF_WIDTH}.get(fill, 0.5)
    columns = torch.arange(width, device=device, dtype=dtype)
    landing = columns - disparity                                             # f, [N,W]
    vertices = torch.stack([landing - half_width, landing + half_width], dim=-1).reshape(n_rows, 2 * width)
    visible, visible_vertex = _suffix_min(vertices)                          # g: the visible part is monotone

    # Segment geometry [N, 2W+1]: where each starts, how much of it is visible, how long its profile is.
    far_left = visible[:, :1].clamp_max(-0.5) - 1.0
    far_right = vertices[:, -1:].clamp_min(width - 0.5) + 1.0
    start = torch.cat([far_left, vertices], dim=1)
    visible_length = (torch.cat([visible, far_right], dim=1) - start).clamp_min_(0.0)
    spacing = landing[:, 1:] - landing[:, :-1]
    joint_length = (spacing - 2.0 * half_width).clamp_min(0.0)            # folded joints are hidden anyway
    box_length = torch.full_like(landing, 2.0 * half_width)
    edge = visible_length[:, :1]
    length = torch.cat([edge, torch.stack([box_length, torch.cat([joint_length, visible_length[:, -1:]], 1)], -1)
                        .reshape(n_rows, 2 * width)], dim=1)
    gap = torch.cat([edge.new_ones(n_rows, 1), spacing > gap_threshold, edge.new_ones(n_rows, 1)], dim=1)
    is_gap = torch.zeros_like(length)
    is_gap[:, 0::2] = gap.to(dtype)                                         # boxes are never gaps

    # Profile: a box is flat (all "A"); a joint is a ramp from its left pixel to its right one; a gap is a ramp
    # (interpolate, polylines), two halves (nearest) or a hole (none, background).
    plateau_a = torch.zeros_like(length)
    plateau_a[:, 1::2] = box_length
    plateau_b = torch.zeros_like(length)
    if fill == "nearest":
        half_gap = 0.5 * length * is_gap
        plateau_a = plateau_a + half_gap
        plateau_b = half_gap
    hole_fill = fill in ("none", "background")
    ends = (1.0 - is_gap) if hole_fill else torch.ones_like(length)

    # Colour of the first visible pixel, for the empty space left of it
    first_pixel = visible_vertex[:, :1].div(2, rounding_mode="floor")

    def weights_at(s, a, b, lengths, is_end):
        w_a, w_b, w_m0, w_m1 = _profile_weights(s, a, b, lengths)
        return w_a + is_end * w_m0, w_b + is_end * w_m1, w_m0 + w_m1

    # Per segment: integral over its visible part, split by which pixel's colour it uses.
    seg_a, seg_b, _ = weights_at(visible_length, plateau_a, plateau_b, length, ends)
    seg_hole = visible_length * is_gap
    first_weight = seg_a[:, 0] + seg_b[:, 0]

    # Locate each pixel boundary t_j = j - 0.5 (j = 0..W): it lies in segment 1 + the index of the last visible
    # vertex at or left of it. Counting vertices per boundary and a cumulative sum do this in linear time.
    bucket = torch.ceil(visible + 0.5).clamp_(0, width + 1).long()
    counts = torch.zeros(n_rows, width + 2, device=device, dtype=dtype)
    counts.scatter_add_(1, bucket, torch.ones_like(visible))
    segment = counts.cumsum(1)[:, : width + 1].long()                        # [N, W+1]

    packed = torch.stack([start, plateau_a, plateau_b, length, ends, is_gap], dim=1)
    picked = packed.gather(2, segment.unsqueeze(1).expand(-1, packed.shape[1], -1))
    boundary = torch.arange(width + 1, device=device, dtype=dtype) - 0.5
    b_a, b_b, _ = weights_at(boundary - picked[:, 0], picked[:, 1], picked[:, 2], picked[:, 3], picked[:, 4])
    offset = boundary - picked[:, 0]
    b_hole = offset.clamp_min(0.0).minimum(picked[:, 3]) * picked[:, 5]
    # Segment s uses pixel (s - 1) // 2 as A and s // 2 as B; the outer spaces use the edge pixels.
    pixel_a = (segment - 1).div(2, rounding_mode="floor")
    pixel_b = segment.div(2, rounding_mode="floor").clamp_max(width - 1)
    pixel_a = torch.where(segment == 0, first_pixel, pixel_a)
    pixel_b = torch.where(segment == 0, first_pixel, pixel_b)

    # Prefix over segments of the colour integral: sum over pixels of colour x weight, with the weights prefix-summed
    # per pixel... the colour integral up to a boundary is sum_i I_i * W_i(boundary), where only segments before the
    # boundary count. Prefix-summing per-segment areas keeps this exact.
    box_area = rows * seg_a[:, 1::2].unsqueeze(1)
    joint_area = rows * seg_a[:, 2::2].unsqueeze(1)
    joint_area[..., :-1] += rows[..., 1:] * seg_b[:, 2:-1:2].unsqueeze(1)
    joint_area[..., -1:] += rows[..., -1:] * seg_b[:, -1:].unsqueeze(1)
    first_colour = _gather_columns(rows, first_pixel)
    segment_area = torch.cat([first_colour * first_weight.view(-1, 1, 1),
                              torch.stack([box_area, joint_area], dim=-1).reshape(n_rows, channels, 2 * width)], -1)
    # Prefix sums grow with the width; beyond a few thousand pixels float32 would lose a fraction of a grey level.
    wide = width > _FLOAT32_PREFIX_WIDTH
    prefix = _exclusive_cumsum(segment_area.double() if wide else segment_area)
    at_boundary = (_gather_columns(prefix, segment)
                   + _gather_columns(rows, pixel_a) * b_a.unsqueeze(1)
                   + _gather_columns(rows, pixel_b) * b_b.unsqueeze(1))
    colours = (at_boundary[..., 1:] - at_boundary[..., :-1]).to(dtype)

    hole_at_boundary = _exclusive_cumsum(seg_hole).gather(1, segment) + b_hole
    holes = (hole_at_boundary[:, 1:] - hole_at_boundary[:, :-1]).clamp_(0.0, 1.0)
    if fill != "background":
        return colours, holes, None
    # The colour of a hole: its farther side, which for a leftward warp is always the right side (a gap means
    # f_{i+1} - f_i > 1, so d_{i+1} < d_i), averaged a few pixels into it; the right edge looks left.
    into_right, into_left = _window_means(rows, _BACKGROUND_SAMPLES)
    hole_colour = torch.cat([into_right, into_left[..., -1:]], dim=-1)          # index = segment // 2
    hole_index = torch.where(segment == 0, first_pixel, segment.div(2, rounding_mode="floor"))
    # A pixel's hole part lies in the segment at its right boundary, unless that one is not a gap.
    right_is_gap = picked[:, 5, 1:] > 0
    pixel_hole_index = torch.where(right_is_gap, hole_index[:, 1:], hole_index[:, :-1])
    fill_sum = _gather_columns(hole_colour, pixel_hole_index) * holes.unsqueeze(1)
    return colours, holes, fill_sum


def _window_means(rows: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means over `count` pixels starting at each pixel going right, and ending at each pixel coming from the left
    (edge pixels repeated beyond the border)."""
    count = max(1, min(count, rows.shape[-1]))
    padded = F.pad(rows, (count, count - 1), mode="replicate") if count > 1 else F.pad(rows, (1, 0))
    summed = padded.cumsum(-1)
    width = rows.shape[-1]
    # window sum of padded[k - count + 1 .. k] = summed[k] - summed[k - count]
    window = summed[..., count:] - summed[..., :-count]                     # window ending at padded index k
    towards_left = window[..., :width] / count                               # ends at pixel i (padded i + count)
    towards_right = window[..., count - 1: count - 1 + width] / count        # starts at pixel i
    return towards_right, towards_left


def _box_sum(values: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sum over [i - radius, i + radius] along `dim` (zero outside), same size, in O(1) per element."""
    if radius <= 0:
        return values
    moved = values.movedim(dim, -1)
    summed = F.pad(moved, (radius + 1, radius)).cumsum(-1)
    size = moved.shape[-1]
    window = summed[..., 2 * radius + 1: 2 * radius + 1 + size] - summed[..., :size]
    return window.movedim(-1, dim)


def _smooth_fill(fill_sum: torch.Tensor, holes: torch.Tensor, batch: int, height: int, radius: int) -> torch.Tensor:
    """Hole colours averaged over a (2r+1)^2 window of hole pixels, weighted by each pixel's hole fraction, so rows
    of background colour become a smooth surface instead of streaks. Returns holes x smoothed colour [N,C,W]."""
    n_rows, channels, width = fill_sum.shape
    stacked = torch.cat([fill_sum, holes.unsqueeze(1)], dim=1).reshape(batch, height, channels + 1, width)
    blurred = _box_sum(_box_sum(stacked, radius, -1), radius, 1).reshape(n_rows, channels + 1, width)
    weight = blurred[:, -1:]
    smoothed = blurred[:, :-1] / weight.clamp_min(1e-6)
    return smoothed * holes.unsqueeze(1)


def _gather_columns(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [N,C,W'] at per-row column indices [N,K] -> [N,C,K]."""
    return values.gather(2, index.unsqueeze(1).expand(-1, values.shape[1], -1))


def _exclusive_cumsum(values: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the last axis that starts at 0: out[..., k] = sum of values[..., :k]."""
    return F.pad(values.cumsum(-1), (1, 0))[..., :-1]
