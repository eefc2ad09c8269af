"""Depth Anything 3 monocular models (ByteDance Seed, 2025): DA3Mono-Large (relative depth) and DA3Metric-Large
(metres), a DINOv2-L/14 from timm and the shared DPT decoder.

Unlike Depth Anything V2 they predict *depth* (exp of the head's output), not disparity, plus a sky map; where the
sky map says sky, depth is set to the 99th percentile of the rest, as the authors' network does. DA3Metric's depth is
metric for a focal length of 300 px at the network input; the estimator scales it by the camera's focal length
(the one the user gives, else camera.DEFAULT_FOV_DEGREES). DA3Mono's relative depth is handed on as its inverse, the
pack's relative inverse depth.

The any-view models DA3-Small and DA3-Base (`AnyViewConfig`) are read here for one image: their ViT adds 2D RoPE,
QK-norm and a camera token from block `alt_start` on, alternating attention within a view and across views (the
same tokens for one view, only the RoPE positions differ), and hands on each taken block's tokens next to the last
within-view block's. Their DualDPT head's depth branch gives the depth (relative, handed on inverted like DA3Mono's)
and the camera decoder the horizontal field of view, carried with the depth. The head's ray branch and the camera
encoder (for posed multi-view input) do nothing for one photo: their weights are dropped on loading.

Released files: `model.safetensors` of the Hugging Face repos depth-anything/DA3MONO-LARGE, DA3METRIC-LARGE,
DA3-SMALL and DA3-BASE, saved by the authors' API module (keys `model.backbone.pretrained.*`, `model.head.*`; the
any-view ones add `model.cam_enc.*`, `model.cam_dec.*`); the pack names them `DA3MONO-LARGE.safetensors`,
`DA3METRIC-LARGE.safetensors`, `DA3-SMALL.safetensors` and `DA3-BASE.safetensors`. Mono's and Metric's layouts are
identical, so a renamed file is read as metric when its name says "metric" (or the variant says so).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Mapping

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..depth import DepthKind
from .base import IMAGENET_MEAN, IMAGENET_STD, KnownModel, ModelCard, Preprocess
from .depth_anything_v2 import PATCH_SIZE, dinov2_intermediate, dinov2_tokens
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


@dataclass(frozen=True)
class AnyViewConfig:
    embed_dim: int = 384
    depth: int = 12
    layers: tuple[int, int, int, int] = (5, 7, 9, 11)
    alt_start: int = 4
    """First block with the camera token, RoPE, QK-norm and alternating attention (odd blocks attend across views)."""
    features: int = 64
    out_channels: tuple[int, int, int, int] = (48, 96, 192, 384)


ANY_VIEW_SMALL = AnyViewConfig()
ANY_VIEW_BASE = AnyViewConfig(embed_dim=768, features=128, out_channels=(96, 192, 384, 768))
ROPE_BASE = 100.0
UV_EMBED_BASE = 100.0
UV_EMBED_SCALE = 0.1


def _dinov2(config: DepthAnything3Config | AnyViewConfig) -> nn.Module:
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


# --- Any-view models (DA3-Small / DA3-Base) for one view ---

def _any_view_dinov2(config: AnyViewConfig) -> nn.Module:
    vit = _dinov2(config)
    vit.camera_token = nn.Parameter(torch.zeros(1, 2, config.embed_dim))  # reference view, other views
    for block in vit.blocks[config.alt_start:]:
        head_dim = block.attn.qkv.in_features // block.attn.num_heads
        block.attn.q_norm, block.attn.k_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
    return vit


def rope_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [N, head_dim] of 2D RoPE for (row, column) positions [N, 2]: the first half of each head's
    channels turns with the row, the second with the column, each half in rotate-half layout."""
    half = head_dim // 2
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, half, 2, device=positions.device).float() / half)
    angles = positions.float()[:, :, None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1).flatten(1)
    return angles.cos(), angles.sin()


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, head_dim] turned by the tables of `rope_tables`."""
    halves = t.unflatten(-1, (4, -1))  # row (first, second part), column (first, second part)
    rotated = torch.stack((-halves[..., 1, :], halves[..., 0, :], -halves[..., 3, :], halves[..., 2, :]), dim=-2)
    return t * cos.to(t.dtype) + rotated.flatten(-2) * sin.to(t.dtype)


def _rope_block(block: nn.Module, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A timm ViT block whose queries and keys are turned by RoPE after their QK-norm."""
    attn = block.attn
    batch, tokens, channels = x.shape
    q, k, v = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = apply_rope(attn.q_norm(q), *rope), apply_rope(attn.k_norm(k), *rope)
    mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, channels)
    x = x + block.ls1(attn.proj(mixed))
    return x + block.ls2(block.mlp(block.norm2(x)))


