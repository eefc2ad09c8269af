"""StereoSBS and Anaglyph: stereo pairs for VR headsets, cross-eyed/parallel viewing and coloured glasses."""
from __future__ import annotations

import os
import random
import statistics
import string

import torch
from comfy_api.latest import io
from PIL import Image

import folder_paths

from ..depth_core.anaglyph import METHODS, anaglyph
from ..depth_core.camera import choose_fov
from ..depth_core.depth import Depth
from ..depth_core.files import atomic_path
from ..depth_core.image import image_to_uint8, to_rgb
from ..depth_core.stereo import DEPTH_MODES, FILL_MODES, LAYOUTS, StereoSettings, compose_layout, stereo_views
from ._common import (CATEGORY, comfy_progress, compute_device, depth_input, fov_input, output_paths, read_depth,
                      report_fov, to_output_device)

STEREO_UI_KEY = "depthtoolkit_stereo"
"""ui entry for the web extension's wiggle/anaglyph preview: one {"left": file, "right": file} per batch item,
file = {"filename", "subfolder", "type": "temp"} like core PreviewImage's entries."""

NORMALIZE_OPTIONS = ["per image", "whole batch"]

DEPTH_TOOLTIP = (
    "Depth of the image: the DEPTH output of a Depth Toolkit node (keeps metres for metric models), or any depth "
    "IMAGE with near = white (another pack's depth, a loaded PNG). A depth of another size than the image is "
    "resized to it (bilinear); a single depth map is used for every frame of a batch."
)


