"""DepthToolkit.VideoDepth: depth for a core VIDEO, streamed from decoder to files so a long clip never becomes
one tensor."""
from __future__ import annotations

import os

from comfy_api.latest import InputImpl, io, ui
from comfy_execution.graph_utils import ExecutionBlocker

import folder_paths

from ..depth_core.video_depth import (
    DEFAULT_CUT_THRESHOLD,
    DEFAULT_STABILIZE_WINDOW,
    VIDEO_MODES,
    is_video_model,
    write_video_depth,
)
from ..depth_core.video_io import probe_video
from ._common import CATEGORY, DepthModelType, DepthType, comfy_progress, depth_picture, output_paths, ready_estimator
from .depth_estimate import RESOLUTION_MODES

FRAMES_NOT_ASKED = ("Video Depth: its depth and depth_image outputs are empty unless output_frames is on (a long "
                    "clip would not fit in memory). Turn output_frames on, or use the video and depth_file outputs.")


def video_file(video) -> tuple[str, bool]:
    """(path of a file holding the VIDEO, whether it is a temporary copy). A file-backed VIDEO (core Load Video)
    is read in place; one held in memory is saved once to ComfyUI's temp folder."""
    if isinstance(video, InputImpl.VideoFromFile):
        source = video.get_stream_source()
        if isinstance(source, str) and os.path.isfile(source):
            return source, False
    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"depthtoolkit_video_{os.getpid()}_{id(video)}.mp4")
    video.save_to(path)
    return path, True


class VideoDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.VideoDepth",
            display_name="Video Depth",
            category=f"{CATEGORY}/depth",
            description="Depth for a whole video, streamed: frames are decoded, estimated and written a window at a "
                        "time, so memory stays the same for a 10-minute clip. Video Depth Anything runs its "
                        "authors' consistent 32-frame windows (or the low-latency streaming mode); any image model "
                        "is stabilized over a sliding window that restarts at scene cuts. Writes a lossless 16-bit "
                        "depth video (FFV1 MKV, near = bright) and an 8-bit preview mp4.",
            is_output_node=True,
            inputs=[
                io.Video.Input("video", tooltip="The video, e.g. from core Load Video."),
                DepthModelType.Input("depth_model",
                                     tooltip="A network from Load Depth Model: Video Depth Anything for the most "
                                             "consistent video depth, or any image model."),
                io.Combo.Input("mode", options=list(VIDEO_MODES), default="windows",
                               tooltip="Video Depth Anything only. windows: the authors' offline inference "
                                       "(32-frame windows aligned and blended), the most consistent. streaming: one "
                                       "frame at a time against cached earlier frames, lower latency and a little "
                                       "less steady."),
                io.Combo.Input("resolution", options=RESOLUTION_MODES, default="native",
                               tooltip="native: the size the network was trained at (518 for Depth Anything). match "
                                       "input: the video's own size (slower). custom: the size below."),
                io.Int.Input("custom_resolution", default=518, min=64, max=4096, step=2,
                             tooltip="Network size for resolution = custom."),
                io.Boolean.Input("stabilize", default=True,
                                 tooltip="Image models only: fit each frame's depth scale (and shift) to the frames "
                                         "before it so the depth does not flicker. Video Depth Anything is steady "
                                         "by itself."),
                io.Int.Input("stabilize_window", default=DEFAULT_STABILIZE_WINDOW, min=1, max=64,
                             tooltip="Image models: how many earlier frames each frame is aligned to. Longer is "
                                     "steadier but follows real depth changes (zooms) more slowly."),
                io.Float.Input("scene_cut_threshold", default=DEFAULT_CUT_THRESHOLD, min=0.05, max=1.0, step=0.01,
                               tooltip="Image models: how different the colours of two consecutive frames must be "
                                       "(0..1) to count as a cut, where stabilization restarts instead of "
                                       "dragging the old shot's depth into the new one. Lower finds softer cuts; "
                                       "1 never cuts."),
                io.Boolean.Input("output_frames", default=False,
                                 tooltip="Also output every frame's DEPTH and depth IMAGE (for short clips: a long "
                                         "clip does not fit in memory). Off: use the video and depth_file outputs."),
                io.String.Input("filename_prefix", default="video_depth/DepthToolkit",
                                tooltip="Prefix of the depth video files in the output folder."),
            ],
            outputs=[
                io.Video.Output("video", tooltip="The 8-bit depth preview (near = white) as a file-backed VIDEO, "
                                                 "for core Save Video or preview nodes."),
                io.String.Output("depth_file", tooltip="Path of the lossless 16-bit depth video (FFV1 gray16 in MKV, "
                                                       "near = bright); its tags record the value range."),
                DepthType.Output("depth", tooltip="Every frame's raw depth, only with output_frames on."),
                io.Image.Output("depth_image", tooltip="Every frame's depth picture, only with output_frames on."),
            ],
        )

    @classmethod
    def execute(cls, video, depth_model, mode: str, resolution: str, custom_resolution: int, stabilize: bool,
                stabilize_window: int, scene_cut_threshold: float, output_frames: bool,
                filename_prefix: str) -> io.NodeOutput:
        net_size = {"native": None, "match input": "match"}.get(resolution, custom_resolution)
        source, temporary = video_file(video)
        try:
            info = probe_video(source)  # a damaged file fails here, with what to do, before anything is written
            estimator = ready_estimator(depth_model)
            folder, filename, counter, subfolder = output_paths(filename_prefix, info.width, info.height)
            depth_path = os.path.join(folder, f"{filename}_{counter:05}_depth.mkv")
            preview_name = f"{filename}_{counter:05}_depth.mp4"
            result = write_video_depth(
                estimator, source, depth_path, preview=os.path.join(folder, preview_name), resolution=net_size,
                mode=mode, stabilize=stabilize, stabilize_window=stabilize_window, cut_threshold=scene_cut_threshold,
                keep_frames=output_frames, progress=comfy_progress(info.frame_count))
        finally:
            if temporary:
                os.remove(source)
        if output_frames:
            depth, picture = result.depth, depth_picture(result.depth, per_image=False)
        else:
            depth = picture = ExecutionBlocker(FRAMES_NOT_ASKED)
        kind = "Video Depth Anything" if is_video_model(estimator) else "image model, stabilized" if stabilize else \
            "image model"
        note = (f"{result.frame_count} frames at {float(result.info.fps):.3f} fps ({kind}); "
                f"{os.path.basename(depth_path)}")
        if result.info.variable_frame_rate:
            note += "; variable frame rate source: one depth frame per source frame at a constant frame rate"
        preview = ui.PreviewVideo([ui.SavedResult(preview_name, subfolder, io.FolderType.output)]).as_dict()
        preview["text"] = [note]
        return io.NodeOutput(InputImpl.VideoFromFile(str(result.preview)), str(result.depth_video), depth, picture,
                             ui=preview)


NODES = [VideoDepth]
