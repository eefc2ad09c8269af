"""Between the raw prediction and the picture: clip, renormalize, shape the curve, keep videos steady.

All functions work on *nearness* (larger = nearer: relative inverse depth as is, 1/metres for metric depth), the
quantity a depth picture shows. The old extension normalized nearness to 0..1, clipped it to a range or to
percentiles and normalized again; here the same happens per image or over the whole batch, and a batch of video
frames can first be aligned to each other (least-squares scale and shift against the neighbouring frames) so the
picture does not flicker when the network's unknown scale and shift drift from frame to frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .depth import Depth, DepthKind, min_max_range, nearness, normalize_min_max, unit_interval
from .progress import ProgressFn, no_progress

CLIP_MODES = ("range", "percentile")

_PERCENTILE_SAMPLES = 1 << 24
"""Percentiles over more pixels than this (a long video with one range) come from an even sample of them."""

_STATS_SIDE = 256
"""Frames are area-downsampled to at most this side to gather alignment statistics: the fit has 2 unknowns per frame,
so 65k samples per frame are plenty, and long videos stay cheap."""


@dataclass(frozen=True)
class ClipSettings:
    """What ClipRenormalize does. `near`/`far` are 0..1 positions on the normalized nearness (mode "range") or
    percentiles as fractions (mode "percentile"); near must be above far."""

    mode: str = "range"
    near: float = 1.0
    far: float = 0.0
    per_image: bool = True
    gamma: float = 1.0
    contrast: float = 1.0
    invert: bool = False
    """Picture only (black = near): the DEPTH output keeps larger = nearer so geometry nodes stay correct."""
    stabilize: bool = False
    stabilize_window: int = 2
    keep_metric: bool = True
    """Metric input: True clips in metres and keeps metres; False returns relative inverse depth 0..1."""

    def validate(self) -> None:
        if self.mode not in CLIP_MODES:
            raise ValueError(f"Clip mode must be one of {CLIP_MODES}, got {self.mode!r}.")
        for name, value in (("near", self.near), ("far", self.far)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"The {name} clip must be between 0 and 1, got {value}.")
        if self.near <= self.far:
            raise ValueError(
                f"The near clip ({self.near}) must be above the far clip ({self.far}): near = 1 keeps the nearest "
                "values, far = 0 the farthest. Raise near or lower far."
            )
        if not self.gamma > 0 or not self.contrast > 0:
            raise ValueError(f"Gamma and contrast must be above 0 (1 = unchanged), got {self.gamma}, {self.contrast}.")
        if self.stabilize_window < 1:
            raise ValueError(f"The stabilization window must be at least 1 frame, got {self.stabilize_window}.")


@dataclass(frozen=True)
class ClipResult:
    depth: Depth
    picture: torch.Tensor
    """[B,H,W] 0..1, near = 1 unless inverted."""


def _require_frames(depth: Depth) -> None:
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of [B,N] with linear interpolation (numpy's default); works past torch.quantile's size cap."""
    count = values.shape[1]
    ordered = values.sort(dim=1).values
    position = q * (count - 1)
    low = int(np.floor(position))
    high = min(low + 1, count - 1)
    frac = position - low
    return ordered[:, low] * (1.0 - frac) + ordered[:, high] * frac


