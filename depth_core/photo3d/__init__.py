"""3D photos: a layered, inpainted mesh from one photo and its depth, and camera-move videos rendered from it.

    ldi = build_layered_depth_image(image, distance, camera, band_width)   # layers.py
    layered = layered_mesh(ldi)                                            # mesh.py
    frames = render_path(layered.mesh, camera, camera_path(...))           # render.py, paths.py
"""
from __future__ import annotations


import torch

from ..camera import Pinhole
from ..depth import Depth, distance as depth_distance
from ..progress import ProgressFn, no_progress
from .layers import DEFAULT_RELATIVE_THRESHOLD, Inpainter, LayeredDepthImage, build_layered_depth_image
from .mesh import LayeredMesh, layered_mesh, write_mesh, core_mesh_arrays
from .paths import PATH_NAMES, CameraPath, camera_path
from .render import Mesh, face_colors, render_frame

DEFAULT_BAND_FRACTION = 0.05
"""Hidden background extends this fraction of the photo's longer side behind foreground edges."""

DEFAULT_BORDER_FRACTION = 0.04
"""Stretched border added around the photo, as a fraction of its longer side."""

RELATIVE_NEAR, RELATIVE_FAR = 1.0, 10.0
"""Relative depth becomes distances from 1 to 10 units (linear in inverse depth): about the parallax of a photo
of a subject a few metres away in front of a far background."""


def photo_distance(depth: Depth, index: int = 0) -> torch.Tensor:
    """Distance along the optical axis [H,W] (> 0, finite) for one depth map of any kind."""
    one = depth.with_values(depth.values[index:index + 1])
    values = depth_distance(one, RELATIVE_NEAR, RELATIVE_FAR)[0]
    return torch.nan_to_num(values, nan=RELATIVE_FAR, posinf=RELATIVE_FAR).clamp_min(1e-4)


def build_photo3d(image: torch.Tensor, distance: torch.Tensor, camera: Pinhole,
                  band_fraction: float = DEFAULT_BAND_FRACTION, border_fraction: float = DEFAULT_BORDER_FRACTION,
                  sharpen_iterations: int = 2, relative_threshold: float = DEFAULT_RELATIVE_THRESHOLD,
                  inpainter: Inpainter | None = None) -> tuple[LayeredDepthImage, LayeredMesh]:
    """image [3,H,W] 0..1 and distance [H,W] -> the layered depth image and its mesh."""
    longer = max(image.shape[-2:])
    band = max(2, round(band_fraction * longer))
    border = max(0, round(border_fraction * longer))
    ldi = build_layered_depth_image(image, distance, camera, band, border=border,
                                    sharpen_iterations=sharpen_iterations, relative_threshold=relative_threshold,
                                    inpainter=inpainter)
    return ldi, layered_mesh(ldi)


def crop_frame(frame: torch.Tensor, crop: float) -> torch.Tensor:
    """Remove `crop` (fraction) of the height/width from every side of [C,H,W]; keeps at least one pixel."""
    if crop <= 0:
        return frame
    height, width = frame.shape[-2:]
    top, left = min(int(height * crop), (height - 1) // 2), min(int(width * crop), (width - 1) // 2)
    return frame[..., top:height - top, left:width - left]


def render_path(mesh: Mesh, camera: Pinhole, path: CameraPath, supersampling: int = 2, crop: float = 0.0,
                progress: ProgressFn = no_progress) -> torch.Tensor:
    """Frames [N,H',W',3] 0..1 (on the mesh's device) along the path; progress (and interruption) per frame."""
    frames = []
    corner_colors = face_colors(mesh)
    for index in range(len(path)):
        image, _ = render_frame(mesh, camera, path.positions[index], supersampling, float(path.focal_scales[index]),
                                corner_colors=corner_colors)
        frames.append(crop_frame(image, crop).permute(1, 2, 0))
        progress(index + 1, len(path))
    return torch.stack(frames)


__all__ = [
    "PATH_NAMES", "CameraPath", "LayeredDepthImage", "LayeredMesh", "Mesh", "build_layered_depth_image",
    "build_photo3d", "camera_path", "core_mesh_arrays", "crop_frame", "layered_mesh", "photo_distance",
    "render_frame", "render_path", "write_mesh",
]
