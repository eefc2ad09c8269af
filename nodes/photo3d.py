"""DepthToolkit.InpaintedMeshVideo: one photo + depth -> layered, inpainted 3D mesh and a camera-move video, headless."""
from __future__ import annotations

from fractions import Fraction

from comfy_api.latest import InputImpl, Types, io, ui

from ..depth_core.image import to_rgb
from ..depth_core.photo3d import DEFAULT_BAND_FRACTION, DEFAULT_RELATIVE_THRESHOLD, PATH_NAMES
from ..depth_core.photo3d.workflow import Photo3DSettings, load_inpainter, make_photo3d, numbered_file_names
from ._common import (CATEGORY, comfy_progress, compute_device, depth_input, fov_input, output_paths, read_depth,
                      report_fov, to_output_device)
from ._model_folders import model_files


class InpaintedMeshVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DepthToolkit.InpaintedMeshVideo",
            display_name="3D Photo (Inpainted Mesh Video)",
            category=f"{CATEGORY}/3d",
            description=(
                "Turns a photo and its depth into a layered 3D photo: the picture is cut at depth edges and the "
                "background behind every foreground edge is extended and inpainted (from the background only), so a "
                "moving camera sees plausible background instead of stretched pixels. Renders a camera-move video "
                "in torch (no OpenGL, works headless, CPU or GPU), writes the mesh (PLY compatible with the old "
                "depthmap extension, or GLB/OBJ) and outputs the frames, a VIDEO for Save Video and a MESH."
            ),
            is_output_node=True,
            inputs=[
                io.Image.Input("image", tooltip="The photo to turn into a 3D photo. A batch makes one mesh per image "
                                                "and one video with all their clips in order."),
                depth_input(),
                io.Combo.Input("path", options=list(PATH_NAMES), default="circle",
                               tooltip="Camera move. circle: loops around the view; swing: side to side; double "
                                       "straight line: from -translate to +translate through the photo's view; "
                                       "straight line: from the photo's view to +translate; zoom in: moves into the "
                                       "scene; dolly zoom: moves back while zooming so the subject at the image "
                                       "centre keeps its size."),
                io.Int.Input("frames", default=90, min=1, max=2000,
                             tooltip="Number of frames of the video (1 renders just the first pose)."),
                io.Float.Input("fps", default=30.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frames per second of the video (90 frames at 30 fps = 3 s)."),
                io.Float.Input("translate_x", default=0.04, min=-1.0, max=1.0, step=0.005,
                               tooltip="Sideways camera move, as a fraction of the distance to the subject at the "
                                       "image centre (0.04 = 4 %). Larger shows more parallax and more inpainting."),
                io.Float.Input("translate_y", default=0.02, min=-1.0, max=1.0, step=0.005,
                               tooltip="Vertical camera move, as a fraction of the subject distance."),
                io.Float.Input("translate_z", default=0.05, min=-1.0, max=1.0, step=0.005,
                               tooltip="Forward/backward camera move, as a fraction of the subject distance "
                                       "(zoom in and dolly zoom use its size)."),
                io.Float.Input("crop", default=0.0, min=0.0, max=0.4, step=0.01,
                               tooltip="Fraction cut from every border of the frames, to hide stretched borders on "
                                       "large moves. 0 keeps the photo's full framing."),
                io.Int.Input("supersampling", default=2, min=1, max=4,
                             tooltip="Anti-aliasing: renders at this many times the size and averages. 2 is smooth; "
                                     "3-4 are slower and only a little smoother."),
                fov_input(note="Sets how depth becomes 3D shape. ", maximum=170.0),
                io.Combo.Input("format", options=["mp4", "webm", "none"], default="mp4",
                               tooltip="Video file to write to the output folder: mp4 (H.264), webm (VP9), or none "
                                       "(use the frames or VIDEO outputs, e.g. with core Save Video)."),
                io.Combo.Input("mesh_format", options=["ply", "glb", "obj", "none"], default="ply",
                               tooltip="Mesh file to write: ply (binary, readable by the old depthmap extension's "
                                       "video tools), glb or obj (vertex colours, +Y up), or none."),
                io.String.Input("filename_prefix", default="3d_photo/DepthToolkit",
                                tooltip="Prefix of the video and mesh files in the output folder. The files of a "
                                        "batch appear together once all are done; a cancelled or failed run leaves "
                                        "none."),
                io.Float.Input("edge_threshold", default=DEFAULT_RELATIVE_THRESHOLD, min=0.005, max=1.0, step=0.005,
                               tooltip="How big a depth jump counts as an object edge, as a fraction of the image's "
                                       "depth range (log scale). Lower cuts more edges (more layers, more "
                                       "inpainting); higher stretches more."),
                io.Float.Input("background_extension", default=DEFAULT_BAND_FRACTION, min=0.005, max=0.3, step=0.005,
                               tooltip="How far the hidden background extends behind foreground edges, as a fraction "
                                       "of the photo's longer side. Must cover the largest gap the camera move opens."),
                io.Boolean.Input("panorama", default=False, optional=True,
                                 tooltip="The image is a 360° equirectangular panorama (2:1, e.g. with depth from "
                                         "Depth Estimate in panorama mode): the 3D photo is built on the six faces "
                                         "of a cube around the centre and the video looks around one full turn "
                                         "from there while the camera follows the path. fov is then the video's "
                                         "field of view (0 = 90°); crop is not used."),
            ],
            outputs=[
                io.Image.Output("frames", tooltip="The rendered video frames, an IMAGE batch."),
                io.Video.Output("video", tooltip="The frames as a VIDEO (at fps), for core Save Video."),
                io.String.Output("mesh_path", tooltip="Path of the written mesh file (one line per image), empty "
                                                      "when mesh_format is none."),
                io.Mesh.Output("mesh", tooltip="The layered mesh of the first image as core MESH (for SaveGLB, "
                                               "Preview3D)."),
            ],
        )

    @classmethod
    def execute(cls, image, depth, path, frames, fps, translate_x, translate_y, translate_z, crop, supersampling, fov,
                format, mesh_format, filename_prefix, edge_threshold=DEFAULT_RELATIVE_THRESHOLD,
                background_extension=DEFAULT_BAND_FRACTION, panorama=False) -> io.NodeOutput:
        images = to_rgb(image)
        batch, height, width = images.shape[:3]
        settings = Photo3DSettings(path, frames, fps, (translate_x, translate_y, translate_z), crop, supersampling,
                                   fov, format, mesh_format, edge_threshold, background_extension, panorama)
        settings.validate()
        device = compute_device()
        inpainter = load_inpainter(model_files().inpainting_networks(), device)
        folder, filename, counter, subfolder = output_paths(filename_prefix, width, height)
        video_path, mesh_paths = numbered_file_names(folder, filename, counter, batch, settings)
        result = make_photo3d(images, read_depth(depth), settings, video_path, mesh_paths, device, inpainter,
                              comfy_progress(settings.steps(batch)))
        # An output node must say what it wrote, or /history and the editor never show the files.
        written = {"3d": [ui.SavedResult(mesh.name, subfolder, io.FolderType.output) for mesh in result.mesh_paths]}
        if result.video_path is not None:
            written |= ui.PreviewVideo([ui.SavedResult(result.video_path.name, subfolder,
                                                       io.FolderType.output)]).as_dict()
        written["text"] = [report_fov("3D Photo", result.fov_sources)]
        preview = {key: value for key, value in written.items() if value} or None
        video = InputImpl.VideoFromComponents(
            Types.VideoComponents(images=result.frames, audio=None, frame_rate=Fraction(round(fps * 1000), 1000)))
        return io.NodeOutput(to_output_device(result.frames), video, "\n".join(map(str, result.mesh_paths)),
                             Types.MESH(*result.first_mesh), ui=preview)


NODES = [InpaintedMeshVideo]
