"""Depth Anything (v1, V2 and metric V2; Small / Base / Large): a DINOv2 ViT from timm and the shared DPT decoder.

Loads the authors' `depth_anything_v2_vit{s,b,l}.pth`, `depth_anything_vit{s,b,l}14.pth` (v1),
`depth_anything_v2_metric_{hypersim,vkitti}_vit{s,b,l}.pth` and the fp16 safetensors copies many ComfyUI users keep
in models/depthanything/ unchanged: keys `pretrained.*` (the DINOv2 ViT, including its unused `mask_token`) and
`depth_head.*` (reassemble projections and the `scratch` decoder).

The three releases share one key layout with identical shapes; they differ only in which ViT blocks feed the
decoder (v1: the last four; V2: four spread over the depth) and in the head's last activation (metric: sigmoid
times a maximum depth in metres). So a file's variant cannot be read from its weights: it comes from the official
file name, or from the user (`VARIANTS`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Mapping

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..depth import DepthKind
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
    taps: Literal["spread", "last"] = "spread"
    """Which ViT blocks feed the decoder: V2's four spread over the depth, or v1's last four."""
    max_depth: float | None = None
    """Metric V2: the head ends in a sigmoid scaled to this many metres. None: relative (ReLU) depth."""


@dataclass(frozen=True)
class _Encoder:
    timm_name: str
    embed_dim: int
    depth: int
    layers: tuple[int, int, int, int]
    """The blocks V2 taps."""

    def taps(self, config: DepthAnythingV2Config) -> tuple[int, int, int, int]:
        if config.taps == "last":
            return tuple(range(self.depth - 4, self.depth))  # type: ignore[return-value]
        return self.layers


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


def dinov2_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The class token and patch embeddings [B, 1+N, C] with their positions, before the first block."""
    grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
    tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat((vit.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens), dim=1)
    return tokens + dinov2_pos_embed(vit.pos_embed, grid_h, grid_w).to(tokens.dtype)


