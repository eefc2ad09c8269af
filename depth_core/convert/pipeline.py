"""Streamed 2D-to-3D video conversion: decode -> depth -> stereo warp -> layout -> encode, one chunk at a time.

A video is cut into keyframe-aligned segments (`plan_video`). Each segment is decoded on its own (seeking to its
keyframe), converted chunk by chunk and encoded into its own file in a hidden work folder beside the output
(`convert_segment`); finished segment files are kept, so a stopped conversion continues from the first missing
segment, and segments of one video can run on different machines (depth_core/convert/ray_runner.py). When every
segment exists they are joined without re-encoding and the source's audio is copied in (`finish_video`); the output
appears under its final name only then. Memory is one chunk of frames whatever the video's length.

Depth normalization must not depend on where a segment starts, or a resumed or distributed conversion would differ
from a single run: "frame" normalizes each frame's depth on its own; "clip" uses one nearness range for the whole
video, measured before the first segment (all frames of a depth video, keyframes spread over the clip for a model)
and recorded in the plan.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import torch

from ..depth import Depth, nearness, unit_interval
from ..panorama import OdsSettings, is_equirectangular_size, ods_views
from ..progress import RateMeter
from ..stereo import FILL_MODES, StereoSettings, eye_disparities, unit_nearness_disparities, warp_pair
from ..video_io import (CODECS, MP4_AUDIO_CODECS, EncodedVideoWriter, FrameTiming, VideoInfo, VideoReadError,
                        audio_codec, frame_timing, is_video_path, iter_frame_range, join_segments, pick_encoder,
                        probe_video)
from .depth_sources import DepthSource, ModelDepth
from .layouts import DEFAULT_VR180_FOV, PANORAMA_FORMAT, FrameComposer, check_format, format_tag

NORMALIZE_MODES = ("frame", "clip")
CONTAINERS = ("mp4", "mkv")
PLAN_FILE = "plan.json"
SEGMENT_SUFFIX = ".mp4"
"""Segments are mp4: it keeps decode timestamps (B-frames), which joining needs."""

FrameProgress = Callable[[int], None]
"""Called with the number of frames just converted."""


class ConversionError(ValueError):
    """A video that cannot be converted as asked (bad input, mismatched depth); says what to do."""


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides a converted video's content. Changing any of it starts a conversion over."""

    format: str = "full-sbs"
    settings: StereoSettings = field(default_factory=StereoSettings)
    fill: str = "background"
    normalize: str = "frame"
    anaglyph_method: str = "dubois red/cyan"
    swap_eyes: bool = False
    vr180_fov: float = DEFAULT_VR180_FOV
    codec: str = "h264"
    crf: int | None = None
    preset: str | None = None
    pixel_format: str = "yuv420p"
    container: str = "mp4"
    copy_audio: bool = True
    segment_seconds: float = 30.0
    chunk_frames: int = 8

    def __post_init__(self) -> None:
        check_format(self.format, self.anaglyph_method)
        if self.fill not in FILL_MODES:
            raise ValueError(f"Unknown fill {self.fill!r}; choose one of {', '.join(FILL_MODES)}.")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"Unknown normalization {self.normalize!r}; choose one of {', '.join(NORMALIZE_MODES)}.")
        if self.codec not in CODECS:
            raise ValueError(f"Unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}.")
        if self.container not in CONTAINERS:
            raise ValueError(f"Unknown container {self.container!r}; choose one of {', '.join(CONTAINERS)}.")
        if self.segment_seconds <= 0 or self.chunk_frames < 1:
            raise ValueError("segment_seconds must be positive and chunk_frames at least 1.")
        if self.format == PANORAMA_FORMAT:
            self.ods_settings()        # its limits (e.g. divergence 0-20 %) refuse bad settings before any work

    def ods_settings(self) -> OdsSettings:
        """The 360-tb format's omni-directional stereo settings: divergence (% of the panorama's 360° width),
        exponent, depth mode and eye distance (baseline_mm) carry over; separation, convergence and balance have
        no meaning for eyes circling the centre."""
        return OdsSettings(divergence=self.settings.divergence, exponent=self.settings.exponent,
                           ipd_mm=self.settings.baseline_mm, depth_mode=self.settings.depth_mode)

    def content_key(self) -> dict:
        """The options that change the output's pixels or encoding (not how the work is split into chunks)."""
        key = asdict(self)
        key.pop("chunk_frames")
        return key


