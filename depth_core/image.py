"""Conversions between ComfyUI-style IMAGE tensors ([B,H,W,C] float 0..1) and what the algorithms want."""
from __future__ import annotations

import numpy as np
import torch


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
