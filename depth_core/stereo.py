"""Stereo pairs from one image and its depth: forward warping with occlusion ordering and gap filling.

A view from a camera moved sideways sees every pixel shifted horizontally by its disparity; nearer pixels shift
more and cover farther ones, and farther pixels revealed beside a near object ("disocclusions") have no source at
all and must be filled.

The kernel treats each image row as a polyline (the old depthmap extension's best idea): every pixel is a flat box
one pixel wide at its landing position, joined to the next pixel's box by a straight ramp. It renders that polyline
for all rows at once in a few dozen vectorized passes, with no per-pixel loop and no search:

* Occlusion without a z-buffer. For a view that shifts pixels to the right (the left eye), pixel i lands at
  f_i = i + d_i. An earlier pixel that lands further right has a larger disparity, so it is nearer: the surface
  seen at x is the first box or ramp that reaches past the running maximum of the landing positions before it, one
  `cummax` per row instead of a depth test per pixel. This holds for any per-pixel disparity, so an added constant
  (separation, convergence) changes nothing. The right eye is the mirror image of the same problem, read through
  mirrored indices.
* Sampling. A histogram and a cumulative sum (linear time) find, for every output pixel, the pixel k whose box or
  incoming ramp lies under the right end of its footprint [x - 0.5, x + 0.5]; the output is the integral of the
  visible profile over the footprint, from pixels k-1 and k and the ramp between them. Integer disparities
  reproduce the source exactly, sub-pixel ones interpolate linearly, stretched surfaces ramp exactly, and a near
  object's edge pixel keeps its full width over the background it hides. Only where a squeezed surface packs more
  than two pixels into a footprint does pixel k-1 stand in for those left of it.
* Gaps. Where two neighbouring pixels land more than `gap_threshold` pixels apart the ramp is a hole (a depth
  discontinuity; slanted surfaces stretch less); the fill mode decides what lies in it. The "background" fill
  takes the colour of the farther side, averaged over a few pixels into the background and over neighbouring rows,
  so holes look like the surface behind the object instead of a stretched copy of its edge.
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

_HALF_WIDTHS = {"polylines_sharp": 0.45, "polylines_soft": 0.0}
"""Half-width of a pixel's flat plateau in the old extension's polyline profiles; every other fill uses 0.5 (pixels
are boxes)."""

_FAR = 1.0e6
"""Position of the virtual pixels beyond both ends of a row: far enough that no footprint reaches them."""

_CPU_BLOCK_PIXELS = 1 << 17
"""Output pixels (all views together) per block of rows warped at once on CPU: few enough for the temporaries to
stay in cache, enough to share each operation between threads."""

_BACKGROUND_SAMPLES = 3
"""Pixels into the background averaged for the colour of a hole. One pixel (iw3's shift fill) is often a mixed edge
pixel that changes from frame to frame (3x the fill flicker on a panning shot); five lose the texture's continuation
into the hole. Three beat both on layered planes with a known hidden background and on the Middlebury pair
(benchmarks/stereo_quality.py)."""

_SMOOTHING_WIDTH_FRACTION = 0.008
"""Default radius of the rows averaged into a hole's colour, as a fraction of the image width (3 rows at 360 px,
10 at 1280): neighbouring rows agree instead of streaking, and the fill stays steady when edges move."""

_SHIFTED_ADD_RADIUS = 4
"""Up to this radius, summing rows by shifted adds beats a cumulative sum down the rows on CPU."""


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
    Non-finite disparities count as 0. smoothing: for the background fill, the radius in rows over which each hole's
    colour is averaged; None = 0.8 % of the width (at least 1), 0 = the hole's own row only.
    """
    if eye not in EYES:
        raise ValueError(f"Unknown eye {eye!r}; use 'left' or 'right'.")
    values, (disparity,) = _prepare_warp(images, (disparity,), fill, gap_threshold)
    return _warp_views(values, (disparity,), (eye == "right",), fill, gap_threshold, smoothing)[0]


def warp_pair(images: torch.Tensor, left_disparity: torch.Tensor, right_disparity: torch.Tensor,
              fill: str = "background", gap_threshold: float = DEFAULT_GAP_THRESHOLD,
              smoothing: float | None = None) -> tuple[WarpResult, WarpResult]:
    """Both eyes at once: the same as `warp_by_disparity(images, left_disparity, "left", ...)` and
    `(..., right_disparity, "right", ...)`, computed in one batched pass (half the kernel launches, and twice the work
    per operation to share between CPU threads)."""
    values, disparities = _prepare_warp(images, (left_disparity, right_disparity), fill, gap_threshold)
    left, right = _warp_views(values, disparities, (False, True), fill, gap_threshold, smoothing)
    return left, right


