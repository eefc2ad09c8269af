"""ClipRenormalize and Colorize: shape a depth map and look at it."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..depth_core.colorize import COLORMAPS, colorize_depth
from ..depth_core.depth import depth_to_image
from ..depth_core.postprocess import ClipSettings, clip_renormalize, nearness_histogram
from ._common import (CATEGORY, DepthType, comfy_progress, compute_device, depth_input, read_depth,
                      to_output_device)

NORMALIZE_OPTIONS = ["per image", "whole batch"]
METRIC_OPTIONS = ["keep metres", "relative 0..1"]
HISTOGRAM_KEY = "depthtoolkit_histogram"
HISTOGRAM_BINS = 256
PREVIEW_FRAMES = 16
"""At most this many input frames are previewed, so a long video does not write hundreds of temp PNGs per run."""


class ClipRenormalize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.ClipRenormalize",
            display_name="Clip & Renormalize Depth",
            category=f"{CATEGORY}/postprocess",
            description=(
                "Clips depth to a near/far range (or to percentiles, to drop outliers) and stretches what is left "
                "back to 0..1, with an optional gamma/contrast curve. For videos it can use one range for the whole "
                "batch, or align every frame's scale and shift to its neighbours so the depth does not flicker. "
                "Works on the normalized nearness (near = 1), like the old depthmap extension's clip option."
            ),
            inputs=[
                depth_input(),
                io.Combo.Input("mode", options=["range", "percentile"], default="range",
                               tooltip="range: near/far are positions on the 0..1 depth picture (1 = nearest). "
                                       "percentile: near/far are fractions of the pixels, e.g. far 0.02 / near 0.98 "
                                       "clips the farthest and the nearest 2% (outliers)."),
                io.Float.Input("near", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Near clip: everything nearer than this becomes the nearest value (white). "
                                       "Must be above far."),
                io.Float.Input("far", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Far clip: everything farther than this becomes the farthest value (black). "
                                       "Must be below near."),
                io.Boolean.Input("invert", default=False,
                                 tooltip="Invert the depth picture (black = near). Only the picture: the DEPTH "
                                         "output keeps larger = nearer so the geometry nodes stay correct."),
                io.Float.Input("gamma", default=1.0, min=0.05, max=20.0, step=0.01,
                               tooltip="Curve t**gamma on the clipped 0..1 depth: above 1 pushes the middle "
                                       "distances towards far (darker), below 1 towards near. 1 = unchanged."),
                io.Float.Input("contrast", default=1.0, min=0.05, max=20.0, step=0.01,
                               tooltip="S-curve around the middle: above 1 separates middle distances more and "
                                       "compresses near and far, below 1 the opposite. 1 = unchanged."),
                io.Combo.Input("normalize", options=NORMALIZE_OPTIONS, default="per image",
                               tooltip="per image: each picture uses its own nearest/farthest values (a video "
                                       "flickers). whole batch: one range for all frames."),
                io.Boolean.Input("stabilize", default=False,
                                 tooltip="For video frames: fit each frame's scale and shift to its neighbouring "
                                         "frames by least squares before clipping, then use one range for the "
                                         "whole batch (the normalize setting is then ignored). Metric depth only "
                                         "gets a scale, so metres stay metres."),
                io.Int.Input("stabilize_window", default=2, min=1, max=16,
                             tooltip="How many frames on each side every frame is aligned to when stabilizing."),
                io.Combo.Input("metric_output", options=METRIC_OPTIONS, default="keep metres",
                               tooltip="Only for metric depth (metres). keep metres: the DEPTH output is clipped in "
                                       "metres to the distances the near/far clips select and stays metric (gamma, "
                                       "contrast and invert then change only the picture). relative 0..1: the "
                                       "DEPTH output becomes the clipped, curved 0..1 relative inverse depth and "
                                       "loses its metres."),
            ],
            outputs=[
                DepthType.Output("depth", tooltip="The clipped depth: relative inverse depth 0..1 (near = 1), or "
                                                  "metres for metric input with metric_output 'keep metres'."),
                io.Image.Output("depth_image", tooltip="The clipped, curved depth picture, near = white (black if "
                                                       "inverted)."),
            ],
        )

    @classmethod
    def execute(cls, depth, mode: str, near: float, far: float, invert: bool, gamma: float, contrast: float,
                normalize: str, stabilize: bool, stabilize_window: int, metric_output: str) -> io.NodeOutput:
        value = read_depth(depth)
        settings = ClipSettings(mode=mode, near=near, far=far, per_image=normalize == "per image", gamma=gamma,
                                contrast=contrast, invert=invert, stabilize=stabilize,
                                stabilize_window=stabilize_window, keep_metric=metric_output == "keep metres")
        settings.validate()
        if value.batch_size == 0:
            raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
        result = clip_renormalize(value.to(compute_device()), settings, comfy_progress(2))
        out_depth = result.depth.to("cpu")
        picture = to_output_device(result.picture.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous())
        # Stabilizing clips with one range for the batch, so the preview uses one too.
        view_per_image = settings.per_image and not (settings.stabilize and value.batch_size > 1)
        histogram = {
            "counts": nearness_histogram(value, view_per_image, HISTOGRAM_BINS),
            "near": float(near),
            "far": float(far),
            "mode": mode,
        }
        unclipped = depth_to_image(value.to("cpu"), view_per_image)[:PREVIEW_FRAMES]
        preview = ui.PreviewImage(unclipped, cls=cls)
        return io.NodeOutput(out_depth, picture, ui={**preview.as_dict(), HISTOGRAM_KEY: [histogram]})


class Colorize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.Colorize",
            display_name="Colorize Depth",
            category=f"{CATEGORY}/postprocess",
            description="Paints a depth map with a colormap (no legend, same size as the depth), to read distances "
                        "at a glance. Combine it with the photo using core Image Stitch.",
            inputs=[
                depth_input(),
                io.Combo.Input("colormap", options=list(COLORMAPS), default="turbo",
                               tooltip="turbo: rainbow, red = near, dark blue = far. inferno: pale yellow = near, "
                                       "black = far. viridis: yellow = near, purple = far. gray: white = near."),
                io.Boolean.Input("invert", default=False, tooltip="Swap the colours of near and far."),
                io.Combo.Input("normalize", options=NORMALIZE_OPTIONS, default="per image",
                               tooltip="per image: each picture spans the whole colormap. whole batch: one range "
                                       "for all frames, so colours mean the same distance in every frame."),
            ],
            outputs=[io.Image.Output("image", tooltip="The colorized depth, RGB 0..1.")],
        )

    @classmethod
    def execute(cls, depth, colormap: str, invert: bool, normalize: str) -> io.NodeOutput:
        value = read_depth(depth)
        picture = colorize_depth(value.to(compute_device()), colormap, normalize == "per image", invert)
        return io.NodeOutput(to_output_device(picture))


NODES = [ClipRenormalize, Colorize]