def clip_bounds(unit: torch.Tensor, mode: str, near: float, far: float, per_image: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) as [B,1,1] on the 0..1 nearness `unit`: the range itself, or its far/near percentiles."""
    batch = unit.shape[0]
    if mode == "range":
        low = torch.full((batch, 1, 1), far, dtype=unit.dtype, device=unit.device)
        high = torch.full((batch, 1, 1), near, dtype=unit.dtype, device=unit.device)
        return low, high
    rows = unit.reshape(batch, -1) if per_image else unit.reshape(1, -1)
    if rows.shape[1] > _PERCENTILE_SAMPLES:
        # Sorting a whole video's pixels would need gigabytes; an even 16M-pixel sample pins percentiles to ~1e-4.
        rows = rows[:, :: -(-rows.shape[1] // _PERCENTILE_SAMPLES)]
    low, high = quantile(rows, far), quantile(rows, near)
    return low.view(-1, 1, 1).expand(batch, 1, 1), high.view(-1, 1, 1).expand(batch, 1, 1)


def apply_curve(unit: torch.Tensor, gamma: float = 1.0, contrast: float = 1.0) -> torch.Tensor:
    """Monotone 0..1 -> 0..1 curve: gamma (t**gamma; above 1 darkens the middle) then a symmetric S-curve
    (contrast above 1 steepens the middle, below 1 flattens it); 0 and 1 stay fixed, order is never changed."""
    out = unit
    if gamma != 1.0:
        out = out.clamp(0.0, 1.0).pow(gamma)
    if contrast != 1.0:
        lower = 0.5 * (2.0 * out).clamp(0.0, 1.0).pow(contrast)
        upper = 1.0 - 0.5 * (2.0 * (1.0 - out)).clamp(0.0, 1.0).pow(contrast)
        out = torch.where(out < 0.5, lower, upper)
    return out


def _banded_solve(blocks: dict[tuple[int, int], float], rhs: np.ndarray, bandwidth: int) -> np.ndarray:
    from scipy.linalg import solve_banded  # SciPy's banded solver keeps long videos linear in frame count

    size = rhs.shape[0]
    ab = np.zeros((2 * bandwidth + 1, size))
    for (row, col), value in blocks.items():
        ab[bandwidth + row - col, col] += value
    return solve_banded((bandwidth, bandwidth), ab, rhs)


def stabilize_frames(frames: torch.Tensor, window: int = 2, shift: bool = True, anchored: int = 0,
                     progress: ProgressFn = no_progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align each frame of [B,H,W] to its neighbours with a per-frame scale (and shift).

    Minimizes sum over frame pairs i<j<=i+window of mean_p (s_i x_ip + b_i - s_j x_jp - b_j)^2 jointly for all
    frames, plus a tiny pull towards s=1, b=0 that fixes the overall scale and offset (which the pair terms leave
    free) and keeps flat frames solvable. The first `anchored` frames (already aligned ones, when a video is
    stabilized chunk by chunk) are held at s=1, b=0 by a strong pull instead. Returns (aligned frames, scales [B],
    shifts [B]).
    """
    batch = frames.shape[0]
    ones = torch.ones(batch, dtype=frames.dtype, device=frames.device)
    if batch < 2:
        return frames, ones, torch.zeros_like(ones)
    height, width = frames.shape[1:]
    factor = max(1, int(np.ceil(max(height, width) / _STATS_SIDE)))
    small = F.avg_pool2d(frames.unsqueeze(1).double(), factor, ceil_mode=True) if factor > 1 else frames.double()
    x = small.reshape(batch, -1)
    # Work in units of the batch's RMS so the fit's weights mean the same for disparities of 1 and of 1000.
    unit = float(x.pow(2).mean().sqrt().clamp_min(1e-30))
    x = x / unit
    count = x.shape[1]
    sum_x = (x.sum(1) / count).cpu().numpy()
    sum_xx = ((x * x).sum(1) / count).cpu().numpy()
    cross = {k: ((x[:-k] * x[k:]).sum(1) / count).cpu().numpy() for k in range(1, min(window, batch - 1) + 1)}
    progress(1, 2)

    per = 2 if shift else 1
    blocks: dict[tuple[int, int], float] = {}

    def add(row: int, col: int, value: float) -> None:
        blocks[(row, col)] = blocks.get((row, col), 0.0) + value

    for k, products in cross.items():
        for i in range(batch - k):
            j = i + k
            for a, b, sign in ((i, i, 1.0), (j, j, 1.0), (i, j, -1.0), (j, i, -1.0)):
                # residual = phi_a . theta_a - phi_b . theta_b with phi = (x, 1): accumulate E[phi_a phi_b^T]
                xx = sum_xx[a] if a == b else products[i]
                add(per * a, per * b, sign * xx)
                if shift:
                    add(per * a + 1, per * b, sign * sum_x[b])
                    add(per * a, per * b + 1, sign * sum_x[a])
                    add(per * a + 1, per * b + 1, sign * 1.0)
    rhs = np.zeros(per * batch)
    for i in range(batch):
        pull = 1e6 if i < anchored else 1e-6
        weight = pull * max(float(sum_xx[i]), 1e-6)
        add(per * i, per * i, weight)
        rhs[per * i] = weight
        if shift:
            add(per * i + 1, per * i + 1, pull)
    solution = _banded_solve(blocks, rhs, bandwidth=per * (max(cross) + 1))
    progress(2, 2)
    scales = torch.as_tensor(solution[0::per], dtype=frames.dtype, device=frames.device)
    shifts = (torch.as_tensor(solution[1::per] * unit, dtype=frames.dtype, device=frames.device) if shift
              else torch.zeros_like(ones))
    return frames * scales.view(-1, 1, 1) + shifts.view(-1, 1, 1), scales, shifts


