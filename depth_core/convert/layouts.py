"""Frame layouts of converted 3D videos and the file-name tags players read them from.

VR players (DeoVR, Skybox, HereSphere, Pigasus, Moon) and 3D TVs pick the projection and the stereo layout from
tags in the file name, so every format carries the tag its viewers expect:

* full-sbs  `_LRF_Full_SBS`  left | right at full width each (VR headsets, full-HD 3D projectors).
* half-sbs  `_Half_SBS`      each eye squeezed to half width, the frame keeps its size (3D TVs' "side by side").
* full-tb   `_TBF_Full_TB`   left above right at full height each.
* half-tb   `_TB`            each eye squeezed to half height (3D TVs' "top and bottom").
* vr180     `_180_LR`        each eye mapped into a 180°x180° equirectangular half, left | right: the video is shown
                             as a screen of `vr180_fov` degrees in front of the viewer, black around it.
* anaglyph  `_Anaglyph_...`  one picture for coloured glasses (depth_core.anaglyph's methods).
* 360-tb    `_360_TB`        a 360° equirectangular video (2:1) as omni-directional stereo, the left eye's
                             panorama above the right eye's at full size each (depth_core.panorama's ODS).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..anaglyph import METHODS, anaglyph
from ..panorama import PANORAMA_STEREO_TAG
from ..stereo import compose_layout

FORMATS: dict[str, str] = {
    "full-sbs": "_LRF_Full_SBS",
    "half-sbs": "_Half_SBS",
    "full-tb": "_TBF_Full_TB",
    "half-tb": "_TB",
    "vr180": "_180_LR",
    "anaglyph": "_Anaglyph",
    "360-tb": PANORAMA_STEREO_TAG,
}
"""Output format -> the file-name tag players detect it by (anaglyphs add their colours, see `format_tag`)."""

PANORAMA_FORMAT = "360-tb"
"""The format whose input is a 360° panorama: its eyes come from omni-directional stereo, not a flat warp."""

_STEREO_LAYOUTS = {"full-sbs": "side-by-side", "half-sbs": "side-by-side half", "full-tb": "top-bottom",
                   "half-tb": "top-bottom half", PANORAMA_FORMAT: "top-bottom"}

DEFAULT_VR180_FOV = 90.0
"""Horizontal field of view the flat video covers inside the 180° sphere: a large screen, like a near cinema seat."""

MAX_VR180_EYE = 4096
"""Largest VR180 eye (pixels per side): 8192x4096 frames are the most that headsets' hardware decoders take."""


def check_format(name: str, anaglyph_method: str = "dubois red/cyan") -> None:
    if name not in FORMATS:
        raise ValueError(f"Unknown output format {name!r}; choose one of {', '.join(FORMATS)}.")
    if name == "anaglyph" and anaglyph_method not in METHODS:
        raise ValueError(f"Unknown anaglyph method {anaglyph_method!r}; choose one of {', '.join(METHODS)}.")


def format_tag(name: str, anaglyph_method: str = "dubois red/cyan") -> str:
    """The file-name tag of a format, e.g. `_180_LR`; anaglyphs name their glasses (`_Anaglyph_RedCyan`)."""
    check_format(name, anaglyph_method)
    if name != "anaglyph":
        return FORMATS[name]
    colours = anaglyph_method.split()[-1].split("/")
    return FORMATS[name] + "_" + "".join(colour.capitalize() for colour in colours)


def vr180_eye_size(height: int, width: int, fov_degrees: float = DEFAULT_VR180_FOV) -> int:
    """Side of a VR180 eye that keeps the source's sharpness at the centre of view (its pixels per degree there),
    even and at most MAX_VR180_EYE."""
    focal = 0.5 * width / math.tan(math.radians(fov_degrees) / 2.0)
    side = min(MAX_VR180_EYE, max(2, round(focal * math.pi)))
    return side - side % 2


def vr180_grid(height: int, width: int, eye: int, fov_degrees: float = DEFAULT_VR180_FOV,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """grid_sample grid [1,eye,eye,2] that maps a flat frame (height x width, horizontal field of view
    `fov_degrees`, pinhole) into one 180°x180° equirectangular eye; directions outside the frame sample nothing."""
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f"The VR180 screen's field of view must be between 0 and 180 degrees, got {fov_degrees}.")
    angles = ((torch.arange(eye, device=device, dtype=torch.float64) + 0.5) / eye - 0.5) * math.pi
    latitude, longitude = angles[:, None], angles[None, :]
    x = torch.cos(latitude) * torch.sin(longitude)
    y = torch.sin(latitude).expand(eye, eye)
    z = torch.cos(latitude) * torch.cos(longitude)
    focal = 0.5 * width / math.tan(math.radians(fov_degrees) / 2.0)
    safe_z = z.clamp_min(1e-9)
    column = focal * x / safe_z + 0.5 * width
    row = focal * y / safe_z + 0.5 * height
    grid = torch.stack([column / width * 2.0 - 1.0, row / height * 2.0 - 1.0], -1)
    grid = torch.where((z > 1e-9)[..., None], grid, torch.full_like(grid, 4.0))   # behind the viewer: outside
    return grid.float()[None]


class FrameComposer:
    """Turns chunks of eye views [B,H,W,3] into output frames of one format; the VR180 grid is built once."""

    def __init__(self, name: str, height: int, width: int, anaglyph_method: str = "dubois red/cyan",
                 swap_eyes: bool = False, vr180_fov: float = DEFAULT_VR180_FOV):
        check_format(name, anaglyph_method)
        self.name, self.anaglyph_method, self.swap_eyes = name, anaglyph_method, swap_eyes
        self._grid = None
        if name == "vr180":
            self._grid = vr180_grid(height, width, vr180_eye_size(height, width, vr180_fov), vr180_fov)
        self.height, self.width = self.output_size(height, width)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self._grid is not None:
            return self._grid.shape[1], 2 * self._grid.shape[2]
        if self.name == "anaglyph":
            return height, width
        return tuple(compose_layout(torch.zeros(1, height, width, 3), torch.zeros(1, height, width, 3),
                                    _STEREO_LAYOUTS[self.name]).shape[1:3])

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        if self.name == "anaglyph":
            return anaglyph(left, right, self.anaglyph_method, self.swap_eyes)
        if self._grid is None:
            return compose_layout(left, right, _STEREO_LAYOUTS[self.name], self.swap_eyes)
        first, second = (right, left) if self.swap_eyes else (left, right)
        grid = self._grid.to(left.device).expand(left.shape[0], -1, -1, -1)
        eyes = [F.grid_sample(eye.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False) for eye in (first, second)]
        return torch.cat(eyes, dim=-1).permute(0, 2, 3, 1).clamp_(0.0, 1.0)
