"""DepthToolkit.InpaintedMeshVideo: one photo + depth -> layered, inpainted 3D mesh and a camera-move video, headless."""
from __future__ import annotations

import os
from fractions import Fraction

import torch
from comfy_api.latest import InputImpl, Types, io, ui

from ..depth_core.camera import Pinhole, choose_fov
from ..depth_core.depth import match_depth_to_images
from ..depth_core.image import to_rgb
from ..depth_core.photo3d import (DEFAULT_BAND_FRACTION, DEFAULT_RELATIVE_THRESHOLD, PATH_NAMES, build_photo3d,
                                  camera_path, core_mesh_arrays, photo_distance, render_path, write_mesh)
from ..depth_core.panorama import (LOOK_AROUND_FOV_DEGREES, check_panorama, look_around_frame_size,
                                   look_around_frames, panorama_photo3d)
from ..depth_core.photo3d.video import write_video
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
                                tooltip="Prefix of the video and mesh files in the output folder."),
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
        if panorama:
            check_panorama(images)
        depth_value = match_depth_to_images(read_depth(depth), batch, (height, width))
        device = compute_device()
        inpainter = None
        networks = model_files().inpainting_networks()
        if networks is not None:
            from ..depth_core.photo3d.networks import load_context_aware_inpainter

            inpainter = load_context_aware_inpainter(*networks, device=device)

        folder, filename, counter, subfolder = output_paths(filename_prefix, width, height)
        progress = comfy_progress(batch * (frames + 1))
        clips, mesh_paths, first_mesh, cameras = [], [], None, []
        for index in range(batch):
            rgb = images[index].permute(2, 0, 1).to(device)
            distance = photo_distance(depth_value, index).to(device)
            if panorama:
                start = index * (frames + 1)
                clip, layered = _panorama_clip(rgb, distance, fov, path, frames, (translate_x, translate_y, translate_z),
                                               supersampling, background_extension, edge_threshold, inpainter,
                                               lambda i, n, start=start: progress(start + i, batch * (frames + 1)))
                clips.append(clip.float().cpu())
                if mesh_format != "none":
                    mesh_file = os.path.join(folder, f"{filename}_{counter + index:05}_.{mesh_format}")
                    mesh_paths.append(write_mesh(layered, mesh_file))
                if first_mesh is None:
                    first_mesh = Types.MESH(*core_mesh_arrays(layered))
                continue
            fov_degrees, source = choose_fov(fov, depth_value.fov_for(index))
            cameras.append(source)
            camera = Pinhole.from_fov(width, height, fov_degrees)
            ldi, layered = build_photo3d(rgb, distance, camera, band_fraction=background_extension,
                                         relative_threshold=edge_threshold, inpainter=inpainter)
            done = index * (frames + 1) + 1
            progress(done, batch * (frames + 1))
            scale = ldi.mean_location
            moves = camera_path(path, frames, (translate_x * scale, translate_y * scale, translate_z * scale),
                                mean_location=scale)
            clip = render_path(layered.mesh, camera, moves, supersampling, crop,
                               progress=lambda i, n, done=done: progress(done + i, batch * (frames + 1)))
            clips.append(clip.float().cpu())
            if mesh_format != "none":
                mesh_file = os.path.join(folder, f"{filename}_{counter + index:05}_.{mesh_format}")
                mesh_paths.append(write_mesh(layered, mesh_file))
            if first_mesh is None:
                first_mesh = Types.MESH(*core_mesh_arrays(layered))
            del ldi, layered

        all_frames = torch.cat(clips)
        # An output node must say what it wrote, or /history and the editor never show the files.
        written = {"3d": [ui.SavedResult(os.path.basename(mesh), subfolder, io.FolderType.output)
                          for mesh in mesh_paths]}
        if format != "none":
            video_file = f"{filename}_{counter:05}_.{format}"
            write_video(all_frames, os.path.join(folder, video_file), fps, format)
            written |= ui.PreviewVideo([ui.SavedResult(video_file, subfolder, io.FolderType.output)]).as_dict()
        written["text"] = [report_fov("3D Photo", cameras)]
        preview = {key: value for key, value in written.items() if value} or None
        video = InputImpl.VideoFromComponents(
            Types.VideoComponents(images=all_frames, audio=None, frame_rate=Fraction(round(fps * 1000), 1000)))
        return io.NodeOutput(to_output_device(all_frames), video, "\n".join(mesh_paths), first_mesh, ui=preview)


def _panorama_clip(rgb, distance, fov, path, frames, translate, supersampling, background_extension, edge_threshold,
                   inpainter, progress):
    """The look-around clip and layered mesh of one panorama (see depth_core.panorama.panorama_photo3d)."""
    layered = panorama_photo3d(rgb, distance, band_fraction=background_extension, relative_threshold=edge_threshold,
                               inpainter=inpainter)
    progress(1, frames + 1)
    view_fov = fov if fov > 0 else LOOK_AROUND_FOV_DEGREES
    frame_width, frame_height = look_around_frame_size(rgb.shape[-1], view_fov)
    scale = layered.mean_location
    clip = look_around_frames(layered.mesh, frames, frame_width, frame_height, view_fov, path,
                              tuple(move * scale for move in translate), supersampling,
                              progress=lambda i, n: progress(1 + i, frames + 1))
    return clip, layered


NODES = [InpaintedMeshVideo]
