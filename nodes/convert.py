"""DepthToolkit.VideoTo3D: a whole video to stereo 3D, streamed from file to file (the converter of the CLI)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from comfy_api.latest import InputImpl, io

import folder_paths

from ..depth_core.anaglyph import METHODS
from ..depth_core.camera import DEFAULT_FOV_DEGREES
from ..depth_core.convert import ConvertOptions, DepthVideoSource, ModelDepth, convert_segment, finish_video, plan_video
from ..depth_core.convert.layouts import DEFAULT_VR180_FOV, FORMATS, PANORAMA_FORMAT
from ..depth_core.convert.pipeline import output_path
from ..depth_core.stereo import StereoSettings
from ..depth_core.video_io import CODECS, DEFAULT_QUALITY
from ._common import CATEGORY, DepthModelType, comfy_progress, compute_device, ready_estimator
from .depth_estimate import RESOLUTION_MODES
from .stereo import _stereo_inputs

WORK_FOLDER = "depthtoolkit_3d"
"""Under ComfyUI's temp folder: converted videos and the segments of unfinished ones (a cancelled run resumes)."""

FORMAT_TOOLTIP = ("Layout, named in the file the way players detect it: full-sbs (_LRF_Full_SBS, VR headsets), "
                  "half-sbs (_Half_SBS, 3D TVs), full-tb (_TBF_Full_TB), half-tb (_TB, 3D TVs), vr180 (_180_LR: "
                  "each eye inside a 180° half sphere, for VR video players), anaglyph (coloured glasses), "
                  "360-tb (_360_TB: a 360° equirectangular video, 2:1, as omni-directional stereo, left eye's "
                  "panorama on top; depth_model runs in panorama mode on each frame and must be an image network; "
                  "divergence is then % of the full 360° width: 0.5-1 is comfortable).")


def _source_file(video, name: str) -> Path:
    """A file path for a core VIDEO: its own file, or (for a video made from frames) a copy written once."""
    source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
    if isinstance(source, str) and os.path.isfile(source):
        return Path(source)
    folder = Path(folder_paths.get_temp_directory()) / WORK_FOLDER / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{id(video):x}.mp4"
    if not path.exists():
        video.save_to(str(path))
    return path


def _work_folder(source: Path, depth_identity: dict, options: ConvertOptions) -> Path:
    """One folder per (video, depth, settings): the same conversion run again reuses its result or its segments."""
    stat = source.stat()
    key = json.dumps([str(source.resolve()), stat.st_size, stat.st_mtime_ns, depth_identity, options.content_key()],
                     sort_keys=True, default=str)
    return Path(folder_paths.get_temp_directory()) / WORK_FOLDER / hashlib.sha256(key.encode()).hexdigest()[:16]