def _prepare_warp(images: torch.Tensor, disparities: tuple[torch.Tensor, ...], fill: str,
                  gap_threshold: float) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Check the inputs of a warp; returns the images as float32/64 and each disparity as [B,H,W] of that type."""
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
    return values, tuple(d.to(device=values.device, dtype=values.dtype).expand(batch, -1, -1) for d in prepared)


def _warp_views(values: torch.Tensor, disparities: tuple[torch.Tensor, ...], mirrored: tuple[bool, ...], fill: str,
                gap_threshold: float, smoothing: float | None) -> list[WarpResult]:
    """Warp `values` [B,C,H,W] once per disparity [B,H,W] (mirrored: that view moves pixels left, the kernel's
    problem seen in a mirror)."""
    batch, channels, height, width = values.shape
    views = len(disparities)
    # Rows as channel planes [C, rows, W] (per-plane gathers and broadcasts of [rows, W] weights are the fast paths
    # on CPU). All views are warped together and read the same tables of source colours; a mirrored view reads them
    # through mirrored indices, so no image is ever flipped. On CPU, blocks of rows whose temporaries stay in cache
    # are faster than the whole image at once; on CUDA one block holds the whole image.
    n_rows = batch * height
    step = n_rows if values.device.type != "cpu" else max(1, _CPU_BLOCK_PIXELS // (width * views))
    planes = values.transpose(0, 1).reshape(channels, n_rows, width)
    colours = _padded_colours(planes)
    hole_colours = None
    if fill == "background":
        radius = max(1, round(_SMOOTHING_WIDTH_FRACTION * width)) if smoothing is None else max(0, round(smoothing))
        hole_colours = _hole_colours(planes, _BACKGROUND_SAMPLES, radius, height)
    disparity = values.new_empty(views, n_rows, width)
    for target, source, mirror in zip(disparity, disparities, mirrored):   # non-finite disparities count as 0
        source = source.reshape(n_rows, width)
        torch.nan_to_num(source.flip(-1) if mirror else source, nan=0.0, posinf=0.0, neginf=0.0, out=target)
    out = values.new_empty(channels, views, n_rows, width)
    holes = values.new_empty(views, n_rows, width)
    for start in range(0, n_rows, step):
        block = slice(start, min(n_rows, start + step))
        _rasterize_rows(colours[:, block], disparity[:, block], mirrored, fill, gap_threshold,
                        None if hole_colours is None else hole_colours[:, block],
                        out=(out[:, :, block], holes[:, block]))
    return [WarpResult(out[:, view].view(channels, batch, height, width).transpose(0, 1),
                       holes[view].view(batch, height, width)) for view in range(views)]


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
        return unit_nearness_disparities(normalize_min_max(nearness(depth).float(), settings.per_image), width,
                                         settings)
    return _split_between_eyes(total, width, settings)


def unit_nearness_disparities(unit: torch.Tensor, width: int,
                              settings: StereoSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """`eye_disparities` of relative depth already normalized to 0..1 nearness [B,H,W] (near = 1), e.g. over a
    whole video with a range found beforehand, so every frame and every segment of it is shifted alike."""
    total = (unit.pow(settings.exponent) - settings.convergence) * (settings.divergence / 100.0 * width)
    return _split_between_eyes(total, width, settings)


def _split_between_eyes(total: torch.Tensor, width: int, settings: StereoSettings) -> tuple[torch.Tensor, torch.Tensor]:
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


def _rasterize_rows(colours: torch.Tensor, disparity: torch.Tensor, mirrored: tuple[bool, ...], fill: str,
                    gap_threshold: float, hole_colours: torch.Tensor | None,
                    out: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Warp the same rows once per view to the right by disparity [V,N,W] (pixel i lands at f_i = i + d_i); a
    mirrored view's disparity is given mirrored, and that view moves pixels left. See the module docstring.

    colours: the source rows [C,N,W+2] from `_padded_colours`; hole_colours: `_hole_colours` of the source, for the
    "background" fill. Writes into `out` the colours [C,V,N,W] (holes black for the "none" fill) and the hole
    fraction [V,N,W].

    Pixel i is a flat box [f_i - w, f_i + w] (w = 0.5; 0.45 / 0 for the old polyline profiles) joined to the next
    pixel's box by a straight ramp. Indices into the padded tables are pixel + 1: entry 0 stands for the empty space
    left of the row, entry W + 1 for the space right of it, both "pixels" infinitely far out.
    """
    views, n_rows, width = disparity.shape
    device, dtype = colours.device, colours.dtype
    w = _HALF_WIDTHS.get(fill, 0.5)
    colours_out, holes_out = out
    ascending = torch.arange(width, device=device, dtype=dtype)

    landing = colours.new_empty(views, n_rows, width + 2)
    torch.add(disparity, ascending, out=landing[..., 1:-1])
    landing[..., 0], landing[..., -1] = -_FAR, _FAR
    # Visibility: an earlier pixel that lands further right is nearer (it moved further), so the surface seen at x is
    # the first joint or box that reaches past the running maximum of the landing positions before it.
    envelope = colours.new_empty(views, n_rows, width + 1)
    envelope[..., 0] = -_FAR
    nearest = torch.empty(views, n_rows, width + 1, device=device, dtype=torch.long)   # pixel reaching furthest
    nearest[..., 0] = -1
    torch.cummax(landing[..., 1:-1], dim=-1, out=(envelope[..., 1:], nearest[..., 1:]))

    # Locate the right end x + 0.5 of each output pixel's footprint: k = the number of pixels whose visible box ends
    # left of it, so it lies in the joint k-1 -> k or in box k. A histogram and a cumulative sum: linear time.
    ends = (envelope[..., 1:] + (w + 0.5)).clamp_(0, width).long()   # truncation is floor here
    counts = torch.zeros(views, n_rows, width + 1, device=device, dtype=torch.long)
    counts.scatter_add_(-1, ends, torch.ones_like(ends))
    before = counts.cumsum_(-1)[..., :width]                              # padded index of pixel k - 1
    # A mirrored view's output pixel j is its problem's pixel W - 1 - j: everything below runs in output order.
    positions = ascending.expand(views, 1, width).clone()
    for view, mirror in enumerate(mirrored):
        if mirror:
            before[view] = before[view].flip(-1)
            positions[view] = ascending.flip(-1)

    # The footprint [x - 0.5, x + 0.5] in coordinates relative to x: pixel k-1's side up to the end of its visible
    # box, then the joint (ramp) up to the start of box k, then box k. Exact for shifted and stretched surfaces and
    # at occlusion edges; where a squeezed surface packs more pixels into the footprint, pixel k-1 stands in for
    # those left of it.
    box_end_offset, box_start_offset = positions - w, positions + w      # x - w, x + w
    joint_left = torch.gather(envelope, -1, before).sub_(box_end_offset).clamp_(min=-0.5)
    ramp_start = torch.gather(landing, -1, before)                        # pixel k-1 lands here ...
    joint_right = torch.gather(landing[..., 1:], -1, before)              # ... and pixel k here
    span = joint_right - ramp_start                                       # distance of the two pixels
    joint_right.sub_(box_start_offset)                                    # box k starts here
    ramp_start.sub_(box_end_offset)                                       # the ramp starts here
    if fill == "nearest":   # across a hole, each side stretched to its middle
        middle = torch.add(ramp_start, joint_right).mul_(0.5)
    joint_right.clamp_(min=joint_left).clamp_(max=0.5)
    joint_length = joint_right - joint_left
    gap = (span - gap_threshold).sign_().clamp_(min=0.0)                # 1 across a hole (float: fast on CPU)
    torch.mul(joint_length, gap, out=holes_out)
    # The integral of the ramp's weight (0 at its start, 1 at box k) over the joint part of the footprint.
    ramp = torch.add(joint_left, joint_right).mul_(0.5).sub_(ramp_start).mul_(joint_length).div_(
        span.sub_(2.0 * w).clamp_(min=1e-6))
    if fill == "nearest":
        ramp.lerp_(joint_right - middle.clamp_(min=joint_left).clamp_(max=joint_right), gap)
    elif fill in ("none", "background"):
        ramp.addcmul_(ramp, gap, value=-1.0)
    weight_after = joint_right.neg_().add_(0.5).add_(ramp)                # box k's part and the ramp's
    weight_before = weight_after.neg().add_(1.0)
    if fill in ("none", "background"):
        weight_before.sub_(holes_out)

    # Read the colours from the source tables, which all views share. Left of the joint lies the pixel that reaches
    # furthest among 0..k-1 (pixel k-1 itself unless a nearer one hides it), padded index `visible`; pixel k has
    # padded index before + 1. A mirrored view's pixel p is the source's pixel W - 1 - p, padded index W - p.
    visible = torch.gather(nearest, -1, before).add_(1)
    left_index, right_index = visible, before + 1
    for view, mirror in enumerate(mirrored):
        if mirror:
            torch.sub(width + 1, visible[view], out=left_index[view])
            torch.sub(width + 1, right_index[view], out=right_index[view])
    picked = torch.empty_like(weight_after)
    for plane, colour in zip(colours, colours_out):
        source = plane.expand(views, -1, -1)
        torch.gather(source, -1, left_index, out=colour).mul_(weight_before)
        colour.addcmul_(torch.gather(source, -1, right_index, out=picked), weight_after)
    if hole_colours is not None:
        # A hole lies between a nearer pixel on one side and the farther pixel k - 1 on the other: its colour is the
        # background's, the _hole_colours entry of pixel k - 1 that looks away from the hole: `before` for an
        # unmirrored view, (W + 1 - before) + count - 1 for a mirrored one.
        count = hole_colours.shape[-1] - width - 1
        hole_index = right_index.sub_(1)
        for view, mirror in enumerate(mirrored):
            if mirror:
                hole_index[view].add_(count + 1)
        for plane, colour in zip(hole_colours, colours_out):
            colour.addcmul_(torch.gather(plane.expand(views, -1, -1), -1, hole_index, out=picked), holes_out)


