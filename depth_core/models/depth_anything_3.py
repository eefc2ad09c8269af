"""Depth Anything 3 monocular models (ByteDance Seed, 2025): DA3Mono-Large (relative depth) and DA3Metric-Large
(metres), a DINOv2-L/14 from timm and the shared DPT decoder.

Unlike Depth Anything V2 they predict *depth* (exp of the head's output), not disparity, plus a sky map; where the
sky map says sky, depth is set to the 99th percentile of the rest, as the authors' network does. DA3Metric's depth is
metric for a focal length of 300 px at the network input; the estimator scales it by the camera's focal length
(the one the user gives, else camera.DEFAULT_FOV_DEGREES). DA3Mono's relative depth is handed on as its inverse, the
pack's relative inverse depth.

Released files: `model.safetensors` of the Hugging Face repos depth-anything/DA3MONO-LARGE and DA3METRIC-LARGE,
saved by the authors' API module (keys `model.backbone.pretrained.*`, `model.head.*`); the pack names them
`DA3MONO-LARGE.safetensors` and `DA3METRIC-LARGE.safetensors`. Both layouts are identical, so a renamed file is read
as metric when its name says "metric" (or the variant says so).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..depth import DepthKind
from .base import IMAGENET_MEAN, IMAGENET_STD, KnownModel, ModelCard, Preprocess
from .depth_anything_v2 import PATCH_SIZE, dinov2_intermediate
from .dpt import DPT_LEVEL_SCALES, DecoderConfig, DPTDecoder, make_resample, tokens_to_map

FAMILY = "depth_anything_3"
NET_SIZE = 504
"""The authors' default processing resolution (longer side)."""
CANONICAL_FOCAL_PX = 300.0
"""DA3Metric: metres = focal length in pixels x output / 300."""
SKY_THRESHOLD = 0.3
SKY_DEPTH_QUANTILE = 0.99


@dataclass(frozen=True)
class DepthAnything3Config:
    embed_dim: int = 1024
    depth: int = 24
    layers: tuple[int, int, int, int] = (4, 11, 17, 23)
    features: int = 256
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    metric: bool = False


MONO_LARGE = DepthAnything3Config()
METRIC_LARGE = DepthAnything3Config(metric=True)


def _dinov2(config: DepthAnything3Config) -> nn.Module:
    vit = timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0, img_size=518,
                            embed_dim=config.embed_dim, depth=config.depth, num_heads=config.embed_dim // 64)
    # The authors' ViT builds its final norm with LayerNorm's default eps (the blocks use 1e-6).
    vit.norm.eps = 1e-5
    return vit


