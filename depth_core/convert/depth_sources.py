"""Where a conversion's depth comes from: a depth network run on the frames, or depth made beforehand.

Every source hands out the depth of any range of frames on its own (`segment`), so segments can be converted in
any order, resumed, or spread over machines, and gives the nearness range of a whole clip for normalize="clip".

* `ModelDepth`: a DepthEstimator run on the frames as a video (depth_core.video_depth): Video Depth Anything in its
  authors' windows, image networks batched per chunk and stabilized over a sliding window that restarts at scene
  cuts (and at each segment's start, so segments stay independent). In panorama mode (360° videos, format 360-tb)
  each frame gets seamless panorama depth (depth_core.panorama.estimate_panorama_depth) from an image network.
* `DepthVideoSource`: a depth video frame-aligned with the input: the 16-bit FFV1 MKV Depth Toolkit writes, or any
  grayscale video (near = bright); or a folder of 16-bit PNG frames. Given a folder of depth videos, each input
  video takes the one named like it (`clip.mkv` or `clip_depth.mkv` for `clip.mp4`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from ..depth import Depth, DepthKind, match_depth_to_images, nearness
from ..video_io import FrameTiming, VideoInfo, frame_timing, is_video_path, iter_frame_range, probe_video

DepthPairs = Iterator[tuple[torch.Tensor, Depth]]
"""Frames [n,H,W,3] of a segment, in order, each chunk with its depth at the frames' size (a video network may
return depth for another number of frames than it was given at a time, so frames and depth travel together)."""

CLIP_RANGE_SAMPLES = 16
"""Frames a depth network looks at to find a clip's nearness range (keyframes spread over the clip)."""

ASPECT_TOLERANCE = 0.01

DEPTH_FRAME_SUFFIXES = (".png",)


class DepthSource(Protocol):
    def check(self, source: Path, info: VideoInfo) -> None:
        """Raise a ConversionError if this depth cannot serve the video (missing, other length or shape)."""

    def identity(self, source: Path) -> dict:
        """What the depth of `source` is, for telling whether an earlier run's segments can be reused."""

    def nearness_range(self, source: Path, timing: FrameTiming) -> tuple[float, float]:
        """(low, high) nearness over the whole clip."""

    def pairs(self, source: Path, start: int, stop: int, chunks: Iterator[torch.Tensor]) -> DepthPairs:
        """The decoded frames start..stop-1 of `source` (`chunks`) paired with their depth."""


def _error(message: str) -> Exception:
    from .pipeline import ConversionError

    return ConversionError(message)


