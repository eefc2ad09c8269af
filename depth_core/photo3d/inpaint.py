"""Weight-free inpainting of hidden background: fills a region only from chosen source pixels.

The hidden band behind a foreground edge must look like the background, so the fill never reads foreground
pixels: each hidden pixel copies its nearest background source (one distance transform), then masked blurs that
also never read outside the band and its sources remove the streaks. OpenCV does the distance transform and the
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