def _stereo_inputs(with_layout: bool) -> list:
    inputs = [
        io.Float.Input("divergence", default=2.5, min=-20.0, max=20.0, step=0.05,
                       tooltip="3D strength: how far the nearest point shifts between the two eyes, in % of the "
                               "image width (2.5 as in the old depthmap extension; 1-5 is comfortable). 0 gives two "
                               "identical views, negative values reverse depth. Ignored for metric depth, which "
                               "uses baseline and field of view."),
        io.Float.Input("separation", default=0.0, min=-10.0, max=10.0, step=0.05,
                       tooltip="Extra shift of each eye in opposite directions, in % of the width: positive moves "
                               "the whole scene back behind the screen, negative towards the viewer."),
        io.Float.Input("convergence", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Which depth sits at the screen plane: 0 = the farthest point (everything comes out "
                               "of the screen, as in the old extension), 1 = the nearest point (everything behind "
                               "it, easiest on the eyes), 0.5 = the middle distance."),
        io.Float.Input("balance", default=0.0, min=-1.0, max=1.0, step=0.05,
                       tooltip="How the shift is shared between the eyes: 0 = half each; -1 = the left eye is the "
                               "unchanged original (all distortion in the right eye); 1 = the right eye is."),
        io.Float.Input("depth_exponent", default=1.0, min=0.1, max=4.0, step=0.05,
                       tooltip="Depth curve for relative depth: shift grows with nearness ** exponent. Above 1 "
                               "flattens the background and keeps the 3D in the foreground; 1 = linear."),
        io.Combo.Input("fill", options=list(FILL_MODES), default="background",
                       tooltip="How to fill the gaps that open beside near objects. background: the surface behind "
                               "the object, smoothed (best; no stretched edges). polylines_sharp / polylines_soft: "
                               "the old extension's polyline fills (edges stretched across the gap). interpolate: a "
                               "colour ramp across the gap. nearest: each side stretched to the middle. none: gaps "
                               "stay black."),
    ]
    if with_layout:
        inputs += [
            io.Combo.Input("layout", options=list(LAYOUTS), default="side-by-side",
                           tooltip="side-by-side: left | right, full width (VR headsets, parallel viewing). half: "
                                   "each eye squeezed to half width/height so the frame keeps its size (3D TVs, "
                                   "'half SBS' / 'half OU' players). top-bottom: left above right. left/right "
                                   "only: a single eye."),
            io.Boolean.Input("swap_eyes", default=False,
                             tooltip="Put the right eye first: cross-eyed viewing of a side-by-side picture, or "
                                     "players that expect right-left. For the single-eye layouts it shows the "
                                     "other eye."),
        ]
    inputs += [
        io.Combo.Input("depth_mode", options=list(DEPTH_MODES), default="auto",
                       tooltip="auto: metric for metric depth (metres), else relative. relative: the depth is "
                               "normalized to 0..1 nearness and divergence sets the strength. metric: real "
                               "geometry, disparity = baseline x focal / depth (needs metric depth)."),
        io.Float.Input("baseline_mm", default=65.0, min=1.0, max=10000.0, step=1.0,
                       tooltip="Metric depth only: distance between the two eyes/cameras in millimetres (human "
                               "eyes: about 65). Larger = stronger 3D, like a miniature scene."),
        fov_input("fov_degrees", note="Metric depth only: sets the focal length (one for the whole batch: the "
                                      "median of the fields of view the depth carries). "),
        io.Combo.Input("normalize", options=NORMALIZE_OPTIONS, default="per image",
                       tooltip="per image: each frame's depth spans the full 3D range. whole batch: one range for "
                               "all frames, so the 3D strength does not pump in a video."),
    ]
    return inputs


def _settings(divergence, separation, convergence, balance, depth_exponent, depth_mode, baseline_mm, fov_degrees,
              normalize, depth: Depth) -> tuple[StereoSettings, str]:
    """The settings, and which field of view metric depth uses (empty when the stereo is relative)."""
    carried = None if depth.fov_degrees is None else statistics.median(depth.fov_degrees)
    fov, source = choose_fov(fov_degrees, carried)
    settings = StereoSettings(divergence=divergence, separation=separation, convergence=convergence, balance=balance,
                              exponent=depth_exponent, depth_mode=depth_mode, baseline_mm=baseline_mm,
                              fov_degrees=fov, per_image=normalize == "per image")
    metric = depth_mode == "metric" or (depth_mode == "auto" and depth.is_metric)
    return settings, report_fov("Stereo", [source]) if metric else ""


def save_pngs(images: torch.Tensor, prefix: str, folder_type: str = "temp", tag: str = "") -> list[dict]:
    """Save IMAGE [B,H,W,C] as PNGs in ComfyUI's temp (like core PreviewImage) or output folder, named
    `<prefix>_00001_.png`, or `<prefix>_00001<tag>.png` with a tag (the VR layout players read from the name, after
    the counter so ComfyUI's numbering still finds it); returns the ui entries."""
    height, width = images.shape[1], images.shape[2]
    base = folder_paths.get_temp_directory() if folder_type == "temp" else folder_paths.get_output_directory()
    folder, filename, counter, subfolder = output_paths(prefix, width, height, base)
    results = []
    for index in range(images.shape[0]):
        name = f"{filename}_{counter + index:05}{tag or '_'}.png"
        with atomic_path(os.path.join(folder, name)) as partial:
            Image.fromarray(image_to_uint8(images[index])).save(partial, format="PNG", compress_level=1)
        results.append({"filename": name, "subfolder": subfolder, "type": folder_type})
    return results


def _preview_ui(result: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> dict:
    """The normal image preview of the result plus the left/right eye files for the web extension's viewers."""
    tag = "".join(random.choice(string.ascii_lowercase) for _ in range(6))
    shown = result if result.shape[-1] in (1, 3, 4) else result[..., :3]
    images = save_pngs(shown, f"DepthToolkit_stereo_{tag}")
    left_files = save_pngs(left, f"DepthToolkit_stereo_{tag}_left")
    right_files = save_pngs(right, f"DepthToolkit_stereo_{tag}_right")
    pairs = [{"left": lf, "right": rf} for lf, rf in zip(left_files, right_files)]
    return {"images": images, "animated": (False,), STEREO_UI_KEY: pairs}


class StereoSBS(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.StereoSBS",
            display_name="Stereo Image (SBS)",
            category=f"{CATEGORY}/stereo",
            description=(
                "Turns an image (or video frames) and its depth into a stereo pair: side-by-side or top-bottom, "
                "full or half size, or single eyes. Nearer pixels correctly hide farther ones, shifts are "
                "sub-pixel exact, and gaps beside near objects are filled from the background. Works with "
                "relative depth (divergence) or metric depth (baseline and field of view)."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The picture(s) to make 3D; a batch is treated as video frames. "
                                                 "Gray and RGBA images are used as RGB (alpha is dropped)."),
                depth_input("depth", tooltip=DEPTH_TOOLTIP),
                *_stereo_inputs(with_layout=True),
            ],
            outputs=[
                io.Image.Output("stereo", tooltip="The stereo picture in the chosen layout."),
                io.Image.Output("left", tooltip="The left eye's view, same size as the input."),
                io.Image.Output("right", tooltip="The right eye's view, same size as the input."),
            ],
        )

    @classmethod
    def execute(cls, images, depth, divergence, separation, convergence, balance, depth_exponent, fill, layout,
                swap_eyes, depth_mode, baseline_mm, fov_degrees, normalize) -> io.NodeOutput:
        depth = read_depth(depth)
        settings, used = _settings(divergence, separation, convergence, balance, depth_exponent, depth_mode,
                                   baseline_mm, fov_degrees, normalize, depth)
        left, right = stereo_views(images, depth, settings, fill, compute_device(),
                                       comfy_progress(images.shape[0]))
        stereo = compose_layout(left, right, layout, swap_eyes)
        ui_data = _preview_ui(stereo, left, right) | ({"text": [used]} if used else {})
        return io.NodeOutput(to_output_device(stereo), to_output_device(left), to_output_device(right), ui=ui_data)


class Anaglyph(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.Anaglyph",
            display_name="Anaglyph 3D",
            category=f"{CATEGORY}/stereo",
            description=(
                "Makes an anaglyph for coloured 3D glasses (red/cyan, green/magenta, amber/blue), either from a "
                "stereo pair (connect left and right) or straight from an image and its depth. Dubois methods give "
                "the truest colours with the least ghosting."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The left eye's view of a stereo pair, or the single picture to "
                                                 "make 3D when a depth is connected instead of 'right'."),
                io.Image.Input("right", optional=True,
                               tooltip="The right eye's view (same size as 'images'). When connected, the pair is "
                                       "used as it is and depth and the 3D settings are ignored."),
                depth_input("depth", tooltip=DEPTH_TOOLTIP + " Used when 'right' is not connected.", optional=True),
                io.Combo.Input("method", options=list(METHODS), default="dubois red/cyan",
                               tooltip="Glasses and colour method. dubois: least-squares colours (best, in linear "
                                       "light). color: red from the left eye, green/blue from the right. half-color: "
                                       "left eye in gray (less flicker on reds). gray: no colour, least ghosting."),
                io.Boolean.Input("swap_eyes", default=False,
                                 tooltip="Exchange the eyes: for glasses worn the other way round (cyan on the "
                                         "left) or a pair connected right-first."),
                *_stereo_inputs(with_layout=False),
            ],
            outputs=[io.Image.Output("anaglyph", tooltip="The anaglyph, RGB 0..1, same size as the input.")],
        )

    @classmethod
    def execute(cls, images, method, swap_eyes, divergence, separation, convergence, balance, depth_exponent, fill,
                depth_mode, baseline_mm, fov_degrees, normalize, right=None, depth=None) -> io.NodeOutput:
        if right is not None:
            left, right = _match_pair(to_rgb(images), to_rgb(right))
        elif depth is not None:
            depth = read_depth(depth)
            settings, _ = _settings(divergence, separation, convergence, balance, depth_exponent, depth_mode,
                                    baseline_mm, fov_degrees, normalize, depth)
            left, right = stereo_views(images, depth, settings, fill, compute_device(),
                                       comfy_progress(images.shape[0]))
        else:
            raise ValueError("Anaglyph needs either the right eye's view (connect 'right') or a depth map for the "
                             "image (connect 'depth').")
        result = anaglyph(left.to(compute_device()), right.to(compute_device()), method, swap_eyes).cpu()
        ui_data = _preview_ui(result, left, right)
        return io.NodeOutput(to_output_device(result), ui=ui_data)


def _match_pair(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if left.shape[1:3] != right.shape[1:3]:
        raise ValueError(f"The left view is {left.shape[2]}x{left.shape[1]} but the right view is "
                         f"{right.shape[2]}x{right.shape[1]}: resize one so both have the same size.")
    if left.shape[0] != right.shape[0]:
        if 1 not in (left.shape[0], right.shape[0]):
            raise ValueError(f"Got {left.shape[0]} left views and {right.shape[0]} right views: give the same "
                             "number of each, or a single view to pair with every frame.")
        batch = max(left.shape[0], right.shape[0])
        left, right = left.expand(batch, -1, -1, -1), right.expand(batch, -1, -1, -1)
    return left.cpu().float(), right.cpu().float()


NODES = [StereoSBS, Anaglyph]
