"""Depth Pro (Bochkovskii et al., Apple, 2024): metric depth and the camera's field of view from one image.

The multi-resolution patch encoder as the authors built it: the 1536 x 1536 input becomes an image pyramid (1536,
768, 384); the two finer levels are cut into overlapping 384 x 384 patches (5 x 5 with 25 % overlap, 3 x 3 with 50 %),
and all 35 patches go through one DINOv2-L/16 ViT (timm's DINOv2-L with 16-pixel patches at 384). Token maps are
stitched back (dropping half of each overlap), upsampled by transposed convolutions and fused, together with a
second ViT that sees the whole image at 384, by a DPT-style decoder. A third ViT plus the decoder's coarsest map feed
the field-of-view head.

The network predicts *canonical* inverse depth, i.e. for a camera whose focal length equals the image width; the
estimator turns it into metres with the focal length the FOV head predicts (or one the user gives), as the authors'
`infer` does. Released weights: `depth_pro.pt` (keys `encoder.*`, `decoder.*`, `head.*`, `fov.*`), loaded strictly.
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
from .base import HALF_MEAN, HALF_STD, KnownModel, ModelCard, Preprocess

FAMILY = "depth_pro"
PATCH_GRID = 24
"""Tokens per side of every ViT input (384 / 16); the FOV head's convolutions are sized for it."""
PYRAMID_OVERLAPS = (0.25, 0.5)
"""Overlap of neighbouring patches at the 1536 and 768 pyramid levels."""
DEFAULT_PATCH_CHUNK = 35
"""Patches per ViT pass on the CPU: all of them at once (their ViT activations are a few hundred MB)."""
GPU_PATCH_CHUNK = 8
"""Patches per ViT pass on a GPU, so that the ViT's peak stays small beside the decoder's 768 and 1536 px maps and
the three ViT-L's weights on an 8 GB card in fp16."""


@dataclass(frozen=True)
class DepthProConfig:
    embed_dim: int = 1024
    depth: int = 24
    patch_size: int = 16
    hook_blocks: tuple[int, int] = (5, 11)
    """Patch-encoder blocks whose (un-normalized) tokens become the two finest levels."""
    encoder_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    decoder_features: int = 256
    fov_head: bool = True

    @property
    def backbone_size(self) -> int:
        return PATCH_GRID * self.patch_size

    @property
    def input_size(self) -> int:
        return 4 * self.backbone_size


DEPTH_PRO = DepthProConfig()


def _vit(config: DepthProConfig) -> nn.Module:
    # timm's DINOv2 ViT with the patch size and image size the authors resampled it to; num_heads follows DINOv2's
    # 64 channels per head (ViT-L: 16).
    return timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0,
                             img_size=config.backbone_size, patch_size=config.patch_size,
                             embed_dim=config.embed_dim, depth=config.depth, num_heads=config.embed_dim // 64)


