"""Depth of a texture that tiles: a depth map with no seam when it is repeated.

The old extension switched every convolution to circular padding. That leaves seams (its issues #444, #459): a
network's prediction drifts across the frame (global depth layout, position embeddings, attention over the whole
image), so the left and right columns disagree even when every convolution sees wrapped neighbours.

Here the estimate itself is made periodic: the image is wrapped around by a margin on every side (the texture
continues across its borders), the depth of that larger image is estimated once, and every copy of each texture
pixel is folded back onto one tile, weighted by a window that falls to nearly zero at the padded borders. A pixel
next to the tile's right border and its wrapped neighbour at the left border are then averaged from the same
neighbouring positions of one continuous estimate, so the result is continuous across the wrap by construction,
and the border region gets the network's full context instead of a padding artefact.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch

from .depth import Depth
from .estimate import Resolution
from .progress import ProgressFn, no_progress

DEFAULT_MARGIN = 0.25
"""Wrapped margin on each side, as a fraction of the image size: the border pixels get this much context."""


class Predicts(Protocol):
    """A depth estimator (DepthEstimator, MarigoldEstimator, ...)."""

    def predict(self, images: torch.Tensor, resolution: Resolution = None, mask: torch.Tensor | None = None,
                progress: ProgressFn = no_progress, **settings: object) -> Depth: ...


def wrap_pad(images: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """IMAGE [B,H,W,C] continued periodically by pad_h rows and pad_w columns on each side (any margin)."""
    height, width = images.shape[1:3]
    rows = torch.arange(-pad_h, height + pad_h) % height
    columns = torch.arange(-pad_w, width + pad_w) % width
    return images[:, rows][:, :, columns]


def _window(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Weights along one padded axis: ~0 at the outer borders, rising over the margin to 1 in the middle."""
    position = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    distance_to_border = torch.minimum(position, length - position)
    ramp = (distance_to_border / max(pad, 1)).clamp(max=1.0)
    return torch.sin(ramp * math.pi / 2).pow(2).clamp_min(1e-4)


def fold_onto_tile(values: torch.Tensor, height: int, width: int, pad_h: int, pad_w: int) -> torch.Tensor:
    """[B,H+2ph,W+2pw] -> [B,H,W]: the window-weighted mean of every copy of each tile pixel."""
    batch, padded_h, padded_w = values.shape
    weight = _window(padded_h, pad_h, values.device)[:, None] * _window(padded_w, pad_w, values.device)[None, :]
    rows = (torch.arange(-pad_h, padded_h - pad_h, device=values.device) % height)
    columns = (torch.arange(-pad_w, padded_w - pad_w, device=values.device) % width)
    target = (rows[:, None] * width + columns[None, :]).flatten()
    weighted = torch.zeros(batch, height * width, device=values.device, dtype=torch.float32)
    weighted.index_add_(1, target, (values.float() * weight).flatten(1))
    total = torch.zeros(height * width, device=values.device, dtype=torch.float32)
    total.index_add_(0, target, weight.flatten())
    return (weighted / total).view(batch, height, width)


def _padded_resolution(resolution: Resolution, scale_h: float, scale_w: float) -> Resolution:
    """The network size for the padded image that gives the tile the resolution it would have had alone."""
    if isinstance(resolution, int):
        return int(round(resolution * max(scale_h, scale_w)))
    if isinstance(resolution, tuple):
        return int(round(resolution[0] * scale_h)), int(round(resolution[1] * scale_w))
    return resolution


def tileable_depth(estimator: Predicts, images: torch.Tensor, resolution: Resolution = None,
                   mask: torch.Tensor | None = None, progress: ProgressFn = no_progress,
                   margin: float = DEFAULT_MARGIN, **settings: object) -> Depth:
    """Depth for IMAGE [B,H,W,C] textures that tile, itself tiling without a seam. `resolution` as for the
    estimator (a size is the tile's; the padded image gets proportionally more), `settings` go to its predict."""
    if not 0 < margin <= 1:
        raise ValueError(f"The wrapped margin must be in (0, 1] of the image size, got {margin}.")
    height, width = images.shape[1:3]
    pad_h, pad_w = max(1, round(margin * height)), max(1, round(margin * width))
    padded = wrap_pad(images, pad_h, pad_w)
    scale_h, scale_w = (height + 2 * pad_h) / height, (width + 2 * pad_w) / width
    if resolution is None and hasattr(estimator, "card"):
        resolution = estimator.card.preprocess.net_size  # native for the tile, not for the padded image
    padded_mask = None if mask is None else wrap_pad(
        (mask if mask.ndim == 3 else mask[None]).unsqueeze(-1), pad_h, pad_w)[..., 0]
    depth = estimator.predict(padded, _padded_resolution(resolution, scale_h, scale_w), padded_mask, progress,
                              **settings)
    return depth.with_values(fold_onto_tile(depth.values, height, width, pad_h, pad_w))


def seam_ratio(values: torch.Tensor) -> float:
    """How visible the wrap seams of [B,H,W] depth are: the mean absolute difference across the wrapped borders
    (last column to first, last row to first) over the mean difference between interior neighbours. About 1 for
    a seamless tile, larger when the repeat shows a seam."""
    across = torch.cat([(values[..., :, -1] - values[..., :, 0]).abs().flatten(),
                        (values[..., -1, :] - values[..., 0, :]).abs().flatten()])
    inside = torch.cat([(values[..., :, 1:] - values[..., :, :-1]).abs().flatten(),
                        (values[..., 1:, :] - values[..., :-1, :]).abs().flatten()])
    return float(across.mean() / inside.mean().clamp_min(1e-12))

