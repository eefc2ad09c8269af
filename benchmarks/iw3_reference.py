"""A comparison baseline for the stereo fill, used only by benchmarks and tests: iw3's weight-free converter.

iw3 (nagadomi/nunif, iw3/forward_warp.py, `forward_fill`) renders a new view by splatting every source pixel onto
the two output columns around its landing position (bilinear weights), in ascending depth order so that the
nearest write wins; pixels whose source order runs backwards ("layered holes", far pixels peeking between near
ones) are dropped; every hole then takes the colour of its neighbour on the background side, repeated across the
hole (up to 100 pixels), with the image border handled by replicating the edge columns before warping.

This is an independent reimplementation of that algorithm from its description and behaviour (written here, not
copied), with a per-pixel disparity input so it can run on the same disparities as depth_core.stereo. It is not part
of the package.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_UNDEFINED = -1.0
_MAX_FILL_STEPS = 100


def _splat(values: torch.Tensor, landing: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values [C,H,W] splatted along rows to columns floor/ceil(landing) [H,W]; later entries of `order` (flat source
    indices, nearest last) overwrite earlier ones. Returns [C,H,W] with _UNDEFINED where nothing landed."""
    channels, height, width = values.shape
    position = landing.clamp(0, width - 1)
    floor = position.floor()
    ceil_weight = (position - floor).clamp(1e-5, 1.0 - 1e-5)
    rows = torch.arange(height).view(height, 1) * width
    accumulated = torch.zeros(channels, height * width, dtype=values.dtype)
    weight_sum = torch.zeros(height * width, dtype=values.dtype)
    flat_values = values.reshape(channels, -1)
    for column, weight in ((floor, 1.0 - ceil_weight), (position.ceil().clamp(0, width - 1), ceil_weight)):
        target = (column.long() + rows).reshape(-1)
        written = torch.full((channels + 1, height * width), _UNDEFINED, dtype=values.dtype)
        written[channels] = 0.0
        data = torch.cat([flat_values, weight.reshape(1, -1)])
        # The last write to a target wins: deterministic index_copy in depth order.
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            written.index_copy_(1, target[order], data[:, order])
        finally:
            torch.use_deterministic_algorithms(previous)
        accumulated += written[:channels] * written[channels]
        weight_sum += written[channels]
    out = accumulated / weight_sum
    return torch.nan_to_num(out, nan=_UNDEFINED).view(channels, height, width)


def _repeat_from(values: torch.Tensor, from_right: bool) -> torch.Tensor:
    """Fill negative entries of [C,H,W] with their neighbour on one side, repeatedly (at most _MAX_FILL_STEPS)."""
    for _ in range(_MAX_FILL_STEPS):
        missing = values < 0
        if not missing.any():
            break
        neighbour = F.pad(values[..., 1:], (0, 1), value=_UNDEFINED) if from_right else \
            F.pad(values[..., :-1], (1, 0), value=_UNDEFINED)
        values = torch.where(missing, neighbour, values)
    return values


def forward_fill_view(image: torch.Tensor, disparity: torch.Tensor, eye: str = "right") -> torch.Tensor:
    """One view of image [C,H,W] (0..1) with disparity [H,W] in pixels (right eye: x lands at x - d; left: x + d)."""
    channels, height, width = image.shape
    padding = int(disparity.abs().max().ceil().item()) + 2
    padded = F.pad(image[None], (padding, padding, 0, 0), mode="replicate")[0]
    padded_disparity = F.pad(disparity[None, None], (padding, padding, 0, 0), mode="replicate")[0, 0]
    padded_width = width + 2 * padding
    columns = torch.arange(padded_width, dtype=image.dtype).expand(height, -1)
    landing = columns - padded_disparity if eye == "right" else columns + padded_disparity
    order = torch.argsort(padded_disparity.reshape(-1), stable=True)       # farthest first, nearest written last
    warped = _splat(torch.cat([padded, columns[None]]), landing, order)[..., padding:padding + width]
    view, source_column = warped[:channels], warped[channels:]
    # Holes take the background side: for the right eye the revealed background lies right of a near object.
    from_right = eye == "right"
    source_column = _repeat_from(source_column, from_right)
    # Layered holes: where the source column runs backwards, a far pixel shows between near ones; drop it.
    for _ in range(_MAX_FILL_STEPS):
        if from_right:
            backwards = F.pad(source_column[..., :-1] > source_column[..., 1:], (1, 0))
            shifted = F.pad(source_column[..., :-1], (1, 0))
        else:
            backwards = F.pad(source_column[..., :-1] > source_column[..., 1:], (0, 1))
            shifted = F.pad(source_column[..., 1:], (0, 1))
        if not backwards.any():
            break
        view = torch.where(backwards, torch.full_like(view, -2.0), view)
        source_column = torch.where(backwards, shifted, source_column)
    return _repeat_from(view, from_right).clamp(0.0, 1.0)
