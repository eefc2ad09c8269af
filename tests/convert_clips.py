"""Tiny source clips for the converter's tests and benchmarks: H.264 with short keyframe intervals (so a clip has
several segments), optionally an AAC sine tone, and their frame-aligned 16-bit depth videos."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from video_clips import pan_frames

from depth_core.video_io import DepthVideoWriter


def write_clip_with_audio(path: str | Path, frames: np.ndarray, fps: int = 12, keyframe_interval: int = 4,
                          audio: bool = True, sample_rate: int = 8000, pixel_format: str = "yuv420p") -> Path:
    """uint8 [N,H,W,3] frames as H.264 (a keyframe every `keyframe_interval` frames, B-frames on) + AAC mono."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], pixel_format
        video.options = {"crf": "12", "g": str(keyframe_interval), "keyint_min": str(keyframe_interval)}
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for pixels in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = int(len(frames) / fps * sample_rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / sample_rate)).astype(np.float32)
            for start in range(0, samples, 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts = sample_rate, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def ramp_depth_codes(count: int, height: int, width: int) -> np.ndarray:
    """uint16 [N,H,W]: a left-to-right nearness ramp with a near square that moves one pixel per frame."""
    codes = np.broadcast_to(np.linspace(0, 30000, width, dtype=np.float32), (count, height, width)).copy()
    for index in range(count):
        top, left = height // 4, (width // 4 + index) % (width // 2)
        codes[index, top:top + height // 3, left:left + width // 4] = 60000
    return codes.astype(np.uint16)


def write_depth_video(path: str | Path, codes: np.ndarray, fps: int = 12) -> Path:
    with DepthVideoWriter(path, codes.shape[2], codes.shape[1], Fraction(fps)) as writer:
        writer.write(codes)
    return Path(path)


def clip_with_depth(folder: Path, name: str = "clip", count: int = 20, height: int = 32, width: int = 48,
                    audio: bool = True, photo: str = "astronaut", fps: int = 12) -> tuple[Path, Path]:
    """(video, its depth video named `<name>_depth.mkv`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    video = write_clip_with_audio(folder / f"{name}.mp4", pan_frames(count, height, width, photo), fps, audio=audio)
    depth = write_depth_video(folder / f"{name}_depth.mkv", ramp_depth_codes(count, height, width), fps)
    return video, depth
