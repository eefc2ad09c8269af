"""Depth for videos, streamed: frames come from an iterator and depth frames leave as soon as they are final.

Three ways, all generators from chunks of RGB frames `[n,H,W,3]` (float 0..1) to chunks of raw depth `[m,H,W]`
float32 at the frames' size, holding at most one window of frames whatever the video's length:

- `windowed_depth` - Video Depth Anything as its authors run it offline (`infer_video_depth`): 32-frame windows
  advancing by 22, the first 10 frames of each window replaced by keyframes of the previous one (frame 0, the frame
  12 positions in, and the previous window's last 8), each window's depth fitted by least-squares scale and shift to
  the previous window's keyframe depths (metric models: no fit), and the 8 overlapping frames cross-faded. A frame
  is final once no later window overlaps it, so windows are emitted 22 frames at a time. Encoder features of the
  keyframes are kept from the previous window instead of being recomputed (the encoder sees one frame at a time).
- `streaming_depth` - the authors' training-free streaming mode: one frame at a time, the temporal modules attending
  over cached states of earlier frames (the first frame's kept for ever, plus the most recent ones). Lower latency,
  a little less consistent.
- `image_model_video_depth` - any image network: frames in chunks, then per-frame scale (and shift) fitted to the
  previous frames over a sliding window (`SlidingStabilizer`, built on postprocess.stabilize_frames), reset at
  scene cuts found from colour histograms (`SceneCutDetector`), so depth is steady within a shot and nothing is
  smeared across a cut.

`VideoDepthEstimator` is the estimator of a video network: `predict` on an IMAGE batch treats the batch as a clip.
`video_depth_chunks` picks the right generator for any estimator; `write_video_depth` runs it from a video file to a
lossless 16-bit depth video, an 8-bit preview and a raw float32 .npy, frame by frame.
"""
from __future__ import annotations

import itertools
import os
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .depth import Depth, DepthKind, set_outside_mask_to_far
from .estimate import DepthEstimator, Resolution
from .files import atomic_path
from .image import bhwc_to_bchw, to_rgb
from .postprocess import stabilize_frames
from .progress import ProgressFn, no_progress
from .video_io import DeliveryVideoWriter, DepthVideoWriter, VideoInfo, VideoReadError, iter_frames, probe_video

WINDOW = 32
OVERLAP = 10
STRIDE = WINDOW - OVERLAP
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
"""Positions of the previous window that open the next one (its first OVERLAP inputs)."""
CROSSFADE = 8
"""Overlapping frames blended between two windows; the first OVERLAP - CROSSFADE keyframes set the alignment."""
ALIGN_KEYFRAMES = KEYFRAMES[: OVERLAP - CROSSFADE]
STREAM_HISTORY = 2 * STRIDE - 1 - (OVERLAP - CROSSFADE)
"""Frames of cached temporal state the streaming mode keeps (41): its first frame and a sliding run of the rest."""

WIDE_RATIO = 1.78
"""The authors shrink the network size for frames wider than 16:9, keeping memory per window bounded."""

VideoMode = Literal["windows", "streaming"]
VIDEO_MODES: tuple[VideoMode, ...] = ("windows", "streaming")

DEFAULT_STABILIZE_WINDOW = 8
DEFAULT_CUT_THRESHOLD = 0.2
"""Consecutive pans and zooms stay below 0.06 on the test clips, cuts between different photos reach 0.33-0.77."""


def is_video_model(estimator: DepthEstimator) -> bool:
    return bool(getattr(estimator.network, "is_video_model", False))


