"""Streamed video reading and writing with PyAV, in memory bounded by one chunk of frames whatever the video length.

- `probe_video(path)` -> `VideoInfo`: frame count, frame rate (a Fraction), size, duration, audio, variable frame
  rate. It demuxes packets without decoding them, so it is fast even for long clips.
- `iter_frames(path, chunk_size)` yields RGB frames in chunks, `[n,H,W,3]` float32 0..1 torch tensors (or uint8
  numpy arrays); a damaged file raises `VideoReadError` naming the frame where decoding stopped.
- `DepthVideoWriter` (lossless 16-bit: FFV1 gray16le in Matroska) and `DeliveryVideoWriter` (8-bit H.264 yuv420p
  mp4) are context managers fed chunk by chunk. Both write under a hidden temporary name and the file appears under
  its final name only when the block ends without an error: an interrupted or failed run leaves nothing behind.
- `iter_depth_video(path)` reads a 16-bit depth video back as uint16 chunks.

Typical use:

    info = probe_video("clip.mp4")
    with DeliveryVideoWriter("out.mp4", info.width, info.height, info.fps) as writer:
        for frames in iter_frames("clip.mp4", chunk_size=16):
            writer.write(process(frames))
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch

from .files import atomic_path
from .image import image_to_uint8

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
"""Files the command line and the nodes treat as videos."""

_VFR_TOLERANCE = 0.02
"""Frame intervals may differ by this fraction of the typical interval (timestamp rounding) before a video counts
as variable frame rate."""


class VideoReadError(ValueError):
    """A video that cannot be read: missing, not a video, corrupt, truncated or without frames."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    frame_count: int
    """Video packets in the file (one per frame for every common codec); counted, not taken from the header."""
    fps: Fraction
    """The stream's average frame rate; for variable frame rate videos the mean over the whole clip."""
    duration: float
    """Seconds from the first frame's timestamp to the end of the last."""
    has_audio: bool
    variable_frame_rate: bool
    codec: str


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open_input(path: Path):
    import av

    if not path.is_file():
        raise VideoReadError(f"Video file not found: {path}. Check the path.")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as error:
        raise VideoReadError(
            f"{path.name} cannot be opened as a video ({error}). The file is damaged, incomplete or not a video: "
            "re-export or re-download it."
        ) from error


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoReadError(f"{path.name} holds no video frames (no video stream: empty, audio only or not a video). "
                             "Choose a video with at least one frame.")
    return container.streams.video[0]


def _is_variable_rate(timestamps: list[int]) -> bool:
    if len(timestamps) < 3:
        return False
    intervals = np.diff(np.unique(np.asarray(timestamps, dtype=np.int64)))
    if intervals.size < 2:
        return False
    typical = float(np.median(intervals))
    return bool(typical > 0 and np.abs(intervals - typical).max() > _VFR_TOLERANCE * typical + 1)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's properties by demuxing its packets (no decoding). Raises VideoReadError on bad input."""
    import av

    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        timestamps: list[int] = []
        last_end = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue  # the flush packet, or a packet without timing
                timestamps.append(packet.pts)
                end = packet.pts + (packet.duration or 0)
                last_end = end if last_end is None else max(last_end, end)
        except av.FFmpegError as error:
            raise VideoReadError(
                f"{path.name} is damaged after {len(timestamps)} frames ({error}). Re-export or re-download it."
            ) from error
        if not timestamps:
            raise VideoReadError(f"{path.name} holds no video frames. Choose a video with at least one frame.")
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps or fps <= 0:
            raise VideoReadError(f"{path.name} has no usable frame rate; re-export it with a fixed frame rate.")
        time_base = stream.time_base or Fraction(1, 1)
        start = min(timestamps)
        duration = float((last_end - start) * time_base) if last_end and last_end > start else len(timestamps) / fps
        _check_not_truncated(path, container, stream, len(timestamps), duration, float(fps))
        return VideoInfo(
            path=path,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frame_count=len(timestamps),
            fps=Fraction(fps),
            duration=duration,
            has_audio=bool(container.streams.audio),
            variable_frame_rate=_is_variable_rate(timestamps),
            codec=stream.codec_context.name,
        )


