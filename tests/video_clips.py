"""Small synthetic video clips for tests and benchmarks: slow pans over real photos (scikit-image), optionally a
static camera with sensor noise, a hard scene cut, or irregular timestamps (variable frame rate)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from skimage import data as photos
from skimage.transform import resize

PHOTOS = {"astronaut": photos.astronaut, "coffee": photos.coffee, "chelsea": photos.chelsea, "rocket": photos.rocket}


def pan_frames(count: int, height: int, width: int, photo: str = "astronaut", travel: float = 0.3,
               noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """uint8 [count,H,W,3]: a window sliding (and slowly zooming) across a photo; travel=0 is a static camera."""
    image = PHOTOS[photo]()[..., :3]
    source_h, source_w = image.shape[:2]
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        t = index / max(1, count - 1)
        zoom = 0.6 - 0.1 * travel * t
        crop_h, crop_w = int(source_h * zoom), int(source_w * zoom * width / height * source_h / source_w)
        crop_w = min(crop_w, source_w)
        top = int((source_h - crop_h) * (0.2 + 0.5 * travel * t))
        left = int((source_w - crop_w) * (0.2 + travel * t))
        crop = image[top:top + crop_h, left:left + crop_w]
        frame = resize(crop, (height, width), anti_aliasing=True) * 255.0
        if noise:
            frame = frame + rng.normal(0.0, noise, frame.shape)
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_clip(path: str | Path, frames: np.ndarray, fps: int = 12, codec: str = "libx264",
               timestamps: list[int] | None = None) -> Path:
    """Encode uint8 [N,H,W,3] frames. `timestamps` give each frame's pts in units of 1/(100 fps) seconds, to make
    a variable frame rate file; None = constant rate."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p" if codec == "libx264" else "yuv444p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, fps * 100)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            if timestamps is not None:
                frame.pts = timestamps[index]
                frame.time_base = Fraction(1, fps * 100)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def scene_cut_frames(count: int, height: int, width: int, cut_at: int) -> np.ndarray:
    """A pan over one photo, then a hard cut to another."""
    first = pan_frames(cut_at, height, width, "astronaut", travel=0.1)
    second = pan_frames(count - cut_at, height, width, "coffee", travel=0.1)
    return np.concatenate([first, second])