class ModelDepth:
    """Depth from a network: a loaded DepthEstimator, or a zero-argument loader called the first time depth is
    needed (a Ray driver that only plans never loads the network; in panorama mode `check` loads it to refuse a
    video network).

    panorama: the frames are 360° equirectangular panoramas: each frame's depth is estimated on its own from
    overlapping perspective views (no temporal stabilization: the views' alignment already fixes each frame's scale
    against the whole sphere). Needs an image network: a video network reads its input as a sequence in time, and a
    panorama's views are not one.
    """

    def __init__(self, estimator, resolution=None, model_name: str = "", panorama: bool = False) -> None:
        self._estimator = None if callable(estimator) and not hasattr(estimator, "predict") else estimator
        self._load = estimator if self._estimator is None else None
        self.resolution = resolution
        self.panorama = panorama
        self.model_name = model_name or self.estimator.name

    @property
    def estimator(self):
        if self._estimator is None:
            self._estimator = self._load()
        return self._estimator

    def check(self, source: Path, info: VideoInfo) -> None:
        from ..video_depth import is_video_model

        if self.panorama and hasattr(self.estimator, "network") and is_video_model(self.estimator):
            raise _error(f"{self.model_name} is a video network: it reads the frames it is given as a sequence in "
                         "time, and panorama depth gives it a panorama's perspective views instead, so it has no "
                         "panorama mode. For 360° video (format 360-tb) use an image network (e.g. Depth Anything "
                         "V2), or give depth made beforehand.")

    def identity(self, source: Path) -> dict:
        identity = {"model": self.model_name, "resolution": self.resolution}
        return {**identity, "panorama": True} if self.panorama else identity

    def _predict(self, frames: torch.Tensor) -> Depth:
        if self.panorama:
            from ..panorama import estimate_panorama_depth

            depth, _ = estimate_panorama_depth(self.estimator, frames, self.resolution)
            return depth
        depth = self.estimator.predict(frames.to(self.estimator.device), self.resolution)
        return match_depth_to_images(depth.to("cpu"), frames.shape[0], tuple(frames.shape[1:3]))

    def nearness_range(self, source: Path, timing: FrameTiming) -> tuple[float, float]:
        keyframes = timing.keyframes
        picks = sorted({keyframes[round(i * (len(keyframes) - 1) / max(1, CLIP_RANGE_SAMPLES - 1))]
                        for i in range(min(CLIP_RANGE_SAMPLES, len(keyframes)))})
        low, high = float("inf"), float("-inf")
        for frame in picks:
            for frames in iter_frame_range(source, timing, frame, frame + 1, 1):
                values = nearness(self._predict(frames))
                low, high = min(low, float(values.min())), max(high, float(values.max()))
        return low, high

    def pairs(self, source: Path, start: int, stop: int, chunks: Iterator[torch.Tensor]) -> DepthPairs:
        from ..video_depth import video_depth_chunks

        if self.panorama:
            for frames in chunks:
                yield frames, self._predict(frames)
            return
        waiting: deque[torch.Tensor] = deque()      # frames read by the network, their depth not out yet

        def remembered() -> Iterator[torch.Tensor]:
            for chunk in chunks:
                waiting.append(chunk)
                yield chunk

        mode = getattr(self.estimator, "mode", "windows")
        for values in video_depth_chunks(self.estimator, remembered(), self.resolution, mode, total=stop - start):
            frames = _take(waiting, values.shape[0])
            depth = Depth(values.cpu(), self.estimator.output_kind, self.model_name)
            yield frames, match_depth_to_images(depth, frames.shape[0], tuple(frames.shape[1:3]))


