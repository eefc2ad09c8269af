"""Camera paths for 3D-photo videos: where the camera is in every frame, and how much it zooms.

The camera never rotates (it keeps looking down -Z, as the photo's camera did); only its position moves, by at most
the translate magnitudes (x, y, z) in scene units. The dolly zoom also changes the focal length so the subject at
distance `mean_location` keeps its size on screen. Looping paths (circle, swing) do not repeat their first frame at
the end, so a looped video has no stutter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PATH_NAMES = ("double straight line", "straight line", "circle", "swing", "zoom in", "dolly zoom")


@dataclass(frozen=True)
class CameraPath:
    positions: torch.Tensor
    """[N,3] camera positions (x right, y up, z backwards), the photo's camera at the origin."""
    focal_scales: torch.Tensor
    """[N] focal length multipliers (1 = the photo's field of view)."""

    def __len__(self) -> int:
        return self.positions.shape[0]


def _ramp(frames: int) -> torch.Tensor:
    """0..1 inclusive over the frames, eased in and out so moves start and stop smoothly; [0] for one frame."""
    if frames == 1:
        return torch.zeros(1, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, frames, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def _angles(frames: int) -> torch.Tensor:
    return torch.arange(frames, dtype=torch.float64) * (2.0 * math.pi / frames)


def camera_path(name: str, frames: int, translate: tuple[float, float, float], mean_location: float = 1.0) -> CameraPath:
    """Positions and focal scales for `frames` frames of the named path.

    straight line: origin -> (x, y, z). double straight line: -(x, y, z) -> +(x, y, z), through the photo's view.
    circle: an ellipse of radii x, y, with z going forward and back once, starting at (x, 0, z).
    swing: side to side, (x, y) * sin, with z * (1 - cos)/2 so it is closest to the scene at the sides.
    zoom in: origin -> (x, y, -|z|): moves into the scene.
    dolly zoom: origin -> (x, y, +|z|) backwards while zooming in so the subject at `mean_location` keeps its size.
    """
    if frames < 1:
        raise ValueError(f"A camera path needs at least one frame, got {frames}.")
    x, y, z = (float(v) for v in translate)
    target = torch.tensor([x, y, z], dtype=torch.float64)
    focal = torch.ones(frames, dtype=torch.float64)
    if name == "straight line":
        positions = _ramp(frames)[:, None] * target
    elif name == "double straight line":
        positions = (2.0 * _ramp(frames)[:, None] - 1.0) * target
    elif name == "circle":
        angle = _angles(frames)
        positions = torch.stack([x * torch.cos(angle), y * torch.sin(angle), z * torch.cos(angle)], 1)
    elif name == "swing":
        angle = _angles(frames)
        positions = torch.stack([x * torch.sin(angle), y * torch.sin(angle), z * 0.5 * (1 - torch.cos(2 * angle))], 1)
    elif name == "zoom in":
        positions = _ramp(frames)[:, None] * torch.tensor([x, y, -abs(z)], dtype=torch.float64)
    elif name == "dolly zoom":
        positions = _ramp(frames)[:, None] * torch.tensor([x, y, abs(z)], dtype=torch.float64)
        if mean_location <= 0:
            raise ValueError(f"The dolly zoom needs a positive subject distance, got {mean_location}.")
        # Subject at distance m in front of the photo's camera; a camera moved back by t sees it at m + t.
        focal = (mean_location + positions[:, 2]) / mean_location
    else:
        raise ValueError(f"Unknown camera path '{name}'. Choose one of: {', '.join(PATH_NAMES)}.")
    return CameraPath(positions.float(), focal.float())
