"""Video Depth Anything (Chen et al., 2025): Depth Anything V2 with temporal attention in its DPT decoder.

The network is Depth Anything V2's DINOv2 encoder and DPT decoder (reused from depth_anything_v2.py / dpt.py) with
four temporal ("motion") modules that let every pixel attend to the same pixel in the other frames of a window:
two on the reassembled encoder levels 3 and 4, two after the fusion blocks 4 and 3. The encoder runs per frame; only
the decoder mixes frames. Checkpoints `video_depth_anything_vit{s,b,l}.pth` (relative inverse depth) and
`metric_video_depth_anything_vit{s,b,l}.pth` (metres) share one key layout: `pretrained.*` (DINOv2), `head.*` (the
DPT head) and `head.motion_modules.{0..3}.temporal_transformer.*`. The two kinds cannot be told apart by their
weights, so the official file name (or the user) says which one a file is.

Windows of frames, their alignment and the streaming mode live in depth_core/video_depth.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..depth import DepthKind
from .base import IMAGENET_MEAN, IMAGENET_STD, KnownModel, ModelCard, relative_card
from .depth_anything_v2 import (
    _ENCODERS,
    PATCH_SIZE,
    DepthAnythingHead,
    DepthAnythingV2Config,
    _dinov2,
    dinov2_intermediate,
)
from .depth_anything_v2 import config_from_state_dict as image_config_from_state_dict
from .dpt import tokens_to_map, with_class_token

FAMILY = "video_depth_anything"
NATIVE_SIZE = 518
WINDOW = 32
"""Frames the temporal modules were trained on (their position table has this many rows)."""

_HEADS = 8
_FINE_FRAMES = 4

Features = list[tuple[torch.Tensor, torch.Tensor]]
"""Per encoder tap: (patch tokens [T,N,C], class token [T,C])."""

TemporalCache = list[torch.Tensor]
"""For each of the 4 temporal modules x 2 attention blocks: the normalized inputs [pixels, frames, C] it attended
over, which the streaming mode keeps instead of recomputing past frames."""


@dataclass(frozen=True)
class VideoDepthAnythingConfig:
    image: DepthAnythingV2Config
    """The DINOv2 encoder and DPT decoder, as in Depth Anything V2."""
    metric: bool = False
    """Metric checkpoints predict metres (no scale/shift alignment between windows); relative ones inverse depth."""
    window: int = WINDOW


SMALL = VideoDepthAnythingConfig(DepthAnythingV2Config("vits", 64, (48, 96, 192, 384)))
BASE = VideoDepthAnythingConfig(DepthAnythingV2Config("vitb", 128, (96, 192, 384, 768)))
LARGE = VideoDepthAnythingConfig(DepthAnythingV2Config("vitl", 256, (256, 512, 1024, 1024)))


class SinusoidalFramePosition(nn.Module):
    """`pos_encoder`: the transformer's sine/cosine table over frame positions, added before attention."""

    def __init__(self, channels: int, max_frames: int) -> None:
        super().__init__()
        position = torch.arange(max_frames).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, channels, 2) * (-math.log(10000.0) / channels))
        table = torch.zeros(1, max_frames, channels)
        table[0, :, 0::2] = torch.sin(position * frequency)
        table[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", table)  # saved in the checkpoints, so it stays a persistent buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention along the frame axis, every pixel on its own. With a cache, only the newest frame queries,
    attending over the cached frames and itself."""

    def __init__(self, channels: int, max_frames: int) -> None:
        super().__init__()
        self.heads = _HEADS
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.pos_encoder = SinusoidalFramePosition(channels, max_frames)

    def forward(self, x: torch.Tensor, cached: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [pixels, frames, C] -> (output like x, the input to cache for later frames)."""
        sequence = x if cached is None else torch.cat((cached, x), dim=1)
        sequence = self.pos_encoder(sequence)
        query = self.to_q(sequence[:, sequence.shape[1] - x.shape[1]:])
        key, value = self.to_k(sequence), self.to_v(sequence)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731  [P, heads, F, C/heads]
        attended = F.scaled_dot_product_attention(split(query), split(key), split(value))
        return self.to_out[0](attended.transpose(1, 2).flatten(2)), x


class GatedFeedForward(nn.Module):
    """`ff`: GEGLU (a linear layer to 2 x 4C, one half gating the other through GELU), then back to C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        gate = nn.Module()
        gate.proj = nn.Linear(channels, 8 * channels)
        self.net = nn.ModuleList([gate, nn.Dropout(0.0), nn.Linear(4 * channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.net[0].proj(x).chunk(2, dim=-1)
        return self.net[2](hidden * F.gelu(gate))


class TemporalBlock(nn.Module):
    def __init__(self, channels: int, max_frames: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(channels, max_frames) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(2))
        self.ff = GatedFeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, cache: Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, TemporalCache]:
        states = []
        for index, (attention, norm) in enumerate(zip(self.attention_blocks, self.norms)):
            update, state = attention(norm(x), None if cache is None else cache[index])
            x = x + update
            states.append(state)
        return x + self.ff(self.ff_norm(x)), states


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, max_frames: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, max_frames)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int, cache: Sequence[torch.Tensor] | None
                ) -> tuple[torch.Tensor, TemporalCache]:
        """x [B*frames, C, H, W] (frames consecutive) -> the same shape, plus the states to cache."""
        batch_frames, channels, height, width = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
        tokens = self.proj_in(tokens)
        # [B*F, HW, C] -> [B*HW, F, C]: attention runs along the frames of each pixel.
        tokens = tokens.unflatten(0, (-1, frames)).transpose(1, 2).flatten(0, 1)
        states: TemporalCache = []
        for block in self.transformer_blocks:
            tokens, block_states = block(tokens, cache)
            states += block_states
        tokens = self.proj_out(tokens)
        tokens = tokens.unflatten(0, (-1, height * width)).transpose(1, 2).flatten(0, 1)
        return tokens.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2) + x, states


class TemporalModule(nn.Module):
    def __init__(self, channels: int, max_frames: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, max_frames)

    def forward(self, x: torch.Tensor, frames: int, cache: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, TemporalCache]:
        return self.temporal_transformer(x, frames, cache)


class TemporalDepthHead(DepthAnythingHead):
    """`head`: Depth Anything's DPT head with temporal modules on levels 3, 4 and after fusion blocks 4, 3."""

    def __init__(self, embed_dim: int, config: VideoDepthAnythingConfig) -> None:
        super().__init__(embed_dim, config.image)
        image = config.image
        widths = (image.out_channels[2], image.out_channels[3], image.features, image.features)
        self.motion_modules = nn.ModuleList(TemporalModule(width, config.window) for width in widths)

    def reassemble(self, features: Features, grid_h: int, grid_w: int) -> list[torch.Tensor]:
        levels = []
        for i, (patch_tokens, cls_token) in enumerate(features):
            if self.readout_projects is not None:
                patch_tokens = self.readout_projects[i](with_class_token(patch_tokens, cls_token))
            levels.append(self.resize_layers[i](self.projects[i](tokens_to_map(patch_tokens, grid_h, grid_w))))
        return levels

    def forward(self, features: Features, grid_h: int, grid_w: int, frames: int,  # type: ignore[override]
                cache: TemporalCache | None = None) -> tuple[torch.Tensor, TemporalCache]:
        """Encoder features of B*frames images (frames consecutive) -> ([B*frames,1,h,w] depth, states to cache)."""
        scratch = self.scratch
        per_module = None if cache is None else [cache[2 * i: 2 * i + 2] for i in range(4)]
        layer_1, layer_2, layer_3, layer_4 = self.reassemble(features, grid_h, grid_w)
        layer_3, states_0 = self.motion_modules[0](layer_3, frames, per_module and per_module[0])
        layer_4, states_1 = self.motion_modules[1](layer_4, frames, per_module and per_module[1])
        rn_1, rn_2, rn_3, rn_4 = (scratch.layer1_rn(layer_1), scratch.layer2_rn(layer_2),
                                  scratch.layer3_rn(layer_3), scratch.layer4_rn(layer_4))
        path_4 = scratch.refinenet4(rn_4, size=rn_3.shape[2:])
        path_4, states_2 = self.motion_modules[2](path_4, frames, per_module and per_module[2])
        path_3 = scratch.refinenet3(path_4, rn_3, size=rn_2.shape[2:])
        path_3, states_3 = self.motion_modules[3](path_3, frames, per_module and per_module[3])
        # The finest levels mix no frames: run them a few frames at a time, which bounds the memory of a 32-frame
        # window at full resolution to that of a few images (the authors do the same).
        out_size = (grid_h * PATCH_SIZE, grid_w * PATCH_SIZE)
        depth = torch.cat([
            scratch.head(scratch.refinenet1(scratch.refinenet2(path_3[i:i + _FINE_FRAMES], rn_2[i:i + _FINE_FRAMES],
                                                               size=rn_1.shape[2:]), rn_1[i:i + _FINE_FRAMES]),
                         out_size=out_size)
            for i in range(0, path_3.shape[0], _FINE_FRAMES)])
        return depth, states_0 + states_1 + states_2 + states_3


class VideoDepthAnything(nn.Module):
    """Normalized RGB frames [T,3,h,w] of one clip (h, w multiples of 14) -> depth [T,h,w], non-negative.

    `forward` runs one window. `encode` (per frame, so windows can reuse the features of frames they share) and
    `decode` (across frames, optionally against cached states of earlier frames) split it for the video driver.
    """

    is_video_model = True
    """Read by the estimator: a batch of images given to this network is one clip."""

    def __init__(self, config: VideoDepthAnythingConfig) -> None:
        super().__init__()
        spec = _ENCODERS[config.image.encoder]
        self.config = config
        self.layers = spec.layers
        self.pretrained = _dinov2(config.image)
        self.head = TemporalDepthHead(spec.embed_dim, config)

    def encode(self, x: torch.Tensor) -> Features:
        return dinov2_intermediate(self.pretrained, x, self.layers)

    def decode(self, features: Features, size: tuple[int, int], cache: TemporalCache | None = None
               ) -> tuple[torch.Tensor, TemporalCache]:
        """Features of T frames (or of 1 frame with a cache of earlier frames) -> (depth [T,h,w], states)."""
        grid_h, grid_w = size[0] // PATCH_SIZE, size[1] // PATCH_SIZE
        frames = features[0][0].shape[0]
        depth, states = self.head(features, grid_h, grid_w, frames, cache)
        return F.relu(depth).squeeze(1), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.config.window:
            raise ValueError(f"Video Depth Anything takes at most {self.config.window} frames at once, got "
                             f"{x.shape[0]}; longer clips go through depth_core.video_depth.")
        return self.decode(self.encode(x), tuple(x.shape[-2:]))[0]


def build(config: VideoDepthAnythingConfig) -> VideoDepthAnything:
    return VideoDepthAnything(config)


_MOTION_KEY = "head.motion_modules.0.temporal_transformer.proj_in.weight"


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> VideoDepthAnythingConfig | None:
    """Recognise a Video Depth Anything checkpoint (any size) by its temporal modules; None if it is not one.

    Its encoder and DPT head are Depth Anything V2's under `head.` instead of `depth_head.`, so they are read by
    that family's recogniser on renamed keys. Metric or relative cannot be read from weights: relative is assumed
    and `config_for_variant` applies the file name or the user's choice.
    """
    if _MOTION_KEY not in state_dict or "head.motion_modules.3.temporal_transformer.proj_out.weight" not in state_dict:
        return None
    renamed = {("depth_head." + key[5:] if key.startswith("head.") else key): value
               for key, value in state_dict.items() if not key.startswith("head.motion_modules.")}
    image = image_config_from_state_dict(renamed)
    if image is None:
        return None
    table = state_dict.get("head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0."
                           "pos_encoder.pe")
    if table is None:
        return None  # rotary position variants were never released
    return VideoDepthAnythingConfig(image=image, window=table.shape[1])


def config_for_variant(config: VideoDepthAnythingConfig, variant: str, filename: str) -> VideoDepthAnythingConfig:
    """The config read from a state dict, completed with what only the file name or the user can say: variant
    "auto" reads the official name (`metric_video_depth_anything_*` = metres), "relative" or any "metric ..."
    choice overrides it for a renamed file."""
    if variant == "auto":
        metric = "metric" in Path(filename).name.lower()
    elif variant == "relative" or variant.startswith("metric"):
        metric = variant.startswith("metric")
    else:
        raise ValueError(f"Variant {variant!r} does not apply to Video Depth Anything ({filename}); choose auto, "
                         "relative, or a metric variant for a renamed metric file.")
    return replace(config, metric=metric)


def _card(name: str, metric: bool) -> ModelCard:
    # The authors' infer_video_depth: keep aspect, short side >= 518 ("lower_bound"), multiple of 14, bicubic,
    # ImageNet mean/std on RGB 0..1 (the frame size rule for very wide videos is the video driver's).
    card = relative_card(name, FAMILY, NATIVE_SIZE, PATCH_SIZE, "lower_bound", IMAGENET_MEAN, IMAGENET_STD)
    return replace(card, output_kind=DepthKind.METRIC) if metric else card


_SIZES = {"vits": ("Small", SMALL, "Apache-2.0"), "vitb": ("Base", BASE, "CC-BY-NC-4.0"),
          "vitl": ("Large", LARGE, "CC-BY-NC-4.0")}
"""The Video-Depth-Anything repository's licence section (Small Apache-2.0, Base/Large CC-BY-NC-4.0); the metric
models' Hugging Face cards give the same licence per size (Metric-Video-Depth-Anything-Small: apache-2.0)."""


_SHA256 = {
    "video_depth_anything_vits.pth": "13379300b739e659f076a59d52e9801bd8d38c541a7e71f73bbca4dcfb013609",
    "video_depth_anything_vitl.pth": "43df27c6b396042ba34ff7b798ab279f64d204d2e86d7a373968f8fa36d0e6fa",
}
"""The Hugging Face LFS object ids shown on the official file pages; the other files are checked against the
server's digest."""


def _known(encoder: str, metric: bool) -> KnownModel:
    size, config, license_name = _SIZES[encoder]
    prefix = "metric_" if metric else ""
    repo = f"{'Metric-' if metric else ''}Video-Depth-Anything-{size}"
    filename = f"{prefix}video_depth_anything_{encoder}.pth"
    return KnownModel(
        card=_card(f"{'Metric ' if metric else ''}Video Depth Anything {size}", metric),
        config=replace(config, metric=metric),
        filename=filename,
        urls=(f"https://huggingface.co/depth-anything/{repo}/resolve/main/{filename}",),
        sha256=_SHA256.get(filename),
        license=license_name,
    )


KNOWN_MODELS: list[KnownModel] = [_known(encoder, metric) for metric in (False, True) for encoder in _SIZES]

