"""Depth Anything V2 (Small / Base / Large): a DINOv2 ViT from timm and the shared DPT decoder.

Loads the authors' `depth_anything_v2_vit{s,b,l}.pth` and the fp16 safetensors copies many ComfyUI users keep in
models/depthanything/ unchanged: keys `pretrained.*` (the DINOv2 ViT, including its unused `mask_token`) and
`depth_head.*` (reassemble projections and the `scratch` decoder).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, KnownModel, ModelCard, relative_card
from .dpt import (
    DPT_LEVEL_SCALES,
    DecoderConfig,
    DPTDecoder,
    make_resample,
    readout_mlp,
    tokens_to_map,
    with_class_token,
)

FAMILY = "depth_anything_v2"
PATCH_SIZE = 14
NATIVE_SIZE = 518
"""Training resolution; the checkpoints' position embeddings cover a 37 x 37 patch grid."""

# DINOv2's own position-embedding resampling adds this to the target grid size and passes a scale factor rather
# than a size; the weights were fine-tuned through it, so it is reproduced exactly.
_POS_EMBED_OFFSET = 0.1


@dataclass(frozen=True)
class DepthAnythingV2Config:
    encoder: str
    """vits, vitb or vitl."""
    features: int
    out_channels: tuple[int, int, int, int]
    use_bn: bool = False
    use_clstoken: bool = False


@dataclass(frozen=True)
class _Encoder:
    timm_name: str
    embed_dim: int
    depth: int
    layers: tuple[int, int, int, int]


_ENCODERS = {
    "vits": _Encoder("vit_small_patch14_dinov2", 384, 12, (2, 5, 8, 11)),
    "vitb": _Encoder("vit_base_patch14_dinov2", 768, 12, (2, 5, 8, 11)),
    "vitl": _Encoder("vit_large_patch14_dinov2", 1024, 24, (4, 11, 17, 23)),
}

SMALL = DepthAnythingV2Config("vits", 64, (48, 96, 192, 384))
BASE = DepthAnythingV2Config("vitb", 128, (96, 192, 384, 768))
LARGE = DepthAnythingV2Config("vitl", 256, (256, 512, 1024, 1024))


