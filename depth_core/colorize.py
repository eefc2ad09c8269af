"""False-colour depth pictures without matplotlib: colormaps as small torch lookup tables.

Turbo is built from Google's published 5th-degree polynomial approximation of the colormap (design: Anton Mikhailov,
polynomial: Ruofei Du, Google 2019); inferno and viridis from the public-domain 6th-degree polynomial fits of the
matplotlib maps (Matt Zucconi, 2019). Inferno and viridis stay within about 0.02 of the reference colours; Google's
turbo polynomial is looser at the darkest blue end (up to about 0.13 at t = 0) and close elsewhere. The table is
sampled once and interpolated linearly.
"""
from __future__ import annotations

import torch

from .depth import Depth, normalized_nearness

COLORMAPS = ("turbo", "inferno", "viridis", "gray")

LUT_SIZE = 1024

# Polynomial coefficients, constant term first, one (r, g, b) triple per power of t.
_TURBO = (
    (0.13572138, 0.09140261, 0.10667330),
    (4.61539260, 2.19418839, 12.64194608),
    (-42.66032258, 4.84296658, -60.58204836),
    (132.13108234, -14.18503333, 110.36276771),
    (-152.94239396, 4.27729857, -89.90310912),
    (59.28637943, 2.82956604, 27.34824973),
)
_VIRIDIS = (
    (0.2777273272234177, 0.005407344544966578, 0.3340998053353061),
    (0.1050930431085774, 1.404613529898575, 1.384590162594685),
    (-0.3308618287255563, 0.214847559468213, 0.09509516302823659),
    (-4.634230498983486, -5.799100973351585, -19.33244095627987),
    (6.228269936347081, 14.17993336680509, 56.69055260068105),
    (4.776384997670288, -13.74514537774601, -65.35303263337234),
    (-5.435455855934631, 4.645852612178535, 26.3124352495832),
)
_INFERNO = (
    (0.0002189403691192265, 0.001651004631001012, -0.01948089843709184),
    (0.1065134194856116, 0.5639564367884091, 3.932712388889277),
    (11.60249308247187, -3.972853965665698, -15.9423941062914),
    (-41.70399613139459, 17.43639888205313, 44.35414519872813),
    (77.162935699427, -33.40235894210092, -81.80730925738993),
    (-71.31942824499214, 32.62606426397723, 73.20951985803202),
    (25.13112622477341, -12.24266895238567, -23.07032500287172),
)
_POLYNOMIALS = {"turbo": _TURBO, "viridis": _VIRIDIS, "inferno": _INFERNO}


def colormap_lut(name: str, size: int = LUT_SIZE, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[size, 3] RGB 0..1 from t = 0 (far, first colour) to t = 1 (near, last colour)."""
    if name not in COLORMAPS:
        raise ValueError(f"Unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}.")
    t = torch.linspace(0.0, 1.0, size, dtype=torch.float64)
    if name == "gray":
        rgb = t.unsqueeze(-1).expand(-1, 3)
    else:
        coefficients = torch.tensor(_POLYNOMIALS[name], dtype=torch.float64)  # [degree+1, 3]
        powers = t.unsqueeze(-1) ** torch.arange(coefficients.shape[0], dtype=torch.float64)  # [size, degree+1]
        rgb = powers @ coefficients
    return rgb.clamp(0.0, 1.0).to(device=device, dtype=dtype)


def apply_colormap(unit: torch.Tensor, name: str) -> torch.Tensor:
    """Values [...] in 0..1 (clamped; NaN -> 0) to RGB [..., 3] through the colormap's table."""
    lut = colormap_lut(name, device=unit.device, dtype=torch.float32)
    position = torch.nan_to_num(unit.float(), nan=0.0).clamp(0.0, 1.0) * (lut.shape[0] - 1)
    lower = position.floor().long().clamp(max=lut.shape[0] - 2)
    frac = (position - lower).unsqueeze(-1)
    return lut[lower] * (1.0 - frac) + lut[lower + 1] * frac


def colorize_depth(depth: Depth, name: str = "turbo", per_image: bool = True, invert: bool = False) -> torch.Tensor:
    """IMAGE [B,H,W,3]: normalized nearness through a colormap, near = the map's last colour (turbo: red,
    inferno: pale yellow, viridis: yellow, gray: white); invert swaps near and far."""
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
    unit = normalized_nearness(depth, per_image)
    return apply_colormap(1.0 - unit if invert else unit, name)
