"""Video Depth Anything's offline `infer_video_depth`, restated plainly as its authors run it (test and benchmark
only): every frame in memory, every window's 32 inputs through the whole network, the windows' depths kept in one
list and aligned afterwards, scale and shift fitted in float32 numpy. The pack's streamed version must match it."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

INFER_LEN, OVERLAP, INTERP_LEN = 32, 10, 8
KEYFRAMES = [0, 12, 24, 25, 26, 27, 28, 29, 30, 31]


def _scale_and_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    prediction, target = prediction.astype(np.float32), target.astype(np.float32)
    a_00, a_01, a_11 = np.sum(prediction * prediction), np.sum(prediction), np.float32(prediction.size)
    b_0, b_1 = np.sum(prediction * target), np.sum(target)
    det = a_00 * a_11 - a_01 * a_01
    if det == 0:
        return 1.0, 0.0
    return (a_11 * b_0 - a_01 * b_1) / det, (-a_01 * b_0 + a_00 * b_1) / det


def reference_video_depth(network: torch.nn.Module, inputs: torch.Tensor, frame_size: tuple[int, int],
                          metric: bool = False) -> np.ndarray:
    """inputs: normalized network inputs [N,3,h,w] of every frame. Returns depth [N,H,W] float32."""
    count = inputs.shape[0]
    step = INFER_LEN - OVERLAP
    padded = list(inputs) + [inputs[-1]] * ((step - count % step) % step + OVERLAP)
    depths: list[np.ndarray] = []
    previous = None
    for start in range(0, count, step):
        window = torch.stack(padded[start:start + INFER_LEN])
        if previous is not None:
            window[:OVERLAP] = previous[KEYFRAMES]
        with torch.no_grad():
            depth = network(window)
        depth = F.interpolate(depth.unsqueeze(1), size=frame_size, mode="bilinear", align_corners=True)
        depths += [d[0].numpy() for d in depth]
        previous = window

    aligned: list[np.ndarray] = []
    align_len = OVERLAP - INTERP_LEN
    references: list[np.ndarray] = []
    for start in range(0, len(depths), INFER_LEN):
        if not aligned:
            aligned += depths[:INFER_LEN]
            references = [depths[start + k] for k in KEYFRAMES[:align_len]]
            continue
        current = [depths[start + i] for i in range(align_len)]
        scale, shift = (1.0, 0.0) if metric else _scale_and_shift(np.concatenate(current), np.concatenate(references))
        before = aligned[-INTERP_LEN:]
        after = [np.maximum(d * scale + shift, 0) for d in depths[start + align_len:start + OVERLAP]]
        weights = np.linspace(0.0, 1.0, INTERP_LEN)
        aligned[-INTERP_LEN:] = [b * (1 - w) + a * w for b, a, w in zip(before, after, weights)]
        aligned += [np.maximum(depths[start + i] * scale + shift, 0) for i in range(OVERLAP, INFER_LEN)]
        references = references[:1] + [np.maximum(depths[start + k] * scale + shift, 0)
                                       for k in KEYFRAMES[1:align_len]]
    return np.stack(aligned[:count]).astype(np.float32)
