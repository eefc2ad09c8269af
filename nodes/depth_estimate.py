"""Loading depth networks and estimating depth: DepthToolkit.LoadDepthModel and DepthToolkit.DepthEstimate."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.model_patcher

from ..depth_core.depth import set_outside_mask_to_far
from ..depth_core.estimate import DepthEstimator
from ..depth_core.panorama import estimate_panorama_depth
from ..depth_core.registry import build_estimator
from ._common import CATEGORY, DepthModelType, comfy_progress, depth_outputs, depth_picture, ready_estimator
from ._model_folders import model_files


def model_choices() -> list[str]:
    """Known models first (downloaded on first use), then every other checkpoint file found on disk."""
    return model_files().depth_choices()


def resolve_model_path(choice: str) -> str:
    return str(model_files(progress=comfy_progress(1)).depth_network(choice))


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision != "auto":
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if device.type == "cpu":
        return torch.float32
    if comfy.model_management.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if comfy.model_management.should_use_fp16(device) else torch.float32


@dataclass
class LoadedDepthModel:
    """What travels on a DEPTHTOOLKIT_MODEL socket: the network, and the patcher through which ComfyUI's memory
    management moves it onto the GPU when needed and off it when other models need room."""

    estimator: DepthEstimator
    patcher: comfy.model_patcher.ModelPatcher


class LoadDepthModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.LoadDepthModel",
            display_name="Load Depth Model",
            category=f"{CATEGORY}/depth",
            description="Loads a depth estimation network (Depth Anything V2, MiDaS/DPT, LeReS, ZoeDepth) from "
                        "models/depth/ or models/depthanything/. A known model that is missing is downloaded from "
                        "its official source into models/depth/ and checked against its hash.",
            inputs=[
                io.Combo.Input("model", options=model_choices(), default="depth_anything_v2_vits.pth",
                               tooltip="Depth network. Depth Anything V2 Small is fast and Apache-2.0; Base/Large "
                                       "are sharper (CC-BY-NC-4.0); MiDaS DPT BEiT-L 512 is the sharpest MiDaS. "
                                       "Known models are downloaded on first use; any checkpoint file you put in "
                                       "models/depth/ is listed too."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="auto: ComfyUI's device (the GPU when there is one). cpu: always on the "
                                       "processor, slower but independent of VRAM."),
                io.Combo.Input("precision", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="auto: bf16 or fp16 on a GPU that supports it, fp32 on the CPU. fp32 is the "
                                       "most exact; half precision halves memory."),
            ],
            outputs=[DepthModelType.Output("depth_model", tooltip="The loaded depth network, for Depth Estimate "
                                                                   "and Boost Merge.")],
        )

    @classmethod
    def execute(cls, model: str, device: str, precision: str) -> io.NodeOutput:
        load_device = comfy.model_management.get_torch_device() if device == "auto" else torch.device("cpu")
        offload_device = comfy.model_management.unet_offload_device() if device == "auto" else torch.device("cpu")
        path = resolve_model_path(model)
        estimator = build_estimator(path, device=offload_device, dtype=choose_dtype(precision, load_device))
        patcher = comfy.model_patcher.ModelPatcher(estimator.network, load_device=load_device,
                                                   offload_device=offload_device)
        return io.NodeOutput(LoadedDepthModel(estimator, patcher))


RESOLUTION_MODES = ["native", "match input", "custom"]
PANORAMA_MODES = {"off": None, "360° icosahedral views": "icosahedral", "360° cube views": "cube"}


class DepthEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.DepthEstimate",
            display_name="Depth Estimate",
            category=f"{CATEGORY}/depth",
            description="Estimates depth for every image of a batch. Returns the raw prediction with its meaning "
                        "(DEPTH, for the geometry nodes) and a grayscale picture (near = white).",
            inputs=[
                io.Image.Input("images", tooltip="Images to estimate depth for; RGBA and grayscale are accepted."),
                DepthModelType.Input("depth_model", tooltip="A network from Load Depth Model."),
                io.Combo.Input("resolution", options=RESOLUTION_MODES, default="native",
                               tooltip="native: the size the network was trained at (518 for Depth Anything, "
                                       "384/512 for DPT), the most reliable. match input: the image's own size, "
                                       "more detail but can lose global structure and is slower. custom: the size "
                                       "below."),
                io.Int.Input("custom_resolution", default=518, min=64, max=4096, step=2,
                             tooltip="Network size for resolution = custom (applied like native: the shorter or "
                                     "longer side per the model's own rule, rounded to what it accepts)."),
                io.Combo.Input("normalize", options=["per image", "whole batch"], default="per image",
                               tooltip="How depth_image is scaled to 0..1. whole batch uses one range for all "
                                       "frames so a video does not flicker. The DEPTH output keeps raw values "
                                       "either way."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional subject mask (1 = keep, e.g. Remove Background's mask). Pixels "
                                      "outside it are set to the farthest depth of the subject."),
                io.Combo.Input("panorama", options=list(PANORAMA_MODES), default="off", optional=True,
                               tooltip="For 360° equirectangular panoramas (2:1): depth from overlapping "
                                       "perspective views (20 icosahedral views, or 6 padded cube faces: faster), "
                                       "aligned and blended into one panorama depth with no seam at the 360° "
                                       "border or the poles. Depth is then the distance from the centre, for Mesh "
                                       "Export's equirectangular sphere and Stereo 360. off: perspective photos."),
            ],
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, images: torch.Tensor, depth_model: LoadedDepthModel, resolution: str,
                custom_resolution: int, normalize: str, mask: torch.Tensor | None = None,
                panorama: str = "off") -> io.NodeOutput:
        if images.shape[0] == 0:
            raise ValueError("The image batch is empty: connect at least one image.")
        estimator = ready_estimator(depth_model)
        net_size = {"native": None, "match input": "match"}.get(resolution, custom_resolution)
        if panorama == "off":
            depth = estimator.predict(images, net_size, mask, progress=comfy_progress(images.shape[0]))
        else:
            depth, _ = estimate_panorama_depth(estimator, images, net_size, PANORAMA_MODES[panorama],
                                               progress=comfy_progress(3 * images.shape[0]))
            if mask is not None:
                depth = depth.with_values(set_outside_mask_to_far(depth.values, mask, depth.kind))
        return io.NodeOutput(depth, depth_picture(depth, per_image=normalize == "per image"))


NODES = [LoadDepthModel, DepthEstimate]