def dinov2_intermediate(
    vit: nn.Module, x: torch.Tensor, layers: tuple[int, ...]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(normalized patch tokens [B,N,C], class token [B,C]) after each block in `layers`."""
    tokens = dinov2_tokens(vit, x)
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
                head_activation="relu" if config.max_depth is None else "sigmoid",
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
    """Normalized RGB [B,3,h,w] (h, w multiples of 14) -> relative inverse depth [B,h,w], non-negative, or metres
    in (0, max_depth) for the metric variant."""

    def __init__(self, config: DepthAnythingV2Config) -> None:
        super().__init__()
        spec = _ENCODERS[config.encoder]
        self.config = config
        self.layers = spec.taps(config)
        self.pretrained = _dinov2(config)
        self.depth_head = DepthAnythingHead(spec.embed_dim, config)
        self.register_load_state_dict_pre_hook(_tolerate_missing_mask_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        features = dinov2_intermediate(self.pretrained, x, self.layers)
        prediction = self.depth_head(features, grid_h, grid_w).squeeze(1)
        if self.config.max_depth is None:
            return F.relu(prediction)
        return prediction * self.config.max_depth


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


VARIANTS = ("auto", "relative", "v1 relative", "metric indoor", "metric outdoor")
"""What a Depth Anything file holds. auto: read from the official file name; the others override it for renamed
files (the weights of all of them look alike)."""

METRIC_MAX_DEPTH = {"metric indoor": 20.0, "metric outdoor": 80.0}
"""Metres, as the authors trained them: Hypersim (indoor) and Virtual KITTI 2 (outdoor)."""

_METRIC_DATASETS = {"hypersim": "metric indoor", "vkitti": "metric outdoor"}


class UnknownVariantError(ValueError):
    """The variant of a Depth Anything file is not known; the message says how to name it."""


def variant_from_filename(filename: str) -> str:
    """The variant an official file name announces; a name that says "metric" but not which one raises."""
    name = Path(filename).name.lower()
    for dataset, variant in _METRIC_DATASETS.items():
        if dataset in name:
            return variant
    if "metric" in name:
        raise UnknownVariantError(
            f"{Path(filename).name} looks like a metric Depth Anything V2 checkpoint, but its name does not say "
            "whether it is the indoor (hypersim, up to 20 m) or the outdoor (vkitti, up to 80 m) model, and the "
            "weights cannot tell. Choose variant 'metric indoor' or 'metric outdoor' in Load Depth Model (--variant "
            "on the command line), or give the file its official name, e.g. depth_anything_v2_metric_hypersim_vits.pth."
        )
    if re.match(r"depth_anything_vit[sbl]14", name):
        return "v1 relative"
    return "relative"


def config_for_variant(config: DepthAnythingV2Config, variant: str, filename: str) -> DepthAnythingV2Config:
    """The config read from a state dict, completed with what only the file name or the user can say."""
    if variant not in VARIANTS:
        raise UnknownVariantError(f"Unknown Depth Anything variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    if variant == "auto":
        variant = variant_from_filename(filename)
    return replace(config, taps="last" if variant == "v1 relative" else "spread",
                   max_depth=METRIC_MAX_DEPTH.get(variant))


def _card(name: str, max_depth: float | None = None) -> ModelCard:
    # The authors' run.py / infer_image: keep aspect, short side >= 518 ("lower_bound"), multiple of 14,
    # bicubic (cv2.INTER_CUBIC), ImageNet mean/std on RGB in 0..1; V2 brings the prediction back to the image size
    # with align_corners=True.
    card = relative_card(name, FAMILY, NATIVE_SIZE, PATCH_SIZE, "lower_bound", IMAGENET_MEAN, IMAGENET_STD)
    card = replace(card, preprocess=replace(card.preprocess, upsample_align_corners=True))
    return card if max_depth is None else replace(card, output_kind=DepthKind.METRIC)


def _v1_card(name: str) -> ModelCard:
    # v1's run.py: the same input rule, upsampled back with align_corners=False.
    return relative_card(name, FAMILY, NATIVE_SIZE, PATCH_SIZE, "lower_bound", IMAGENET_MEAN, IMAGENET_STD)


def _hf_url(repo: str, filename: str) -> str:
    return f"https://huggingface.co/depth-anything/{repo}/resolve/main/{filename}"


_SIZES = {"vits": ("Small", SMALL), "vitb": ("Base", BASE), "vitl": ("Large", LARGE)}
_V2_LICENSES = {"vits": "Apache-2.0", "vitb": "CC-BY-NC-4.0", "vitl": "CC-BY-NC-4.0"}
"""The Depth-Anything-V2 repository's licence section; the metric models are fine-tunes of the same sizes."""


def _v1_model(encoder: str) -> KnownModel:
    size, config = _SIZES[encoder]
    filename = f"depth_anything_{encoder}14.pth"
    return KnownModel(
        card=_v1_card(f"Depth Anything v1 {size}"),
        config=replace(config, taps="last"),
        filename=filename,
        urls=(f"https://huggingface.co/spaces/LiheYoung/Depth-Anything/resolve/main/checkpoints/{filename}",),
        sha256=None,
        license="Apache-2.0",
    )


def _metric_model(dataset: str, encoder: str) -> KnownModel:
    size, config = _SIZES[encoder]
    variant = _METRIC_DATASETS[dataset]
    repo = f"Depth-Anything-V2-Metric-{'Hypersim' if dataset == 'hypersim' else 'VKITTI'}-{size}"
    filename = f"depth_anything_v2_metric_{dataset}_{encoder}.pth"
    max_depth = METRIC_MAX_DEPTH[variant]
    return KnownModel(
        card=_card(f"Depth Anything V2 {size} metric {variant.split()[1]}", max_depth),
        config=replace(config, max_depth=max_depth),
        filename=filename,
        urls=(_hf_url(repo, filename),),
        sha256=None,
        license=_V2_LICENSES[encoder],
    )


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
KNOWN_MODELS += [_metric_model(dataset, encoder) for dataset in _METRIC_DATASETS for encoder in _SIZES]
KNOWN_MODELS += [_v1_model(encoder) for encoder in _SIZES]
