"""The DPT decoder shared by Depth Anything V2, MiDaS 3.x (DPT) and, through its fusion blocks, MiDaS v2.1.

A DPT network turns four encoder feature maps (finest first) into one depth map:
  reassemble  - transformer tokens -> feature maps at strides 4, 8, 16, 32 (readout handling, 1x1 projection,
                resampling); lives with the encoder in the checkpoints, so the family modules place these
                pieces under their own key names and call `tokens_to_map` / `make_resample` / `ReadoutProject`.
  scratch     - `DPTDecoder`: a 3x3 conv per level ("layerN_rn"), fusion blocks from coarse to fine
                ("refinenetN"), and the output head.
All attribute names follow the released checkpoints so their state dicts load unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

HeadLayout = Literal["midas", "depth_anything"]
"""midas: `output_conv` = conv, x2 upsample, conv, ReLU, conv, ReLU (MiDaS v2.1 / 3.x).
depth_anything: `output_conv1` conv, resize to the patch grid x patch size, then `output_conv2`."""

HeadActivation = Literal["relu", "sigmoid", "none"]
"""Last layer of the head: ReLU for relative depth, sigmoid for metric Depth Anything V2 (a fraction of its
maximum depth), none for Depth Anything 3 (its family module applies exp). None has parameters, so all load the
same state dict."""

_HEAD_ACTIVATIONS = {"relu": lambda: nn.ReLU(True), "sigmoid": nn.Sigmoid, "none": nn.Identity}


class ReadoutProject(nn.Module):
    """DPT's "project" readout: concatenate the class token to every patch token and project back."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project = readout_mlp(dim)

    def forward(self, patch_tokens: torch.Tensor, cls_token: torch.Tensor) -> torch.Tensor:
        return self.project(with_class_token(patch_tokens, cls_token))


def readout_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())


def with_class_token(patch_tokens: torch.Tensor, cls_token: torch.Tensor) -> torch.Tensor:
    """[B,N,C] patches and [B,C] class token -> [B,N,2C]."""
    return torch.cat((patch_tokens, cls_token.unsqueeze(1).expand_as(patch_tokens)), dim=-1)


