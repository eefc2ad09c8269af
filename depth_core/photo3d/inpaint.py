"""Weight-free inpainting of hidden background: fills a region only from chosen source pixels.

The hidden band behind a foreground edge must look like the background, so the fill never reads foreground
pixels: each hidden pixel copies its nearest background source (one distance transform), or, where there is one,
the background beside it on its own row (a few pixels averaged, on the source's surface only), then masked blurs
that also never read outside the band and its sources remove the streaks. OpenCV does the distance transform and the
blurs on the CPU (milliseconds per megapixel); the result goes back to the caller's device.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def nearest_source_fill(values: torch.Tensor, sources: torch.Tensor, region: torch.Tensor,
                        smoothing_radius: int = 2, smoothing_passes: int = 2) -> torch.Tensor:
    """Fill `region` of `values` [C,H,W] from `sources` [H,W] only: every region pixel takes the value of its
    nearest source pixel (exact Euclidean distance transform with labels), then a few box blurs restricted to
    region and sources soften the streaks. Pixels outside region and sources are never read.
    """
    if values.ndim != 3:
        raise ValueError(f"values must be [C,H,W], got {tuple(values.shape)}")
    region = region & ~sources
    if not bool(sources.any()) or not bool(region.any()):
        return values
    device = values.device
    sources_np = sources.cpu().numpy()
    _, labels = cv2.distanceTransformWithLabels((~sources_np).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    flat_labels = torch.from_numpy(labels.astype(np.int64)).flatten()
    source_index = sources.cpu().flatten().nonzero().squeeze(1)
    lookup = torch.zeros(int(flat_labels.max()) + 1, dtype=torch.int64)
    lookup[flat_labels[source_index]] = source_index
    nearest = lookup[flat_labels].to(device)
    channels = values.shape[0]
    flat_values = values.reshape(channels, -1)
    filled = torch.where(region.flatten()[None], flat_values[:, nearest], flat_values).reshape(values.shape)
    if smoothing_passes > 0 and smoothing_radius > 0:
        domain = (region | sources).to(torch.float32).cpu().numpy()
        kernel = (2 * smoothing_radius + 1,) * 2
        weight = cv2.blur(domain, kernel, borderType=cv2.BORDER_CONSTANT)
        smooth = filled.permute(1, 2, 0).float().cpu().numpy()
        region_np = region.cpu().numpy()
        for _ in range(smoothing_passes):
            blurred = cv2.blur(smooth * domain[..., None], kernel, borderType=cv2.BORDER_CONSTANT)
            blurred = blurred.reshape(smooth.shape) / np.maximum(weight, 1e-6)[..., None]
            smooth = np.where(region_np[..., None], blurred, smooth)
        filled = torch.from_numpy(np.ascontiguousarray(smooth)).permute(2, 0, 1).to(device=device, dtype=values.dtype)
    return filled


def push_pull_fill(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill every unknown pixel of [C,H,W] from known pixels [H,W] by a weighted image pyramid (push-pull).

    Used for whatever no layer covers (a camera that leaves the scene): smooth, and never empty.
    """
    weight = known.to(values.dtype).unsqueeze(0)
    if not bool(weight.any()):
        return values
    levels: list[tuple[torch.Tensor, torch.Tensor]] = []
    current_values, current_weight = values * weight, weight
    while min(current_values.shape[-2:]) > 1:
        levels.append((current_values, current_weight))
        current_values = F.avg_pool2d(current_values.unsqueeze(0), 2, ceil_mode=True).squeeze(0)
        current_weight = F.avg_pool2d(current_weight.unsqueeze(0), 2, ceil_mode=True).squeeze(0)
    coarse = current_values / current_weight.clamp_min(1e-12)
    for level_values, level_weight in reversed(levels):
        size = level_values.shape[-2:]
        up = F.interpolate(coarse.unsqueeze(0), size=size, mode="bilinear", align_corners=False).squeeze(0)
        normalized = level_values / level_weight.clamp_min(1e-12)
        alpha = level_weight.clamp(0, 1)
        coarse = normalized * alpha + up * (1 - alpha)
    return torch.where(known.unsqueeze(0), values, coarse)


def row_source_fill(values: torch.Tensor, sources: torch.Tensor, region: torch.Tensor, max_gap: int,
                    average: int = 3, same_surface: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill `region` of `values` [C,H,W] from the nearest `sources` pixel on the same row (left or right, at most
    `max_gap` pixels away), averaged with up to `average - 1` pixels beyond it on that row: a sideways camera move
    reveals hidden background row by row, so the background beside a hole on its own row is the best guess of what
    the hole hides, and a few pixels of it average out texture and noise.

    Pixels beyond the source are read only outside `region` and, when `same_surface` is given, only where the last
    channel (log distance) is within `same_surface` of the source's: on the source's own surface, never on a nearer
    object behind it on the row. Returns (filled values, pixels filled).
    """
    height, width = sources.shape
    device = sources.device
    columns = torch.arange(width, device=device).expand(height, width)
    rows = torch.arange(height, device=device)[:, None].expand(height, width)
    left = torch.where(sources, columns, torch.full_like(columns, -(1 << 30))).cummax(1).values
    right = torch.where(sources, columns, torch.full_like(columns, 1 << 30)).flip(1).cummin(1).values.flip(1)
    to_left, to_right = columns - left, right - columns
    use_left = to_left <= to_right
    gap = torch.where(use_left, to_left, to_right)
    source_column = torch.where(use_left, left, right).clamp(0, width - 1)
    done = region & ~sources & (gap <= max_gap)
    step = torch.where(use_left, -1, 1)
    source_depth = values[-1][rows, source_column]
    total = values[:, rows, source_column].clone()
    count = torch.ones_like(values[:1])
    for offset in range(1, max(1, average)):
        column = source_column + offset * step
        usable = (column >= 0) & (column < width)
        column = column.clamp(0, width - 1)
        usable = usable & ~region[rows, column]
        if same_surface is not None:
            usable = usable & ((values[-1][rows, column] - source_depth).abs() <= same_surface)
        weight = usable.to(values.dtype)[None]
        total = total + values[:, rows, column] * weight
        count = count + weight
    return torch.where(done[None], total / count, values), done


def smooth_within(values: torch.Tensor, region: torch.Tensor, domain: torch.Tensor, size: tuple[int, int],
                  passes: int = 1) -> torch.Tensor:
    """Box-blur `values` [C,H,W] by `size` (rows, columns) inside `region`, averaging only pixels of `domain`: the
    blur never reads outside the domain (e.g. the hidden band and its background sources)."""
    if passes <= 0 or not bool(region.any()) or size == (1, 1):
        return values
    kernel = (size[1], size[0])  # OpenCV: (width, height)
    domain_np = domain.to(torch.float32).cpu().numpy()
    weight = np.maximum(cv2.blur(domain_np, kernel, borderType=cv2.BORDER_CONSTANT), 1e-6)
    region_np = region.cpu().numpy()[..., None]
    smooth = values.permute(1, 2, 0).float().cpu().numpy()
    for _ in range(passes):
        blurred = cv2.blur(smooth * domain_np[..., None], kernel, borderType=cv2.BORDER_CONSTANT)
        blurred = blurred.reshape(smooth.shape) / weight[..., None]
        smooth = np.where(region_np, blurred, smooth)
    return torch.from_numpy(np.ascontiguousarray(smooth)).permute(2, 0, 1).to(device=values.device, dtype=values.dtype)
