"""Running a depth network on images: the authors' preprocessing, memory-bounded chunks, upsampling, masking."""
from __future__ import annotations

import functools
import logging
import math
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F

from .camera import DEFAULT_FOV_DEGREES
from .depth import Depth, DepthKind, set_outside_mask_to_far
from .image import bhwc_to_bchw, to_rgb
from .interrupt import interruptible
from .models.base import ModelCard, Preprocess
from .progress import ProgressFn, no_progress

Resolution = int | tuple[int, int] | Literal["match"] | None
"""None: the model's native size; int: that size under the model's resize rule; (h, w): as given;
"match": the input's own size (rounded to what the network accepts)."""

MIN_FOV_DEGREES, MAX_FOV_DEGREES = 1.0, 179.0
"""Range a predicted field of view is kept in (the geometry nodes' own limits)."""

log = logging.getLogger(__name__)

CPU_CHUNK_PIXELS = 4 * 518 * 518
"""Network-input pixels per chunk on the CPU: enough to batch small inputs, little enough to bound peak memory."""


def constrain_to_multiple(value: float, multiple: int, minimum: int = 0, maximum: int | None = None) -> int:
    """Round to a multiple, staying within [minimum, maximum] (MiDaS' `constrain_to_multiple_of`)."""
    result = int(round(value / multiple) * multiple)
    if maximum is not None and result > maximum:
        result = int(math.floor(value / multiple) * multiple)
    if result < minimum:
        result = int(math.ceil(value / multiple) * multiple)
    return max(result, multiple)


def network_input_size(height: int, width: int, preprocess: Preprocess, net_size: int | None = None) -> tuple[int, int]:
    """The (h, w) the authors' resize rule gives for an image of this size."""
    target = net_size or preprocess.net_size
    multiple = preprocess.multiple_of
    rule = preprocess.resize_rule
    if rule == "exact":
        return constrain_to_multiple(target, multiple), constrain_to_multiple(target, multiple)
    scale_h, scale_w = target / height, target / width
    if preprocess.keep_aspect:
        if rule == "lower_bound":
            scale_h = scale_w = max(scale_h, scale_w)
        elif rule == "upper_bound":
            scale_h = scale_w = min(scale_h, scale_w)
        else:  # minimal: the scale closest to 1 changes the image least
            scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    if rule == "lower_bound":
        return (constrain_to_multiple(scale_h * height, multiple, minimum=target),
                constrain_to_multiple(scale_w * width, multiple, minimum=target))
    if rule == "upper_bound":
        return (constrain_to_multiple(scale_h * height, multiple, maximum=target),
                constrain_to_multiple(scale_w * width, multiple, maximum=target))
    return constrain_to_multiple(scale_h * height, multiple), constrain_to_multiple(scale_w * width, multiple)


MAX_ASPECT_AREA = 4
"""A native or custom size plans at most this many times size² network pixels. Images up to 4:1 (panoramas, 32:9)
keep the authors' plan; a more extreme one (a 200x1 strip would need 518x103,600 under Depth Anything's
lower-bound rule, hours of compute) is planned smaller at its own aspect ratio."""

MAX_NETWORK_PIXELS = 4096 * 4096
"""No plan exceeds this many network pixels, 'match input' included (the largest custom size, squared)."""


def max_network_pixels(preprocess: Preprocess, net_size: Resolution = None) -> int:
    if isinstance(net_size, int):
        return min(MAX_ASPECT_AREA * net_size * net_size, MAX_NETWORK_PIXELS)
    if net_size is None:
        return min(MAX_ASPECT_AREA * preprocess.net_size * preprocess.net_size, MAX_NETWORK_PIXELS)
    return MAX_NETWORK_PIXELS