class VideoTo3D(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.VideoTo3D",
            display_name="Video to 3D",
            category=f"{CATEGORY}/stereo",
            description="Converts a whole video to stereo 3D (SBS, top-bottom, VR180, 360° top-bottom, anaglyph) "
                        "from file to file: frames are decoded, given depth, warped to both eyes and encoded a few "
                        "at a time, so any length fits in memory. Keeps the frame rate and copies the audio. "
                        "Returns a VIDEO for Save Video. A cancelled run continues from its last finished segment.",
            inputs=[
                io.Video.Input("video", tooltip="The video to convert (e.g. from Load Video)."),
                DepthModelType.Input("depth_model", optional=True,
                                     tooltip="A network from Load Depth Model, run on every frame. Connect this or "
                                             "depth_video."),
                io.Video.Input("depth_video", optional=True,
                               tooltip="Depth made beforehand, frame-aligned with the video, near = bright (the "
                                       "16-bit depth video Depth Toolkit writes, or any grayscale video). Connect "
                                       "this or depth_model."),
                io.Combo.Input("format", options=list(FORMATS), default="full-sbs", tooltip=FORMAT_TOOLTIP),
                *_stereo_inputs(with_layout=False),
                io.Boolean.Input("swap_eyes", default=False, tooltip="Right eye first (cross-eyed viewing)."),
                io.Combo.Input("anaglyph_method", options=list(METHODS), default="dubois red/cyan",
                               tooltip="Glasses for format = anaglyph (Dubois: least ghosting)."),
                io.Float.Input("vr180_fov", default=DEFAULT_VR180_FOV, min=10.0, max=179.0, step=1.0,
                               tooltip="Format vr180: how many degrees of the 180° view the video covers (a screen "
                                       "in front of the viewer; larger = bigger and less sharp)."),
                io.Combo.Input("codec", options=list(CODECS), default="h264",
                               tooltip="h264 plays everywhere; h265 is half the size; av1 smaller still, slower."),
                io.Int.Input("crf", default=0, min=0, max=63,
                             tooltip="Constant quality, lower = better; 0 = the codec's default (" +
                                     ", ".join(f"{c} {q}" for c, q in DEFAULT_QUALITY.items()) + ")."),
                io.Combo.Input("resolution", options=RESOLUTION_MODES, default="native",
                               tooltip="Depth network input size (with depth_model): native, the video's own size "
                                       "(match input) or custom."),
                io.Int.Input("custom_resolution", default=518, min=64, max=4096, step=2,
                             tooltip="Network size for resolution = custom."),
            ],
            outputs=[io.Video.Output("video", tooltip="The 3D video (a file; Save Video copies it without "
                                                      "re-encoding).")],
        )

    @classmethod
    def execute(cls, video, format: str, swap_eyes: bool, anaglyph_method: str, vr180_fov: float, codec: str,
                crf: int, resolution: str, custom_resolution: int, depth_model=None, depth_video=None,
                **stereo) -> io.NodeOutput:
        if (depth_model is None) == (depth_video is None):
            raise ValueError("Connect either a depth_model (depth from a network) or a depth_video (depth made "
                             "beforehand), not both and not neither.")
        source_path = _source_file(video, "video")
        if depth_model is not None:
            net_size = {"native": None, "match input": "match"}.get(resolution, custom_resolution)
            depth = ModelDepth(ready_estimator(depth_model), net_size, panorama=format == PANORAMA_FORMAT)
        else:
            depth = DepthVideoSource(_source_file(depth_video, "depth"))
        fov = stereo.get("fov_degrees") or DEFAULT_FOV_DEGREES
        settings = StereoSettings(divergence=stereo["divergence"], separation=stereo["separation"],
                                  convergence=stereo["convergence"], balance=stereo["balance"],
                                  exponent=stereo["depth_exponent"], depth_mode=stereo.get("depth_mode", "auto"),
                                  baseline_mm=stereo.get("baseline_mm", 65.0), fov_degrees=fov)
        options = ConvertOptions(format=format, settings=settings, fill=stereo["fill"],
                                 normalize="clip" if stereo.get("normalize") == "whole batch" else "frame",
                                 anaglyph_method=anaglyph_method, swap_eyes=swap_eyes, vr180_fov=vr180_fov,
                                 codec=codec, crf=crf or None)
        work = _work_folder(source_path, depth.identity(source_path), options)
        finished = [path for path in (output_path(source_path, work, options, container) for container in
                                      ("mp4", "mkv")) if path.exists()]
        if finished:
            return io.NodeOutput(InputImpl.VideoFromFile(str(finished[0])))
        plan = plan_video(source_path, work, options, depth)
        progress = comfy_progress(plan.frame_count)
        done = sum(stop - start for index, (start, stop) in enumerate(plan.segments)
                   if index in plan.finished_segments())

        def advance(frames: int) -> None:
            nonlocal done
            done += frames
            progress(done, plan.frame_count)

        device = compute_device()
        for index in range(len(plan.segments)):
            convert_segment(plan, index, options, depth, advance, device)
        return io.NodeOutput(InputImpl.VideoFromFile(str(finish_video(plan, options))))


NODES = [VideoTo3D]