def _mean_of_rows(frames: torch.Tensor, radius: int, scale: float = 1.0) -> torch.Tensor:
    """Mean over rows i-radius..i+radius of frames [C,B,H,W] (rows beyond a frame's edges left out), times `scale`:
    shifted adds for small radii (the scale rides along for free), a cumulative sum down the rows for large ones."""
    height = frames.shape[2]
    rows = torch.arange(height, device=frames.device)
    if radius <= _SHIFTED_ADD_RADIUS:
        weight = scale / (2 * radius + 1)
        summed = torch.mul(frames, weight)
        for step in range(1, radius + 1):
            summed[:, :, step:].add_(frames[:, :, :-step], alpha=weight)
            summed[:, :, :-step].add_(frames[:, :, step:], alpha=weight)
        if radius:   # rows near a frame's edges average fewer rows
            edges = torch.cat([rows[:radius], rows[height - radius:]]).unique()
            in_window = 1 + edges.clamp(max=radius) + (height - 1 - edges).clamp(max=radius)
            summed[:, :, edges] *= ((2 * radius + 1) / in_window).to(frames.dtype)[:, None]
        return summed
    running = F.pad(frames, (0, 0, 1, 0)).cumsum_(2)                      # running[h]: rows 0..h-1
    upper = (rows + radius + 1).clamp_(max=height)
    lower = (rows - radius).clamp_(min=0)
    summed = running.index_select(2, upper).sub_(running.index_select(2, lower))
    return summed.mul_((scale / (upper - lower)).to(frames.dtype)[:, None])


