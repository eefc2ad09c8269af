"""NormalMap: surface normals from depth, true geometry or the old extension's Sobel look."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..depth_core.camera import choose_fov
from ..depth_core.normals import DEFAULT_DEPTH_RANGE, normal_map
from ._common import CATEGORY, compute_device, depth_input, fov_input, read_depth, report_fov, to_output_device

METHOD_OPTIONS = {"geometric": "geometric", "sobel (old extension)": "sobel"}
GREEN_OPTIONS = {"OpenGL (Y up)": "opengl", "DirectX (Y down)": "directx"}


class NormalMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.NormalMap",
            display_name="Depth to Normal Map",
            category=f"{CATEGORY}/geometry",
            description=(
                "Turns depth into a normal map (RGB = (normal + 1) / 2, x right, y up, z towards the viewer). "
                "geometric: back-projects the depth through a camera with the given field of view and takes the "
                "normals of that surface, so planes and round objects get their true orientation (metric depth in "
                "metres; relative depth spread over the given far/near range). sobel: the old depthmap extension's "
                "method (Sobel slopes of the 16-bit depth picture, optional blurs), for its softer look."
            ),
            inputs=[
                depth_input(),
                io.Combo.Input("method", options=list(METHOD_OPTIONS), default="geometric",
                               tooltip="geometric: true surface normals through the camera. sobel (old extension): "
                                       "slopes of the depth picture, as the depthmap extension made them."),
                fov_input(note="geometric: "),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Scales the slopes: 1 = the true surface, 0 = flat, above 1 exaggerated "
                                       "bumps."),
                io.Combo.Input("green", options=list(GREEN_OPTIONS), default="OpenGL (Y up)",
                               tooltip="Green channel convention: OpenGL (Blender, Unity, glTF) has green = up; "
                                       "DirectX (Unreal, 3ds Max) has green = down."),
                io.Float.Input("depth_range", default=DEFAULT_DEPTH_RANGE, min=1.01, max=1000.0, step=0.5,
                               tooltip="geometric, relative depth only: how many times farther the farthest point "
                                       "is than the nearest (relative depth has no scale of its own). Ignored for "
                                       "metric depth."),
                io.Int.Input("sobel_kernel", default=3, min=1, max=31, step=2,
                             tooltip="sobel: Sobel kernel size (odd); larger = smoother slopes."),
                io.Int.Input("pre_blur", default=0, min=0, max=31, step=1,
                             tooltip="sobel: Gaussian blur of the depth before the slopes, odd kernel size; 0 = off."),
                io.Int.Input("post_blur", default=0, min=0, max=31, step=1,
                             tooltip="sobel: Gaussian blur of the normals, odd kernel size; 0 = off."),
                io.Boolean.Input("invert", default=False,
                                 tooltip="Flip the normals, for depth whose near and far are swapped (sobel: the "
                                         "old extension's invert)."),
            ],
            outputs=[io.Image.Output("normal_map", tooltip="Normal map RGB 0..1, same size as the depth.")],
        )

    @classmethod
    def execute(cls, depth, method: str, fov: float, strength: float, green: str, depth_range: float,
                sobel_kernel: int, pre_blur: int, post_blur: int, invert: bool) -> io.NodeOutput:
        if method not in METHOD_OPTIONS or green not in GREEN_OPTIONS:
            raise ValueError(f"method must be one of {list(METHOD_OPTIONS)} and green one of {list(GREEN_OPTIONS)}.")
        value = read_depth(depth)
        cameras = [choose_fov(fov, value.fov_for(index)) for index in range(value.batch_size)]
        options = dict(strength=strength, green=GREEN_OPTIONS[green], depth_range=depth_range, pre_blur=pre_blur,
                       sobel_kernel=sobel_kernel, post_blur=post_blur, invert=invert, device=compute_device())
        if len({camera for camera, _ in cameras}) == 1:
            picture = normal_map(value, METHOD_OPTIONS[method], cameras[0][0], **options)
        else:  # each photo through its own camera
            picture = torch.cat([normal_map(value.select(i), METHOD_OPTIONS[method], camera, **options)
                                 for i, (camera, _) in enumerate(cameras)])
        used = report_fov("Normal Map", [source for _, source in cameras]) if method == "geometric" else ""
        return io.NodeOutput(to_output_device(picture), ui=ui.PreviewText(used) if used else None)


NODES = [NormalMap]
