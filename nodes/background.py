"""Background removal in the depth graph: DepthToolkit.RemoveBackground and DepthToolkit.MaskDepth."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..depth_core.background import (DEFAULT_MODEL, MaskSettings, known_contract, load_network, mask_depth,
                                     parse_colour, remove_background)
from ._common import (CATEGORY, comfy_progress, compute_device, depth_input, depth_outputs, depth_picture,
                      read_depth, to_output_device)
from ._model_folders import model_files

MODEL_TOOLTIP = (
    "Segmentation network (run with onnxruntime, on the GPU when onnxruntime-gpu is installed). "
    "isnet-general-use: sharp general cut-outs; u2net: the old extension's default; u2netp: tiny and fast; "
    "u2net_human_seg: people; isnet-anime: anime; birefnet-*: the most accurate and slowest. Files are looked up "
    "in models/rembg/, models/background_removal/ and rembg's own folder (~/.u2net); any .onnx file you put in "
    "models/rembg/ is listed too (a name starting like a known model uses that model's input rule)."
)


class RemoveBackground(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.RemoveBackground",
            display_name="Remove Background",
            category=f"{CATEGORY}/background",
            description="Cuts the main subject out of every image with a rembg model (U²-Net, IS-Net, BiRefNet) and "
                        "returns the cut-out and a foreground mask. Plug the mask into Depth Estimate's mask "
                        "(background set far before depth) or into Mask Depth (after depth).",
            inputs=[
                io.Image.Input("images", tooltip="Images to cut out; RGBA (alpha ignored) and grayscale are "
                                                 "accepted. The network sees each image resized to its own size "
                                                 "(1024x1024 for IS-Net/BiRefNet, 320x320 for U²-Net)."),
                io.Combo.Input("model", options=model_files().background_choices(), default=DEFAULT_MODEL,
                               tooltip=MODEL_TOOLTIP),
                io.Boolean.Input("download", default=True,
                                 tooltip="On: a known model that is not on disk is downloaded once from rembg's "
                                         "GitHub release into models/rembg/ (checksum verified). Off: never "
                                         "download; a missing model stops with the address and the folder to "
                                         "put it in."),
                io.Combo.Input("background", options=["alpha", "colour"], default="alpha",
                               tooltip="alpha: RGBA cut-out (transparent background, saved as such by Save "
                                       "Image). colour: the subject on a solid colour, RGB."),
                io.String.Input("colour", default="#000000",
                                tooltip="Background colour for background = colour, as #RRGGBB or r, g, b "
                                        "(0 to 255)."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Foreground probability from which a pixel counts as subject. 0 keeps the "
                                       "network's soft mask (semi-transparent edges, hair); above 0 gives a hard "
                                       "mask."),
                io.Int.Input("grow", default=0, min=-256, max=256, step=1,
                             tooltip="Pixels to grow the mask by (negative shrinks it), e.g. to keep a halo of "
                                     "background or to trim a fringe."),
                io.Float.Input("feather", default=0.0, min=0.0, max=256.0, step=0.5,
                               tooltip="Width in pixels of a soft transition added at the mask edge (after "
                                       "growing)."),
                io.Boolean.Input("alpha_matting", default=False,
                                 tooltip="Refine the edge with closed-form alpha matting (pymatting, as rembg's "
                                         "-a option) and recover the subject's own colours there. Slow on large "
                                         "images: seconds per megapixel on the CPU."),
            ],
            outputs=[
                io.Image.Output("image", tooltip="The cut-out: RGBA for background = alpha, RGB on the colour "
                                                 "otherwise. Inside the mask the pixels are the input's."),
                io.Mask.Output("mask", tooltip="Foreground mask, 1 = subject, 0 = background. Note: core Load "
                                               "Image's mask has the opposite polarity (1 = transparent); use "
                                               "Invert Mask to combine them."),
            ],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, model: str, download: bool, background: str, colour: str,
                threshold: float, grow: int, feather: float, alpha_matting: bool) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise ValueError("The image batch is empty: connect at least one image.")
        fill = parse_colour(colour) if background == "colour" else None
        settings = MaskSettings(threshold=threshold, grow=grow, feather=feather, alpha_matting=alpha_matting)
        path = model_files(allow_download=download).background_model(model)
        device = compute_device()
        network = load_network(path, known_contract(model), device)
        result = remove_background(network, images, settings, fill, device, comfy_progress(images.shape[0]))
        cutouts, masks = result.stacked()
        return io.NodeOutput(to_output_device(cutouts), to_output_device(masks))


class MaskDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.MaskDepth",
            display_name="Mask Depth",
            category=f"{CATEGORY}/background",
            description="Sets the background of an existing depth map to the farthest depth of the subject (the old "
                        "extension's background removal after depth), so meshes, stereo and 3D photos show the "
                        "subject alone against a flat far plane.",
            inputs=[
                depth_input(),
                io.Mask.Input("mask", tooltip="Subject mask, 1 = keep (Remove Background's mask). A mask of another "
                                              "size is resized to the depth; one mask applies to every frame."),
                io.Boolean.Input("invert_mask", default=False,
                                 tooltip="Turn on for masks where 1 = background, such as core Load Image's mask "
                                         "(1 = transparent)."),
            ],
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, depth, mask: torch.Tensor, invert_mask: bool) -> io.NodeOutput:
        value = read_depth(depth)
        masked = mask_depth(value, 1.0 - mask if invert_mask else mask)
        return io.NodeOutput(masked, depth_picture(masked))


NODES = [RemoveBackground, MaskDepth]
