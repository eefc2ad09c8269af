"""Conversions between ComfyUI-style IMAGE tensors ([B,H,W,C] float 0..1) and what the algorithms want, and the one
Gaussian blur every module uses."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """[B,H,W,C] with C in 1..4 (or [B,H,W]) to [B,H,W,3]: gray is repeated, alpha is dropped."""
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"Expected an IMAGE [B,H,W,C] with 1 to 4 channels, got shape {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("The image batch is empty.")
    channels = images.shape[-1]
    if channels in (1, 2):
        return images[..., :1].expand(-1, -1, -1, 3).contiguous()
    return images[..., :3].contiguous()


def bhwc_to_bchw(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2)


def bchw_to_bhwc(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 2, 3, 1)


def numpy_to_image(array: np.ndarray) -> torch.Tensor:
    """uint8/uint16/float HxW or HxWxC array to a one-image IMAGE batch [1,H,W,3] float32 0..1."""
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        data = array.astype(np.float32) / 65535.0
    else:
        data = array.astype(np.float32)
    return to_rgb(torch.from_numpy(np.ascontiguousarray(data))[None])


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """0..1 floats (one IMAGE [H,W,C], a texture, vertex colours) to rounded uint8, working on one scratch copy
    (a 12 MP texture is 36 M values)."""
    return image.detach().float().mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).cpu().numpy()


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 pictures over all pixels and channels (data range 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def gaussian_kernel(size: int, sigma: float, dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """cv2.getGaussianKernel(size, sigma) for sigma > 0: `size` taps, summing to 1."""
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    weights = torch.exp(-offsets * offsets / (2.0 * sigma * sigma))
    return weights / weights.sum()


def gaussian_blur(values: torch.Tensor, sigma: float, radius: int | None = None,
                  border: Literal["replicate", "reflect"] = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of [N,C,H,W] with 2 * radius + 1 taps (default radius ceil(3 sigma)).

    border "reflect" is OpenCV's default (mirror without repeating the edge pixel), so with radius = size // 2
    this is cv2.GaussianBlur(x, (size, size), sigma). Along a side shorter than the kernel, the kernel is cut to
    the side and renormalized, so any image size works, down to one pixel.
    """
    if sigma <= 0:
        return values
    radius = int(math.ceil(3 * sigma)) if radius is None else radius
    kernel = gaussian_kernel(2 * radius + 1, sigma, values.dtype, values.device)
    channels = values.shape[1]
    out = values
    for dim, length in ((3, values.shape[-1]), (2, values.shape[-2])):
        pad = min(radius, length - 1)
        if pad <= 0:
            continue
        taps = kernel[radius - pad: radius + pad + 1]
        taps = (taps / taps.sum()).view(1, 1, *((1, -1) if dim == 3 else (-1, 1))).repeat(channels, 1, 1, 1)
        padding = (pad, pad, 0, 0) if dim == 3 else (0, 0, pad, pad)
        out = F.conv2d(F.pad(out, padding, mode=border), taps, groups=channels)
    return out
