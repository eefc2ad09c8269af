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


def _suffix_min(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: min over j >= i of values[j], and the (rightmost-first) index where it is reached."""
    width = values.shape[-1]
    reversed_min, reversed_index = values.flip(-1).cummin(-1)
    return reversed_min.flip(-1), (width - 1) - reversed_index.flip(-1)


def _rasterize_rows(rows: torch.Tensor, disparity: torch.Tensor, fill: str,
                    gap_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Warp rows [N,C,W] to the left by disparity [N,W]; see the module docstring.

    Segment s = 0 is the empty space left of the leftmost landing, s = i + 1 joins pixel i to pixel i + 1 (s = W:
    pixel W-1 to the empty space on the right). Returns (colours [N,C,W] with holes black for the "none" and
    "background" fills, hole fraction [N,W], and for "background" the integral of the hole colour over each pixel
    [N,C,W], else None).
    """
    n_rows, channels, width = rows.shape
    device, dtype = rows.device, rows.dtype
    columns = torch.arange(width, device=device, dtype=dtype)
    landing = columns - disparity                                   # f
    visible_landing, visible_source = _suffix_min(landing)          # g, and the visible pixel that lands there

    # Segment geometry, all [N, W+1]
    far_left = visible_landing[:, :1].clamp_max(-0.5) - 1.0
    far_right = landing[:, -1:].clamp_min(width - 0.5) + 1.0
    start = torch.cat([far_left, landing], dim=1)
    end = torch.cat([visible_landing, far_right], dim=1)
    visible_span = (end - start).clamp_min(0.0)
    gap = visible_span > gap_threshold
    gap[:, 0] = True
    gap[:, -1] = True
    # A surface segment keeps its true length even where a nearer pixel cuts it short; a gap is as wide as it looks.
    true_span = torch.cat([visible_span[:, :1], landing[:, 1:] - landing[:, :-1], visible_span[:, -1:]], dim=1)
    span = torch.where(gap, visible_span, true_span)

    # End pixels: pixel i, and pixel i + 1 on a surface or the visible pixel beyond a gap
    pixel = torch.arange(width, device=device).expand(n_rows, -1)
    left_index = torch.cat([visible_source[:, :1], pixel], dim=1)
    beyond = torch.cat([visible_source[:, 1:], visible_source.new_full((n_rows, 1), width - 1)], dim=1)
    following = (pixel + 1).clamp_max(width - 1)
    right_index = torch.cat([visible_source[:, :1], torch.where(gap[:, 1:], beyond, following)], dim=1)

    plateau_a, plateau_b, ramp = _profile(fill, gap, span)
    # Holes: the part of a gap more than half a pixel from both of its pixels (no plateau beyond the image edge)
    half = 0.5 * span
    hole_a = torch.where(gap, half.clamp_max(0.5), half)
    hole_b = hole_a.clone()
    hole_a[:, 0] = 0.0
    hole_b[:, -1] = 0.0
    if ramp != "ends":
        plateau_a, plateau_b = hole_a, hole_b

    # Locate every pixel boundary t_j = j - 0.5 (j = 0..W) on the visible curve: it lies in segment 1 + the index
    # of the last visible landing at or left of it. Counting landings per boundary and a cumulative sum do this in
    # linear time, unlike a binary search.
    bucket = torch.ceil(visible_landing + 0.5).clamp_(0, width + 1).long()
    counts = torch.zeros(n_rows, width + 2, device=device, dtype=dtype)
    counts.scatter_add_(1, bucket, torch.ones_like(visible_landing))
    segment = counts.cumsum(1)[:, : width + 1].long()
    boundary = torch.arange(width + 1, device=device, dtype=dtype) - 0.5
    offset = boundary - start.gather(1, segment)

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(1, segment)

    # Integral of the colour profile: per segment over its visible part (prefix-summed), plus the partial segment
    # up to each boundary. A pixel is the difference between its two boundaries.
    segment_w = _integral_weights(visible_span, plateau_a, plateau_b, span)
    boundary_w = _integral_weights(offset, pick(plateau_a), pick(plateau_b), pick(span))
    boundary_left, boundary_right = pick(left_index), pick(right_index)
    if ramp == "ends":
        segment_weights = (segment_w[0] + segment_w[2], segment_w[1] + segment_w[3])
        boundary_weights = (boundary_w[0] + boundary_w[2], boundary_w[1] + boundary_w[3])
    else:
        segment_weights = segment_w[:2]
        boundary_weights = boundary_w[:2]
    colours = _pixel_integrals(rows, left_index, right_index, segment_weights, segment, boundary_left,
                               boundary_right, boundary_weights)

    if ramp == "ends":
        segment_h = _integral_weights(visible_span, hole_a, hole_b, span)
        boundary_h = _integral_weights(offset, pick(hole_a), pick(hole_b), pick(span))
    else:
        segment_h, boundary_h = segment_w, boundary_w
    segment_hole = segment_h[2] + segment_h[3]
    boundary_hole = boundary_h[2] + boundary_h[3]
    hole_at_boundary = _exclusive_cumsum(segment_hole).gather(1, segment) + boundary_hole
    holes = (hole_at_boundary[:, 1:] - hole_at_boundary[:, :-1]).clamp(0.0, 1.0)
    if ramp != "background":
        return colours, holes, None

    hole_colour = _background_colour(rows, disparity, left_index, right_index)          # [N,C,W+1]
    fill_prefix = _exclusive_cumsum(hole_colour * segment_hole.unsqueeze(1))
    fill_at_boundary = (_gather_columns(fill_prefix, segment)
                        + _gather_columns(hole_colour, segment) * boundary_hole.unsqueeze(1))
    return colours, holes, fill_at_boundary[..., 1:] - fill_at_boundary[..., :-1]


def _integral_weights(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor, span: torch.Tensor):
    """Integral from 0 to s of a profile: colour A on [0, a), a linear ramp M0 -> M1 on [a, span - b), colour B on
    [span - b, span). Returns the weights of (A, B, M0, M1)."""
    ramp = (span - a - b).clamp_min(0.0)
    into_ramp = (s - a).clamp_min(0.0).minimum(ramp)
    ramp_end = into_ramp * into_ramp / (2.0 * torch.where(ramp > 0, ramp, torch.ones_like(ramp)))
    weight_a = s.minimum(a)
    weight_b = (s - (span - b)).clamp_min(0.0)
    return weight_a, weight_b, into_ramp - ramp_end, ramp_end


def _pixel_integrals(rows, left_index, right_index, segment_weights, boundary_segment, boundary_left, boundary_right,
                     boundary_weights):
    """Box-filtered pixel colours [N,C,W] from the per-segment areas and the partial areas at each boundary."""
    segment_area = (_gather_columns(rows, left_index) * segment_weights[0].unsqueeze(1)
                    + _gather_columns(rows, right_index) * segment_weights[1].unsqueeze(1))
    at_boundary = (_gather_columns(_exclusive_cumsum(segment_area), boundary_segment)
                   + _gather_columns(rows, boundary_left) * boundary_weights[0].unsqueeze(1)
                   + _gather_columns(rows, boundary_right) * boundary_weights[1].unsqueeze(1))
    return at_boundary[..., 1:] - at_boundary[..., :-1]


def _profile(fill: str, gap: torch.Tensor, span: torch.Tensor):
    """Plateau widths (a, b) per segment and what colours the ramp between them: "ends" (a ramp from one end's
    colour to the other's), "black" (a hole left empty) or "background" (a hole filled later)."""
    half = 0.5 * span
    if fill == "polylines_soft":
        zero = torch.zeros_like(span)
        return zero, zero, "ends"
    if fill == "polylines_sharp":
        sharp = half.clamp_max(_SHARP_HALF_WIDTH)
        return sharp, sharp, "ends"
    if fill == "nearest":
        return half, half, "ends"
    if fill == "interpolate":
        # Surfaces: pixels are boxes meeting half way; gaps: half-pixel plateaus and a ramp across the hole.
        plateau = torch.where(gap, half.clamp_max(0.5), half)
        return plateau, plateau, "ends"
    return None, None, "background" if fill == "background" else "black"


def _background_colour(rows: torch.Tensor, disparity: torch.Tensor, left_index: torch.Tensor,
                       right_index: torch.Tensor) -> torch.Tensor:
    """Per segment [N,C,W+1]: the colour of its farther end, averaged over a few pixels going away from the gap."""
    width = rows.shape[-1]
    count = min(_BACKGROUND_SAMPLES, width)
    padded = torch.cat([rows[..., :1].expand(-1, -1, count - 1), rows, rows[..., -1:].expand(-1, -1, count - 1)], -1)
    window_sum = _box_sum(padded, count - 1, 0, -1)          # sums of `count` pixels ending at each index
    towards_left = window_sum[..., count - 1: count - 1 + width]
    towards_right = window_sum[..., 2 * (count - 1): 2 * (count - 1) + width]
    averages = torch.cat([towards_right, towards_left], dim=-1) / count
    right_is_farther = disparity.gather(1, right_index) <= disparity.gather(1, left_index)
    right_is_farther[:, -1] = False                           # beyond the right edge: the image lies to the left
    index = torch.where(right_is_farther, right_index, left_index + width)
    return _gather_columns(averages, index)


def _box_sum(values: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Sum over the window [i - before, i + after] along `dim`, zero outside; same size as values."""
    size = values.shape[dim]
    summed = values.cumsum(dim)
    shape = list(values.shape)
    shape[dim] = 1
    zero = values.new_zeros(shape)
    padded = torch.cat([zero, summed] + [summed.narrow(dim, size - 1, 1)] * after, dim=dim)
    upper = padded.narrow(dim, 1 + after, size)
    lower_index = torch.arange(size, device=values.device) - before
    lower = padded.index_select(dim, lower_index.clamp_min(0))
    return upper - lower


def _smooth_fill(fill_sum: torch.Tensor, holes: torch.Tensor, batch: int, height: int, radius: int) -> torch.Tensor:
    """Hole colours averaged over a (2r+1)^2 window of hole pixels, weighted by each pixel's hole fraction:
    rows of background colour become a smooth surface instead of streaks. Returns holes * smoothed colour."""
    n_rows, channels, width = fill_sum.shape
    stacked = torch.cat([fill_sum, holes.unsqueeze(1)], dim=1).reshape(batch, height, channels + 1, width)
    blurred = _box_sum(_box_sum(stacked, radius, radius, -1), radius, radius, 1).reshape(n_rows, channels + 1, width)
    weight = blurred[:, -1:]
    smoothed = blurred[:, :-1] / torch.where(weight > 1e-6, weight, torch.ones_like(weight))
    return smoothed * holes.unsqueeze(1)


def _gather_columns(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [N,C,W'] at per-row column indices [N,K] -> [N,C,K]."""
    return values.gather(2, index.unsqueeze(1).expand(-1, values.shape[1], -1))


def _exclusive_cumsum(values: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the last axis that starts at 0: out[..., k] = sum of values[..., :k]."""
    summed = values.cumsum(-1)
    return torch.cat([torch.zeros_like(summed[..., :1]), summed[..., :-1]], dim=-1)