class DepthVideoSource:
    """Depth made beforehand: a depth video, a folder of depth videos named like the inputs, or PNG frames."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise _error(f"Depth {self.path} does not exist. Give a depth video, a folder of depth videos named "
                         "like the inputs, or a folder of 16-bit PNG frames.")

    def _frames(self) -> list[Path] | None:
        """The PNG frames, when the path is a folder of them."""
        if not self.path.is_dir():
            return None
        frames = sorted(p for p in self.path.iterdir() if p.suffix.lower() in DEPTH_FRAME_SUFFIXES)
        return frames or None

    def _video_for(self, source: Path) -> Path:
        if self.path.is_file():
            return self.path
        for candidate in sorted(self.path.iterdir()):
            if is_video_path(candidate) and candidate.stem in (source.stem, f"{source.stem}_depth"):
                return candidate
        raise _error(f"No depth for {source.name} in {self.path}: name it {source.stem}.mkv or "
                     f"{source.stem}_depth.mkv.")

    def check(self, source: Path, info: VideoInfo) -> None:
        frames = self._frames()
        if frames is not None:
            count, name = len(frames), f"{self.path.name}/ ({len(frames)} PNG frames)"
            height, width = _read_png_depth(frames[0]).shape[-2:]
        else:
            depth_info = probe_video(self._video_for(source))
            count, name = depth_info.frame_count, depth_info.path.name
            height, width = depth_info.height, depth_info.width
        if count != info.frame_count:
            fewer = "fewer" if count < info.frame_count else "more"
            raise _error(f"The depth {name} has {count} frames, {fewer} than the {info.frame_count} of "
                         f"{source.name}: depth must be frame-aligned with the video. Make the depth from this "
                         "very video, or trim both to the same frames.")
        if abs(width / height - info.width / info.height) > ASPECT_TOLERANCE * info.width / info.height:
            raise _error(f"The depth {name} is {width}x{height}, the video {source.name} {info.width}x{info.height}: "
                         "their shapes differ, so the depth does not belong to this video. Use depth made from it.")

    def identity(self, source: Path) -> dict:
        frames = self._frames()
        files = frames if frames is not None else [self._video_for(source)]
        return {"depth": [str(p.resolve()) for p in files[:1]], "count": len(files),
                "stamp": [p.stat().st_mtime_ns for p in files[:1] + files[-1:]]}

    def _codes(self, source: Path, start: int, stop: int, chunk: int = 16) -> Iterator[np.ndarray]:
        frames = self._frames()
        if frames is not None:
            for first in range(start, stop, chunk):
                yield np.stack([_read_png_depth(path) for path in frames[first:min(stop, first + chunk)]])
            return
        video = self._video_for(source)
        yield from iter_frame_range(video, frame_timing(video), start, stop, chunk, output="gray16")

    def nearness_range(self, source: Path, timing: FrameTiming) -> tuple[float, float]:
        low, high = 65535, 0
        for codes in self._codes(source, 0, timing.frame_count):
            low, high = min(low, int(codes.min())), max(high, int(codes.max()))
        return low / 65535.0, high / 65535.0

    def pairs(self, source: Path, start: int, stop: int, chunks: Iterator[torch.Tensor]) -> DepthPairs:
        feed = _Feed(self._codes(source, start, stop))
        for frames in chunks:
            values = torch.from_numpy(feed.take(frames.shape[0]).astype(np.float32)).div_(65535.0)
            depth = Depth(values, DepthKind.RELATIVE_INVERSE, "depth video")
            yield frames, match_depth_to_images(depth, frames.shape[0], tuple(frames.shape[1:3]))


class _Feed:
    """Takes exactly n frames at a time from an iterator of chunks."""

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self.chunks, self.pending = chunks, []

    def take(self, count: int) -> np.ndarray:
        held = sum(len(chunk) for chunk in self.pending)
        while held < count:
            chunk = next(self.chunks, None)
            if chunk is None:
                raise _error(f"The depth ran out of frames {count - held} frames before the video's end.")
            self.pending.append(chunk)
            held += len(chunk)
        stacked = np.concatenate(self.pending)
        self.pending = [stacked[count:]] if held > count else []
        return stacked[:count]


def _take(waiting: deque[torch.Tensor], count: int) -> torch.Tensor:
    """The first `count` frames of the queued chunks (splitting a chunk when needed)."""
    parts, held = [], 0
    while held < count:
        chunk = waiting.popleft()
        if held + chunk.shape[0] > count:
            waiting.appendleft(chunk[count - held:])
            chunk = chunk[:count - held]
        parts.append(chunk)
        held += chunk.shape[0]
    return torch.cat(parts)


def _read_png_depth(path: Path) -> np.ndarray:
    """A depth PNG as uint16 codes, near = bright (8-bit files scaled to 16 bits)."""
    import cv2

    codes = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE)
    if codes is None:
        raise _error(f"{path.name} cannot be read as a PNG depth frame; re-export it.")
    return codes if codes.dtype == np.uint16 else codes.astype(np.uint16) * 257


@dataclass(frozen=True)
class DepthSpec:
    """A depth source described by paths, so that it can be rebuilt in another process (Ray workers): a model file
    (loaded once per process) or depth made beforehand."""

    model: str | None = None
    depth: str | None = None
    resolution: int | None = None
    device: str = "auto"
    panorama: bool = False
    """Model depth of 360° panoramas (ModelDepth's panorama mode)."""

    def __post_init__(self) -> None:
        if (self.model is None) == (self.depth is None):
            raise ValueError("Give either a depth model or depth made beforehand.")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def open(self) -> DepthSource:
        return _open_spec(self)


@lru_cache(maxsize=2)
def _open_spec(spec: DepthSpec) -> DepthSource:
    if spec.depth is not None:
        return DepthVideoSource(spec.depth)
    from ..registry import build_estimator

    return ModelDepth(lambda: build_estimator(spec.model, device=spec.torch_device()), spec.resolution,
                      Path(spec.model).name, spec.panorama)