def vit_tokens(vit: nn.Module, x: torch.Tensor, hooks: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalized output tokens [B,1+N,C] of a timm ViT, and the raw tokens after each block in `hooks`."""
    tokens = vit.patch_embed(x)
    tokens = torch.cat((vit.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens), dim=1)
    tokens = tokens + vit.pos_embed.to(tokens.dtype)
    hooked = []
    for index, block in enumerate(vit.blocks):
        tokens = block(tokens)
        if index in hooks:
            hooked.append(tokens)
    return vit.norm(tokens), hooked


def token_map(tokens: torch.Tensor) -> torch.Tensor:
    """[B,1+N,C] tokens (class token first) -> [B,C,g,g] patch map."""
    side = math.isqrt(tokens.shape[1] - 1)
    return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], side, side)


def patch_steps(image_size: int, patch: int, overlap: float) -> tuple[int, int]:
    """(patches per side, stride in pixels) of the sliding window over a square image."""
    stride = int(patch * (1 - overlap))
    return int(math.ceil((image_size - patch) / stride)) + 1, stride


def split_patches(x: torch.Tensor, patch: int, overlap: float) -> torch.Tensor:
    """[B,C,S,S] -> [steps*steps*B, C, patch, patch], row-major over the window positions, batch innermost."""
    steps, stride = patch_steps(x.shape[-1], patch, overlap)
    return torch.cat([x[..., r * stride: r * stride + patch, c * stride: c * stride + patch]
                      for r in range(steps) for c in range(steps)], dim=0)


def merge_patches(maps: torch.Tensor, batch: int, trim: int) -> torch.Tensor:
    """Stitch split_patches' token maps back: each inner edge loses `trim` cells (half the overlap)."""
    steps = math.isqrt(maps.shape[0] // batch)
    rows = []
    for r in range(steps):
        row = []
        for c in range(steps):
            cell = maps[(r * steps + c) * batch: (r * steps + c + 1) * batch]
            top, left = (trim if r > 0 else 0), (trim if c > 0 else 0)
            bottom = cell.shape[-2] - (trim if r < steps - 1 else 0)
            right = cell.shape[-1] - (trim if c < steps - 1 else 0)
            row.append(cell[..., top:bottom, left:right])
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows, dim=-2)


def _project_upsample(dim_in: int, dim_out: int, upsamplings: int, dim_mid: int | None = None) -> nn.Sequential:
    """1x1 projection, then x2 transposed convolutions (no biases), in the authors' Sequential layout."""
    dim_mid = dim_mid or dim_out
    layers: list[nn.Module] = [nn.Conv2d(dim_in, dim_mid, kernel_size=1, bias=False)]
    layers += [nn.ConvTranspose2d(dim_mid if i == 0 else dim_out, dim_out, kernel_size=2, stride=2, bias=False)
               for i in range(upsamplings)]
    return nn.Sequential(*layers)


class MultiResolutionEncoder(nn.Module):
    """`encoder`: the patch ViT over the pyramid's patches, the image ViT over the whole image, and the upsampling
    projections that turn their token maps into five levels (finest first)."""

    def __init__(self, config: DepthProConfig) -> None:
        super().__init__()
        dims, width = config.encoder_dims, config.embed_dim
        self.config = config
        self.patch_encoder = _vit(config)
        self.image_encoder = _vit(config)
        self.upsample_latent0 = _project_upsample(width, config.decoder_features, 3, dim_mid=dims[0])
        self.upsample_latent1 = _project_upsample(width, dims[0], 2)
        self.upsample0 = _project_upsample(width, dims[1], 1)
        self.upsample1 = _project_upsample(width, dims[2], 1)
        self.upsample2 = _project_upsample(width, dims[3], 1)
        self.upsample_lowres = nn.ConvTranspose2d(width, dims[3], kernel_size=2, stride=2, bias=True)
        self.fuse_lowres = nn.Conv2d(2 * dims[3], dims[3], kernel_size=1, bias=True)
        self.patch_chunk = DEFAULT_PATCH_CHUNK

    def _encode_patches(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token maps of every patch after the last block and after the two hooked blocks, in chunks of patches."""
        outputs, hook0, hook1 = [], [], []
        chunk = self.patch_chunk if patches.device.type == "cpu" else min(self.patch_chunk, GPU_PATCH_CHUNK)
        for start in range(0, patches.shape[0], chunk):
            tokens, (early, middle) = vit_tokens(self.patch_encoder, patches[start:start + chunk],
                                                 self.config.hook_blocks)
            outputs.append(token_map(tokens))
            hook0.append(token_map(early))
            hook1.append(token_map(middle))
        return torch.cat(outputs), torch.cat(hook0), torch.cat(hook1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch, patch = x.shape[0], self.config.backbone_size
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        quarter = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
        fine = split_patches(x, patch, PYRAMID_OVERLAPS[0])
        middle = split_patches(half, patch, PYRAMID_OVERLAPS[1])
        maps, hook0, hook1 = self._encode_patches(torch.cat((fine, middle, quarter)))
        fine_maps, middle_maps, coarse_map = torch.split(maps, [len(fine), len(middle), len(quarter)])

        def trim(overlap: float) -> int:  # half the overlap, in tokens
            return int(round(overlap * PATCH_GRID / 2))

        latent0 = merge_patches(hook0[: len(fine)], batch, trim(PYRAMID_OVERLAPS[0]))
        latent1 = merge_patches(hook1[: len(fine)], batch, trim(PYRAMID_OVERLAPS[0]))
        fine_map = merge_patches(fine_maps, batch, trim(PYRAMID_OVERLAPS[0]))
        middle_map = merge_patches(middle_maps, batch, trim(PYRAMID_OVERLAPS[1]))
        global_map = token_map(vit_tokens(self.image_encoder, quarter)[0])

        coarse = self.upsample2(coarse_map)
        fused_global = self.fuse_lowres(torch.cat((coarse, self.upsample_lowres(global_map)), dim=1))
        return [self.upsample_latent0(latent0), self.upsample_latent1(latent1), self.upsample0(fine_map),
                self.upsample1(middle_map), fused_global]


class _Residual(nn.Module):
    """`ResidualBlock`: x + (ReLU, conv3x3, ReLU, conv3x3)(x), the convs at indices 1 and 3 of `residual`."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.ReLU(False), nn.Conv2d(features, features, 3, padding=1),
                                      nn.ReLU(False), nn.Conv2d(features, features, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class FusionBlock(nn.Module):
    """Adds the refined lateral map, refines, optionally doubles the size (transposed conv), projects (1x1)."""

    def __init__(self, features: int, upsample: bool) -> None:
        super().__init__()
        self.resnet1 = _Residual(features)
        self.resnet2 = _Residual(features)
        self.deconv = (nn.ConvTranspose2d(features, features, kernel_size=2, stride=2, bias=False)
                       if upsample else None)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor, lateral: torch.Tensor | None = None) -> torch.Tensor:
        if lateral is not None:
            x = x + self.resnet1(lateral)
        x = self.resnet2(x)
        if self.deconv is not None:
            x = self.deconv(x)
        return self.out_conv(x)


class MultiResolutionDecoder(nn.Module):
    """`decoder`: projects the five levels to one width and fuses them from coarse to fine."""

    def __init__(self, config: DepthProConfig) -> None:
        super().__init__()
        widths = (config.decoder_features, *config.encoder_dims)
        features = config.decoder_features
        self.convs = nn.ModuleList(
            [nn.Identity() if widths[0] == features else nn.Conv2d(widths[0], features, 1, bias=False)]
            + [nn.Conv2d(w, features, 3, padding=1, bias=False) for w in widths[1:]])
        self.fusions = nn.ModuleList(FusionBlock(features, upsample=i != 0) for i in range(len(widths)))

    def forward(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(finest fused features, the coarsest level's projection for the FOV head)."""
        coarsest = self.convs[-1](levels[-1])
        features = self.fusions[-1](coarsest)
        for i in range(len(levels) - 2, -1, -1):
            features = self.fusions[i](features, self.convs[i](levels[i]))
        return features, coarsest


class FieldOfViewHead(nn.Module):
    """`fov`: its own ViT on the 384 image plus the decoder's coarsest features -> horizontal FOV in degrees."""

    def __init__(self, config: DepthProConfig) -> None:
        super().__init__()
        f = config.decoder_features
        self.encoder = nn.Sequential(_vit(config), nn.Linear(config.embed_dim, f // 2))
        self.downsample = nn.Sequential(nn.Conv2d(f, f // 2, 3, stride=2, padding=1), nn.ReLU(True))
        self.head = nn.Sequential(
            nn.Conv2d(f // 2, f // 4, 3, stride=2, padding=1), nn.ReLU(True),
            nn.Conv2d(f // 4, f // 8, 3, stride=2, padding=1), nn.ReLU(True),
            nn.Conv2d(f // 8, 1, kernel_size=6),
        )

    def forward(self, x: torch.Tensor, coarsest: torch.Tensor) -> torch.Tensor:
        quarter = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
        vit, project = self.encoder
        tokens = project(vit_tokens(vit, quarter)[0])
        lateral = self.downsample(coarsest)
        fused = tokens[:, 1:].transpose(1, 2).reshape_as(lateral) + lateral
        return self.head(fused).flatten()


class DepthPro(nn.Module):
    """Normalized RGB [B,3,1536,1536] -> (canonical inverse depth [B,1536,1536], horizontal FOV degrees [B] or None).

    Canonical inverse depth x width / focal = inverse depth in 1/metres.
    """

    def __init__(self, config: DepthProConfig) -> None:
        super().__init__()
        self.config = config
        f = config.decoder_features
        self.encoder = MultiResolutionEncoder(config)
        self.decoder = MultiResolutionDecoder(config)
        self.head = nn.Sequential(
            nn.Conv2d(f, f // 2, 3, padding=1),
            nn.ConvTranspose2d(f // 2, f // 2, kernel_size=2, stride=2, bias=True),
            nn.Conv2d(f // 2, 32, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(32, 1, kernel_size=1), nn.ReLU(),
        )
        self.fov = FieldOfViewHead(config) if config.fov_head else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = self.config.input_size
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"Depth Pro takes {size} x {size} inputs, got {tuple(x.shape[-2:])}.")
        features, coarsest = self.decoder(self.encoder(x))
        canonical_inverse = self.head(features).squeeze(1)
        fov = None if self.fov is None else self.fov(x, coarsest.detach())
        return canonical_inverse, fov


def build(config: DepthProConfig = DEPTH_PRO) -> DepthPro:
    return DepthPro(config)


_BLOCK_KEY = re.compile(r"^encoder\.patch_encoder\.blocks\.(\d+)\.")


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> DepthProConfig | None:
    """Recognise a Depth Pro checkpoint from its keys and shapes; None if it is not one."""
    required = ("encoder.patch_encoder.patch_embed.proj.weight", "encoder.image_encoder.cls_token",
                "encoder.upsample_latent0.0.weight", "encoder.fuse_lowres.weight", "decoder.convs.1.weight",
                "head.0.weight", "encoder.upsample0.0.weight", "encoder.upsample1.0.weight",
                "encoder.upsample2.0.weight", "encoder.upsample_latent1.0.weight")
    if any(key not in state_dict for key in required):
        return None
    proj = state_dict["encoder.patch_encoder.patch_embed.proj.weight"].shape
    if len(proj) != 4 or proj[-1] != proj[-2]:
        return None
    depth = 1 + max((int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))), default=-1)
    return DepthProConfig(
        embed_dim=proj[0], depth=depth, patch_size=proj[-1],
        encoder_dims=(state_dict["encoder.upsample_latent1.0.weight"].shape[0],
                      state_dict["encoder.upsample0.0.weight"].shape[0],
                      state_dict["encoder.upsample1.0.weight"].shape[0],
                      state_dict["encoder.upsample2.0.weight"].shape[0]),
        decoder_features=state_dict["decoder.convs.1.weight"].shape[0],
        fov_head="fov.head.0.weight" in state_dict,
    )


def card_for_config(card: ModelCard, config: DepthProConfig) -> ModelCard:
    """The card with the input size of this config (smaller test-built networks take smaller inputs)."""
    size = config.input_size
    return replace(card, receptive_field=size, preprocess=replace(card.preprocess, net_size=size, multiple_of=size))


# The authors' infer: the whole image resized (bilinear) to 1536 x 1536, mean = std = 0.5; the inverse depth is
# resized back bilinearly before it is inverted.
PREPROCESS = Preprocess(net_size=DEPTH_PRO.input_size, multiple_of=DEPTH_PRO.input_size, resize_rule="exact",
                        mean=HALF_MEAN, std=HALF_STD, interpolation="bilinear", keep_aspect=False,
                        upsample="bilinear", fixed_size=True)

KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=ModelCard(name="Depth Pro (metric, predicts the field of view)", family=FAMILY, preprocess=PREPROCESS,
                       output_kind=DepthKind.METRIC, receptive_field=DEPTH_PRO.input_size,
                       output_is_inverse=True, focal_scaled=True),
        config=DEPTH_PRO,
        filename="depth_pro.pt",
        urls=("https://ml-site.cdn-apple.com/models/depth-pro/depth_pro.pt",
              "https://huggingface.co/apple/DepthPro/resolve/main/depth_pro.pt"),
        sha256=None,  # Apple publishes no digest; Hugging Face's served digest is checked when it comes from there
        license="Apple sample-code licence (ml-depth-pro LICENSE, which covers the weights; grants no patent rights)",
    ),
]