def _check_not_truncated(path: Path, container, stream, packets: int, duration: float, fps: float) -> None:
    """The header's frame count or duration promising more than the packets hold means the file was cut short."""
    promised_frames = stream.frames or 0
    promised_seconds = (container.duration or 0) / 1_000_000
    if promised_frames > packets or promised_seconds > duration + 2.0 / fps:
        promised = (f"{promised_frames} frames" if promised_frames > packets
                    else f"{promised_seconds:.2f} s")
        raise VideoReadError(
            f"{path.name} is truncated: its header promises {promised} but the data holds {packets} frames "
            f"({duration:.2f} s). The copy or download was cut short: get the complete file."
        )


def iter_frames(path: str | os.PathLike, chunk_size: int = 16,
                output: Literal["torch", "numpy"] = "torch") -> Iterator[torch.Tensor | np.ndarray]:
    """Decode RGB frames in display order, `chunk_size` at a time (the last chunk may be shorter).

    Yields `[n,H,W,3]` float32 0..1 tensors (output="torch") or uint8 arrays (output="numpy"). Only one chunk is
    held at a time. The file is probed first, so a truncated file fails before any frame is yielded; a decoding
    error mid-way (or fewer decodable frames than packets) raises VideoReadError after the frames before it were
    yielded, so a consumer that writes through `DepthVideoWriter`/`DeliveryVideoWriter` leaves no output file.
    """
    import av

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    path = Path(path)
    info = probe_video(path)
    decoded = 0
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        chunk: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunk.append(frame.to_ndarray(format="rgb24"))
                decoded += 1
                if len(chunk) == chunk_size:
                    yield _as_output(chunk, output)
                    chunk = []
        except av.FFmpegError as error:
            raise VideoReadError(
                f"{path.name} is damaged: decoding stopped at frame {decoded} ({error}). Re-export or re-download it."
            ) from error
        if chunk:
            yield _as_output(chunk, output)
    if decoded < info.frame_count:
        raise VideoReadError(
            f"{path.name} is damaged: only {decoded} of its {info.frame_count} frames could be decoded. "
            "Re-export or re-download it."
        )


def _as_output(chunk: list[np.ndarray], output: str) -> torch.Tensor | np.ndarray:
    frames = np.stack(chunk)
    if output == "numpy":
        return frames
    return torch.from_numpy(frames).float().div_(255.0)


def even_size(height: int, width: int) -> tuple[int, int]:
    """yuv420p needs even sides: the largest even size that fits (at least 2)."""
    return max(2, height - height % 2), max(2, width - width % 2)


def encoder_available(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # PyAV raises UnknownCodecError, ValueError or FFmpegError depending on version
        return False
    return True


class _StreamedVideoWriter:
    """One video stream written frame by frame into a temporary file that is renamed into place on success."""

    container_format: str
    codec: str
    pixel_format: str

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction | float,
                 metadata: dict[str, str] | None = None) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"A video needs a positive size, got {width}x{height}.")
        if fps <= 0:
            raise ValueError(f"The frame rate must be positive, got {fps}.")
        self.path = Path(path)
        self.width, self.height = width, height
        self.fps = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.metadata = dict(metadata or {})
        self.frames_written = 0
        self._stack = ExitStack()
        self._container = None
        self._stream = None

    def _configure(self, stream) -> None:
        """Codec options of the subclass."""

    def __enter__(self):
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._stack.enter_context(atomic_path(self.path))
        try:
            self._container = av.open(str(temporary), mode="w", format=self.container_format)
            self._container.metadata.update(self.metadata)
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
            self._stream.width, self._stream.height = self._stored_size()[::-1]
            self._stream.pix_fmt = self.pixel_format
            self._configure(self._stream)
        except BaseException as failure:
            self._close_container()
            self._stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        return self

    def _stored_size(self) -> tuple[int, int]:
        return self.height, self.width

    def _encode(self, frame) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def _close_container(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __exit__(self, kind, error, traceback) -> bool:
        failure = error
        try:
            if failure is None:
                if self.frames_written == 0:
                    raise ValueError(f"No frames were written to {self.path.name}.")
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except Exception as flush_error:  # a failed flush must not leave a file either
            failure = flush_error
        finally:
            try:
                self._close_container()
            except Exception as close_error:
                failure = failure or close_error
        if failure is None:
            self._stack.close()  # atomic_path renames the finished file into place
            return False
        self._stack.__exit__(type(failure), failure, failure.__traceback__)  # ...or deletes it
        if failure is not error:
            raise failure
        return False


class DepthVideoWriter(_StreamedVideoWriter):
    """Lossless 16-bit single-channel video: FFV1 gray16le in Matroska (`.mkv`). `write` takes uint16 `[n,H,W]`
    (or `[H,W]`) arrays or tensors; `metadata` goes into the container's tags (e.g. the value range the codes map)."""

    container_format = "matroska"
    codec = "ffv1"
    pixel_format = "gray16le"

    def _configure(self, stream) -> None:
        stream.options = {"level": "3", "slicecrc": "1"}  # FFV1 v3 with per-slice CRCs: damage is detectable

    def write(self, codes: np.ndarray | torch.Tensor) -> None:
        import av

        if isinstance(codes, torch.Tensor):
            codes = codes.cpu().numpy()
        if codes.ndim == 2:
            codes = codes[None]
        if codes.dtype != np.uint16 or codes.shape[1:] != (self.height, self.width):
            raise ValueError(f"Expected uint16 frames [n,{self.height},{self.width}], got {codes.dtype} "
                             f"{tuple(codes.shape)}.")
        for plane in codes:
            self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(plane), format="gray16le"))


