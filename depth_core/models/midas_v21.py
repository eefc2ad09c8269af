"""MiDaS v2.1 (ResNeXt-101 32x8d encoder) and v2.1 Small (EfficientNet-Lite3 encoder), with the DPT fusion decoder.

Loads the authors' `midas_v21-f6b98070.pt` and `midas_v21_small-70d6b9c8.pt` unchanged: `pretrained.layer1..4` are
the encoder stages (stem folded into layer1, as the authors wrap the torch.hub models), `scratch.*` the decoder.
The encoders are timm's `resnext101_32x8d` (the WSL weights' architecture) and `tf_efficientnet_lite3`, built
without weights; nothing is fetched through torch.hub.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import timm
import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, KnownModel, ModelCard, relative_card
from .dpt import DecoderConfig, DPTDecoder

FAMILY = "midas_v21"

Encoder = Literal["resnext101_wsl", "efficientnet_lite3"]


@dataclass(frozen=True)
class MidasV21Config:
    encoder: Encoder
    features: int


LARGE = MidasV21Config("resnext101_wsl", 256)
SMALL = MidasV21Config("efficientnet_lite3", 64)

_ENCODER_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnext101_wsl": (256, 512, 1024, 2048),
    "efficientnet_lite3": (32, 48, 136, 384),
}


def _resnext_stages() -> nn.Module:
    resnet = timm.create_model("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", pretrained=False)
    stages = nn.Module()
    stages.layer1 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool, resnet.layer1)
    stages.layer2 = resnet.layer2
    stages.layer3 = resnet.layer3
    stages.layer4 = resnet.layer4
    return stages


def _efficientnet_lite3_stages() -> nn.Module:
    effnet = timm.create_model("tf_efficientnet_lite3", pretrained=False)
    blocks = effnet.blocks
    stages = nn.Module()
    # timm folds the stem activation into bn1; the Identity keeps the authors' child indices (blocks at 3, 4).
    stages.layer1 = nn.Sequential(effnet.conv_stem, effnet.bn1, nn.Identity(), blocks[0], blocks[1])
    stages.layer2 = nn.Sequential(blocks[2])
    stages.layer3 = nn.Sequential(blocks[3], blocks[4])
    stages.layer4 = nn.Sequential(blocks[5], blocks[6])
    return stages


def _decoder_config(config: MidasV21Config) -> DecoderConfig:
    channels = _ENCODER_CHANNELS[config.encoder]
    if config.encoder == "resnext101_wsl":
        return DecoderConfig(
            in_channels=channels,
            features=config.features,
            fusion_out_conv=False,
            skip_after_activation=True,
            head_align_corners=False,
        )
    return DecoderConfig(in_channels=channels, features=config.features, expand=True, head_align_corners=False)


class MidasV21(nn.Module):
    """Normalized RGB [B,3,h,w] (multiples of 32) -> relative inverse depth [B,h,w], non-negative."""

    def __init__(self, config: MidasV21Config) -> None:
        super().__init__()
        self.config = config
        self.pretrained = _resnext_stages() if config.encoder == "resnext101_wsl" else _efficientnet_lite3_stages()
        self.scratch = DPTDecoder(_decoder_config(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer_1 = self.pretrained.layer1(x)
        layer_2 = self.pretrained.layer2(layer_1)
        layer_3 = self.pretrained.layer3(layer_2)
        layer_4 = self.pretrained.layer4(layer_3)
        return self.scratch([layer_1, layer_2, layer_3, layer_4]).squeeze(1)


def build(config: MidasV21Config) -> MidasV21:
    return MidasV21(config)


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> MidasV21Config | None:
    """Recognise MiDaS v2.1 or v2.1 Small from keys and shapes; None if it is neither."""
    stem = state_dict.get("pretrained.layer1.0.weight")
    if stem is None or "scratch.output_conv.4.weight" not in state_dict or "scratch.layer1_rn.weight" not in state_dict:
        return None
    features = state_dict["scratch.layer1_rn.weight"].shape[0]
    is_resnext = (
        tuple(stem.shape) == (64, 3, 7, 7)
        and "pretrained.layer3.22.conv3.weight" in state_dict
        and "pretrained.layer3.23.conv3.weight" not in state_dict
        and tuple(state_dict.get("pretrained.layer1.4.0.conv2.weight", torch.empty(0)).shape) == (256, 8, 3, 3)
        and "scratch.refinenet1.out_conv.weight" not in state_dict
    )
    if is_resnext:
        return MidasV21Config("resnext101_wsl", features)
    is_lite3 = (
        tuple(stem.shape) == (32, 3, 3, 3)
        and "pretrained.layer1.3.0.conv_dw.weight" in state_dict
        and "pretrained.layer4.1.0.conv_pwl.weight" in state_dict
        and state_dict["pretrained.layer4.1.0.conv_pwl.weight"].shape[0] == _ENCODER_CHANNELS["efficientnet_lite3"][3]
        and "scratch.layer2_rn.weight" in state_dict
        and state_dict["scratch.layer2_rn.weight"].shape[0] == 2 * features
    )
    if is_lite3:
        return MidasV21Config("efficientnet_lite3", features)
    return None


def _card(name: str, net_size: int) -> ModelCard:
    # The authors' model_loader.py: keep aspect, "upper_bound" resize (both sides <= net size), multiple of 32,
    # bicubic (cv2.INTER_CUBIC), ImageNet mean/std on RGB in 0..1.
    return relative_card(name, FAMILY, net_size, 32, "upper_bound", IMAGENET_MEAN, IMAGENET_STD)


_ALEXEYAB = "https://github.com/AlexeyAB/MiDaS/releases/download/midas_dpt/"
_MIDAS_V21 = "https://github.com/isl-org/MiDaS/releases/download/v2_1/"

KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=_card("MiDaS v2.1", 384),
        config=LARGE,
        filename="midas_v21-f6b98070.pt",
        urls=(_ALEXEYAB + "midas_v21-f6b98070.pt", _MIDAS_V21 + "midas_v21_384.pt"),
        # Starts with the torch.hub hash prefix in the file name; the v2_1 re-release has the same digest.
        sha256="f6b980704cfd7259c7cc2b058c2f160159c55e84b3b6c08331b4156a84629f70",
        license="MIT",
        size_bytes=422_509_849,
    ),
    KnownModel(
        card=_card("MiDaS v2.1 Small", 256),
        config=SMALL,
        filename="midas_v21_small-70d6b9c8.pt",
        urls=(
            _ALEXEYAB + "midas_v21_small-70d6b9c8.pt",
            _MIDAS_V21 + "midas_v21_small_256.pt",
        ),
        # Starts with the torch.hub hash prefix in the file name; the v2_1 re-release has the same digest.
        sha256="70d6b9c891758c67f974a6097fb0c608c7ee67fb81ac3e5588847d5596d56fca",
        license="MIT",
    ),
]
