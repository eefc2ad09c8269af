"""Stereo test scenes whose hidden background is exactly known: layered textured planes.

Each plane carries a real photograph as its texture and a constant disparity; a nearer plane covers part of the
ones behind it. Both views are rendered from the planes themselves (supersampled along the rows, then area
averaged), so the right view is the truth everywhere, including the background that the left view hides and a
stereo converter has to invent. A panning shot moves every plane by its parallax (proportional to its disparity),
for measuring how steady a fill is over time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SUPERSAMPLING = 8
"""Sub-columns per pixel: disparities and pan offsets are multiples of 1/8 pixel."""


@dataclass(frozen=True)
class Plane:
    texture: str
    """A scikit-image photograph: astronaut, coffee, chelsea, rocket."""
    disparity: float
    """Pixels; the right eye sees the plane shifted left by this."""
    box: tuple[float, float, float, float] | None = None
    """(top, left, bottom, right) as fractions of the frame in the left view; None = the whole frame."""
    ellipse: bool = False


DEFAULT_PLANES = (
    Plane("coffee", 2.0),
    Plane("chelsea", 9.0, (0.08, 0.52, 0.62, 0.86)),
    Plane("astronaut", 17.0, (0.35, 0.18, 0.92, 0.44), ellipse=True),
    Plane("rocket", 24.0, (0.18, 0.66, 0.40, 0.74)),
)


def _texture(name: str, height: int, width: int) -> torch.Tensor:
    from skimage import data

    photo = torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).float().permute(2, 0, 1)[None] / 255.0
    return F.interpolate(photo, size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]


def _shift_columns(values: torch.Tensor, columns: int) -> torch.Tensor:
    """values [...,W] moved right by an integer number of columns, the edge repeated into the gap."""
    if columns == 0:
        return values
    if columns > 0:
        return torch.cat([values[..., :1].expand(*values.shape[:-1], columns), values[..., :-columns]], -1)
    return torch.cat([values[..., -columns:], values[..., -1:].expand(*values.shape[:-1], -columns)], -1)


class LayeredScene:
    """Planes rendered at a given size; `view(shift)` renders the frame seen with every plane moved by
    shift x its disparity (0: the left view, -1: the right view)."""

    def __init__(self, height: int = 240, width: int = 360, planes: tuple[Plane, ...] = DEFAULT_PLANES,
                 margin: int = 48):
        self.height, self.width, self.planes = height, width, planes
        self.margin = margin
        wide = (width + 2 * margin) * SUPERSAMPLING
        self._textures = [_texture(plane.texture, height, wide) for plane in planes]
        self._masks = [self._mask(plane, wide) for plane in planes]

    def _mask(self, plane: Plane, wide: int) -> torch.Tensor:
        if plane.box is None:
            return torch.ones(self.height, wide)
        top, left, bottom, right = plane.box
        rows = (torch.arange(self.height) + 0.5) / self.height
        columns = ((torch.arange(wide) + 0.5) / SUPERSAMPLING - self.margin) / self.width
        if plane.ellipse:
            centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
            radius_y, radius_x = (bottom - top) / 2, (right - left) / 2
            inside = ((rows[:, None] - centre_y) / radius_y) ** 2 + ((columns[None] - centre_x) / radius_x) ** 2 <= 1
        else:
            inside = ((rows[:, None] >= top) & (rows[:, None] < bottom)) & \
                ((columns[None] >= left) & (columns[None] < right))
        return inside.float()

    def view(self, shift: float = 0.0, pan: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [3,H,W], disparity [H,W] of the visible plane at each pixel) with every plane moved right by
        (shift + pan) x its disparity pixels (multiples of 1/SUPERSAMPLING)."""
        wide = self._textures[0].shape[-1]
        image = torch.zeros(3, self.height, wide)
        disparity = torch.zeros(self.height, wide)
        for plane, texture, mask in zip(self.planes, self._textures, self._masks):
            columns = round((shift + pan) * plane.disparity * SUPERSAMPLING)
            texture, mask = _shift_columns(texture, columns), _shift_columns(mask, columns)
            image = image * (1 - mask) + texture * mask
            disparity = torch.where(mask > 0.5, torch.full_like(disparity, plane.disparity), disparity)
        crop = slice(self.margin * SUPERSAMPLING, (self.margin + self.width) * SUPERSAMPLING)
        image = image[..., crop].reshape(3, self.height, self.width, SUPERSAMPLING).mean(-1)
        # A pixel's disparity is the one covering most of it (the median sub-column).
        disparity = disparity[..., crop].reshape(self.height, self.width, SUPERSAMPLING).median(-1).values
        return image, disparity

    def stereo(self, pan: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(left image, its disparity, the true right image) at a pan position."""
        left, disparity = self.view(0.0, pan)
        right, _ = self.view(-1.0, pan)
        return left, disparity, right