def delivery_pixels(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Frames as float 0..1 or uint8, gray [n,H,W] or [n,H,W,C], to contiguous uint8 RGB [n,*size,3], cropping an
    odd last row/column and repeating a 1-pixel side."""
    if isinstance(frames, np.ndarray) and frames.dtype != np.uint8:
        frames = torch.from_numpy(frames.astype(np.float32, copy=False))
    if isinstance(frames, torch.Tensor):
        frames = image_to_uint8(frames) if frames.is_floating_point() else frames.detach().cpu().numpy()
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected frames [n,H,W], [n,H,W,3] or [n,H,W,4], got {tuple(frames.shape)}.")
    frames = np.broadcast_to(frames[..., :1], (*frames.shape[:3], 3)) if frames.shape[-1] == 1 else frames[..., :3]
    height, width = size
    if frames.shape[1] < height or frames.shape[2] < width:
        frames = np.pad(frames, ((0, 0), (0, max(0, height - frames.shape[1])), (0, max(0, width - frames.shape[2])),
                                 (0, 0)), mode="edge")
    return np.ascontiguousarray(frames[:, :height, :width])


def iter_depth_video(path: str | os.PathLike, chunk_size: int = 16) -> Iterator[np.ndarray]:
    """Read a `DepthVideoWriter` file back: uint16 `[n,H,W]` chunks, exactly the codes written."""
    import av

    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        chunk: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunk.append(frame.to_ndarray(format="gray16le"))
                if len(chunk) == chunk_size:
                    yield np.stack(chunk)
                    chunk = []
        except av.FFmpegError as error:
            raise VideoReadError(f"{path.name} is damaged ({error}).") from error
        if chunk:
            yield np.stack(chunk)


def video_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The container tags of a video (e.g. the value range a `DepthVideoWriter` file records)."""
    path = Path(path)
    with _open_input(path) as container:
        return {str(key).lower(): str(value) for key, value in container.metadata.items()}


# Segments: keyframe-aligned pieces of a video decoded independently (resumable and parallel conversions), encoded
# into their own files and joined again without re-encoding, with the source's audio copied.

@dataclass(frozen=True)
class FrameTiming:
    """Where a constant-frame-rate video's frames and keyframes are, from its packets (no decoding)."""

    first_pts: int
    time_base: Fraction
    fps: Fraction
    frame_count: int
    keyframes: tuple[int, ...]
    """Display indices of the frames a decoder can start from (sorted; always starts with 0)."""
    keyframe_pts: tuple[int, ...]

    def index_of(self, pts: int) -> int:
        return round((pts - self.first_pts) * self.time_base * self.fps)


def frame_timing(path: str | os.PathLike) -> FrameTiming:
    """Frame and keyframe positions of a video (packets in decode order are ranked by timestamp)."""
    import av

    path = Path(path)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        packets: list[tuple[int, bool]] = []
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    packets.append((packet.pts, bool(packet.is_keyframe)))
        except av.FFmpegError as error:
            raise VideoReadError(f"{path.name} is damaged after {len(packets)} frames ({error}).") from error
        if not packets:
            raise VideoReadError(f"{path.name} holds no video frames. Choose a video with at least one frame.")
        fps = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
        if fps <= 0:
            raise VideoReadError(f"{path.name} has no usable frame rate; re-export it with a fixed frame rate.")
        packets.sort()
        keyframes = [(rank, pts) for rank, (pts, key) in enumerate(packets) if key]
        if not keyframes or keyframes[0][0] != 0:
            keyframes.insert(0, (0, packets[0][0]))
        return FrameTiming(packets[0][0], Fraction(stream.time_base), fps, len(packets),
                           tuple(rank for rank, _ in keyframes), tuple(pts for _, pts in keyframes))


def iter_frame_range(path: str | os.PathLike, timing: FrameTiming, start: int, stop: int, chunk_size: int = 16,
                     output: Literal["torch", "numpy", "gray16"] = "torch") -> Iterator[torch.Tensor | np.ndarray]:
    """Frames start..stop-1 (display order) of a constant-frame-rate video in chunks, like `iter_frames`
    (output "gray16": uint16 [n,H,W] numpy arrays, for depth videos).

    The decoder seeks to the last keyframe at or before `start` and skips to `start`: a segment that starts at a
    keyframe never decodes an earlier packet, and decodes to exactly the frames a decode from the beginning gives."""
    import av

    path = Path(path)
    keyframe = max(position for position, frame in enumerate(timing.keyframes) if frame <= start)
    expected = min(stop, timing.frame_count) - start
    decoded = 0
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        seeking = timing.keyframes[keyframe] > 0
        if seeking:
            container.seek(timing.keyframe_pts[keyframe], stream=stream, backward=True)
        chunk: list[np.ndarray] = []
        try:
            # From the start, frames are counted (right for variable frame rates too); after a seek their
            # timestamps say where the decoder is.
            for position, frame in enumerate(container.decode(stream)):
                index = timing.index_of(frame.pts) if seeking and frame.pts is not None else position
                if index < start:
                    continue
                if index >= stop:
                    break
                chunk.append(frame.to_ndarray(format="gray16le" if output == "gray16" else "rgb24"))
                decoded += 1
                if len(chunk) == chunk_size:
                    yield np.stack(chunk) if output == "gray16" else _as_output(chunk, output)
                    chunk = []
        except av.FFmpegError as error:
            raise VideoReadError(f"{path.name} is damaged: decoding stopped at frame {start + decoded} ({error}). "
                                 "Re-export or re-download it.") from error
        if chunk:
            yield np.stack(chunk) if output == "gray16" else _as_output(chunk, output)
    if decoded < expected:
        raise VideoReadError(f"{path.name} is damaged: only {decoded} of frames {start}..{stop - 1} could be decoded. "
                             "Re-export or re-download it.")


CODECS: dict[str, tuple[str, ...]] = {"h264": ("libx264", "h264"), "h265": ("libx265",), "av1": ("libsvtav1", "libaom-av1")}
"""Output codec -> PyAV encoders that make it, best first."""

DEFAULT_QUALITY = {"h264": 18, "h265": 20, "av1": 30}
"""Constant-quality (CRF) defaults: visually transparent for stereo viewing, where artefacts differ between eyes."""


def first_encoder(names: tuple[str, ...]) -> str | None:
    """The first of these encoders this PyAV build has."""
    return next((name for name in names if encoder_available(name)), None)


def pick_encoder(codec: str) -> str:
    if codec not in CODECS:
        raise ValueError(f"Unknown codec {codec!r}; choose one of {', '.join(CODECS)}.")
    found = first_encoder(CODECS[codec])
    if found:
        return found
    available = [name for name, encoders in CODECS.items() if first_encoder(encoders)]
    raise ValueError(f"This PyAV build has no {codec} encoder ({', '.join(CODECS[codec])}); use one of "
                     f"{', '.join(available) or 'none'}.")


class EncodedVideoWriter(_StreamedVideoWriter):
    """Colour video with a chosen codec (h264 / h265 / av1), constant quality `crf`, encoder `preset` and pixel
    format, in Matroska or mp4 by the file's extension. `write` takes `[n,H,W,3]` or gray `[n,H,W]` frames, float 0..1 or
    uint8; yuv420p needs even sides, so an odd last row/column is dropped and a 1-pixel side is repeated to 2."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction | float, codec: str = "h264",
                 crf: int | None = None, preset: str | None = None, pixel_format: str = "yuv420p",
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(path, width, height, fps, metadata)
        self.codec = pick_encoder(codec)
        self.crf = DEFAULT_QUALITY[codec] if crf is None else crf
        self.preset = preset
        self.pixel_format = pixel_format
        self.container_format = "mp4" if Path(path).suffix.lower() in (".mp4", ".m4v", ".mov") else "matroska"

    def _stored_size(self) -> tuple[int, int]:
        return even_size(self.height, self.width)

    def _configure(self, stream) -> None:
        options = {"crf": str(self.crf)}
        if self.preset:
            options["preset"] = self.preset
        if self.codec == "libx265":
            options["x265-params"] = "log-level=error"
        stream.options = options
        # Frame timestamps count frames: segments are joined by offsetting them.
        stream.codec_context.time_base = Fraction(1) / self.fps

    def write(self, frames: np.ndarray | torch.Tensor) -> None:
        import av

        for frame in delivery_pixels(frames, self._stored_size()):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = self.frames_written
            video_frame.time_base = Fraction(1) / self.fps
            self._encode(video_frame)


class DeliveryVideoWriter(EncodedVideoWriter):
    """8-bit H.264 yuv420p mp4 that every player opens (a depth video's preview). `write` takes `[n,H,W,3]` or gray
    `[n,H,W]` frames, float 0..1 or uint8. yuv420p needs even sides: an odd last row/column is dropped, a 1-pixel side
    is repeated to 2."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction | float, crf: int = 18,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(path, width, height, fps, "h264", crf, metadata=metadata)
        self.container_format = "mp4"


MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
"""Audio an mp4 file can carry as it is; anything else needs Matroska to be copied without re-encoding."""


def audio_codec(path: str | os.PathLike) -> str | None:
    """The first audio stream's codec name, None without audio."""
    with _open_input(Path(path)) as container:
        return container.streams.audio[0].codec_context.name if container.streams.audio else None


def join_segments(segments: list[tuple[Path, int]], path: str | os.PathLike, fps: Fraction,
                  audio_from: str | os.PathLike | None = None, audio_offset: float = 0.0) -> Path:
    """Join encoded segment files, each (file, index of its first frame), into one video without re-encoding, and
    copy the first audio stream of `audio_from` (its timestamps moved by -audio_offset seconds, the source video's
    start). Packets of both streams are interleaved by time, so memory stays bounded; the file appears under its
    final name only when complete."""
    import av

    path = Path(path)
    frame_time = Fraction(1) / fps
    with ExitStack() as stack:
        temporary = stack.enter_context(atomic_path(path))
        output = stack.enter_context(av.open(str(temporary), mode="w"))
        first = stack.enter_context(av.open(str(segments[0][0])))
        video_out = output.add_stream_from_template(first.streams.video[0], opaque=True)   # copied, not encoded
        video_out.time_base = frame_time
        sources = [_segment_packets(segment, start, fps, video_out) for segment, start in segments]
        streams = [iter(packet for source in sources for packet in source)]
        if audio_from is not None:
            audio_in = stack.enter_context(av.open(str(audio_from)))
            if audio_in.streams.audio:
                audio_out = output.add_stream_from_template(audio_in.streams.audio[0], opaque=True)
                streams.append(_audio_packets(audio_in, audio_out, audio_offset))
        for packet in _by_time(streams):
            output.mux(packet)
    return path


def _segment_packets(segment: Path, start: int, fps: Fraction, stream_out) -> Iterator:
    import av

    with av.open(str(segment)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            # Every segment comes from the same encoder settings, so its decode delay (first dts) is the same and
            # the shifted decode times of consecutive segments continue each other.
            pts = round(packet.pts * stream.time_base * fps) + start
            dts = round(packet.dts * stream.time_base * fps) + start if packet.dts is not None else pts
            packet.stream = stream_out
            packet.time_base = Fraction(1) / fps     # the muxer may change the stream's own after its header
            packet.pts, packet.dts = pts, dts
            packet.duration = 1
            yield packet


def _audio_packets(container, stream_out, offset: float) -> Iterator:
    stream = container.streams.audio[0]
    shift = round(offset / stream.time_base)
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = stream_out
        yield packet


def _by_time(streams: list[Iterator]) -> Iterator:
    """Merge packet iterators by decode time in seconds (each is in order already)."""
    import heapq

    def keyed(index: int, packets: Iterator) -> Iterator:
        for packet in packets:
            timestamp = packet.dts if packet.dts is not None else packet.pts
            yield float(timestamp * packet.time_base), index, packet

    for _, _, packet in heapq.merge(*(keyed(index, packets) for index, packets in enumerate(streams)),
                                    key=lambda item: (item[0], item[1])):
        yield packet
