"""A synthetic 360° scene with analytic depth: a textured box-shaped room seen from inside, and stand-in depth
networks that return each view's true depth (decoded from the picture), for the panorama tests."""
from __future__ import annotations

import math

import torch

from depth_core.camera import equirectangular_directions
from depth_core.depth import Depth, DepthKind
from depth_core.progress import no_progress

ROOM_MIN = torch.tensor([-2.0, -1.2, -3.0], dtype=torch.float64)
ROOM_MAX = torch.tensor([3.0, 1.6, 2.5], dtype=torch.float64)
"""Walls of the room around the camera (at the origin, deliberately off-centre so depth varies)."""

MAX_DISTANCE = 6.0
"""Distances are written into the blue channel as distance / MAX_DISTANCE."""


def room_distance(directions: torch.Tensor) -> torch.Tensor:
    """Distance from the origin to the room's walls along unit directions [...,3]."""
    d = directions.double()
    bound = torch.where(d > 0, ROOM_MAX.to(d), ROOM_MIN.to(d))
    safe = torch.where(d.abs() > 1e-12, d, torch.full_like(d, 1e-12))
    return (bound / safe).abs().amin(-1)


def render_room(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Equirectangular IMAGE [1,H,W,3] of the room and its true distance [1,H,W].

    Red and green carry a checkerboard painted on the walls (so the picture has texture); blue carries the distance,
    which the stand-in networks read back as the "prediction".
    """
    directions = equirectangular_directions(width, height, dtype=torch.float64)
    distance = room_distance(directions)
    points = directions * distance[..., None]
    # Offset so no checker edge falls exactly on the 360° border (a real panorama has no full-height edge there).
    checker = ((torch.floor(points * 2.0 + 0.3).sum(-1) % 2) == 0).double()
    image = torch.stack([0.3 + 0.5 * checker, 0.7 - 0.4 * checker, distance / MAX_DISTANCE], dim=-1)
    return image[None].float(), distance[None].float()


class TruthEstimator:
    """Has the interface of depth_core.estimate.DepthEstimator that panorama depth uses. For square views of a
    known field of view it returns each view's true depth along the view's axis, decoded from the blue channel.

    relative: instead inverse depth with a different random scale and shift per view, like a relative network.
    """

    name = "truth"

    def __init__(self, fov_degrees: float, relative: bool = False, seed: int = 0) -> None:
        self.fov_degrees = fov_degrees
        self.relative = relative
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    @property
    def output_kind(self) -> DepthKind:
        return DepthKind.RELATIVE_INVERSE if self.relative else DepthKind.METRIC

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def predict(self, images: torch.Tensor, resolution=None, mask=None, progress=no_progress) -> Depth:
        self.calls += 1
        batch, height, width = images.shape[:3]
        focal = 0.5 * width / math.tan(math.radians(self.fov_degrees) / 2.0)
        x = (torch.arange(width, device=images.device) + 0.5 - width / 2.0) / focal
        y = (torch.arange(height, device=images.device) + 0.5 - height / 2.0) / focal
        ray_length = torch.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)
        axis_depth = images[..., 2].float() * MAX_DISTANCE / ray_length
        if not self.relative:
            return Depth(axis_depth, DepthKind.METRIC, self.name)
        scale = (0.5 + 4.0 * torch.rand(batch, 1, 1, generator=self.generator)).to(images.device)
        shift = (2.0 * torch.rand(batch, 1, 1, generator=self.generator) - 0.5).to(images.device)
        return Depth(scale / axis_depth + shift, DepthKind.RELATIVE_INVERSE, self.name)