def cap_network_size(size: tuple[int, int], max_pixels: int, multiple: int) -> tuple[int, int]:
    """`size` scaled down at its aspect ratio to at most `max_pixels`, both sides multiples of `multiple`. A side
    that reaches its minimum (one multiple) leaves the budget to the other, so even a 100,000:1 strip is bounded."""
    height, width = size
    if height * width <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (height * width))
    height = max(multiple, int(height * scale) // multiple * multiple)
    width = max(multiple, int(width * scale) // multiple * multiple)
    height = min(height, max(multiple, max_pixels // width // multiple * multiple))
    width = min(width, max(multiple, max_pixels // height // multiple * multiple))
    return height, width


@functools.lru_cache(maxsize=64)
def _warn_capped(width: int, height: int, planned: tuple[int, int], capped: tuple[int, int]) -> None:
    """Say once per image size (not once per chunk) that the plan was capped."""
    log.warning("A %dx%d image would need a %dx%d network input; it runs at %dx%d instead, at its own aspect "
                "ratio, so that it ends in reasonable time.", width, height, planned[1], planned[0], capped[1],
                capped[0])


class DepthEstimator:
    """A depth network with its model card: images in, raw depth out."""

    def __init__(self, card: ModelCard, network: torch.nn.Module) -> None:
        self.card = card
        self.network = network.eval()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def output_kind(self) -> DepthKind:
        return self.card.output_kind

    @property
    def receptive_field(self) -> int:
        return self.card.receptive_field

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def input_size(self, height: int, width: int, net_size: Resolution = None) -> tuple[int, int]:
        """The network input (h, w) for an image, capped so that no aspect ratio plans an endless pass."""
        planned = self.planned_size(height, width, net_size)
        capped = cap_network_size(planned, max_network_pixels(self.card.preprocess, net_size),
                                  self.card.preprocess.multiple_of)
        if capped != planned:
            _warn_capped(width, height, planned, capped)
        return capped

    def planned_size(self, height: int, width: int, net_size: Resolution = None) -> tuple[int, int]:
        """The network input (h, w) the authors' rule gives, before the cap."""
        preprocess = self.card.preprocess
        if preprocess.fixed_size:
            return preprocess.net_size, preprocess.net_size
        if net_size == "match":
            return (constrain_to_multiple(height, preprocess.multiple_of),
                    constrain_to_multiple(width, preprocess.multiple_of))
        if isinstance(net_size, tuple):
            return (constrain_to_multiple(net_size[0], preprocess.multiple_of),
                    constrain_to_multiple(net_size[1], preprocess.multiple_of))
        return network_input_size(height, width, preprocess, net_size)

    def prepare(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[B,3,H,W] RGB 0..1 to the normalized network input at `size`, on the network's device and dtype."""
        preprocess = self.card.preprocess
        images = images.to(self.device, torch.float32)
        if tuple(images.shape[-2:]) != tuple(size):
            images = F.interpolate(images, size=size, mode=preprocess.interpolation,
                                   **({} if preprocess.interpolation == "area" else {"align_corners": False}))
            images = images.clamp(0.0, 1.0)
        mean = torch.tensor(preprocess.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, device=images.device).view(1, 3, 1, 1)
        return ((images - mean) / std).to(self.dtype).contiguous(memory_format=torch.channels_last)

    def infer(self, images: torch.Tensor, net_size: Resolution = None) -> torch.Tensor:
        """Raw prediction [B,H,W] float32 at the input's size, for images [B,3,H,W] RGB 0..1."""
        return self.infer_with_camera(images, net_size)[0]

    def infer_with_camera(self, images: torch.Tensor, net_size: Resolution = None,
                          fov_degrees: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction [B,H,W] float32 at the input's size, horizontal field of view [B] in degrees or None).

        The field of view is `fov_degrees` when given, else the network's own prediction; networks whose metres
        depend on the focal length (`card.focal_scaled`) are scaled with it (camera.DEFAULT_FOV_DEGREES when neither
        is known)."""
        height, width = images.shape[-2:]
        network_input = self.prepare(images, self.input_size(height, width, net_size))
        autocast = (torch.autocast(self.device.type, dtype=self.dtype)
                    if self.dtype in (torch.float16, torch.bfloat16) else nullcontext())
        with torch.inference_mode(), autocast, interruptible(self.network):
            output = self.network(network_input)
        raw, predicted_fov = output if isinstance(output, tuple) else (output, None)
        raw = raw.float()
        fov = _camera_fov(raw.shape[0], fov_degrees, predicted_fov, self.card.focal_scaled)
        if self.card.focal_scaled:
            focal_over_width = (0.5 / torch.tan(torch.deg2rad(fov) / 2)).to(raw.device).view(-1, 1, 1)
            raw = raw / focal_over_width if self.card.output_is_inverse else raw * focal_over_width
        preprocess = self.card.preprocess
        values = F.interpolate(raw.unsqueeze(1), size=(height, width), mode=preprocess.upsample,
                               align_corners=preprocess.upsample_align_corners).squeeze(1)
        if self.card.output_is_inverse:
            values = 1.0 / values.clamp(1e-4, 1e4)
        return values, fov

    def chunk_size(self, network_pixels: int) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            # Activations of ViT-L-sized DPT networks take roughly 6 KB per input pixel in half precision.
            per_image = network_pixels * 6_000 * (2 if self.dtype == torch.float32 else 1)
            return max(1, min(64, int(free * 0.5 // per_image)))
        return max(1, CPU_CHUNK_PIXELS // network_pixels)

    def predict(self, images: torch.Tensor, resolution: Resolution = None, mask: torch.Tensor | None = None,
                progress: ProgressFn = no_progress, fov_degrees: float | None = None) -> Depth:
        """Depth for an IMAGE batch [B,H,W,C] 0..1.

        `mask` [B,H,W] or [H,W] marks the pixels to keep (1 = subject); elsewhere depth is set to the farthest
        value of the kept pixels. `fov_degrees`: the photos' known horizontal field of view, carried by the depth
        (and used instead of the network's estimate where it sets the metric scale); else the network's estimate.
        """
        rgb = bhwc_to_bchw(to_rgb(images))
        batch, _, height, width = rgb.shape
        net_h, net_w = self.input_size(height, width, resolution)
        chunk = self.chunk_size(net_h * net_w)
        predictions, fovs = [], []
        progress(0, batch)
        for start in range(0, batch, chunk):
            values, fov = self.infer_with_camera(rgb[start:start + chunk], resolution, fov_degrees)
            predictions.append(values.cpu())
            fovs.append(fov)
            progress(min(start + chunk, batch), batch)
        values = torch.cat(predictions)
        if mask is not None:
            values = set_outside_mask_to_far(values, mask, self.output_kind)
        camera = None if any(f is None for f in fovs) else tuple(torch.cat(fovs).tolist())
        return Depth(values, self.output_kind, self.name, camera)


def _camera_fov(batch: int, given: float | None, predicted: torch.Tensor | None,
                needs_one: bool) -> torch.Tensor | None:
    """Per-image horizontal field of view [B] in degrees: the given one, the predicted one, the default where the
    metric scale needs one, or None."""
    if given is not None:
        return torch.full((batch,), float(given))
    if predicted is not None:
        # An untrained or confused head can leave the pinhole range; keep the camera usable downstream.
        return predicted.detach().float().flatten().cpu().clamp(MIN_FOV_DEGREES, MAX_FOV_DEGREES)
    return torch.full((batch,), DEFAULT_FOV_DEGREES) if needs_one else None
