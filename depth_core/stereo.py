"""Stereo pairs from one image and its depth: forward warping with occlusion ordering and gap filling.

A view from a camera moved sideways sees every pixel shifted horizontally by its disparity; nearer pixels shift
more and cover farther ones, and farther pixels revealed beside a near object ("disocclusions") have no source at
all and must be filled.

The kernel treats each image row as a polyline (the old depthmap extension's best idea): every pixel is a flat box
one pixel wide at its landing position, joined to the next pixel's box by a straight "joint". It rasterizes that
polyline with exact box filtering, fully vectorized over all rows:

* Occlusion without a z-buffer. For a view that shifts pixels to the left (the right eye), pixel i lands at
  f_i = i - d_i. A point further right that lands at or left of f_i has a larger disparity, so it is nearer and
  hides pixel i. Hence the visible part of a row is where a vertex lies below the suffix minimum of all later
  vertices: one `cummin` per row instead of a depth test per pixel. This holds for any per-pixel disparity, so an
  added constant (separation, convergence) changes nothing. The left eye is the mirror image of the same problem.
* Exact area sampling. An output pixel is the integral of the visible colour profile over its footprint
  [j - 0.5, j + 0.5], read from a prefix sum of segment areas; the segment under each pixel boundary is found by
  counting visible vertices (a scatter-add and a cumulative sum, linear time). Integer disparities reproduce the
  source exactly, sub-pixel ones interpolate linearly, squeezed surfaces are averaged instead of aliased, and a near
  object's edge pixel keeps its full width over the background it hides.
* Gaps. Where two neighbouring pixels land more than `gap_threshold` pixels apart the joint is a hole (a depth
  discontinuity; slanted surfaces stretch less); the fill mode decides what lies in it. The "background" fill
  takes the colour of the farther side (averaged over a few pixels into the background) and smooths it over
  neighbouring rows and columns, so holes look like the surface behind the object instead of a stretched copy of
  its edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .depth import Depth, DepthKind, fill_non_finite, match_depth_to_images, nearness, normalize_min_max
from .image import to_rgb
from .progress import ProgressFn, no_progress

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

_CPU_BLOCK_PIXELS = 1 << 17
"""Pixels per block of rows warped together on CPU: small enough for the temporaries to stay in cache."""

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
    Non-finite disparities count as 0. smoothing: radius of the background fill's smoothing in pixels; None = 1 %
    of the width (at least 1).
    """
    if eye not in EYES:
        raise ValueError(f"Unknown eye {eye!r}; use 'left' or 'right'.")
    values, (disparity,) = _prepare_warp(images, (disparity,), fill, gap_threshold)
    return _warp_views(values, (disparity,), (eye == "left",), fill, gap_threshold, smoothing)[0]


def warp_pair(images: torch.Tensor, left_disparity: torch.Tensor, right_disparity: torch.Tensor,
              fill: str = "background", gap_threshold: float = DEFAULT_GAP_THRESHOLD,
              smoothing: float | None = None) -> tuple[WarpResult, WarpResult]:
    """Both eyes at once: the same as `warp_by_disparity(images, left_disparity, "left", ...)` and
    `(..., right_disparity, "right", ...)`, computed in one batched pass (half the kernel launches, and twice the work
    per operation to share between CPU threads)."""
    values, disparities = _prepare_warp(images, (left_disparity, right_disparity), fill, gap_threshold)
    left, right = _warp_views(values, disparities, (True, False), fill, gap_threshold, smoothing)
    return left, right


