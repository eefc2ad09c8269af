"""Layered depth image (LDI) for 3D photos: the visible layer plus a hidden background layer behind foreground edges.

A camera that moves sideways sees behind foreground objects. The visible layer is cut at depth discontinuities;
behind every foreground edge a band of background (as wide as the hole a camera move opens there: proportional to
the jump's parallax) is added as a second layer, its colour and depth inpainted from the background side of the
edge only. Everything is whole-map work (tensor shifts, OpenCV dilations, blurs and distance transform), no
per-pixel Python, so a megapixel photo takes a few seconds on a 2-core CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..camera import Pinhole
from .inpaint import nearest_source_fill, row_source_fill, smooth_within

DEFAULT_RELATIVE_THRESHOLD = 0.1
"""Discontinuity threshold as a fraction of the image's robust log-depth range (see `discontinuity_threshold`)."""

SMOOTHING_FRACTION = 0.01
"""Box-blur radius of the inpainted band, as a fraction of the photo's longer side."""

MINIMUM_THRESHOLD = 0.02
"""Never treat a depth ratio below 2 % between neighbours as an edge: that is noise or a smooth slope."""

BAND_WIDTH_CLASSES = 32
"""Hidden bands come in this many widths (fractions of the widest), one dilation each (see `grow_hidden_band`)."""

# Vertex tags written to the PLY alpha channel, as the old extension's tools expect: 1 = original pixel,
# 2 = inpainted (hidden background), 5 = border extension.
TAG_VISIBLE, TAG_INPAINTED, TAG_BORDER = 1, 2, 5