def tokens_to_map(tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """[B, grid_h*grid_w, C] patch tokens -> [B, C, grid_h, grid_w] feature map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], grid_h, grid_w)


def make_resample(channels: int, scale: float) -> nn.Module:
    """The learned resampling that takes a patch-grid map to its DPT level (x4, x2, x1 or x0.5)."""
    if scale == 4:
        return nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=4, padding=0)
    if scale == 2:
        return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2, padding=0)
    if scale == 1:
        return nn.Identity()
    if scale == 0.5:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    raise ValueError(f"DPT resampling supports the scales 4, 2, 1 and 0.5, not {scale}")


DPT_LEVEL_SCALES = (4, 2, 1, 0.5)
"""Resampling of the four reassembled maps relative to the patch grid (strides 4, 8, 16, 32 at patch 16)."""


class ResidualConvUnit(nn.Module):
    """Two 3x3 convs with pre-activation and a skip connection.

    `skip_after_activation` reproduces MiDaS v2.1, whose in-place ReLU overwrote the input before the skip
    addition, so its weights were trained with relu(x) + f(x) instead of x + f(x).
    """

    def __init__(self, features: int, use_bn: bool = False, skip_after_activation: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)
        self.use_bn = use_bn
        self.skip_after_activation = skip_after_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(x)
        out = self.conv1(activated)
        if self.use_bn:
            out = self.bn1(out)
        out = self.conv2(F.relu(out))
        if self.use_bn:
            out = self.bn2(out)
        return out + (activated if self.skip_after_activation else x)


class FeatureFusionBlock(nn.Module):
    """Adds the refined skip feature to the coarser path, refines, upsamples, and (optionally) projects."""

    def __init__(
        self,
        features: int,
        use_bn: bool = False,
        out_conv: bool = True,
        expand: bool = False,
        align_corners: bool = True,
        skip_after_activation: bool = False,
        lateral: bool = True,
    ) -> None:
        super().__init__()
        # The coarsest block never gets a skip; Depth Anything 3 leaves its unused unit out of the checkpoint.
        self.resConfUnit1 = ResidualConvUnit(features, use_bn, skip_after_activation) if lateral else None
        self.resConfUnit2 = ResidualConvUnit(features, use_bn, skip_after_activation)
        if out_conv:
            self.out_conv = nn.Conv2d(features, features // 2 if expand else features, kernel_size=1, bias=True)
        else:
            self.out_conv = None
        self.align_corners = align_corners

    def forward(
        self, path: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        if size is None:
            path = F.interpolate(path, scale_factor=2.0, mode="bilinear", align_corners=self.align_corners)
        else:
            path = F.interpolate(path, size=tuple(size), mode="bilinear", align_corners=self.align_corners)
        return path if self.out_conv is None else self.out_conv(path)


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: tuple[int, int, int, int]
    """Channels of the four encoder maps, finest first."""
    features: int
    use_bn: bool = False
    expand: bool = False
    """MiDaS v2.1 Small: level widths features x (1, 2, 4, 8), each fusion block halving on the way up."""
    fusion_out_conv: bool = True
    align_corners: bool = True
    """Of the fusion blocks' upsampling."""
    skip_after_activation: bool = False
    head: HeadLayout = "midas"
    head_align_corners: bool = True
    """Of the midas head's x2 upsampling (True for DPT, False for v2.1)."""
    head_hidden: int = 32
    head_outputs: int = 1
    """Channels of the depth_anything head's last conv (Depth Anything 3's DualDPT adds a confidence channel)."""
    head_activation: HeadActivation = "relu"
    coarsest_lateral: bool = True
    """Whether refinenet4 has the (unused) lateral unit resConfUnit1, as every checkpoint but Depth Anything 3's."""


class DPTDecoder(nn.Module):
    """The checkpoints' `scratch` module: per-level 3x3 convs, four fusion blocks, and the output head."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        f = config.features
        widths = (f, 2 * f, 4 * f, 8 * f) if config.expand else (f, f, f, f)
        for level, (cin, width) in enumerate(zip(config.in_channels, widths), start=1):
            self.add_module(f"layer{level}_rn", nn.Conv2d(cin, width, kernel_size=3, padding=1, bias=False))
        for level, width in zip((4, 3, 2, 1), reversed(widths)):
            block = FeatureFusionBlock(
                width,
                use_bn=config.use_bn,
                out_conv=config.fusion_out_conv,
                expand=config.expand and level > 1,
                align_corners=config.align_corners,
                skip_after_activation=config.skip_after_activation,
                lateral=level < 4 or config.coarsest_lateral,
            )
            self.add_module(f"refinenet{level}", block)
        hidden = config.head_hidden
        if config.head == "midas":
            self.output_conv = nn.Sequential(
                nn.Conv2d(f, f // 2, kernel_size=3, padding=1),
                _Upsample2x(config.head_align_corners),
                nn.Conv2d(f // 2, hidden, kernel_size=3, padding=1),
                nn.ReLU(True),
                nn.Conv2d(hidden, 1, kernel_size=1),
                nn.ReLU(True),
            )
        elif config.head == "depth_anything":
            self.output_conv1 = nn.Conv2d(f, f // 2, kernel_size=3, padding=1)
            self.output_conv2 = nn.Sequential(
                nn.Conv2d(f // 2, hidden, kernel_size=3, padding=1),
                nn.ReLU(True),
                nn.Conv2d(hidden, config.head_outputs, kernel_size=1),
                _HEAD_ACTIVATIONS[config.head_activation](),
            )
        else:
            raise ValueError(f"unknown DPT head layout {config.head!r}")
        self.config = config

    def fuse(self, layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Four encoder maps (finest first) -> fusion outputs [path_4, path_3, path_2, path_1]."""
        rn = [getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(layers, start=1)]
        path_4 = self.refinenet4(rn[3], size=rn[2].shape[2:])
        path_3 = self.refinenet3(path_4, rn[2], size=rn[1].shape[2:])
        path_2 = self.refinenet2(path_3, rn[1], size=rn[0].shape[2:])
        path_1 = self.refinenet1(path_2, rn[0])
        return [path_4, path_3, path_2, path_1]

    def head(self, path_1: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
        """Finest fusion output -> [B,1,h,w] non-negative prediction. `out_size` only for the depth_anything layout."""
        if self.config.head == "midas":
            return self.output_conv(path_1)
        return self.output_conv2(self.neck(path_1, out_size))

    def neck(self, path_1: torch.Tensor, out_size: Sequence[int] | None) -> torch.Tensor:
        """The depth_anything layout's shared features before `output_conv2` (Depth Anything 3's sky head reads
        them too): `output_conv1`, resized to the patch grid x patch size."""
        if out_size is None:
            raise ValueError("the depth_anything head needs the output size")
        out = self.output_conv1(path_1)
        return F.interpolate(out, size=tuple(out_size), mode="bilinear", align_corners=True)

    def forward(self, layers: Sequence[torch.Tensor], out_size: Sequence[int] | None = None) -> torch.Tensor:
        return self.head(self.fuse(layers)[-1], out_size)


class _Upsample2x(nn.Module):
    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=self.align_corners)