@dataclass(frozen=True)
class VideoPlan:
    """One video's conversion: where its segments and output go, and what every segment needs to run alone."""

    source: Path
    output: Path
    work_dir: Path
    height: int
    width: int
    fps: Fraction
    timing: FrameTiming
    segments: tuple[tuple[int, int], ...]
    """(first frame, end frame) of each segment; starts are keyframes."""
    nearness_range: tuple[float, float] | None
    """The clip's nearness range for normalize="clip"."""
    has_audio: bool

    @property
    def frame_count(self) -> int:
        return self.timing.frame_count

    def segment_path(self, index: int) -> Path:
        return self.work_dir / f"segment_{index:05d}{SEGMENT_SUFFIX}"

    def finished_segments(self) -> set[int]:
        return {index for index in range(len(self.segments)) if self.segment_path(index).is_file()}


def list_videos(inputs: list[Path]) -> list[Path]:
    """Video files of the inputs (folders give their videos, sorted); a missing input raises."""
    videos: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            videos += sorted(p for p in item.iterdir() if p.is_file() and is_video_path(p))
        elif item.is_file():
            videos.append(item)
        else:
            raise ConversionError(f"{item} does not exist. Give video files or folders of videos.")
    if not videos:
        raise ConversionError("No videos found in the given inputs (looked for "
                              ".mp4 .mkv .webm .mov .avi .m4v).")
    return videos


def output_path(source: Path, out_dir: Path, options: ConvertOptions, container: str | None = None) -> Path:
    return Path(out_dir) / f"{source.stem}{format_tag(options.format, options.anaglyph_method)}." \
                           f"{container or options.container}"


def _segments(timing: FrameTiming, info: VideoInfo, seconds: float) -> tuple[tuple[int, int], ...]:
    """Keyframe-aligned pieces of about `seconds` each (one piece for variable frame rate videos, whose frame
    positions cannot be found from timestamps)."""
    if info.variable_frame_rate:
        return ((0, timing.frame_count),)
    target = max(1, round(seconds * float(timing.fps)))
    starts = [0]
    for keyframe in timing.keyframes:
        if keyframe - starts[-1] >= target:
            starts.append(keyframe)
    return tuple(zip(starts, starts[1:] + [timing.frame_count]))


def plan_video(source: Path, out_dir: Path, options: ConvertOptions, depth: DepthSource) -> VideoPlan:
    """Probe a video, check its depth, and load the plan of an earlier run of the same conversion (to resume) or
    write a new one. Raises ConversionError / VideoReadError for bad input before anything is written."""
    source = Path(source)
    info = probe_video(source)
    if options.format == PANORAMA_FORMAT:
        _check_panorama_video(source, info, depth)
    depth.check(source, info)
    pick_encoder(options.codec)
    timing = frame_timing(source)
    container = options.container
    codec = audio_codec(source) if options.copy_audio else None
    if codec is not None and container == "mp4" and codec not in MP4_AUDIO_CODECS:
        container = "mkv"     # copy the audio as it is rather than re-encode it
    output = output_path(source, out_dir, options, container)
    work_dir = output.with_name(f".{output.name}.parts")
    stat = source.stat()
    identity = {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "depth": depth.identity(source), "options": options.content_key(),
                "segment_seconds": options.segment_seconds}
    recorded = _read_plan(work_dir)
    if recorded is not None and recorded.get("identity") == identity:
        nearness_range = tuple(recorded["nearness_range"]) if recorded["nearness_range"] else None
    else:
        if work_dir.exists():
            shutil.rmtree(work_dir)       # another conversion's parts: they cannot be reused
        nearness_range = depth.nearness_range(source, timing) if options.normalize == "clip" else None
        work_dir.mkdir(parents=True)
        _write_plan(work_dir, {"identity": identity, "nearness_range": nearness_range})
    return VideoPlan(source, output, work_dir, info.height, info.width, timing.fps, timing,
                     _segments(timing, info, options.segment_seconds), nearness_range,
                     codec is not None)


def _check_panorama_video(source: Path, info: VideoInfo, depth: DepthSource) -> None:
    if not is_equirectangular_size(info.height, info.width):
        raise ConversionError(
            f"{source.name} is {info.width}x{info.height} ({info.width / info.height:.2f}:1), but the 360-tb format "
            "is for 360° equirectangular videos, which are twice as wide as they are high (2:1). Choose a flat "
            "format (full-sbs, half-sbs, full-tb, half-tb, vr180, anaglyph) for this video, or give the full 2:1 "
            "panorama.")
    if isinstance(depth, ModelDepth) and not depth.panorama:
        raise ConversionError("The 360-tb format needs panorama depth: create the depth network's source as "
                              "ModelDepth(..., panorama=True) (a whole equirectangular frame given to a network "
                              "gets bent, seamed depth).")