def dinov2_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """The [1, 1+N, C] position embedding resampled to a grid_h x grid_w patch grid, as DINOv2 does it."""
    side = math.isqrt(pos_embed.shape[1] - 1)
    if grid_h == side and grid_w == side:
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = ((grid_h + _POS_EMBED_OFFSET) / side, (grid_w + _POS_EMBED_OFFSET) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if grid.shape[-2:] != (grid_h, grid_w):
        raise RuntimeError(f"position embedding resampled to {tuple(grid.shape[-2:])}, expected {(grid_h, grid_w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((pos_embed[:, :1].float(), grid), dim=1).to(pos_embed.dtype)


def _dinov2(config: DepthAnythingV2Config) -> nn.Module:
    spec = _ENCODERS[config.encoder]
    vit = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, img_size=NATIVE_SIZE)
    # Part of the released state dict (DINOv2's masked-patch token), unused at inference.
    vit.mask_token = nn.Parameter(torch.zeros(1, spec.embed_dim))
    return vit


def dinov2_intermediate(
    vit: nn.Module, x: torch.Tensor, layers: tuple[int, ...]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(normalized patch tokens [B,N,C], class token [B,C]) after each block in `layers`."""
    grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
    tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat((vit.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens), dim=1)
    tokens = tokens + dinov2_pos_embed(vit.pos_embed, grid_h, grid_w).to(tokens.dtype)
    outputs = []
    for index, block in enumerate(vit.blocks):
        tokens = block(tokens)
        if index in layers:
            normed = vit.norm(tokens)
            outputs.append((normed[:, 1:], normed[:, 0]))
        if index >= max(layers):
            break
    return outputs


class DepthAnythingHead(nn.Module):
    """`depth_head`: reassemble the four token sets into DPT levels and decode them."""

    def __init__(self, embed_dim: int, config: DepthAnythingV2Config) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, c, kernel_size=1) for c in config.out_channels)
        self.resize_layers = nn.ModuleList(
            make_resample(c, scale) for c, scale in zip(config.out_channels, DPT_LEVEL_SCALES)
        )
        self.readout_projects = (
            nn.ModuleList(readout_mlp(embed_dim) for _ in config.out_channels) if config.use_clstoken else None
        )
        self.scratch = DPTDecoder(
            DecoderConfig(
                in_channels=config.out_channels,
                features=config.features,
                use_bn=config.use_bn,
                head="depth_anything",
            )
        )

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], grid_h: int, grid_w: int) -> torch.Tensor:
        levels = []
        for i, (patch_tokens, cls_token) in enumerate(features):
            if self.readout_projects is not None:
                patch_tokens = self.readout_projects[i](with_class_token(patch_tokens, cls_token))
            level = self.projects[i](tokens_to_map(patch_tokens, grid_h, grid_w))
            levels.append(self.resize_layers[i](level))
        return self.scratch(levels, out_size=(grid_h * PATCH_SIZE, grid_w * PATCH_SIZE))


class DepthAnythingV2(nn.Module):
    """Normalized RGB [B,3,h,w] (h, w multiples of 14) -> relative inverse depth [B,h,w], non-negative."""

    def __init__(self, config: DepthAnythingV2Config) -> None:
        super().__init__()
        spec = _ENCODERS[config.encoder]
        self.config = config
        self.layers = spec.layers
        self.pretrained = _dinov2(config)
        self.depth_head = DepthAnythingHead(spec.embed_dim, config)
        self.register_load_state_dict_pre_hook(_tolerate_missing_mask_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        features = dinov2_intermediate(self.pretrained, x, self.layers)
        return F.relu(self.depth_head(features, grid_h, grid_w)).squeeze(1)


def _tolerate_missing_mask_token(module: DepthAnythingV2, state_dict: dict, prefix: str, *_: object) -> None:
    # Converted copies (e.g. safetensors re-exports) may drop this inference-unused parameter; everything else
    # still loads strictly.
    key = prefix + "pretrained.mask_token"
    if key not in state_dict:
        state_dict[key] = torch.zeros_like(module.pretrained.mask_token)


def build(config: DepthAnythingV2Config) -> DepthAnythingV2:
    return DepthAnythingV2(config)


_BLOCK_KEY = re.compile(r"^pretrained\.blocks\.(\d+)\.")


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> DepthAnythingV2Config | None:
    """Recognise a Depth Anything V2 checkpoint (any size) from its keys and shapes; None if it is not one."""
    required = ("pretrained.cls_token", "pretrained.patch_embed.proj.weight",
                "depth_head.scratch.output_conv1.weight", "depth_head.scratch.layer1_rn.weight")
    if any(key not in state_dict for key in required):
        return None
    patch = state_dict["pretrained.patch_embed.proj.weight"].shape
    if patch[-2:] != (PATCH_SIZE, PATCH_SIZE):
        return None
    embed_dim = state_dict["pretrained.cls_token"].shape[-1]
    depth = 1 + max((int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))), default=-1)
    encoder = next((name for name, e in _ENCODERS.items() if (e.embed_dim, e.depth) == (embed_dim, depth)), None)
    if encoder is None or "pretrained.blocks.0.ls1.gamma" not in state_dict:
        return None
    try:
        out_channels = tuple(state_dict[f"depth_head.projects.{i}.weight"].shape[0] for i in range(4))
    except KeyError:
        return None
    return DepthAnythingV2Config(
        encoder=encoder,
        features=state_dict["depth_head.scratch.layer1_rn.weight"].shape[0],
        out_channels=out_channels,  # type: ignore[arg-type]
        use_bn="depth_head.scratch.refinenet1.resConfUnit1.bn1.weight" in state_dict,
        use_clstoken="depth_head.readout_projects.0.0.weight" in state_dict,
    )


def _card(name: str) -> ModelCard:
    # The authors' run.py / infer_image: keep aspect, short side >= 518 ("lower_bound"), multiple of 14,
    # bicubic (cv2.INTER_CUBIC), ImageNet mean/std on RGB in 0..1.
    return relative_card(name, FAMILY, NATIVE_SIZE, PATCH_SIZE, "lower_bound", IMAGENET_MEAN, IMAGENET_STD)


def _hf_url(repo: str, filename: str) -> str:
    return f"https://huggingface.co/depth-anything/{repo}/resolve/main/{filename}"


# sha256 = the files' Hugging Face LFS object ids (as recorded by several independent projects that verify them).
KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=_card("Depth Anything V2 Small"),
        config=SMALL,
        filename="depth_anything_v2_vits.pth",
        urls=(_hf_url("Depth-Anything-V2-Small", "depth_anything_v2_vits.pth"),),
        sha256="715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378",
        size_bytes=99_218_434,
        license="Apache-2.0",
    ),
    KnownModel(
        card=_card("Depth Anything V2 Base"),
        config=BASE,
        filename="depth_anything_v2_vitb.pth",
        urls=(_hf_url("Depth-Anything-V2-Base", "depth_anything_v2_vitb.pth"),),
        sha256="0d2b7002e62d39d655571c371333340bd88f67ab95050c03591555aa05645328",
        size_bytes=389_961_218,
        license="CC-BY-NC-4.0",
    ),
    KnownModel(
        card=_card("Depth Anything V2 Large"),
        config=LARGE,
        filename="depth_anything_v2_vitl.pth",
        urls=(_hf_url("Depth-Anything-V2-Large", "depth_anything_v2_vitl.pth"),),
        sha256="a7ea19fa0ed99244e67b624c72b8580b7e9553043245905be58796a608eb9345",
        size_bytes=1_341_395_338,
        license="CC-BY-NC-4.0",
    ),
]
