"""The merge network of "Boosting Monocular Depth Estimation Models to High-Resolution via Content-Adaptive
Multi-Resolution Merging" (Miangoleh et al., CVPR 2021): a pix2pix U-Net generator (`unet_1024`: ten down/up
levels, 64 base filters, no normalization, no dropout) that takes a low- and a high-resolution depth estimate as
two channels in [-1, 1] and returns the merged estimate in [-1, 1].

Written here from the architecture description; parameter names follow the released `latest_net_G.pth` (a plain
state dict of the generator, `model.model.<i>...` nested once per U-Net level), so the file loads unchanged with
strict=True.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import KnownModel


@dataclass(frozen=True)
class Pix2PixConfig:
    input_channels: int = 2
    output_channels: int = 1
    levels: int = 10
    """Number of stride-2 down-samplings; 10 for the released unet_1024 (1024 px input -> 1 px bottleneck)."""
    base_filters: int = 64


MERGE_SIZE = 1024
"""The square size the merge network was trained at; both estimates are resized to it before merging."""

PIX2PIX_FILENAME = "latest_net_G.pth"

KNOWN_MODELS: list[KnownModel] = [
    KnownModel(
        card=None,  # type: ignore[arg-type]  # not a depth network: no card; the entry only locates and checks the file
        config=Pix2PixConfig(),
        filename=PIX2PIX_FILENAME,
        urls=(
            "https://huggingface.co/lllyasviel/Annotators/resolve/9a7d84251d487d11/latest_net_G.pth",
            "https://sfu.ca/~yagiz/CVPR21/latest_net_G.pth",
        ),
        # The authors publish no digest; this leading part is what the old extension checked downloads against.
        sha256="50ec735d",
        license="No license stated by the authors (compphoto/BoostingMonocularDepth); research use.",
        size_bytes=None,
    )
]


class UNetLevel(nn.Module):
    """One level of the U-Net: down-convolve, run the inner levels, up-convolve, and (except the outermost level)
    concatenate the level's input as the skip connection.

    The `model` Sequential keeps the released checkpoint's indices, including the parameter-free activations and the
    identity placeholders where the authors' code would put a normalization layer (norm 'none').
    """

    def __init__(self, outer_channels: int, inner_channels: int, input_channels: int | None = None,
                 inner: "UNetLevel | None" = None, outermost: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        input_channels = outer_channels if input_channels is None else input_channels
        down = nn.Conv2d(input_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=False)
        if outermost:
            up = nn.ConvTranspose2d(inner_channels * 2, outer_channels, kernel_size=4, stride=2, padding=1)
            layers = [down, inner, nn.ReLU(True), up, nn.Tanh()]
        elif inner is None:  # innermost: no skip input doubles its up-convolution's channels
            up = nn.ConvTranspose2d(inner_channels, outer_channels, kernel_size=4, stride=2, padding=1, bias=False)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(True), up, nn.Identity()]
        else:
            up = nn.ConvTranspose2d(inner_channels * 2, outer_channels, kernel_size=4, stride=2, padding=1,
                                    bias=False)
            layers = [nn.LeakyReLU(0.2), down, nn.Identity(), inner, nn.ReLU(True), up, nn.Identity()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The released network was trained with an in-place LeakyReLU that also rewrote the skip input, so the skip
        # connection carries the activated tensor, not the level's raw input.
        activated = self.model[0](x)
        return torch.cat([activated, self.model[1:](activated)], 1)


class Pix2PixGenerator(nn.Module):
    """[B,2,S,S] (low-res estimate, high-res estimate; each in [-1,1]) -> [B,1,S,S] merged estimate in [-1,1].
    S must be divisible by 2**levels (1024 for the released network)."""

    def __init__(self, config: Pix2PixConfig = Pix2PixConfig()) -> None:
        super().__init__()
        self.config = config
        f = config.base_filters
        level = UNetLevel(f * 8, f * 8)
        for _ in range(config.levels - 5):
            level = UNetLevel(f * 8, f * 8, inner=level)
        level = UNetLevel(f * 4, f * 8, inner=level)
        level = UNetLevel(f * 2, f * 4, inner=level)
        level = UNetLevel(f, f * 2, inner=level)
        self.model = UNetLevel(config.output_channels, f, input_channels=config.input_channels, inner=level,
                               outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2 ** self.config.levels
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(f"The merge network needs sides divisible by {multiple}, got {tuple(x.shape[-2:])}.")
        return self.model(x)


def build(config: Pix2PixConfig = Pix2PixConfig()) -> Pix2PixGenerator:
    return Pix2PixGenerator(config)


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> Pix2PixConfig | None:
    """The generator config of a state dict in the released layout, or None if it is not one."""
    first = state_dict.get("model.model.0.weight")
    last = state_dict.get("model.model.3.weight")
    if first is None or last is None or first.ndim != 4 or last.ndim != 4:
        return None
    levels = 1 + sum(1 for key in state_dict if key.endswith(".1.weight") and key.startswith("model.model.1."))
    return Pix2PixConfig(input_channels=first.shape[1], output_channels=last.shape[1], levels=levels,
                         base_filters=first.shape[0])


def load_generator(state_dict: dict[str, torch.Tensor]) -> Pix2PixGenerator:
    """Build the generator a state dict describes and load it strictly; ValueError if it is not a merge network."""
    config = config_from_state_dict(state_dict)
    if config is None:
        raise ValueError(f"This file is not the BoostingMonocularDepth merge network ({PIX2PIX_FILENAME}): it has no "
                         "'model.model.0.weight'. Download the official file again.")
    generator = build(config)
    try:
        generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"The merge network's weights do not fit unet_1024 ({str(error).splitlines()[0]}). The "
                         f"file may be damaged: download {PIX2PIX_FILENAME} again.") from error
    return generator.eval()
