"""MiDaS 3.x DPT networks: BEiT-L 512 / 384 (MiDaS 3.1), ViT-L/16 384 and ViT-B + ResNet-50 hybrid 384 (DPT 3.0).

Loads the authors' checkpoints unchanged: `pretrained.model.*` is the timm backbone (classifier head included,
unused), `pretrained.act_postprocess{1..4}.*` the reassemble stages (readout projection at index 0, 1x1 conv at
3, resampling at 4; indices 1-2 are parameter-free reshapes), `scratch.*` the shared DPT decoder.

The backbones run at any input size whose sides are multiples of 32: ViT position embeddings are resampled
bilinearly and BEiT's relative-position-bias tables are resized to the new window, as the authors' code does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .base import HALF_MEAN, HALF_STD, KnownModel, ModelCard, relative_card
from .dpt import DPT_LEVEL_SCALES, DecoderConfig, DPTDecoder, ReadoutProject, make_resample, tokens_to_map

FAMILY = "midas_dpt"
PATCH_SIZE = 16

Backbone = Literal["beitl16_512", "beitl16_384", "vitl16_384", "vitb_rn50_384"]


@dataclass(frozen=True)
class MidasDPTConfig:
    backbone: Backbone
    features: int = 256


@dataclass(frozen=True)
class _BackboneSpec:
    timm_name: str
    native_size: int
    embed_dim: int
    hooks: tuple[int, int, int, int]
    """Transformer blocks whose outputs feed the four levels (the hybrid takes levels 1-2 from its ResNet)."""
    level_channels: tuple[int, int, int, int]


_BACKBONES: dict[str, _BackboneSpec] = {
    "beitl16_512": _BackboneSpec("beit_large_patch16_512", 512, 1024, (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "beitl16_384": _BackboneSpec("beit_large_patch16_384", 384, 1024, (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "vitl16_384": _BackboneSpec("vit_large_patch16_384", 384, 1024, (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "vitb_rn50_384": _BackboneSpec("vit_base_r50_s16_384", 384, 768, (0, 1, 8, 11), (256, 512, 768, 768)),
}

_HYBRID_CNN_LEVELS = 2
"""The hybrid's first two levels are its ResNet stages 1-2 (strides 4, 8), passed through unchanged."""

BEIT_L_512 = MidasDPTConfig("beitl16_512")
BEIT_L_384 = MidasDPTConfig("beitl16_384")
VIT_L_384 = MidasDPTConfig("vitl16_384")
HYBRID_384 = MidasDPTConfig("vitb_rn50_384")


def _reassemble_stage(embed_dim: int, channels: int, scale: float) -> nn.Sequential:
    layers: list[nn.Module] = [ReadoutProject(embed_dim), nn.Identity(), nn.Identity()]
    layers.append(nn.Conv2d(embed_dim, channels, kernel_size=1))
    resample = make_resample(channels, scale)
    if not isinstance(resample, nn.Identity):
        layers.append(resample)
    return nn.Sequential(*layers)


def _passthrough_stage() -> nn.Sequential:
    return nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity())