def flicker(pictures: torch.Tensor) -> float:
    """Mean absolute change between consecutive frames of [B,H,W] (0 for a single frame)."""
    if pictures.shape[0] < 2:
        return 0.0
    return float((pictures[1:] - pictures[:-1]).abs().mean())


def nearness_histogram(depth: Depth, per_image: bool = True, bins: int = 256) -> list[int]:
    """Counts of the normalized nearness (0..1, near = 1) in `bins` equal bins, summed over the batch."""
    _require_frames(depth)
    unit = normalize_min_max(nearness(depth).float(), per_image)
    index = (unit * bins).long().clamp(0, bins - 1)
    return torch.bincount(index.flatten(), minlength=bins).cpu().tolist()


def clip_renormalize(depth: Depth, settings: ClipSettings = ClipSettings(),
                     progress: ProgressFn = no_progress) -> ClipResult:
    """Clip nearness to a range or percentiles, stretch it back to 0..1, shape it, and return DEPTH + picture.

    Relative depth comes back as relative inverse depth 0..1 (the picture's values before inverting). Metric depth
    keeps metres by default (values outside the clipped distances are clamped to them; curve and invert then only
    change the picture); with keep_metric=False it comes back as relative inverse depth 0..1.
    """
    settings.validate()
    _require_frames(depth)
    near_values = nearness(depth).float()
    metres_out = depth.is_metric and settings.keep_metric
    per_image = settings.per_image
    if settings.stabilize and depth.batch_size > 1:
        # Shifting inverse metric depth would change distances non-uniformly, so metric frames only get a scale.
        near_values, _, _ = stabilize_frames(near_values, settings.stabilize_window, shift=not metres_out,
                                             progress=progress)
        per_image = False  # a per-frame range would bring the flicker straight back
    low, high = min_max_range(near_values, per_image)
    unit = unit_interval(near_values, low, high)
    clip_low, clip_high = clip_bounds(unit, settings.mode, settings.near, settings.far, per_image)
    stretched = unit_interval(unit.clamp(min=clip_low, max=clip_high), clip_low, clip_high)
    shaped = apply_curve(stretched, settings.gamma, settings.contrast)
    picture = 1.0 - shaped if settings.invert else shaped
    if metres_out:
        span = high - low
        nearest, farthest = low + clip_high * span, low + clip_low * span
        clipped = near_values.clamp(min=farthest, max=nearest).clamp_min(1e-12)
        out = Depth(1.0 / clipped, DepthKind.METRIC, depth.source, depth.fov_degrees)
    else:
        out = Depth(shaped, DepthKind.RELATIVE_INVERSE, depth.source, depth.fov_degrees)
    return ClipResult(out, picture)
