"""Anaglyphs: one picture that carries both eyes of a stereo pair, to be seen through coloured glasses.

Every method is a pair of 3x3 matrices (one per eye) that map the eyes' RGB to the output RGB:
out = M_left @ left + M_right @ right, per pixel.

* color: red from the left eye, green and blue from the right (best colour, some ghosting).
* half-color: the left eye in gray into red (less retinal rivalry on saturated reds).
* gray: both eyes in gray (no colour, least rivalry).
* Dubois: least-squares projections by Eric Dubois that make what each eye sees through its filter as close as
  possible to the original colours, given typical display primaries and filter transmissions. They are defined on
  linear light, so the pixels are decoded from sRGB first and encoded again afterwards.
"""
from __future__ import annotations

import torch

_LUMA = (0.299, 0.587, 0.114)
"""Rec. 601 luma weights, the usual gray for anaglyphs."""

# Dubois, "A projection method to generate anaglyph stereo images", ICASSP 2001, red/cyan matrices as published on
# his web page (rows: output R, G, B; columns: input R, G, B).
_DUBOIS_RED_CYAN = (
    ((0.456, 0.500, 0.176),
     (-0.040, -0.038, -0.016),
     (-0.015, -0.021, -0.005)),
    ((-0.043, -0.088, -0.002),
     (0.378, 0.734, -0.018),
     (-0.072, -0.113, 1.226)),
)
# Dubois' green/magenta and amber/blue (ColorCode-style) least-squares matrices, from the same page.
_DUBOIS_GREEN_MAGENTA = (
    ((-0.062, -0.158, -0.039),
     (0.284, 0.668, 0.143),
     (-0.015, -0.027, 0.021)),
    ((0.529, 0.705, 0.024),
     (-0.016, -0.015, -0.065),
     (0.009, 0.075, 0.937)),
)
_DUBOIS_AMBER_BLUE = (
    ((1.062, -0.205, 0.299),
     (-0.026, 0.908, 0.068),
     (-0.038, -0.173, 0.022)),
    ((-0.016, -0.123, -0.017),
     (0.006, 0.062, -0.017),
     (0.094, 0.185, 0.911)),
)

_IDENTITY_ROW = {0: (1.0, 0.0, 0.0), 1: (0.0, 1.0, 0.0), 2: (0.0, 0.0, 1.0)}
_ZERO = (0.0, 0.0, 0.0)


def _simple(left_rows: dict[int, tuple], right_rows: dict[int, tuple]):
    return (tuple(left_rows.get(i, _ZERO) for i in range(3)), tuple(right_rows.get(i, _ZERO) for i in range(3)))


METHODS: dict[str, tuple] = {
    "dubois red/cyan": _DUBOIS_RED_CYAN,
    "color red/cyan": _simple({0: _IDENTITY_ROW[0]}, {1: _IDENTITY_ROW[1], 2: _IDENTITY_ROW[2]}),
    "half-color red/cyan": _simple({0: _LUMA}, {1: _IDENTITY_ROW[1], 2: _IDENTITY_ROW[2]}),
    "gray red/cyan": _simple({0: _LUMA}, {1: _LUMA, 2: _LUMA}),
    "dubois green/magenta": _DUBOIS_GREEN_MAGENTA,
    "dubois amber/blue": _DUBOIS_AMBER_BLUE,
    "color green/magenta": _simple({1: _IDENTITY_ROW[1]}, {0: _IDENTITY_ROW[0], 2: _IDENTITY_ROW[2]}),
}
"""Method name -> (left matrix, right matrix)."""

LINEAR_LIGHT_METHODS = frozenset(name for name in METHODS if name.startswith("dubois"))


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    return torch.where(values <= 0.04045, values / 12.92, ((values.clamp_min(0.0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: torch.Tensor) -> torch.Tensor:
    values = values.clamp(0.0, 1.0)
    return torch.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1.0 / 2.4) - 0.055)


def anaglyph(left: torch.Tensor, right: torch.Tensor, method: str = "dubois red/cyan",
             swap_eyes: bool = False) -> torch.Tensor:
    """Combine two RGB eye views [..., 3] (float 0..1, same shape) into an anaglyph [..., 3] in 0..1.

    swap_eyes exchanges the views first: for glasses worn the other way round, or a pair given right-first.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown anaglyph method {method!r}; use one of {', '.join(METHODS)}.")
    if left.shape != right.shape or left.shape[-1] != 3:
        raise ValueError(f"The left and right views must be RGB [...,3] of the same shape, got {tuple(left.shape)} "
                         f"and {tuple(right.shape)}. Resize one of them (e.g. with an Upscale Image node).")
    if swap_eyes:
        left, right = right, left
    left_matrix, right_matrix = (torch.tensor(m, dtype=torch.float32, device=left.device) for m in METHODS[method])
    linear = method in LINEAR_LIGHT_METHODS
    left_in, right_in = left.float(), right.float()
    if linear:
        left_in, right_in = srgb_to_linear(left_in), srgb_to_linear(right_in)
    mixed = left_in @ left_matrix.T + right_in @ right_matrix.T
    return linear_to_srgb(mixed) if linear else mixed.clamp(0.0, 1.0)