def vit_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """[1, 1+N, C] ViT position embedding resized (bilinear) to a grid_h x grid_w patch grid."""
    side = int(round((pos_embed.shape[1] - 1) ** 0.5))
    if (grid_h, grid_w) == (side, side):
        return pos_embed
    grid = pos_embed[0, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
    return torch.cat((pos_embed[:, :1], grid), dim=1)


def beit_relative_position_index(window_h: int, window_w: int) -> torch.Tensor:
    """Index into BEiT's relative-position-bias table for every (query, key) pair of a window plus class token.

    The table holds (2h-1)(2w-1) relative offsets in row-major order, then three class-token entries
    (class->patch, patch->class, class->class).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_h), torch.arange(window_w), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    offsets = (relative[..., 0] + window_h - 1) * (2 * window_w - 1) + (relative[..., 1] + window_w - 1)
    num_offsets = (2 * window_h - 1) * (2 * window_w - 1)
    tokens = window_h * window_w + 1
    index = torch.empty(tokens, tokens, dtype=torch.long)
    index[1:, 1:] = offsets
    index[0, :] = num_offsets
    index[:, 0] = num_offsets + 1
    index[0, 0] = num_offsets + 2
    return index


def beit_relative_position_bias(
    table: torch.Tensor, native_window: tuple[int, int], window: tuple[int, int], index: torch.Tensor
) -> torch.Tensor:
    """[1, heads, T, T] attention bias for `window`, resizing the native offset table bilinearly when needed."""
    if window != native_window:
        old_h, old_w = 2 * native_window[0] - 1, 2 * native_window[1] - 1
        new_h, new_w = 2 * window[0] - 1, 2 * window[1] - 1
        offsets = table[: old_h * old_w].reshape(1, old_h, old_w, -1).permute(0, 3, 1, 2)
        offsets = F.interpolate(offsets, size=(new_h, new_w), mode="bilinear", align_corners=False)
        table = torch.cat((offsets.permute(0, 2, 3, 1).reshape(new_h * new_w, -1), table[old_h * old_w :]))
    tokens = index.shape[0]
    return table[index.reshape(-1)].reshape(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)


def _beit_attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    batch, tokens, _ = x.shape
    qkv_bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
    qkv = F.linear(x, attn.qkv.weight, qkv_bias).reshape(batch, tokens, 3, attn.num_heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    bias = bias.to(q.dtype)
    if getattr(attn, "fused_attn", True):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        out = ((q * attn.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


def _beit_block(block: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    attended = _beit_attention(block.attn, block.norm1(x), bias)
    x = x + (attended if block.gamma_1 is None else block.gamma_1 * attended)
    mixed = block.mlp(block.norm2(x))
    return x + (mixed if block.gamma_2 is None else block.gamma_2 * mixed)


class DPTEncoder(nn.Module):
    """The checkpoints' `pretrained` module: the timm backbone (`model`) and the four reassemble stages."""

    def __init__(self, config: MidasDPTConfig) -> None:
        super().__init__()
        spec = _BACKBONES[config.backbone]
        self.spec = spec
        self.kind = config.backbone
        # The released state dicts include the ImageNet classifier (1000 classes), so it is kept.
        self.model = timm.create_model(spec.timm_name, pretrained=False)
        cnn_levels = _HYBRID_CNN_LEVELS if self.is_hybrid else 0
        for level in range(4):
            if level < cnn_levels:
                stage = _passthrough_stage()
            else:
                stage = _reassemble_stage(spec.embed_dim, spec.level_channels[level], DPT_LEVEL_SCALES[level])
            self.add_module(f"act_postprocess{level + 1}", stage)
        if self.is_beit:
            for block in self.model.blocks:
                # MiDaS 3.1 was saved with a timm whose index buffer was persistent, so it is part of the state dict.
                block.attn.register_buffer("relative_position_index", block.attn.relative_position_index)
            self._window_index: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def is_hybrid(self) -> bool:
        return self.kind == "vitb_rn50_384"

    @property
    def is_beit(self) -> bool:
        return self.kind.startswith("beit")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalized [B,3,H,W] (multiples of 32) -> four maps at strides 4, 8, 16, 32."""
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        cnn_maps: list[torch.Tensor] = []
        if self.is_hybrid:
            resnet = self.model.patch_embed.backbone
            features = resnet.stem(x)
            for stage in resnet.stages:
                features = stage(features)
                cnn_maps.append(features)
            features = resnet.norm(features)
            cnn_maps = cnn_maps[:_HYBRID_CNN_LEVELS]
        else:
            features = x
        patches = self.model.patch_embed.proj(features).flatten(2).transpose(1, 2)
        tokens = torch.cat((self.model.cls_token.expand(patches.shape[0], -1, -1).to(patches.dtype), patches), 1)
        hooks = self.spec.hooks[len(cnn_maps):]
        run_transformer = self._beit_tokens if self.is_beit else self._vit_tokens
        token_levels = run_transformer(tokens, grid_h, grid_w, hooks)
        maps = list(cnn_maps)
        for level, level_tokens in enumerate(token_levels, start=len(cnn_maps) + 1):
            stage = getattr(self, f"act_postprocess{level}")
            patch_tokens = stage[0](level_tokens[:, 1:], level_tokens[:, 0])
            feature_map = tokens_to_map(patch_tokens, grid_h, grid_w)
            for layer in stage[3:]:
                feature_map = layer(feature_map)
            maps.append(feature_map)
        return maps

    def _vit_tokens(
        self, tokens: torch.Tensor, grid_h: int, grid_w: int, hooks: tuple[int, ...]
    ) -> list[torch.Tensor]:
        tokens = tokens + vit_pos_embed(self.model.pos_embed, grid_h, grid_w).to(tokens.dtype)
        return _run_blocks(self.model.blocks, tokens, hooks, lambda block, t: block(t))

    def _beit_tokens(
        self, tokens: torch.Tensor, grid_h: int, grid_w: int, hooks: tuple[int, ...]
    ) -> list[torch.Tensor]:
        native = self.model.blocks[0].attn.window_size
        window = (grid_h, grid_w)
        if window == tuple(native):
            index = self.model.blocks[0].attn.relative_position_index
        else:
            index = self._window_index.get(window)
            if index is None or index.device != tokens.device:
                index = beit_relative_position_index(grid_h, grid_w).to(tokens.device)
                self._window_index[window] = index

        def run(block: nn.Module, t: torch.Tensor) -> torch.Tensor:
            table = block.attn.relative_position_bias_table
            bias = beit_relative_position_bias(table, tuple(native), window, index)
            return _beit_block(block, t, bias)

        return _run_blocks(self.model.blocks, tokens, hooks, run)


def _run_blocks(
    blocks: nn.Module,
    tokens: torch.Tensor,
    hooks: tuple[int, ...],
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """Tokens after each hooked block; stops after the last hook (later blocks feed nothing)."""
    outputs = []
    for index, block in enumerate(blocks):
        tokens = run(block, tokens)
        if index in hooks:
            outputs.append(tokens)
        if index >= hooks[-1]:
            break
    return outputs


class MidasDPT(nn.Module):
    """Normalized RGB [B,3,h,w] (multiples of 32) -> relative inverse depth [B,h,w], non-negative."""

    def __init__(self, config: MidasDPTConfig) -> None:
        super().__init__()
        self.config = config
        self.pretrained = DPTEncoder(config)
        self.scratch = DPTDecoder(
            DecoderConfig(in_channels=_BACKBONES[config.backbone].level_channels, features=config.features)
        )
        if self.pretrained.is_beit:
            self.register_load_state_dict_pre_hook(_tolerate_missing_position_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scratch(self.pretrained(x)).squeeze(1)

    def forward_with_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Depth [B,h,w] plus the decoder activations metric heads (ZoeDepth) build on:
        l4_rn (coarsest level after its 3x3 conv), r4..r1 (fusion outputs, coarse to fine) and out_conv
        (the head's 32-channel features at full resolution, after their ReLU)."""
        layers = self.pretrained(x)
        paths = self.scratch.fuse(layers)
        hidden = self.scratch.output_conv[:4](paths[-1])
        depth = self.scratch.output_conv[4:](hidden).squeeze(1)
        named = {"l4_rn": self.scratch.layer4_rn(layers[3]), "out_conv": hidden}
        named.update({f"r{4 - i}": path for i, path in enumerate(paths)})
        return depth, named


def _tolerate_missing_position_index(module: MidasDPT, state_dict: dict, prefix: str, *_: object) -> None:
    # Re-exports made with a newer timm drop these derived (non-learned) buffers; regenerate them (not copied from
    # the module, whose buffers may be uninitialised when it was built on the meta device and emptied).
    for index, block in enumerate(module.pretrained.model.blocks):
        key = f"{prefix}pretrained.model.blocks.{index}.attn.relative_position_index"
        if key not in state_dict:
            window = block.attn.window_size
            state_dict[key] = beit_relative_position_index(*window).to(block.attn.relative_position_index.device)


def build(config: MidasDPTConfig) -> MidasDPT:
    return MidasDPT(config)


_BLOCK_KEY = re.compile(r"^pretrained\.model\.blocks\.(\d+)\.")


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> MidasDPTConfig | None:
    """Recognise a MiDaS 3.x DPT checkpoint (BEiT-L 512/384, ViT-L 384, hybrid 384); None if it is not one."""
    if "pretrained.model.patch_embed.proj.weight" not in state_dict or "scratch.output_conv.4.weight" not in state_dict:
        return None
    if "pretrained.act_postprocess4.3.weight" not in state_dict:
        return None
    depth = 1 + max((int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))), default=-1)
    embed_dim = state_dict["pretrained.model.cls_token"].shape[-1] if "pretrained.model.cls_token" in state_dict else 0
    table_key = "pretrained.model.blocks.0.attn.relative_position_bias_table"
    if table_key in state_dict:
        if (embed_dim, depth) != (1024, 24):
            return None
        offsets = state_dict[table_key].shape[0] - 3
        native = next(
            (name for name, spec in _BACKBONES.items()
             if name.startswith("beit") and (2 * (spec.native_size // PATCH_SIZE) - 1) ** 2 == offsets),
            None,
        )
        if native is None:
            return None
        backbone: Backbone = native  # type: ignore[assignment]
    elif "pretrained.model.patch_embed.backbone.stem.conv.weight" in state_dict:
        if (embed_dim, depth) != (768, 12):
            return None
        backbone = "vitb_rn50_384"
    elif "pretrained.model.pos_embed" in state_dict:
        if (embed_dim, depth) != (1024, 24):
            return None
        backbone = "vitl16_384"
    else:
        return None
    return MidasDPTConfig(backbone=backbone, features=state_dict["scratch.layer1_rn.weight"].shape[0])


def _card(name: str, net_size: int) -> ModelCard:
    # The authors' model_loader.py: keep aspect, "minimal" resize to the net size, multiple of 32,
    # bicubic (cv2.INTER_CUBIC), mean = std = 0.5 on RGB in 0..1.
    return relative_card(name, FAMILY, net_size, 32, "minimal", HALF_MEAN, HALF_STD)


_MIDAS_V31 = "https://github.com/isl-org/MiDaS/releases/download/v3_1/"
_MIDAS_V3 = "https://github.com/isl-org/MiDaS/releases/download/v3/"
_DPT_V10 = "https://github.com/intel-isl/DPT/releases/download/1_0/"

KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=_card("MiDaS 3.1 DPT BEiT-L 512", 512),
        config=BEIT_L_512,
        filename="dpt_beit_large_512.pt",
        urls=(_MIDAS_V31 + "dpt_beit_large_512.pt",),
        sha256=None,  # the authors publish no digest
        license="MIT",
    ),
    KnownModel(
        card=_card("MiDaS 3.1 DPT BEiT-L 384", 384),
        config=BEIT_L_384,
        filename="dpt_beit_large_384.pt",
        urls=(_MIDAS_V31 + "dpt_beit_large_384.pt",),
        sha256=None,  # the authors publish no digest
        license="MIT",
    ),
    KnownModel(
        card=_card("MiDaS 3.0 DPT Large 384", 384),
        config=VIT_L_384,
        filename="dpt_large-midas-2f21e586.pt",
        # The same weights were re-released as MiDaS v3 dpt_large_384.pt.
        urls=(_DPT_V10 + "dpt_large-midas-2f21e586.pt", _MIDAS_V3 + "dpt_large_384.pt"),
        # Starts with the torch.hub hash prefix in the file name; the v3 re-release has the same digest.
        sha256="2f21e586477d90cb9624c7eef5df7891edca49a1c4795ee2cb631fd4daa6ca69",
        license="MIT",
        size_bytes=1_376_378_527,
    ),
    KnownModel(
        card=_card("MiDaS 3.0 DPT Hybrid 384", 384),
        config=HYBRID_384,
        filename="dpt_hybrid-midas-501f0c75.pt",
        urls=(_DPT_V10 + "dpt_hybrid-midas-501f0c75.pt", _MIDAS_V3 + "dpt_hybrid_384.pt"),
        # Starts with the torch.hub hash prefix in the file name (as recorded for the lllyasviel/Annotators copy).
        sha256="501f0c75b3bca7daec6b3682c5054c09b366765aef6fa3a09d03a5cb4b230853",
        license="MIT",
    ),
]