def _padded_colours(planes: torch.Tensor) -> torch.Tensor:
    """[C,N,W] -> [C,N,W+2] with each row's end pixels repeated once beyond its ends."""
    padded = planes.new_empty(*planes.shape[:-1], planes.shape[-1] + 2)
    padded[..., 1:-1] = planes
    padded[..., 0], padded[..., -1] = planes[..., 0], planes[..., -1]
    return padded


def _hole_colours(planes: torch.Tensor, count: int, radius: int, height: int) -> torch.Tensor:
    """Hole colours of source rows [C,N,W] (N = frames x height): the mean of `count` neighbouring pixels along the
    row (n = count, clamped to the width), averaged over rows i-radius..i+radius of the same frame, so the rows of a
    hole agree instead of streaking. A table [C,N,W+n+1] whose entry e + 1 is the mean over pixels e-n+1..e (the end
    pixels repeated past the row's ends): a hole left of the row reads entry 0 (the first n pixels), a hole whose
    background lies on its left reads entry k for pixel k - 1, one whose background lies on its right reads entry
    k + n - 1 for pixel k - 1 (pixels k-1..k+n-2), and a hole right of the row the last entry (the last n pixels)."""
    channels, n_rows, width = planes.shape
    count = max(1, min(count, width))
    radius = max(0, min(radius, height - 1))
    frames = planes.view(channels, n_rows // height, height, width)
    summed = _mean_of_rows(frames, radius, 1.0 / count).view(channels, n_rows, width)
    # The repeated end pixels are added as multiples of the end sums rather than by padding the rows: padding copies
    # the whole table, which costs more on CPU than these few columns.
    first, last = summed[..., 0].clone(), summed[..., -1].clone()
    sums = summed.cumsum_(-1)                                              # sums[e]: pixels 0..e
    out = planes.new_empty(channels, n_rows, width + count + 1)
    if width > count:
        torch.sub(sums[..., count:], sums[..., :-count], out=out[..., count + 1:width + 1])
    out[..., count] = sums[..., count - 1]
    for e in range(count - 1):                                             # the first pixel repeated on the left
        torch.add(sums[..., e], first, alpha=count - 1 - e, out=out[..., e + 1])
    for e in range(width, width + count - 1):                              # the last pixel repeated on the right
        window = sums[..., -1] - sums[..., e - count] if e >= count else sums[..., -1].clone()
        torch.add(window, last, alpha=e - width + 1, out=out[..., e + 1])
    out[..., 0], out[..., -1] = out[..., count], out[..., width]
    return out
