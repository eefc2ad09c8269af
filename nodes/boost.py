"""DepthToolkit.BoostMerge: high-resolution depth by content-adaptive multi-resolution merging (depth_core.boost)."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..depth_core.boost import BoostSettings, boost_depth, merger_for
from ..depth_core.image import bhwc_to_bchw, to_rgb
from ..depth_core.model_files import MERGE_METHODS as MERGE_METHOD_NAMES
from ._common import CATEGORY, DepthModelType, comfy_progress, depth_outputs, depth_picture, ready_estimator
from ._model_folders import model_files

MERGE_METHODS = list(MERGE_METHOD_NAMES)


def choose_merger(method: str, allow_download: bool = True):
    """The merger for `method`: auto uses pix2pix when its weights are on disk, else the frequency split; pix2pix
    downloads the weights when they are missing."""
    return merger_for(model_files(allow_download, comfy_progress(1)).merge_network(method))


class BoostMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.BoostMerge",
            display_name="Boost Merge (high-res depth)",
            category=f"{CATEGORY}/depth",
            description="High-resolution depth from any depth network (BoostingMonocularDepth, Miangoleh et al. "
                        "CVPR 2021): estimates the whole image at its receptive field and at the highest size the "
                        "image's edges support (R20), merges them, then refines high-detail patches and blends them "
                        "in. Much slower than Depth Estimate (2 network passes per patch). Drop-in replacement for "
                        "Depth Estimate: same DEPTH and depth image outputs; metric models (ZoeDepth) stay in metres.",
            inputs=[
                io.Image.Input("images", tooltip="Images to estimate depth for; each is boosted on its own. RGBA "
                                                 "and grayscale are accepted."),
                DepthModelType.Input("depth_model", tooltip="A network from Load Depth Model. Its receptive field "
                                                            "(448 LeReS, 384 DPT-384 and ZoeDepth, 512 BEiT-512, 518 "
                                                            "Depth Anything) sets the base resolution."),
                io.Int.Input("max_whole_size", default=1600, min=256, max=4096, step=32,
                             tooltip="Rmax: the largest size the whole image is estimated at (the old extension's "
                                     "'Maximum wholesize for boost', default 1600; the paper uses 3000). Higher "
                                     "keeps more detail in busy images but needs more memory and time."),
                io.Combo.Input("merge_method", options=MERGE_METHODS, default="auto",
                               tooltip="How the low- and high-resolution estimates are combined. auto: the authors' "
                                       "pix2pix merge network if latest_net_G.pth is in models/depth/, else the "
                                       "frequency split. pix2pix: always the network (downloaded on first use). "
                                       "frequency split: weight-free, low frequencies from the low-resolution "
                                       "estimate and details from the high-resolution one."),
                io.Combo.Input("normalize", options=["per image", "whole batch"], default="per image",
                               tooltip="How depth_image is scaled to 0..1. whole batch uses one range for all "
                                       "frames. The DEPTH output keeps raw values either way."),
            ],
            outputs=[
                *depth_outputs(),
                io.String.Output("report", tooltip="Which merge was used, how many network passes it took, the "
                                                   "whole-image size R20 and the number of patches per image."),
            ],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, depth_model, max_whole_size: int, merge_method: str,
                normalize: str) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise ValueError("The image batch is empty: connect at least one image.")
        estimator = ready_estimator(depth_model)
        merger = choose_merger(merge_method)
        rgb = bhwc_to_bchw(to_rgb(images)).float()
        settings = BoostSettings(max_whole_size=max_whole_size)
        generator = getattr(merger, "generator", None)
        if generator is not None:
            generator.to(estimator.device)
        try:
            depth, report = boost_depth(estimator, rgb, merger, settings, progress=comfy_progress(1))
        finally:
            if generator is not None:
                generator.to("cpu")  # ComfyUI's memory management does not know this network: free the GPU
        text = report.describe()
        return io.NodeOutput(depth, depth_picture(depth, per_image=normalize == "per image"), text,
                             ui=ui.PreviewText(text))


NODES = [BoostMerge]
