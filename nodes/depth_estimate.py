"""Loading depth networks and estimating depth: DepthToolkit.LoadDepthModel and DepthToolkit.DepthEstimate."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.model_patcher

from ..depth_core.depth import Depth, set_outside_mask_to_far
from ..depth_core.estimate import DepthEstimator
from ..depth_core.models.marigold import MarigoldEstimator, MarigoldSettings
from ..depth_core.panorama import estimate_panorama_depth
from ..depth_core.registry import MODEL_VARIANTS, build_estimator
from ..depth_core.tiling import tileable_depth
from ._common import CATEGORY, DepthModelType, comfy_progress, depth_outputs, depth_picture, ready_estimator
from ._model_folders import model_files
from .marigold import MarigoldSettingsType


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
            description="Loads a depth estimation network (Depth Anything V2 and v1, metric Depth Anything V2, "
                        "Depth Anything 3 Mono/Metric, Depth Pro (metres and the camera's field of view), MiDaS/DPT, "
                        "LeReS, ZoeDepth, Marigold) from models/depth/ or models/depthanything/. A known "
                        "model that is missing is downloaded from its official source into models/depth/ and checked "
                        "against its hash.",
            inputs=[
                io.Combo.Input("model", options=model_choices(), default="depth_anything_v2_vits.pth",
                               tooltip="Depth network. Depth Anything V2 Small is fast and Apache-2.0; Base/Large "
                                       "are sharper (CC-BY-NC-4.0); MiDaS DPT BEiT-L 512 is the sharpest MiDaS. "
                                       "Known models are downloaded on first use; any checkpoint file you put in "
                                       "models/depth/ is listed too. depth_anything_v2_metric_* give metres "
                                       "(hypersim: indoor, up to 20 m; vkitti: outdoor, up to 80 m); marigold-* "
                                       "are diffusers folders (slow, detailed; settings from Marigold Settings). "
                                       "video_depth_anything_* are video models (steady over time; metric_* in "
                                       "metres): Depth Estimate takes their image batch as one clip, Video Depth "
                                       "streams a video file. depth_pro.pt gives metres and the photo's field of "
                                       "view, which the geometry nodes then use (Apple sample-code licence); "
                                       "DA3METRIC-LARGE gives metres, DA3MONO-LARGE sharp relative depth "
                                       "(Apache-2.0)."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="auto: ComfyUI's device (the GPU when there is one). cpu: always on the "
                                       "processor, slower but independent of VRAM."),
                io.Combo.Input("precision", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="auto: bf16 or fp16 on a GPU that supports it (fp16 for Marigold), fp32 on "
                                       "the CPU. fp32 is the most exact; half precision halves memory."),
                io.Combo.Input("variant", options=list(MODEL_VARIANTS), default="auto", optional=True,
                               tooltip="What a Depth Anything file holds. auto: read from its official name. For a "
                                       "renamed file: relative (V2), v1 relative (Depth Anything v1), metric indoor "
                                       "(hypersim, max 20 m) or metric outdoor (vkitti, max 80 m); their weights "
                                       "look alike, so the name or this choice decides. Other models: auto."),
            ],
            outputs=[DepthModelType.Output("depth_model", tooltip="The loaded depth network, for Depth Estimate "
                                                                   "and Boost Merge.")],
        )

    @classmethod
    def execute(cls, model: str, device: str, precision: str, variant: str = "auto") -> io.NodeOutput:
        load_device = comfy.model_management.get_torch_device() if device == "auto" else torch.device("cpu")
        offload_device = comfy.model_management.unet_offload_device() if device == "auto" else torch.device("cpu")
        path = resolve_model_path(model)
        dtype = choose_dtype(precision, load_device)
        if os.path.isdir(path) and precision == "auto" and load_device.type != "cpu":
            dtype = torch.float16  # Marigold's authors run it in fp16
        estimator = build_estimator(path, device=offload_device, dtype=dtype, variant=variant)
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
                io.Boolean.Input("tileable", default=False, optional=True,
                                 tooltip="For textures that repeat: depth that tiles without a seam. The image is "
                                         "wrapped around by a quarter of its size on every side, estimated once, "
                                         "and every copy of each pixel is blended back onto one tile. Slower: "
                                         "2.25x the pixels at 1.5x the network size (about 4x the time)."),
                MarigoldSettingsType.Input("marigold_settings", optional=True,
                                           tooltip="Denoising steps, ensemble size, processing resolution and seed "
                                                   "from Marigold Settings; used by Marigold models only (their "
                                                   "defaults when not connected)."),
                io.Combo.Input("panorama", options=list(PANORAMA_MODES), default="off", optional=True,
                               tooltip="For 360° equirectangular panoramas (2:1): depth from overlapping "
                                       "perspective views (20 icosahedral views, or 6 padded cube faces: faster), "
                                       "aligned and blended into one panorama depth with no seam at the 360° "
                                       "border or the poles. Depth is then the distance from the centre, for Mesh "
                                       "Export's equirectangular sphere and Stereo 360. off: perspective photos."),
                io.Float.Input("fov", default=0.0, min=0.0, max=179.0, step=0.5, optional=True,
                               tooltip="Horizontal field of view of the photos in degrees, when you know it (from "
                                       "the camera's EXIF: 2 x atan(sensor width / (2 x focal length))). The depth "
                                       "carries it to Normal Map, Mesh Export, 3D Photo and Stereo, and metric models "
                                       "that need a focal length (Depth Pro, DA3 Metric) use it for their scale. "
                                       "0 = unknown: Depth Pro estimates it; other models carry none."),
            ],
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, images: torch.Tensor, depth_model: LoadedDepthModel, resolution: str,
                custom_resolution: int, normalize: str, mask: torch.Tensor | None = None,
                panorama: str = "off", tileable: bool = False,
                marigold_settings: MarigoldSettings | None = None, fov: float = 0.0) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise ValueError("The image batch is empty: connect at least one image.")
        estimator = ready_estimator(depth_model)
        net_size = {"native": None, "match input": "match"}.get(resolution, custom_resolution)
        if panorama == "off":
            depth = estimate(estimator, images, net_size, mask, tileable, marigold_settings, fov or None)
        else:
            depth, _ = estimate_panorama_depth(estimator, images, net_size, PANORAMA_MODES[panorama],
                                               progress=comfy_progress(3 * images.shape[0]))
            if mask is not None:
                depth = depth.with_values(set_outside_mask_to_far(depth.values, mask, depth.kind))
        return io.NodeOutput(depth, depth_picture(depth, per_image=normalize == "per image"))


def estimate(estimator, images: torch.Tensor, net_size, mask: torch.Tensor | None, tileable: bool,
             marigold_settings: MarigoldSettings | None, fov: float | None = None) -> Depth:
    """One depth per image, seamless when `tileable`; Marigold models get their diffusion settings; a known
    field of view travels with the depth (and sets the scale of the models whose metres depend on it)."""
    marigold = isinstance(estimator, MarigoldEstimator)
    settings = {"settings": marigold_settings} if marigold else ({"fov_degrees": fov} if fov else {})
    progress = comfy_progress(images.shape[0])
    if tileable:
        depth = tileable_depth(estimator, images, net_size, mask, progress, **settings)
    else:
        depth = estimator.predict(images, net_size, mask, progress=progress, **settings)
    return depth.with_fov(fov) if fov else depth


NODES = [LoadDepthModel, DepthEstimate]