def _prepare_warp(images: torch.Tensor, disparities: tuple[torch.Tensor, ...], fill: str,
                  gap_threshold: float) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Check the inputs of a warp; returns the images as float32/64 and each disparity as finite [B,H,W]."""
    if fill not in FILL_MODES:
        raise ValueError(f"Unknown fill {fill!r}; use one of {', '.join(FILL_MODES)}.")
    if images.ndim != 4:
        raise ValueError(f"images must be [B,C,H,W], got shape {tuple(images.shape)}.")
    batch, _, height, width = images.shape
    if not math.isfinite(gap_threshold) or gap_threshold < 1.0:
        raise ValueError(f"gap_threshold must be at least 1 pixel, got {gap_threshold}.")
    prepared = []
    for disparity in disparities:
        if disparity.ndim == 2:
            disparity = disparity.unsqueeze(0)
        if disparity.shape[-2:] != (height, width) or disparity.shape[0] not in (1, batch):
            raise ValueError(f"disparity {tuple(disparity.shape)} does not match images {tuple(images.shape)}: give "
                             "one [H,W] map per image (or one for the whole batch) at the image's size.")
        prepared.append(disparity)
    if images.numel() == 0:
        raise ValueError(f"Nothing to warp: the images have shape {tuple(images.shape)}.")
    # Positions need float32 at least: half precision cannot tell pixel 2049 from 2050.
    values = images if images.dtype == torch.float64 else images.float()
    return values, tuple(torch.nan_to_num(d.to(device=values.device, dtype=values.dtype).expand(batch, -1, -1),
                                          nan=0.0, posinf=0.0, neginf=0.0) for d in prepared)


def _warp_views(values: torch.Tensor, disparities: tuple[torch.Tensor, ...], mirrored: tuple[bool, ...], fill: str,
                gap_threshold: float, smoothing: float | None) -> list[WarpResult]:
    """Warp `values` [B,C,H,W] once per disparity [B,H,W] (mirrored: that view moves pixels right)."""
    batch, channels, height, width = values.shape
    views = len(disparities)
    if smoothing is None:
        smoothing = max(1.0, 0.01 * width)
    # Rows as channel planes [C, rows, W] (per-plane gathers and broadcasts of [rows, W] weights are the fast paths
    # on CPU); the left eye is the right eye's problem seen in a mirror. On CPU, blocks of rows whose temporaries stay
    # in cache are about twice as fast as the whole image at once (every operation streams its operands through
    # memory, and each large temporary is fresh pages); on CUDA one block holds the whole image.
    n_rows = batch * height
    step = n_rows if values.device.type != "cpu" else max(1, _CPU_BLOCK_PIXELS // width)
    planes = values.transpose(0, 1).reshape(channels, n_rows, width)
    out = values.new_empty(channels, views, n_rows, width)
    holes = values.new_empty(views, n_rows, width)
    fill_sum = values.new_empty(channels, views, n_rows, width) if fill == "background" else None
    for view, (disparity, flip) in enumerate(zip(disparities, mirrored)):
        disparity = disparity.reshape(n_rows, width)
        for start in range(0, n_rows, step):
            block = slice(start, min(n_rows, start + step))
            rows, row_disparity = planes[:, block], disparity[block]
            if flip:
                rows, row_disparity = rows.flip(-1), row_disparity.flip(-1)
            # Mirrored views stay mirrored until the end: their blocks are written straight into the result.
            _rasterize_rows(rows, row_disparity, fill, gap_threshold,
                            out=(out[:, view, block], holes[view, block],
                                 None if fill_sum is None else fill_sum[:, view, block]))
    results = []
    for view, flip in enumerate(mirrored):
        view_out, view_holes = out[:, view], holes[view]
        if fill_sum is not None:   # the box smoothing is symmetric: mirrored or not makes no difference
            _add_smooth_fill(view_out, fill_sum[:, view], view_holes, batch, height, int(round(smoothing)),
                             whole_stack=values.device.type != "cpu")
        if flip:
            view_out, view_holes = view_out.flip(-1), view_holes.flip(-1)
        results.append(WarpResult(view_out.view(channels, batch, height, width).transpose(0, 1),
                                  view_holes.view(batch, height, width)))
    return results


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
        unit = normalize_min_max(nearness(depth).float(), settings.per_image).pow(settings.exponent)
        total = (unit - settings.convergence) * (settings.divergence / 100.0 * width)
    separation = settings.separation / 100.0 * width
    left_share = (settings.balance + 1.0) / 2.0
    return total * left_share - separation, total * (1.0 - left_share) - separation


def stereo_pair(images: torch.Tensor, depth: Depth, settings: StereoSettings = StereoSettings(),
                fill: str = "background") -> tuple[WarpResult, WarpResult]:
    """Left and right eye views of images [B,C,H,W] with their depth (already at the images' size and batch)."""
    if depth.size != tuple(images.shape[-2:]) or depth.batch_size not in (1, images.shape[0]):
        raise ValueError(f"Depth {depth.describe()} does not match images {tuple(images.shape)}; resize it first "
                         "(depth.match_depth_to_images).")
    left_disparity, right_disparity = eye_disparities(depth.to(images.device), images.shape[-1], settings)
    return warp_pair(images, left_disparity, right_disparity, fill)


FRAMES_PER_CHUNK_PIXELS = 8_000_000
"""Frames are warped in chunks of about this many pixels, so long videos do not need all intermediates at once."""


def stereo_views(images: torch.Tensor, depth: Depth, settings: StereoSettings = StereoSettings(),
                 fill: str = "background", device: torch.device | str = "cpu",
                 progress: ProgressFn = no_progress) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right eye views [B,H,W,3] (on the CPU) of an IMAGE batch [B,H,W,C] and its depth of any size.

    The depth is resized to the images (one depth map serves every frame); disparities are computed for the whole
    batch at once, so whole-batch normalization sees every frame; frames are warped on `device` in chunks.
    """
    rgb = to_rgb(images)
    batch, height, width = rgb.shape[:3]
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a depth map for the image.")
    depth = match_depth_to_images(depth, batch, (height, width))
    left_disparity, right_disparity = eye_disparities(depth, width, settings)
    chunk = max(1, FRAMES_PER_CHUNK_PIXELS // max(1, height * width))
    lefts, rights = [], []
    for first in range(0, batch, chunk):
        frames = rgb[first:first + chunk].to(device).permute(0, 3, 1, 2)
        views = warp_pair(frames, left_disparity[first:first + chunk].to(device),
                          right_disparity[first:first + chunk].to(device), fill)
        for view, out in zip(views, (lefts, rights)):
            out.append(view.images.permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu())
        progress(min(batch, first + chunk), batch)
    return torch.cat(lefts), torch.cat(rights)


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


def _rasterize_rows(rows: torch.Tensor, disparity: torch.Tensor, fill: str, gap_threshold: float,
                    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Warp rows given as channel planes [C,N,W] to the left by disparity [N,W]; see the module docstring.

    Pixel i is a flat box [f_i - w, f_i + w] (w = 0.5; 0.45 / 0 for the old polyline profiles) followed by a joint
    [f_i + w, f_{i+1} - w] to the next pixel; the joint after the last pixel is the empty space on the right, and
    the empty space left of the leftmost landing comes first. In row order the segments are numbered s = 0 (left
    space), 2i + 1 (box i), 2i + 2 (joint i). Returns (colours [C,N,W] with holes black for the "none" and
    "background" fills, hole fraction [N,W], and for "background" each pixel's hole fraction times its hole colour
    [C,N,W], else None), written into `out` when given (saves a copy of every result).
    """
    channels, n_rows, width = rows.shape
    device, dtype = rows.device, rows.dtype
    w = {"polylines_soft": 0.0, "polylines_sharp": _SHARP_HALF_WIDTH}.get(fill, 0.5)
    last = width - 1
    landing = torch.arange(width, device=device, dtype=dtype) - disparity         # f, [N,W]
    # Visibility: the suffix minimum of the vertex positions. Over the vertices from box i on it is G_i - w, with
    # G the suffix minimum of f; from box i's right vertex on it is min(f_i + w, G_{i+1} - w).
    suffix, suffix_index = _suffix_min(landing)
    box_start = landing - w
    box_end = landing + w
    after = torch.empty_like(landing)                                            # G_{i+1} - w (+inf at the end)
    after[:, :-1] = suffix[:, 1:] - w
    after[:, -1] = math.inf
    visible_box_end = torch.minimum(box_end, after)
    visible_box = (visible_box_end - box_start).clamp_(0.0, 2.0 * w)
    far_right = landing[:, -1:].clamp_min(width - 0.5) + 1.0
    after[:, -1:] = far_right
    visible_joint = (after - box_end).clamp_min_(0.0)
    first_vertex = suffix[:, :1] - w                                             # leftmost visible position
    far_left = first_vertex.clamp_max(-0.5) - 1.0
    first_pixel = suffix_index[:, :1]
    visible_left = first_vertex - far_left

    # Joints: their true length, whether they are gaps (pixels more than gap_threshold apart), their profile.
    joint_length = torch.empty_like(landing)
    joint_length[:, :-1] = (landing[:, 1:] - landing[:, :-1] - 2.0 * w).clamp_min(0.0)
    joint_length[:, -1:] = far_right - box_end[:, -1:]
    # Float 0/1 masks and integer arithmetic instead of boolean masks and torch.where: several times faster on CPU.
    gap = torch.empty_like(landing)
    torch.sub(landing[:, 1:] - landing[:, :-1], gap_threshold, out=gap[:, :-1]).sign_().clamp_min_(0.0)
    gap[:, -1] = 1.0
    hole_fill = fill in ("none", "background")

    def joint_weights(s: torch.Tensor, length: torch.Tensor, is_gap: torch.Tensor):
        """Weights of the left pixel, the right pixel and the hole colour in the integral over [0, s] of a joint:
        a linear ramp from the left pixel's colour to the right one's (s^2 / 2L of the right one), except across
        gaps for the hole fills (all hole) and nearest (each side up to the middle)."""
        s = torch.minimum(s, length)
        right = s * s / (2.0 * length.clamp_min(1e-12))
        if fill == "nearest":
            right.lerp_((s - 0.5 * length).clamp_min_(0.0), is_gap)
        left = s - right
        if not hole_fill:
            return left, right, None
        keep = 1.0 - is_gap
        return left.mul_(keep), right.mul_(keep), s * is_gap

    # What an output boundary needs from the source, by column c (describing the segments of pixel c - 1): the
    # colour integral of everything left of box c - 1 (prefix sum), pixel c - 1, pixel c (the joint's right end) and,
    # for the background fill, the hole colour of joint c - 1. Prefix and hole colour share one table [S, N, W+1].
    accumulate = torch.float64 if width > _FLOAT32_PREFIX_WIDTH else dtype   # float32 sums lose grey levels past that
    joint_a, joint_b, _ = joint_weights(visible_joint, joint_length, gap)
    stacks = 2 if fill == "background" else 1
    table = torch.empty(stacks * channels, n_rows, width + 1, device=device, dtype=accumulate)
    prefix = table[:channels]
    prefix[..., 0] = 0.0
    if hole_fill:   # holes stay black here; the background fill adds its colour afterwards
        prefix[..., 1] = 0.0
    else:
        prefix[..., 1:2] = _gather_columns(rows, first_pixel) * visible_left
    if width > 1:
        pair = prefix[..., 2:]
        torch.mul(rows[..., :-1], (visible_box + joint_a)[:, :-1], out=pair)
        pair.addcmul_(rows[..., 1:], joint_b[:, :-1])
    prefix.cumsum_(-1)
    if fill == "background":
        # A hole's colour is its farther side: for a leftward warp a gap means f_{i+1} - f_i > 1, so
        # d_{i+1} < d_i and the right side is farther. Averaged a few pixels into it; the right edge looks left.
        _hole_colours(rows, _BACKGROUND_SAMPLES, out=table[channels:])

    # Locate every pixel boundary t_j = j - 0.5 (j = 0..W): it lies in segment K = the number of visible vertices
    # at or left of it. Counting vertices per boundary and a cumulative sum do this in linear time.
    counts = torch.zeros(n_rows, width + 2, device=device, dtype=dtype)
    ones = torch.ones_like(landing)
    counts.scatter_add_(1, torch.ceil(suffix + (0.5 - w)).clamp_(0, width + 1).long(), ones)
    counts.scatter_add_(1, torch.ceil(visible_box_end + 0.5).clamp_(0, width + 1).long(), ones)
    # Segment arithmetic in floating point (small integers, exact) rather than int64: much faster on CPU.
    segment = counts.cumsum_(1)[:, : width + 1]                                 # K, [N, W+1]
    half = segment.mul(0.5).floor_()
    odd = torch.addcmul(segment, half, half.new_tensor(-2.0))                   # K mod 2: 1 in a box
    left_f = (1.0 - segment).clamp_min_(0.0)                                     # 1 in the left space (K = 0)
    joint_f = 1.0 - odd - left_f                                                 # 1 in a joint (K even, > 0)
    after_segment = half + odd                                                   # (K + 1) // 2
    pixel = (after_segment - 1.0).clamp_min_(0.0).long()                         # i of box/joint K
    f_i, box_i, length_i, gap_i = (values.gather(1, pixel)
                                   for values in (landing, visible_box, joint_length, gap))
    boundary = torch.arange(width + 1, device=device, dtype=dtype) - 0.5
    into_box = boundary - (f_i - w)
    into_joint = boundary - (f_i + w)
    b_a, b_b, b_fill = joint_weights(into_joint.clamp_min(0.0), length_i, gap_i)
    outside = 1.0 - left_f
    weight_a = torch.lerp(into_box, box_i + b_a, joint_f).mul_(outside)          # 0 in the left space
    weight_b = b_b.mul_(joint_f)
    into_left = (boundary - far_left).clamp_min_(0.0).mul_(left_f)
    hole = (b_fill if b_fill is not None else torch.minimum(into_joint.clamp_min(0.0), length_i).mul_(gap_i))
    hole = hole.mul(joint_f).add_(into_left)
    # Column of Z: pixel + 1, or in the left space the leftmost visible pixel, read through Z2 (hence first_pixel).
    column = torch.addcmul(after_segment, left_f, first_pixel.to(dtype)).long()
    if not hole_fill:
        weight_b.add_(into_left)
    picked_table = _gather_columns(table, column)
    source = rows if accumulate == dtype else rows.to(accumulate)
    at_boundary = picked_table[:channels].mul_(outside)
    at_boundary.addcmul_(_gather_columns(source, (column - 1).clamp_min_(0)), weight_a)   # 0 in the left space
    at_boundary.addcmul_(_gather_columns(source, column.clamp_max(last)), weight_b)
    colours_out, holes_out, fill_out = out if out is not None and accumulate == dtype else (None, None, None)
    colours = torch.sub(at_boundary[..., 1:], at_boundary[..., :-1], out=colours_out).to(dtype)

    # Hole fraction per pixel, from the same prefix idea on the gap lengths.
    pair_index = after_segment.long()                                            # prefix entry before K
    hole_prefix = torch.cat([landing.new_zeros(n_rows, 1), visible_left, visible_joint * gap], dim=1).cumsum(1)
    hole_at_boundary = hole_prefix.gather(1, pair_index) + hole
    holes = torch.sub(hole_at_boundary[:, 1:], hole_at_boundary[:, :-1], out=holes_out).clamp_(0.0, 1.0)
    fill_sum = None
    if fill == "background":
        # For the smoothing pass: each pixel's hole fraction times its hole colour. The hole part belongs to the gap
        # (or left space) its left boundary lies in, or starts right after it.
        fill_sum = torch.mul(picked_table[channels:, :, :-1].to(dtype), holes, out=fill_out)
    if out is not None and accumulate != dtype:
        for result, target in zip((colours, holes, fill_sum), out):
            if target is not None:
                target.copy_(result)
    return colours, holes, fill_sum


def _hole_colours(rows: torch.Tensor, count: int, out: torch.Tensor) -> torch.Tensor:
    """Into out [C,N,W+1]: entry i < W is the mean of `count` pixels from pixel i going right (the last pixel repeated
    past the edge); entry W, for the space beyond the right edge, the mean of the last `count` pixels."""
    width = rows.shape[-1]
    count = max(1, min(count, width))
    body = out[..., :width]
    body.copy_(rows)
    for step in range(1, count):
        body[..., : width - step] += rows[..., step:]
        body[..., width - step:] += rows[..., -1:]
    out[..., width] = rows[..., width - count:].sum(-1)
    return out.mul_(1.0 / count)


def _box_sum(values: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sum over [i - radius, i + radius] along `dim` (zero outside), same size, in O(1) per element.
    `values` is overwritten (it becomes its own cumulative sum)."""
    size = values.shape[dim]
    if radius <= 0 or size == 0:
        return values
    summed = values.cumsum_(dim)
    out = torch.empty_like(summed)
    reach = min(radius, size - 1)
    # window [i - r, i + r] = summed[min(i + r, n - 1)] - summed[i - r - 1] (nothing to subtract for i <= r)
    out.narrow(dim, 0, size - reach).copy_(summed.narrow(dim, reach, size - reach))
    out.narrow(dim, size - reach, reach).copy_(summed.narrow(dim, size - 1, 1).expand_as(out.narrow(dim, size - reach,
                                                                                                    reach)))
    if size > radius + 1:
        out.narrow(dim, radius + 1, size - radius - 1).sub_(summed.narrow(dim, 0, size - radius - 1))
    return out


def _add_smooth_fill(out: torch.Tensor, fill_sum: torch.Tensor, holes: torch.Tensor, batch: int, height: int,
                     radius: int, whole_stack: bool) -> None:
    """Add to out [C,N,W] the hole colours averaged over a (2r+1)^2 window of hole pixels, weighted by each pixel's
    hole fraction (times that fraction), so rows of background colour become a smooth surface instead of streaks.
    fill_sum [C,N,W] (hole fraction x hole colour) is overwritten. Works one image plane at a time: a plane's box
    sums stay in cache, several times faster on CPU than filtering the whole stack at once."""
    if whole_stack:   # one pass over the whole stack: few large kernels suit a GPU
        weight = _box_sum(_box_sum(holes.reshape(batch, height, -1).clone(), radius, 2), radius, 1)
        scale = holes / weight.reshape(holes.shape).clamp_min_(1e-6)
        stack = fill_sum.reshape(-1, batch, height, fill_sum.shape[-1])
        out.addcmul_(_box_sum(_box_sum(stack, radius, 3), radius, 2).reshape(out.shape), scale)
        return
    for image in range(batch):
        rows = slice(image * height, (image + 1) * height)
        hole = holes[rows]
        weight = _box_sum(_box_sum(hole.clone(), radius, 1), radius, 0).clamp_min_(1e-6)
        scale = hole / weight
        for plane, target in zip(fill_sum[:, rows], out[:, rows]):
            target.addcmul_(_box_sum(_box_sum(plane, radius, 1), radius, 0), scale)


def _gather_columns(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Channel planes values [C,N,W'] at per-row column indices [N,K] -> [C,N,K]. One 2-D gather per plane: on CPU
    several times faster than a single gather with the index expanded over the channels."""
    out = values.new_empty(values.shape[0], *index.shape)
    for plane, picked in zip(values, out):
        torch.gather(plane, 1, index, out=picked)
    return out


def _exclusive_cumsum(values: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the last axis that starts at 0: out[..., k] = sum of values[..., :k]."""
    return F.pad(values.cumsum(-1), (1, 0))[..., :-1]