def split_frames(chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """One frame [H,W,3] at a time from chunks [n,H,W,C] (gray or RGBA accepted)."""
    for chunk in chunks:
        yield from to_rgb(chunk)


def _autocast(estimator: DepthEstimator):
    if estimator.dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(estimator.device.type, dtype=estimator.dtype)
    return nullcontext()


def video_network_size(estimator: DepthEstimator, height: int, width: int,
                       resolution: Resolution = None) -> tuple[int, int]:
    """The network input size of the authors' video rule: their image rule, with a smaller target for frames
    wider (or taller) than 16:9."""
    if resolution is None or isinstance(resolution, int):
        target = resolution or estimator.card.preprocess.net_size
        ratio = max(height, width) / min(height, width)
        if ratio > WIDE_RATIO:
            multiple = estimator.card.preprocess.multiple_of
            target = round(int(target * 1.777 / ratio) / multiple) * multiple
        return estimator.input_size(height, width, target)
    return estimator.input_size(height, width, resolution)


def _to_frame_size(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T,h,w] network depth -> [T,H,W] float32 on the CPU, bilinear with align_corners=True as the authors."""
    depth = depth.float()
    if tuple(depth.shape[-2:]) != tuple(size):
        depth = F.interpolate(depth.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1)
    return depth.cpu()


def fit_scale_shift(prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Least-squares (s, t) minimising |s * prediction + t - target|^2 over all pixels; (1, 0) when degenerate."""
    p, q = prediction.double().flatten(), target.double().flatten()
    a00, a01, a11 = float(p @ p), float(p.sum()), float(p.numel())
    b0, b1 = float(p @ q), float(q.sum())
    det = a00 * a11 - a01 * a01
    if det == 0:
        return 1.0, 0.0
    return (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det


def crossfade(previous: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """Blend [n,H,W] frames linearly from all-previous (first) to all-following (last)."""
    weights = torch.linspace(0.0, 1.0, previous.shape[0]).view(-1, 1, 1)
    return previous * (1 - weights) + following * weights


Features = list[tuple[torch.Tensor, torch.Tensor]]


def _select(features: Features, index: list[int]) -> Features:
    positions = torch.tensor(index, device=features[0][0].device)
    return [(tokens.index_select(0, positions), cls.index_select(0, positions)) for tokens, cls in features]


def _concat(parts: list[Features]) -> Features:
    return [(torch.cat([p[level][0] for p in parts]), torch.cat([p[level][1] for p in parts]))
            for level in range(len(parts[0]))]


class _FrameEncoder:
    """Preprocesses frames and runs the (per-frame) encoder of a video network in memory-bounded chunks."""

    def __init__(self, estimator: DepthEstimator, resolution: Resolution) -> None:
        self.estimator = estimator
        self.resolution = resolution
        self.frame_size: tuple[int, int] | None = None
        self.network_size: tuple[int, int] | None = None

    def _sizes(self, frame: torch.Tensor) -> None:
        size = tuple(frame.shape[:2])
        if self.frame_size is None:
            self.frame_size = size
            self.network_size = video_network_size(self.estimator, *size, self.resolution)
        elif size != self.frame_size:
            raise ValueError(f"All frames of a video must have one size; got {size[1]}x{size[0]} after "
                             f"{self.frame_size[1]}x{self.frame_size[0]}.")

    def encode(self, frames: list[torch.Tensor]) -> Features:
        for frame in frames:
            self._sizes(frame)
        chunk = self.estimator.chunk_size(self.network_size[0] * self.network_size[1])
        parts = []
        for start in range(0, len(frames), chunk):
            batch = bhwc_to_bchw(torch.stack(frames[start:start + chunk]))
            network_input = self.estimator.prepare(batch, self.network_size)
            with torch.inference_mode(), _autocast(self.estimator):
                parts.append(self.estimator.network.encode(network_input))
        return _concat(parts)

    def decode(self, features: Features, cache=None):
        with torch.inference_mode(), _autocast(self.estimator):
            return self.estimator.network.decode(features, self.network_size, cache)


def windowed_depth(estimator: DepthEstimator, chunks: Iterable[torch.Tensor], resolution: Resolution = None,
                   total: int | None = None, progress: ProgressFn = no_progress) -> Iterator[torch.Tensor]:
    """Video Depth Anything's offline inference, streamed (see the module docstring). Yields [m,H,W] float32."""
    encoder = _FrameEncoder(estimator, resolution)
    metric = bool(getattr(estimator.network.config, "metric", False))
    frames = split_frames(chunks)
    buffered: list[torch.Tensor] = []  # read video frames that no window has used yet
    read = 0

    def fill(count: int) -> None:
        nonlocal read
        while len(buffered) < count and (frame := next(frames, None)) is not None:
            buffered.append(frame)
            read += 1

    fill(WINDOW)
    if not buffered:
        raise ValueError("The video has no frames.")
    start = emitted = 0
    pending = kept_features = None
    references: list[torch.Tensor] = []
    while True:
        # A window's frames are start .. start + WINDOW - 1, those past the video's end being copies of its last
        # frame (the authors' padding); after the first window its first OVERLAP inputs are kept keyframes.
        wanted = WINDOW if kept_features is None else WINDOW - OVERLAP
        fill(wanted)
        new_frames = buffered[:wanted]
        if new_frames:
            last_frame = new_frames[-1]
        real = len(new_frames)
        features = encoder.encode(new_frames or [last_frame])
        if real < wanted:  # encode the repeated last frame once
            features = _select(features, [min(index, max(real, 1) - 1) for index in range(wanted)])
        if kept_features is not None:
            features = _concat([kept_features, features])
        kept_features = _select(features, list(KEYFRAMES))
        depth = _to_frame_size(encoder.decode(features)[0], encoder.frame_size)

        if pending is None:
            aligned = depth
            references = [depth[index] for index in ALIGN_KEYFRAMES]
        else:
            scale, shift = (1.0, 0.0) if metric else fit_scale_shift(
                depth[: len(ALIGN_KEYFRAMES)], torch.stack(references))
            adjusted = (depth * scale + shift).clamp_min_(0.0)
            blended = crossfade(pending[-CROSSFADE:], adjusted[OVERLAP - CROSSFADE: OVERLAP])
            aligned = torch.cat([pending[:-CROSSFADE], blended, adjusted[OVERLAP:]])
            references = [references[0]] + [adjusted[index] for index in ALIGN_KEYFRAMES[1:]]
        del buffered[:wanted]
        # `aligned` holds frames emitted .. start + WINDOW - 1. The next window (if the video reaches its start)
        # cross-fades the frames from its start + OVERLAP - CROSSFADE on; everything before that is final.
        next_start = start + STRIDE
        fill(1)
        has_next = next_start < read
        final_until = next_start + OVERLAP - CROSSFADE if has_next else start + WINDOW
        if not buffered:  # the video's length is known: never emit the padding
            final_until = min(final_until, read)
        count = final_until - emitted
        if count > 0:
            yield aligned[:count].clone()
            emitted += count
            progress(emitted, max(total or 0, emitted))
        if not has_next:
            return
        pending = aligned[max(count, 0):]
        start = next_start


def streaming_depth(estimator: DepthEstimator, chunks: Iterable[torch.Tensor], resolution: Resolution = None,
                    total: int | None = None, progress: ProgressFn = no_progress) -> Iterator[torch.Tensor]:
    """Video Depth Anything's streaming mode: one depth frame [1,H,W] per frame, as soon as it arrives."""
    encoder = _FrameEncoder(estimator, resolution)
    history: list[list[torch.Tensor]] = []
    done = 0
    for frame in split_frames(chunks):
        features = encoder.encode([frame])
        if not history:
            depth, states = encoder.decode(features)
            # The first frame stands in for a whole window of history, as in the authors' code.
            history = [states] * WINDOW
        else:
            recent = history[:2] + history[-(WINDOW - 3):]
            cache = [torch.cat([states[index] for states in recent], dim=1) for index in range(len(recent[0]))]
            depth, states = encoder.decode(features, cache)
            history.append(states)
            if done + WINDOW > STREAM_HISTORY + 1:
                del history[1]
        done += 1
        yield _to_frame_size(depth[-1:], encoder.frame_size)
        progress(done, total or done)
    if done == 0:
        raise ValueError("The video has no frames.")


def colour_histograms(frames: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """[n,H,W,3] 0..1 -> [n,3,bins] per-channel histograms summing to 1, from frames shrunk to at most 64 px."""
    images = bhwc_to_bchw(to_rgb(frames)).float()
    factor = max(1, max(images.shape[-2:]) // 64)
    if factor > 1:
        images = F.avg_pool2d(images, factor)
    index = (images.clamp(0, 1) * (bins - 1e-3)).long().flatten(2)
    histograms = torch.zeros(images.shape[0], 3, bins).scatter_add_(2, index, torch.ones_like(index, dtype=torch.float))
    return histograms / index.shape[-1]


class SceneCutDetector:
    """Finds hard cuts: a frame whose colour histograms differ from the previous frame's by more than `threshold`
    (total variation distance, 0 = same colours, 1 = no colour in common), carried across chunks."""

    def __init__(self, threshold: float = DEFAULT_CUT_THRESHOLD) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"The scene-cut threshold must be in (0, 1], got {threshold}.")
        self.threshold = threshold
        self._previous: torch.Tensor | None = None

    def cuts(self, frames: torch.Tensor) -> list[int]:
        """Indices within this chunk of the frames that start a new shot."""
        histograms = colour_histograms(frames)
        if self._previous is not None:
            histograms_before = torch.cat([self._previous[None], histograms[:-1]])
        else:
            histograms_before = torch.cat([histograms[:1], histograms[:-1]])
        distance = 0.5 * (histograms - histograms_before).abs().sum(-1).mean(-1)
        self._previous = histograms[-1]
        return [int(i) for i in torch.nonzero(distance > self.threshold).flatten()]


class SlidingStabilizer:
    """Aligns each new frame's depth to the frames before it with a per-frame scale (relative depth also a shift):
    `stabilize_frames` over the last `window` aligned frames plus the new chunk, the earlier frames held fixed, so
    the depth keeps the scale of the shot's first frame. `reset` starts over (at a scene cut)."""

    def __init__(self, window: int = DEFAULT_STABILIZE_WINDOW, shift: bool = True) -> None:
        if window < 1:
            raise ValueError(f"The stabilization window must be at least 1 frame, got {window}.")
        self.window = window
        self.shift = shift
        self._context: torch.Tensor | None = None

    def reset(self) -> None:
        self._context = None

    def align(self, frames: torch.Tensor) -> torch.Tensor:
        context = self._context
        if context is None:
            # A shot's first frame keeps the network's own scale and the rest follow it: a free first chunk would
            # let the fit shrink every scale towards zero, which makes neighbouring frames agree trivially.
            joined, anchored, kept = frames, 1, 0
        else:
            joined, anchored, kept = torch.cat([context, frames]), context.shape[0], context.shape[0]
        aligned, _, _ = stabilize_frames(joined, self.window, shift=self.shift, anchored=anchored)
        self._context = aligned[-self.window:]
        return aligned[kept:]


def image_model_video_depth(estimator: DepthEstimator, chunks: Iterable[torch.Tensor],
                            resolution: Resolution = None, stabilize: bool = True,
                            stabilize_window: int = DEFAULT_STABILIZE_WINDOW,
                            cut_threshold: float = DEFAULT_CUT_THRESHOLD, total: int | None = None,
                            progress: ProgressFn = no_progress) -> Iterator[torch.Tensor]:
    """Any image network on a video: depth per chunk, stabilized over a sliding window that restarts at cuts."""
    detector = SceneCutDetector(cut_threshold)
    # Scaling metres is the same as scaling their inverse; shifting them is not, so metric depth gets a scale only.
    stabilizer = SlidingStabilizer(stabilize_window, shift=estimator.output_kind is not DepthKind.METRIC)
    done = 0
    for chunk in chunks:
        values = estimator.predict(chunk, resolution).values
        if stabilize:
            cuts = detector.cuts(chunk)
            bounds = sorted({0, *cuts, values.shape[0]})
            parts = []
            for begin, end in zip(bounds[:-1], bounds[1:]):
                if begin in cuts:
                    stabilizer.reset()
                parts.append(stabilizer.align(values[begin:end]))
            values = torch.cat(parts)
        done += values.shape[0]
        yield values
        progress(done, total or done)


def video_depth_chunks(estimator: DepthEstimator, chunks: Iterable[torch.Tensor], resolution: Resolution = None,
                       mode: VideoMode = "windows", stabilize: bool = True,
                       stabilize_window: int = DEFAULT_STABILIZE_WINDOW,
                       cut_threshold: float = DEFAULT_CUT_THRESHOLD, total: int | None = None,
                       progress: ProgressFn = no_progress) -> Iterator[torch.Tensor]:
    """Raw depth chunks [m,H,W] for any estimator: Video Depth Anything by `mode`, image networks stabilized."""
    if is_video_model(estimator):
        if mode not in VIDEO_MODES:
            raise ValueError(f"Unknown video mode {mode!r}; choose one of {', '.join(VIDEO_MODES)}.")
        run = windowed_depth if mode == "windows" else streaming_depth
        return run(estimator, chunks, resolution, total=total, progress=progress)
    return image_model_video_depth(estimator, chunks, resolution, stabilize, stabilize_window, cut_threshold,
                                   total=total, progress=progress)


class VideoDepthEstimator(DepthEstimator):
    """The estimator of a video network (Video Depth Anything): an IMAGE batch is one clip, in frame order."""

    mode: VideoMode = "windows"

    def predict(self, images: torch.Tensor, resolution: Resolution = None, mask: torch.Tensor | None = None,
                progress: ProgressFn = no_progress, fov_degrees: float | None = None) -> Depth:
        """Depth for an IMAGE batch [B,H,W,C] taken as consecutive frames of one clip (one image: a 1-frame clip)."""
        frames = to_rgb(images)
        batch = frames.shape[0]
        chunks = (frames[start:start + WINDOW] for start in range(0, batch, WINDOW))
        values = torch.cat(list(video_depth_chunks(self, chunks, resolution, self.mode, total=batch,
                                                   progress=progress)))
        if mask is not None:
            values = set_outside_mask_to_far(values, mask, self.output_kind)
        depth = Depth(values, self.output_kind, self.name)
        return depth.with_fov(fov_degrees) if fov_degrees else depth


@dataclass(frozen=True)
class NearnessRange:
    """How raw depth maps to 16-bit codes (near = 65535): nearness (relative values, or 1/metres) in [low, high].

    Fixed from the first chunk of a video (widened by `MARGIN` of its span each way) so codes mean the same in every
    frame; recorded in the depth video's tags so the values can be restored."""

    kind: DepthKind
    low: float
    high: float

    MARGIN = 0.1

    @staticmethod
    def nearness(values: torch.Tensor, kind: DepthKind) -> torch.Tensor:
        return 1.0 / values.clamp_min(1e-6) if kind is DepthKind.METRIC else values

    @classmethod
    def from_frames(cls, values: torch.Tensor, kind: DepthKind) -> "NearnessRange":
        near = cls.nearness(values.float(), kind)
        finite = near[torch.isfinite(near)]
        low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
        span = max(high - low, 1e-6)
        low = max(0.0, low - cls.MARGIN * span) if low >= 0 else low - cls.MARGIN * span
        return cls(kind, low, high + cls.MARGIN * span)

    def unit(self, values: torch.Tensor) -> torch.Tensor:
        """0..1 nearness picture, near = 1."""
        near = torch.nan_to_num(self.nearness(values.float(), self.kind), nan=self.low, posinf=self.high,
                                neginf=self.low)
        return ((near - self.low) / (self.high - self.low)).clamp_(0.0, 1.0)

    def codes(self, values: torch.Tensor) -> np.ndarray:
        return (self.unit(values) * 65535.0 + 0.5).to(torch.int32).numpy().astype(np.uint16)

    def values_from_codes(self, codes: np.ndarray) -> torch.Tensor:
        near = self.low + torch.from_numpy(codes.astype(np.float32)) / 65535.0 * (self.high - self.low)
        return 1.0 / near.clamp_min(1e-6) if self.kind is DepthKind.METRIC else near

    def tags(self) -> dict[str, str]:
        return {"depth_kind": self.kind.value, "nearness_low": repr(self.low), "nearness_high": repr(self.high)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "NearnessRange":
        try:
            return cls(DepthKind(tags["depth_kind"]), float(tags["nearness_low"]), float(tags["nearness_high"]))
        except (KeyError, ValueError) as error:
            raise ValueError("This video carries no depth range tags: it was not written by Depth Toolkit's depth "
                             "video writer.") from error


@dataclass(frozen=True)
class VideoDepthFiles:
    """What `write_video_depth` produced."""

    depth_video: Path
    """Lossless 16-bit depth (FFV1 gray16le MKV, near = bright), its value range in the tags."""
    preview: Path | None
    """8-bit H.264 mp4 of the same picture."""
    raw: Path | None
    """float32 [T,H,W] .npy of the raw network output, written frame by frame (readers memory-map it)."""
    info: VideoInfo
    frame_count: int
    nearness: NearnessRange
    depth: Depth | None
    """Every frame's raw depth, only when asked for (a long clip would not fit in memory)."""


def write_video_depth(estimator: DepthEstimator, video: str | os.PathLike, depth_video: str | os.PathLike,
                      preview: str | os.PathLike | None = None, raw: str | os.PathLike | None = None,
                      resolution: Resolution = None, mode: VideoMode = "windows", stabilize: bool = True,
                      stabilize_window: int = DEFAULT_STABILIZE_WINDOW, cut_threshold: float = DEFAULT_CUT_THRESHOLD,
                      keep_frames: bool = False, chunk_size: int = 16,
                      progress: ProgressFn = no_progress) -> VideoDepthFiles:
    """Depth of a video file, streamed from decoder to files: every output is written frame by frame under a
    temporary name and appears only when the whole video succeeded (a damaged file or an interrupt leaves none)."""
    info = probe_video(video)
    total = info.frame_count
    chunks = iter_frames(video, chunk_size)
    depth_chunks = video_depth_chunks(estimator, chunks, resolution, mode, stabilize, stabilize_window,
                                      cut_threshold, total=total, progress=progress)
    first = next(depth_chunks)
    mapping = NearnessRange.from_frames(first, estimator.output_kind)
    tags = {**mapping.tags(), "depth_source": estimator.name}
    kept: list[torch.Tensor] = []
    written = 0
    with ExitStack() as outputs:
        depth_writer = outputs.enter_context(DepthVideoWriter(depth_video, info.width, info.height, info.fps, tags))
        preview_writer = (outputs.enter_context(DeliveryVideoWriter(preview, info.width, info.height, info.fps))
                          if preview is not None else None)
        raw_file = None
        if raw is not None:
            # Plain appends rather than a writable memory map, whose dirty pages would stay resident: the file is a
            # standard .npy that readers memory-map (np.load(path, mmap_mode="r")).
            Path(raw).parent.mkdir(parents=True, exist_ok=True)
            raw_file = outputs.enter_context(open(outputs.enter_context(atomic_path(raw)), "xb"))
            np.lib.format.write_array_header_1_0(raw_file, {"descr": "<f4", "fortran_order": False,
                                                            "shape": (total, info.height, info.width)})
        for values in itertools.chain([first], depth_chunks):
            if written + values.shape[0] > total:
                raise VideoReadError(f"{Path(video).name} decoded to more frames than its {total} packets.")
            codes = mapping.codes(values)
            depth_writer.write(codes)
            if preview_writer is not None:
                preview_writer.write((codes >> 8).astype(np.uint8))
            if raw_file is not None:
                raw_file.write(np.ascontiguousarray(values.numpy(), dtype="<f4").tobytes())
            if keep_frames:
                kept.append(values)
            written += values.shape[0]
    depth = Depth(torch.cat(kept), estimator.output_kind, estimator.name) if keep_frames else None
    return VideoDepthFiles(Path(depth_video), Path(preview) if preview is not None else None,
                           Path(raw) if raw is not None else None, info, written, mapping, depth)