def any_view_tokens(vit: nn.Module, x: torch.Tensor, config: AnyViewConfig
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(patch tokens [B,N,2C], camera token [B,2C]) of each taken block for single-view images [B,3,h,w]: the last
    within-view block's tokens next to the block's own, normalized, as the authors' ViT hands them on."""
    grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
    rows, cols = torch.meshgrid(torch.arange(grid_h, device=x.device), torch.arange(grid_w, device=x.device),
                                indexing="ij")
    special = torch.zeros(1, 2, device=x.device)
    # Within a view the patches sit at their grid cell (from 1, the camera token at 0); across views all patches
    # share one position, so only the camera token stands apart.
    local_positions = torch.cat((special, torch.stack((rows, cols), -1).flatten(0, 1) + 1))
    global_positions = torch.cat((special, torch.ones(grid_h * grid_w, 2, device=x.device)))
    head_dim = config.embed_dim // vit.blocks[0].attn.num_heads
    local_rope, global_rope = rope_tables(local_positions, head_dim), rope_tables(global_positions, head_dim)
    tokens = within_view = dinov2_tokens(vit, x)
    outputs = []
    for index, block in enumerate(vit.blocks):
        if index < config.alt_start:
            tokens = block(tokens)
        else:
            if index == config.alt_start:  # the reference view's camera token replaces the class token
                camera = vit.camera_token[:, :1].expand(tokens.shape[0], -1, -1).to(tokens.dtype)
                tokens = torch.cat((camera, tokens[:, 1:]), dim=1)
            tokens = _rope_block(block, tokens, global_rope if index % 2 else local_rope)
        if index < config.alt_start or index % 2 == 0:
            within_view = tokens
        if index in config.layers:
            taken = torch.cat((within_view, tokens), dim=-1)
            outputs.append((torch.cat((within_view, vit.norm(tokens)), dim=-1)[:, 1:], taken[:, 0]))
        if index >= max(config.layers):
            break
    return outputs


def uv_embedding(channels: int, height: int, width: int, aspect: float, device: torch.device) -> torch.Tensor:
    """DualDPT's [channels, height, width] sin/cos embedding of image coordinates spanning the unit-diagonal plane
    of the image's aspect ratio (width / height), scaled to the size it is added with."""
    diagonal = math.sqrt(aspect ** 2 + 1.0)

    def coords(count: int, span: float) -> torch.Tensor:
        edge = span * (count - 1) / count
        return torch.linspace(-edge, edge, count, device=device)

    v, u = torch.meshgrid(coords(height, 1.0 / diagonal), coords(width, aspect / diagonal), indexing="ij")

    def sincos(coord: torch.Tensor, dims: int) -> torch.Tensor:
        omega = 1.0 / UV_EMBED_BASE ** (torch.arange(dims // 2, device=device).float() / (dims / 2.0))
        angles = coord.reshape(-1, 1) * omega
        return torch.cat((angles.sin(), angles.cos()), dim=1)

    embedding = torch.cat((sincos(u, channels // 2), sincos(v, channels // 2)), dim=1)
    return UV_EMBED_SCALE * embedding.view(height, width, channels).permute(2, 0, 1)


def _with_uv(features: torch.Tensor, aspect: float) -> torch.Tensor:
    channels, height, width = features.shape[1:]
    return features + uv_embedding(channels, height, width, aspect, features.device).to(features.dtype)


class DualDPTDepth(nn.Module):
    """`head`: the DualDPT's depth branch (normalized tokens, DPT levels with image-coordinate embeddings, and a
    depth + confidence output; depth = exp)."""

    def __init__(self, config: AnyViewConfig) -> None:
        super().__init__()
        width = 2 * config.embed_dim
        self.norm = nn.LayerNorm(width)
        self.projects = nn.ModuleList(nn.Conv2d(width, c, kernel_size=1) for c in config.out_channels)
        self.resize_layers = nn.ModuleList(
            make_resample(c, scale) for c, scale in zip(config.out_channels, DPT_LEVEL_SCALES))
        self.scratch = DPTDecoder(DecoderConfig(in_channels=config.out_channels, features=config.features,
                                                head="depth_anything", head_activation="none", head_outputs=2,
                                                coarsest_lateral=False))

    def forward(self, tokens: list[torch.Tensor], grid_h: int, grid_w: int) -> torch.Tensor:
        """Depth [B,h,w] > 0 at the patch grid x patch size."""
        aspect = grid_w / grid_h
        levels = [resize(_with_uv(project(tokens_to_map(self.norm(t), grid_h, grid_w)), aspect))
                  for t, project, resize in zip(tokens, self.projects, self.resize_layers)]
        neck = self.scratch.neck(self.scratch.fuse(levels)[-1], (grid_h * PATCH_SIZE, grid_w * PATCH_SIZE))
        return torch.exp(self.scratch.output_conv2(_with_uv(neck, aspect))[:, 0])


class CameraDecoder(nn.Module):
    """`cam_dec`: camera token -> pose encoding; only its field of view (height, width; radians) serves one photo."""

    def __init__(self, config: AnyViewConfig) -> None:
        super().__init__()
        width = 2 * config.embed_dim
        self.backbone = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.fc_t = nn.Linear(width, 3)
        self.fc_qvec = nn.Linear(width, 4)
        self.fc_fov = nn.Sequential(nn.Linear(width, 2), nn.ReLU())

    def horizontal_fov_degrees(self, camera_token: torch.Tensor) -> torch.Tensor:
        return torch.rad2deg(self.fc_fov(self.backbone(camera_token.float()))[:, 1])


UNUSED_FOR_ONE_VIEW = re.compile(r"^model\.(cam_enc\.|head\.scratch\.(refinenet\d|output_conv\d)_aux\.)")
"""The ray branch of the DualDPT and the camera encoder (posed input): released, unused for one photo."""


class DepthAnything3AnyView(nn.Module):
    """Normalized RGB [B,3,h,w] (h, w multiples of 14), each image its own view -> (relative inverse depth
    [B,h,w], horizontal field of view [B] in degrees)."""

    def __init__(self, config: AnyViewConfig) -> None:
        super().__init__()
        self.config = config
        self.model = nn.Module()
        self.model.backbone = nn.Module()
        self.model.backbone.pretrained = _any_view_dinov2(config)
        self.model.head = DualDPTDepth(config)
        self.model.cam_dec = CameraDecoder(config)

    def depth_and_fov(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' network outputs for one view: depth, and the camera's horizontal field of view."""
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        taken = any_view_tokens(self.model.backbone.pretrained, x, self.config)
        depth = self.model.head([patches for patches, _ in taken], grid_h, grid_w)
        return depth, self.model.cam_dec.horizontal_fov_degrees(taken[-1][1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        depth, fov = self.depth_and_fov(x)
        return 1.0 / depth, fov

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        used = {key: value for key, value in state_dict.items() if not UNUSED_FOR_ONE_VIEW.match(key)}
        return super().load_state_dict(used, strict=strict, assign=assign)


def build(config: DepthAnything3Config | AnyViewConfig = MONO_LARGE) -> DepthAnything3 | DepthAnything3AnyView:
    return DepthAnything3AnyView(config) if isinstance(config, AnyViewConfig) else DepthAnything3(config)


_BLOCK_KEY = re.compile(r"^model\.backbone\.pretrained\.blocks\.(\d+)\.")


def _any_view_config(state_dict: Mapping[str, torch.Tensor]) -> AnyViewConfig | None:
    required = ("model.backbone.pretrained.camera_token", "model.cam_dec.fc_fov.0.weight", "model.head.norm.weight",
                "model.head.scratch.layer1_rn.weight", "model.head.scratch.refinenet1_aux.out_conv.weight")
    if any(key not in state_dict for key in required):
        return None
    embed_dim = state_dict["model.backbone.pretrained.cls_token"].shape[-1]
    depth = 1 + max((int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))), default=-1)
    if depth != ANY_VIEW_SMALL.depth or embed_dim % 64:  # the released ViT-S/B: 12 blocks, heads of 64 channels
        return None
    try:
        out_channels = tuple(state_dict[f"model.head.projects.{i}.weight"].shape[0] for i in range(4))
    except KeyError:
        return None
    return replace(ANY_VIEW_SMALL, embed_dim=embed_dim, out_channels=out_channels,  # type: ignore[arg-type]
                   features=state_dict["model.head.scratch.layer1_rn.weight"].shape[0])


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> DepthAnything3Config | AnyViewConfig | None:
    """Recognise a Depth Anything 3 checkpoint: monocular (Mono or Metric: the file name or the variant tells which)
    or any-view (camera token, camera decoder); None if it is not one."""
    if "model.backbone.pretrained.camera_token" in state_dict:
        return _any_view_config(state_dict)
    required = ("model.backbone.pretrained.cls_token", "model.backbone.pretrained.patch_embed.proj.weight",
                "model.head.scratch.output_conv1.weight", "model.head.scratch.sky_output_conv2.0.weight",
                "model.head.scratch.layer1_rn.weight")
    if any(key not in state_dict for key in required):
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


def config_for_variant(config: DepthAnything3Config | AnyViewConfig, variant: str,
                       filename: str) -> DepthAnything3Config | AnyViewConfig:
    """Mono or Metric: the weights look alike, so the file name ("metric" in it) or the user's variant decides.
    The any-view models predict relative depth only."""
    if isinstance(config, AnyViewConfig):
        if variant not in ("auto", "relative"):
            raise ValueError(f"Variant {variant!r} does not apply to {filename}, an any-view Depth Anything 3 model "
                             "(relative depth); choose auto.")
        return config
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
    *(KnownModel(
        card=ModelCard(name=f"Depth Anything 3 {size} (+ field of view)", family=FAMILY, preprocess=PREPROCESS,
                       output_kind=DepthKind.RELATIVE_INVERSE, receptive_field=NET_SIZE),
        config=config, filename=f"DA3-{size.upper()}.safetensors", urls=(_hf_url(f"DA3-{size.upper()}"),),
        sha256=None,
        license="Apache-2.0",
    ) for size, config in (("Small", ANY_VIEW_SMALL), ("Base", ANY_VIEW_BASE))),
]