class DepthAnything3Head(nn.Module):
    """`head`: reassemble the four token sets into DPT levels, decode, and predict depth and sky."""

    def __init__(self, config: DepthAnything3Config) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(config.embed_dim, c, kernel_size=1) for c in config.out_channels)
        self.resize_layers = nn.ModuleList(
            make_resample(c, scale) for c, scale in zip(config.out_channels, DPT_LEVEL_SCALES))
        self.scratch = DPTDecoder(DecoderConfig(in_channels=config.out_channels, features=config.features,
                                                head="depth_anything", head_activation="none",
                                                coarsest_lateral=False))
        half = config.features // 2
        self.scratch.sky_output_conv2 = nn.Sequential(
            nn.Conv2d(half, 32, kernel_size=3, padding=1), nn.ReLU(True), nn.Conv2d(32, 1, kernel_size=1))

    def forward(self, tokens: list[torch.Tensor], grid_h: int, grid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(depth [B,h,w] > 0, sky [B,h,w] >= 0) at the patch grid x patch size."""
        levels = [resize(project(tokens_to_map(t, grid_h, grid_w)))
                  for t, project, resize in zip(tokens, self.projects, self.resize_layers)]
        neck = self.scratch.neck(self.scratch.fuse(levels)[-1], (grid_h * PATCH_SIZE, grid_w * PATCH_SIZE))
        depth = torch.exp(self.scratch.output_conv2(neck))
        sky = F.relu(self.scratch.sky_output_conv2(neck))
        return depth.squeeze(1), sky.squeeze(1)


class _Network(nn.Module):
    """`model`: the authors' DepthAnything3Net for the monocular configs (backbone.pretrained + head)."""

    def __init__(self, config: DepthAnything3Config) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.pretrained = _dinov2(config)
        self.head = DepthAnything3Head(config)


def fill_sky(depth: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Sky pixels (sky >= 0.3) take the 99th percentile of the other pixels' depth, per image; images with 10 or
    fewer pixels of either kind are left as they are.

    As the authors' network does for one photo (it pools the statistics over the views it is given together). It
    takes the percentile of a random 100,000-pixel sample when there are more non-sky pixels; the exact percentile
    here is what that sample estimates."""
    out = depth.clone()
    for index in range(depth.shape[0]):
        ground = sky[index] < SKY_THRESHOLD
        if int(ground.sum()) <= 10 or int((~ground).sum()) <= 10:
            continue
        out[index][~ground] = torch.quantile(depth[index][ground].float(), SKY_DEPTH_QUANTILE).to(depth.dtype)
    return out


class DepthAnything3(nn.Module):
    """Normalized RGB [B,3,h,w] (h, w multiples of 14) -> relative inverse depth [B,h,w] (Mono), or metric depth
    for a focal length of one image width (Metric)."""

    def __init__(self, config: DepthAnything3Config) -> None:
        super().__init__()
        self.config = config
        self.model = _Network(config)

    def depth_and_sky(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' network outputs: depth with the sky filled, and the sky map."""
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        tokens = [patches for patches, _ in dinov2_intermediate(self.model.backbone.pretrained, x, self.config.layers)]
        depth, sky = self.model.head(tokens, grid_h, grid_w)
        return fill_sky(depth, sky), sky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth, _ = self.depth_and_sky(x)
        if self.config.metric:
            return depth * (x.shape[-1] / CANONICAL_FOCAL_PX)
        return 1.0 / depth


def build(config: DepthAnything3Config = MONO_LARGE) -> DepthAnything3:
    return DepthAnything3(config)


_BLOCK_KEY = re.compile(r"^model\.backbone\.pretrained\.blocks\.(\d+)\.")


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> DepthAnything3Config | None:
    """Recognise a monocular Depth Anything 3 checkpoint (Mono or Metric: the file name or the variant tells which);
    None if it is not one. The any-view models (camera token, camera decoder) are not monocular ones."""
    required = ("model.backbone.pretrained.cls_token", "model.backbone.pretrained.patch_embed.proj.weight",
                "model.head.scratch.output_conv1.weight", "model.head.scratch.sky_output_conv2.0.weight",
                "model.head.scratch.layer1_rn.weight")
    if any(key not in state_dict for key in required) or "model.backbone.pretrained.camera_token" in state_dict:
        return None
    embed_dim = state_dict["model.backbone.pretrained.cls_token"].shape[-1]
    depth = 1 + max((int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))), default=-1)
    try:
        out_channels = tuple(state_dict[f"model.head.projects.{i}.weight"].shape[0] for i in range(4))
    except KeyError:
        return None
    if (embed_dim, depth) != (MONO_LARGE.embed_dim, MONO_LARGE.depth):
        return None
    return replace(MONO_LARGE, features=state_dict["model.head.scratch.layer1_rn.weight"].shape[0],
                   out_channels=out_channels)  # type: ignore[arg-type]


VARIANTS = {"auto": None, "relative": False, "metric indoor": True, "metric outdoor": True}


def config_for_variant(config: DepthAnything3Config, variant: str, filename: str) -> DepthAnything3Config:
    """Mono or Metric: the weights look alike, so the file name ("metric" in it) or the user's variant decides."""
    if variant not in VARIANTS:
        raise ValueError(f"Variant {variant!r} does not apply to Depth Anything 3 files; choose auto, relative "
                         "(DA3Mono) or a metric one (DA3Metric).")
    metric = VARIANTS[variant]
    return replace(config, metric="metric" in filename.lower() if metric is None else metric)


# The authors' input processor: longer side to 504 (cv2 INTER_AREA when shrinking), each side to the nearest
# multiple of 14, ImageNet mean/std on RGB.
PREPROCESS = Preprocess(net_size=NET_SIZE, multiple_of=PATCH_SIZE, resize_rule="upper_bound", mean=IMAGENET_MEAN,
                        std=IMAGENET_STD, interpolation="area")


def _hf_url(repo: str) -> str:
    return f"https://huggingface.co/depth-anything/{repo}/resolve/main/model.safetensors"


KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=ModelCard(name="Depth Anything 3 Mono Large", family=FAMILY, preprocess=PREPROCESS,
                       output_kind=DepthKind.RELATIVE_INVERSE, receptive_field=NET_SIZE),
        config=MONO_LARGE, filename="DA3MONO-LARGE.safetensors", urls=(_hf_url("DA3MONO-LARGE"),),
        sha256=None,  # Hugging Face serves the file's sha256, which the download checks
        license="Apache-2.0",
    ),
    KnownModel(
        card=ModelCard(name="Depth Anything 3 Metric Large (metric)", family=FAMILY, preprocess=PREPROCESS,
                       output_kind=DepthKind.METRIC, receptive_field=NET_SIZE, focal_scaled=True),
        config=METRIC_LARGE, filename="DA3METRIC-LARGE.safetensors", urls=(_hf_url("DA3METRIC-LARGE"),),
        sha256=None,
        license="Apache-2.0",
    ),
]
