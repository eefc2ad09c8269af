"""Write frames to mp4 (H.264) or webm (VP9) with PyAV, atomically: a failed or interrupted write leaves no file."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import torch

from ..files import atomic_path
from ..image import image_to_uint8
from ..progress import ProgressFn, no_progress
from ..video_io import encoder_available, even_size

VIDEO_FORMATS = ("mp4", "webm")
ENCODERS = {"mp4": ("libx264", "h264"), "webm": ("libvpx-vp9", "vp9")}
ALTERNATIVE = {"mp4": "webm", "webm": "mp4"}


def pick_encoder(video_format: str) -> str:
    """The first encoder of the format this PyAV build has, or a ValueError naming what to use instead."""
    if video_format not in ENCODERS:
        raise ValueError(f"Unknown video format '{video_format}'. Choose one of: {', '.join(VIDEO_FORMATS)}.")
    for name in ENCODERS[video_format]:
        if encoder_available(name):
            return name
    other = ALTERNATIVE[video_format]
    raise ValueError(
        f"This PyAV/FFmpeg build has no encoder for {video_format} ({' or '.join(ENCODERS[video_format])}). "
        f"Choose format '{other}', or 'none' and save the VIDEO output with core Save Video."
    )


def write_video(frames: torch.Tensor, path: str, fps: float, video_format: str | None = None, crf: int = 18,
                progress: ProgressFn = no_progress) -> str:
    """frames [N,H,W,3] float 0..1 -> `path`. Odd sides lose their last row/column (yuv420p needs even sides);
    1-pixel sides are padded to 2."""
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"Expected frames [N,H,W,3] with N >= 1, got {tuple(frames.shape)}.")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    video_format = video_format or os.path.splitext(path)[1].lstrip(".").lower()
    encoder = pick_encoder(video_format)
    height, width = frames.shape[1:3]
    if height < 2 or width < 2:
        frames = torch.nn.functional.pad(frames.permute(0, 3, 1, 2), (0, max(0, 2 - width), 0, max(0, 2 - height)),
                                         mode="replicate").permute(0, 2, 3, 1)
        height, width = frames.shape[1:3]
    out_height, out_width = even_size(height, width)
    with atomic_path(path) as temporary:
        with av.open(str(temporary), mode="w", format=video_format) as container:
            stream = container.add_stream(encoder, rate=Fraction(round(fps * 1000), 1000))
            stream.width, stream.height, stream.pix_fmt = out_width, out_height, "yuv420p"
            if encoder in ("libx264", "libvpx-vp9"):
                stream.options = {"crf": str(crf)}
                if encoder == "libvpx-vp9":
                    stream.options["b:v"] = "0"
            total = frames.shape[0]
            for index in range(total):
                array = np.ascontiguousarray(image_to_uint8(frames[index, :out_height, :out_width]))
                for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                    container.mux(packet)
                progress(index + 1, total)
            for packet in stream.encode():
                container.mux(packet)
    return path