def _read_plan(work_dir: Path) -> dict | None:
    try:
        return json.loads((work_dir / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_plan(work_dir: Path, plan: dict) -> None:
    from ..files import write_bytes_atomic

    write_bytes_atomic(work_dir / PLAN_FILE, json.dumps(plan, indent=1).encode())


def stereo_frames(frames: torch.Tensor, depth: Depth, options: ConvertOptions,
                  nearness_range: tuple[float, float] | None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right views [n,H,W,3] (CPU) of frames [n,H,W,3] with their depth at the frames' size (360-tb: the
    eyes' panoramas of omni-directional stereo)."""
    if options.format == PANORAMA_FORMAT:
        return ods_views(frames, depth, options.ods_settings(), options.fill, device, nearness_range=nearness_range)
    width = frames.shape[2]
    depth = depth.to(device)
    if nearness_range is None:
        left_disparity, right_disparity = eye_disparities(depth, width, replace(options.settings, per_image=True))
    else:
        low, high = (torch.tensor(value, device=device) for value in nearness_range)
        unit = unit_interval(nearness(depth).float(), low, high)
        left_disparity, right_disparity = unit_nearness_disparities(unit, width, options.settings)
    images = frames.to(device).permute(0, 3, 1, 2)
    left, right = warp_pair(images, left_disparity, right_disparity, options.fill)
    return (left.images.permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu(),
            right.images.permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu())


def convert_segment(plan: VideoPlan, index: int, options: ConvertOptions, depth: DepthSource,
                    progress: FrameProgress = lambda frames: None, device: torch.device | str = "cpu") -> Path:
    """Convert one segment into its own file (kept if it exists already: finished segments are never redone)."""
    path = plan.segment_path(index)
    if path.is_file():
        return path
    start, stop = plan.segments[index]
    composer = FrameComposer(options.format, plan.height, plan.width, options.anaglyph_method, options.swap_eyes,
                             options.vr180_fov)
    chunks = iter_frame_range(plan.source, plan.timing, start, stop, options.chunk_frames)
    with torch.inference_mode(), EncodedVideoWriter(path, composer.width, composer.height, plan.fps, options.codec,
                                                    options.crf, options.preset, options.pixel_format) as writer:
        for frames, frame_depth in depth.pairs(plan.source, start, stop, chunks):
            left, right = stereo_frames(frames, frame_depth, options, plan.nearness_range, device)
            writer.write(composer(left, right))
            progress(frames.shape[0])
    return path


def finish_video(plan: VideoPlan, options: ConvertOptions) -> Path:
    """Join the finished segments (without re-encoding) and the source's audio into the output, then remove the
    work folder. The output appears only when complete."""
    missing = sorted(set(range(len(plan.segments))) - plan.finished_segments())
    if missing:
        raise ConversionError(f"{plan.source.name}: segments {missing} are not converted yet; run the conversion "
                              "again to finish them.")
    offset = float((plan.timing.first_pts * plan.timing.time_base))
    join_segments([(plan.segment_path(index), start) for index, (start, _) in enumerate(plan.segments)],
                  plan.output, plan.fps, plan.source if plan.has_audio and options.copy_audio else None, offset)
    shutil.rmtree(plan.work_dir, ignore_errors=True)
    return plan.output


@dataclass
class ConversionReport:
    converted: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    """Outputs that existed already."""
    failed: dict[Path, str] = field(default_factory=dict)
    """Source -> what went wrong (the other videos were still converted)."""


def convert_videos(inputs: list[Path], out_dir: Path, options: ConvertOptions, depth: DepthSource,
                   device: torch.device | str = "cpu", log: Callable[[str], None] = print,
                   progress_line: Callable[[str], None] | None = None,
                   interrupt: Callable[[], None] = lambda: None) -> ConversionReport:
    """Convert every video of `inputs` into `out_dir`, one after another (resuming earlier runs); a video that
    fails is reported and the others still converted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ConversionReport()
    plans: list[VideoPlan] = []
    for source in list_videos(inputs):
        existing = [path for path in (output_path(source, out_dir, options, container) for container in CONTAINERS)
                    if path.exists()]
        if existing:
            report.skipped.append(existing[0])
            log(f"{source.name}: {existing[0].name} exists already, skipped")
            continue
        try:
            plans.append(plan_video(source, out_dir, options, depth))
        except (ConversionError, VideoReadError, ValueError) as error:
            report.failed[source] = str(error)
            log(f"{source.name}: not converted: {error}")
    meter = RateMeter(sum(plan.frame_count for plan in plans))
    for plan in plans:
        try:
            for index, (start, stop) in enumerate(plan.segments):
                if index in plan.finished_segments():
                    meter.skip(stop - start)
                    continue

                def advance(frames: int) -> None:
                    meter.advance(frames)
                    interrupt()
                    if progress_line is not None:
                        progress_line(f"{plan.source.name}: {meter.line()}")

                convert_segment(plan, index, options, depth, advance, device)
            report.converted.append(finish_video(plan, options))
            log(f"{plan.source.name}: wrote {plan.output}")
        except (ConversionError, VideoReadError, ValueError) as error:
            report.failed[plan.source] = str(error)
            log(f"{plan.source.name}: not converted: {error}")
    return report