# (hole mask, context mask, rgb [3,H,W], distance [H,W]) -> (rgb, distance) for the hole, e.g. the CVPR 2020 networks
Inpainter = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LayeredDepthImage:
    """Two layers on one pixel grid (the photo padded by `border` pixels on every side).

    color [2,3,H,W] 0..1, distance [2,H,W] (> 0, along the optical axis, scene units), valid [2,H,W] bool.
    Layer 1 is valid on the inpainted band and on the background pixels it connects to (`background_sources`).
    """

    color: torch.Tensor
    distance: torch.Tensor
    valid: torch.Tensor
    inpainted: torch.Tensor
    background_sources: torch.Tensor
    foreground_edges: torch.Tensor
    camera: Pinhole
    border: int
    threshold: float

    @property
    def size(self) -> tuple[int, int]:
        return self.color.shape[-2], self.color.shape[-1]

    @property
    def photo_size(self) -> tuple[int, int]:
        height, width = self.size
        return height - 2 * self.border, width - 2 * self.border

    @property
    def photo_camera(self) -> Pinhole:
        """The camera of the original photo (without the border extension)."""
        c = self.camera
        return Pinhole(c.width - 2 * self.border, c.height - 2 * self.border, c.fx, c.fy,
                       c.cx - self.border, c.cy - self.border)

    @property
    def mean_location(self) -> float:
        """Distance at the photo's centre pixel: the subject distance the dolly zoom keeps in size (PLY meanLoc)."""
        height, width = self.size
        return float(self.distance[0, height // 2, width // 2])


def discontinuity_threshold(distance: torch.Tensor, relative_threshold: float = DEFAULT_RELATIVE_THRESHOLD) -> float:
    """Log-depth jump between neighbours that counts as an edge: a fraction of the robust log-depth range.

    Working in log depth makes the test a depth *ratio*, so it means the same for metres and for relative depth
    mapped to distances; scaling by the image's own range (2nd to 98th percentile, so sky or a stray far pixel does
    not dominate) adapts it to scenes that span a little or a lot of depth.
    """
    log_distance = distance.clamp_min(1e-6).log().flatten()
    if log_distance.numel() > 1_000_000:
        step = log_distance.numel() // 1_000_000 + 1
        log_distance = log_distance[::step]
    low, high = torch.quantile(log_distance.float(), torch.tensor([0.02, 0.98], device=log_distance.device))
    return max(MINIMUM_THRESHOLD, relative_threshold * float(high - low))


def _neighbours(values: torch.Tensor, fill: float) -> list[torch.Tensor]:
    """The four 4-connected neighbours of every pixel of [H,W], `fill` outside the image."""
    padded = F.pad(values[None, None], (1, 1, 1, 1), value=fill)[0, 0]
    height, width = values.shape
    return [padded[1:height + 1, 0:width], padded[1:height + 1, 2:width + 2],
            padded[0:height, 1:width + 1], padded[2:height + 2, 1:width + 1]]


def foreground_edges(distance: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels on the near side of a depth discontinuity and, for each, the distance of the far side.

    Returns (edge mask [H,W] bool, far-side distance [H,W], 0 where not an edge).
    """
    log_distance = distance.clamp_min(1e-6).log()
    far_side = torch.zeros_like(distance)
    for neighbour_log, neighbour in zip(_neighbours(log_distance, -math.inf), _neighbours(distance, 0.0)):
        jump = (neighbour_log - log_distance) > threshold
        far_side = torch.maximum(far_side, torch.where(jump, neighbour, torch.zeros_like(neighbour)))
    return far_side > 0, far_side


def sharpen_depth_edges(distance: torch.Tensor, iterations: int, threshold: float) -> torch.Tensor:
    """Collapse edges that are spread over a few pixels (the "flying pixels" that networks and resampling leave
    between foreground and background) into one clean jump.

    Each pass moves a pixel to the nearer of its 3x3 minimum and maximum (a shock filter, in log depth), only where
    that window spans more than two edge thresholds: slopes whose steps stay below the threshold are untouched.
    """
    log_distance = distance.clamp_min(1e-6).log()[None, None]
    for _ in range(iterations):
        high = F.max_pool2d(F.pad(log_distance, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        low = -F.max_pool2d(F.pad(-log_distance, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        middle = 0.5 * (high + low)
        spread = high - low
        snapped = torch.where(log_distance > middle, high, low)
        log_distance = torch.where(spread > 2.0 * threshold, snapped, log_distance)
    return log_distance.exp()[0, 0]


def grow_hidden_band(distance: torch.Tensor, edges: torch.Tensor, far_side: torch.Tensor, threshold: float,
                     width: int, scale_widths: bool = True) -> torch.Tensor:
    """The hidden band: pixels within reach of a foreground edge that are nearer than that edge's far side.

    The reach is `width` for the photo's largest possible jump and shrinks with each edge's parallax (unless
    `scale_widths` is off): a small jump opens a small hole, and a wide band of guessed background behind it would
    only cover what the new view sees better by itself. The far-side distance is spread by a grey-scale dilation
    (the farthest background within reach), so the band covers the foreground that could hide that background and
    stops where the scene is as far as the background.
    """
    if not scale_widths or not bool(edges.any()):
        kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
        reach = torch.from_numpy(cv2.dilate(far_side.float().cpu().numpy(), kernel)).to(distance.device)
        return edges | (reach > distance * math.exp(threshold))
    # A camera move opens a hole as wide as the jump's parallax (difference of inverse distances): `width` is the
    # hole of the photo's largest possible jump (its nearest against its farthest point), smaller jumps get
    # proportionally narrower bands, in a few width classes (one dilation each).
    parallax = torch.where(edges, distance.reciprocal() - far_side.clamp_min(1e-6).reciprocal(),
                           torch.zeros_like(distance))
    largest = float(distance.min().reciprocal() - distance.max().reciprocal())
    fraction = (parallax / max(largest, 1e-12)).clamp(0, 1)
    reach = torch.zeros_like(distance)
    far_np = far_side.float().cpu().numpy()
    for level in range(BAND_WIDTH_CLASSES):
        low, high = level / BAND_WIDTH_CLASSES, (level + 1) / BAND_WIDTH_CLASSES
        members = edges & (fraction > low) & (fraction <= high) if level else edges & (fraction <= high)
        if not bool(members.any()):
            continue
        class_width = max(1, math.ceil(width * high))
        kernel = np.ones((2 * class_width + 1, 2 * class_width + 1), np.uint8)
        spread = cv2.dilate(np.where(members.cpu().numpy(), far_np, 0).astype(np.float32), kernel)
        reach = torch.maximum(reach, torch.from_numpy(spread).to(distance.device))
    return edges | (reach > distance * math.exp(threshold))


def background_sources(distance: torch.Tensor, band: torch.Tensor, threshold: float) -> torch.Tensor:
    """Visible pixels next to the band that lie on the background side of it: the only pixels the fill may read."""
    band_distance = torch.where(band, -distance, torch.full_like(distance, -math.inf))
    nearest_band_neighbour = -F.max_pool2d(band_distance[None, None], 3, stride=1, padding=1)[0, 0]
    adjacent = torch.isfinite(nearest_band_neighbour) & ~band
    return adjacent & (distance.clamp_min(1e-6).log() > nearest_band_neighbour.clamp_min(1e-6).log() + 0.5 * threshold)


def _stretched_border(image: torch.Tensor, border: int, radius: int) -> torch.Tensor:
    """Pad [3,H,W] by `border` on every side with the photo's edge pixels, blurred along the edge: a replicated edge
    pixel becomes a streak across the whole border, and what lies beyond the photo is unknown, so a smooth guess
    (like the surroundings, without their detail) is the least wrong."""
    padded = F.pad(image[None], (border,) * 4, mode="replicate")[0]
    if radius <= 0:
        return padded
    height, width = padded.shape[-2:]
    array = padded.permute(1, 2, 0).contiguous().cpu().numpy()
    along_columns = cv2.blur(array, (1, 2 * radius + 1), borderType=cv2.BORDER_REPLICATE)
    along_rows = cv2.blur(array, (2 * radius + 1, 1), borderType=cv2.BORDER_REPLICATE)
    result = array.copy()
    result[:, :border] = along_columns[:, :border]
    result[:, width - border:] = along_columns[:, width - border:]
    result[:border, border:width - border] = along_rows[:border, border:width - border]
    result[height - border:, border:width - border] = along_rows[height - border:, border:width - border]
    return torch.from_numpy(result).permute(2, 0, 1).to(image.device)


def build_layered_depth_image(image: torch.Tensor, distance: torch.Tensor, camera: Pinhole, band_width: int,
                              border: int = 0, relative_threshold: float = DEFAULT_RELATIVE_THRESHOLD,
                              sharpen_iterations: int = 0, smoothing_passes: int = 2,
                              inpainter: Inpainter | None = None) -> LayeredDepthImage:
    """Build the two-layer LDI of one photo.

    image [3,H,W] 0..1, distance [H,W] > 0 (along the optical axis), camera for the H x W photo.
    band_width: how far (pixels) the background is extended behind foreground edges; border: pixels of stretched
    border added on every side so camera moves do not show the void straight away; sharpen_iterations: shock-filter
    passes that turn soft depth ramps into steps before edges are found (the visible layer keeps the sharpened
    depth); inpainter: fills the band instead of the weight-free fill (e.g. the CVPR 2020 networks).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3,H,W], got {tuple(image.shape)}")
    if distance.shape != image.shape[1:]:
        raise ValueError(f"distance {tuple(distance.shape)} does not match image {tuple(image.shape[1:])}")
    if not bool(torch.isfinite(distance).all()) or not bool((distance > 0).all()):
        raise ValueError("distance must be finite and positive everywhere; fill invalid depth first.")
    image = image.float()
    distance = distance.float()
    threshold = discontinuity_threshold(distance, relative_threshold)
    if sharpen_iterations > 0:
        distance = sharpen_depth_edges(distance, sharpen_iterations, threshold)
    if border > 0:
        image = _stretched_border(image, border, 2 * border)
        distance = F.pad(distance[None, None], (border,) * 4, mode="replicate")[0, 0]
        camera = Pinhole(camera.width + 2 * border, camera.height + 2 * border, camera.fx, camera.fy,
                         camera.cx + border, camera.cy + border)

    edges, far_side = foreground_edges(distance, threshold)
    band = grow_hidden_band(distance, edges, far_side, threshold, max(1, band_width))
    sources = background_sources(distance, band, threshold)

    # Fill in log distance: a background plane spreads as a ratio, and the result stays positive.
    values = torch.cat([image, distance.log()[None]], dim=0)
    reached = band & ~sources if bool(sources.any()) else torch.zeros_like(band)
    # Smooth over about 1 % of the photo, so the copied background reads as a surface, not as streaks.
    radius = max(2, round(SMOOTHING_FRACTION * max(image.shape[-2:])))
    filled = nearest_source_fill(values, sources, reached, smoothing_radius=radius, smoothing_passes=smoothing_passes)
    # Sideways camera moves (the common ones) reveal the band row by row, so where the band has background on its
    # own row, that background (a few of its pixels averaged) is the better guess; smoothing it along the edge and
    # then a little in 2D turns per-row copies into a surface, as the stereo node's background fill does.
    by_row, on_row = row_source_fill(values, sources, reached, 2 * max(1, band_width) + 1,
                                     same_surface=threshold)
    filled = torch.where(on_row[None], by_row, filled)
    domain = reached | sources
    filled = smooth_within(filled, reached, domain, (2 * radius + 1, 1), passes=1)
    filled = smooth_within(filled, reached, domain, (radius // 2 * 2 + 1,) * 2, passes=smoothing_passes)
    background_color = filled[:3].clamp(0, 1)
    # The hidden layer must stay behind the foreground it was cut from, or it would poke through it.
    behind = distance * math.exp(threshold)
    background_distance = torch.maximum(filled[3].exp(), behind)
    if inpainter is not None and bool(reached.any()):
        context = ~grow_hidden_band(distance, edges, far_side, threshold, 2 * max(1, band_width), scale_widths=False)
        net_color, net_distance = inpainter(reached, context, image, torch.where(reached, background_distance, distance))
        background_color = torch.where(reached, net_color, background_color)
        background_distance = torch.where(reached, torch.maximum(net_distance, behind), background_distance)

    layer1_valid = reached | sources
    color = torch.stack([image, torch.where(layer1_valid, background_color, image)])
    layered_distance = torch.stack([distance, torch.where(reached, background_distance, distance)])
    valid = torch.stack([torch.ones_like(band), layer1_valid])
    return LayeredDepthImage(color, layered_distance, valid, reached, sources, edges, camera, border, threshold)
