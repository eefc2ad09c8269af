"""Pinhole and equirectangular cameras shared by the geometry features (mesh, normals, 3D photo, stereo).

Convention everywhere: camera at the origin looking down -Z, +X right, +Y up, units = the depth's units
(metres for metric depth). This is glTF's and Blender's (after its Y-up import) convention, so exported meshes open
upright. Pixel (u, v) has its centre at (u + 0.5, v + 0.5); v grows downwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_FOV_DEGREES = 55.0
"""Horizontal field of view of a typical photo (about a 35 mm lens on full frame)."""


@dataclass(frozen=True)
class Pinhole:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @staticmethod
    def from_fov(width: int, height: int, horizontal_fov_degrees: float = DEFAULT_FOV_DEGREES) -> "Pinhole":
        if not 0.0 < horizontal_fov_degrees < 180.0:
            raise ValueError(f"Field of view must be between 0 and 180 degrees, got {horizontal_fov_degrees}.")
        focal = 0.5 * width / math.tan(math.radians(horizontal_fov_degrees) / 2.0)
        return Pinhole(width, height, focal, focal, width / 2.0, height / 2.0)

    @property
    def horizontal_fov_degrees(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    @property
    def vertical_fov_degrees(self) -> float:
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.fy)))

    def pixel_rays(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[H,W,3] ray directions with z = -1, so a point at depth d is d * ray."""
        u = torch.arange(self.width, device=device, dtype=dtype) + 0.5
        v = torch.arange(self.height, device=device, dtype=dtype) + 0.5
        x = (u - self.cx) / self.fx
        y = -(v - self.cy) / self.fy
        grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
        return torch.stack([grid_x, grid_y, -torch.ones_like(grid_x)], dim=-1)

    def unproject(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth along the optical axis [...,H,W] to camera-space points [...,H,W,3]."""
        rays = self.pixel_rays(depth.device, depth.dtype)
        return depth.unsqueeze(-1) * rays

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Camera-space points [...,3] (z < 0 in front) to pixel coordinates [...,2] (u, v), continuous."""
        z = -points[..., 2]
        u = self.fx * points[..., 0] / z + self.cx
        v = -self.fy * points[..., 1] / z + self.cy
        return torch.stack([u, v], dim=-1)


def equirectangular_directions(width: int, height: int, device: torch.device | str = "cpu",
                               dtype: torch.dtype = torch.float32, rows: range | None = None) -> torch.Tensor:
    """[H,W,3] unit directions for an equirectangular panorama; the image centre looks down -Z, top is +Y.

    rows: only these rows ([len(rows),W,3]), so a large panorama can be processed in bands.
    """
    rows = rows if rows is not None else range(height)
    longitude = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2.0 * math.pi - math.pi
    row_index = torch.arange(rows.start, rows.stop, rows.step, device=device, dtype=dtype)
    latitude = math.pi / 2.0 - (row_index + 0.5) / height * math.pi
    lat, lon = torch.meshgrid(latitude, longitude, indexing="ij")
    return torch.stack([torch.cos(lat) * torch.sin(lon), torch.sin(lat), -torch.cos(lat) * torch.cos(lon)], dim=-1)


AUTO_FOV = 0.0
"""A node's field-of-view setting that means: the one the depth carries (predicted or set once), else the default."""


def choose_fov(setting: float, carried: float | None) -> tuple[float, str]:
    """(horizontal field of view in degrees, where it came from, for the node to say) for a node's fov setting."""
    if setting > 0:
        return setting, f"field of view {setting:g}° (set on the node)"
    if carried is not None:
        return carried, f"field of view {carried:.1f}° (carried by the depth)"
    return DEFAULT_FOV_DEGREES, f"field of view {DEFAULT_FOV_DEGREES:g}° (default: the depth carries none)"
