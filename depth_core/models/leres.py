"""LeReS (AdelaiDepth, "Learning to Recover 3D Scene Shape from a Single Image", Yin et al., CVPR 2021): the
ResNeXt-101 32x8d depth model released as `res101.pth`.

Written here on timm's ResNeXt-101 with its own decoder (feature transfer blocks, fusion modules, adaptive output).
Parameter names follow the released checkpoint once depth_core.loading has unwrapped its {"depth_model": ...}
container and the DataParallel "module." prefix: `depth_model.encoder_modules.encoder.*` (the ResNeXt) and
`depth_model.decoder_modules.*`, so the file loads unchanged with strict=True.

LeReS predicts depth up to an unknown scale and shift (larger = farther). The pack's relative kind is inverse depth,
so the network's output is shifted to start at the authors' own offset (their shape-recovery demo shifts by
`- min + 0.5` before estimating the true shift) and inverted: ordering is kept and planes stay close to planar,
which negating the depth (the old extension's choice) would not give.
"""
from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..depth import DepthKind, inverse_of_affine_depth
from .base import IMAGENET_MEAN, IMAGENET_STD, KnownModel, ModelCard, Preprocess

DEPTH_SHIFT = 0.5
"""Added to the depth after subtracting its minimum, before inverting (see module docstring)."""


@dataclass(frozen=True)
class LeReSConfig:
    backbone: str = "resnext101_32x8d"


PREPROCESS = Preprocess(net_size=448, multiple_of=32, resize_rule="exact", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        interpolation="bilinear", keep_aspect=False, upsample="bicubic")

CARD = ModelCard(name="res101", family="leres", preprocess=PREPROCESS, output_kind=DepthKind.RELATIVE_INVERSE,
                 receptive_field=448)

KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=CARD,
        config=LeReSConfig(),
        filename="res101.pth",
        urls=(
            "https://cloudstor.aarnet.edu.au/plus/s/lTIJF4vrvHCAI31/download",
            "https://huggingface.co/lllyasviel/Annotators/resolve/5bc80eec2b4fddbb/res101.pth",
        ),
        # No digest is published; this leading part is what the old extension checked downloads against.
        sha256="1d696b2e",
        license="AdelaiDepth LeReS: free for non-commercial use only (Adobe Research License terms in its lib/).",
    )
]


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)


class FeatureTransfer(nn.Module):
    """FTB: a 3x3 projection followed by a residual pair of 3x3 convolutions."""

    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, mid_channels)
        self.conv_branch = nn.Sequential(nn.ReLU(), _conv3x3(mid_channels, mid_channels),
                                         nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True),
                                         _conv3x3(mid_channels, mid_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The released weights were trained with an in-place ReLU that also rectified the residual's identity path.
        x = self.conv_branch[0](self.conv1(x))
        return F.relu(x + self.conv_branch[1:](x))


class FeatureFusion(nn.Module):
    """FFM: transfer the skip feature, add the coarser decoder feature, transfer again, upsample 2x."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.ftb1 = FeatureTransfer(in_channels, mid_channels)
        self.ftb2 = FeatureTransfer(mid_channels, out_channels)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = self.ftb2(self.ftb1(skip) + coarse)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class AdaptiveOutput(nn.Module):
    """AO: two 3x3 convolutions to one channel, upsampled 2x to the input size."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.adapt_conv = nn.Sequential(_conv3x3(in_channels, in_channels // 2), nn.BatchNorm2d(in_channels // 2),
                                        nn.ReLU(inplace=True), _conv3x3(in_channels // 2, 1),
                                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapt_conv(x)


class Decoder(nn.Module):
    def __init__(self, in_channels: tuple[int, ...] = (256, 512, 1024, 2048),
                 mid_channels: tuple[int, ...] = (256, 256, 256, 512)) -> None:
        super().__init__()
        self.conv = FeatureTransfer(in_channels[3], mid_channels[3])
        self.conv1 = _conv3x3(mid_channels[3], mid_channels[2])
        self.ffm2 = FeatureFusion(in_channels[2], mid_channels[2], mid_channels[2])
        self.ffm1 = FeatureFusion(in_channels[1], mid_channels[1], mid_channels[1])
        self.ffm0 = FeatureFusion(in_channels[0], mid_channels[0], mid_channels[0])
        self.outconv = AdaptiveOutput(mid_channels[0])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.conv(features[3]))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = self.ffm2(features[2], x)
        x = self.ffm1(features[1], x)
        x = self.ffm0(features[0], x)
        return self.outconv(x)


class ResNeXtEncoder(nn.Module):
    """timm's ResNeXt under the attribute name the checkpoint uses; returns the four stage outputs (1/4 .. 1/32)."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.encoder = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.encoder
        x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
        features = []
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = stage(x)
            features.append(x)
        return features


class DepthModel(nn.Module):
    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.encoder_modules = ResNeXtEncoder(backbone)
        self.decoder_modules = Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_modules(self.encoder_modules(x))


class LeReS(nn.Module):
    """[B,3,h,w] ImageNet-normalized RGB (h, w multiples of 32) -> [B,h,w] relative inverse depth."""

    def __init__(self, config: LeReSConfig = LeReSConfig()) -> None:
        super().__init__()
        self.config = config
        self.depth_model = DepthModel(config.backbone)

    def predict_depth(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own output: affine-invariant depth [B,h,w], larger = farther."""
        return self.depth_model(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return inverse_of_affine_depth(self.predict_depth(x).float(), DEPTH_SHIFT)


def build(config: LeReSConfig = LeReSConfig()) -> LeReS:
    return LeReS(config)


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> LeReSConfig | None:
    """LeReSConfig for a state dict in the released layout (ResNeXt-101 32x8d encoder), else None."""
    prefix = "depth_model.encoder_modules.encoder."
    grouped = state_dict.get(prefix + "layer1.0.conv2.weight")
    if grouped is None or "depth_model.decoder_modules.outconv.adapt_conv.3.weight" not in state_dict:
        return None
    has_layer3_block22 = prefix + "layer3.22.conv1.weight" in state_dict
    # ResNeXt-101 32x8d: 23 blocks in layer3 and 256-wide grouped 3x3 convolutions (8 channels per group) in layer1.
    if has_layer3_block22 and grouped.shape[0] == 256 and grouped.shape[1] == 8:
        return LeReSConfig()
    return None
