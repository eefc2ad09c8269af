"""ZoeDepth (Bhat et al., 2023): metric depth in metres from a MiDaS 3.1 DPT BEiT-L 384 core and metric bins heads.

Released checkpoints (isl-org/ZoeDepth v1.0): ZoeD_M12_N (indoor, NYU, bins up to 10 m), ZoeD_M12_K (outdoor,
KITTI, bounded "normed" bins up to 80 m) and ZoeD_M12_NK (both heads plus a small transformer that routes each image
to the indoor or the outdoor head). Written here: the core is depth_core.models.midas_dpt (never torch.hub), the
heads (seed bin regressor, attractors, conditional log-binomial) follow the paper and the authors' layer layout, so
the released state dicts (`core.core.*` for the MiDaS core, heads at the top level) load unchanged with strict=True.

The authors' inference (`DepthModel.infer`) reflect-pads the image by sqrt(side/2) * 3 pixels, runs the network,
crops the padding off, and averages with the horizontally flipped image. `ZoeDepth.forward` does the same at the
network size it is given, so every estimate costs two passes of the BEiT-L core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..depth import DepthKind
from . import midas_dpt
from .base import HALF_MEAN, HALF_STD, KnownModel, ModelCard, Preprocess

BinCenters = Literal["softplus", "normed"]

CORE_FEATURES = 256
"""Channels of the MiDaS decoder maps the heads read (l4_rn, r4..r1)."""
HEAD_FEATURES = 32
"""Channels of the MiDaS output head's hidden layer ('out_conv'), the final per-pixel features."""
PAD_FACTOR = 3.0


@dataclass(frozen=True)
class MetricHead:
    name: str
    min_depth: float
    max_depth: float
    n_bins: int = 64


@dataclass(frozen=True)
class ZoeDepthConfig:
    heads: tuple[MetricHead, ...]
    bin_centers: BinCenters = "softplus"
    n_attractors: tuple[int, ...] = (16, 8, 4, 1)
    attractor_alpha: float = 300.0
    """The configs say 1000, but the released code never passes it to its attraction function, whose default of 300
    is what the weights were trained with."""
    attractor_gamma: int = 2
    min_temp: float = 0.0212
    max_temp: float = 50.0
    bin_embedding_dim: int = 128
    flip_average: bool = True
    pad_input: bool = True

    @property
    def routed(self) -> bool:
        """Several heads chosen per image by a domain classifier (ZoeDepth NK)."""
        return len(self.heads) > 1


NYU = MetricHead("nyu", 1e-3, 10.0)
KITTI = MetricHead("kitti", 1e-3, 80.0)
ZOE_N = ZoeDepthConfig(heads=(NYU,))
ZOE_K = ZoeDepthConfig(heads=(KITTI,), bin_centers="normed")
# The released NK passes its per-level attractor counts where the bin count goes, so every level of it has the
# layer's default of 16 attractor points; its weights are shaped that way.
ZOE_NK = ZoeDepthConfig(heads=(NYU, KITTI), n_attractors=(16, 16, 16, 16))

# The authors' PrepForMidas: keep aspect, "minimal" resize to 384 x 512 (N, NK) / 384 x 768 (K), multiples of 32,
# mean = std = 0.5. With a single net size of 384 the "minimal" rule gives the same sizes for landscape photos.
PREPROCESS = Preprocess(net_size=384, multiple_of=32, resize_rule="minimal", mean=HALF_MEAN, std=HALF_STD,
                        interpolation="bilinear", keep_aspect=True, upsample="bicubic")


def _card(name: str) -> ModelCard:
    return ModelCard(name=name, family="zoedepth", preprocess=PREPROCESS, output_kind=DepthKind.METRIC,
                     receptive_field=384)


_RELEASE = "https://github.com/isl-org/ZoeDepth/releases/download/v1.0/"

KNOWN_MODELS: list[KnownModel] = [
    KnownModel(card=_card("ZoeDepth N (indoor, metric)"), config=ZOE_N, filename="ZoeD_M12_N.pt",
               urls=(_RELEASE + "ZoeD_M12_N.pt",), sha256=None, license="MIT"),  # no digest published
    KnownModel(card=_card("ZoeDepth K (outdoor, metric)"), config=ZOE_K, filename="ZoeD_M12_K.pt",
               urls=(_RELEASE + "ZoeD_M12_K.pt",), sha256=None, license="MIT"),
    KnownModel(card=_card("ZoeDepth NK (indoor + outdoor, metric)"), config=ZOE_NK, filename="ZoeD_M12_NK.pt",
               urls=(_RELEASE + "ZoeD_M12_NK.pt",), sha256=None, license="MIT"),
]


def _mlp(in_channels: int, hidden: int, out_channels: int, last: nn.Module | None) -> nn.Sequential:
    """1x1-conv MLP in the authors' `_net` layout: conv, ReLU, conv[, activation]."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True),
                               nn.Conv2d(hidden, out_channels, 1)]
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


def _resize_as(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class SeedBins(nn.Module):
    """Initial bin centres per pixel from the bottleneck. softplus: unbounded centres directly; normed: positive
    widths normalized to span [min_depth, max_depth], centres between their cumulative edges."""

    def __init__(self, in_channels: int, head: MetricHead, hidden: int, kind: BinCenters) -> None:
        super().__init__()
        self.kind, self.head = kind, head
        self._net = _mlp(in_channels, hidden, head.n_bins, nn.Softplus() if kind == "softplus" else nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bin centres [B,n_bins,h,w], in metres for softplus, normalized to 0..1 of the head's range for normed."""
        if self.kind == "softplus":
            return self._net(x)
        widths = self._net(x) + 1e-3
        widths = widths / widths.sum(dim=1, keepdim=True)
        edges = F.pad(widths.cumsum(dim=1), (0, 0, 0, 0, 1, 0))
        return 0.5 * (edges[:, :-1] + edges[:, 1:])


class Projector(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        self._net = _mlp(in_channels, hidden, out_channels, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net(x)


class Attractors(nn.Module):
    """Moves every bin centre towards a few predicted attractor points ("inverse" attraction, averaged)."""

    def __init__(self, in_channels: int, n_attractors: int, head: MetricHead, kind: BinCenters, alpha: float,
                 gamma: int, hidden: int = 128) -> None:
        super().__init__()
        self.kind, self.head, self.alpha, self.gamma = kind, head, alpha, gamma
        self.n_attractors = n_attractors
        # The normed variant predicts two values per attractor and uses only the first.
        outputs = n_attractors if kind == "softplus" else 2 * n_attractors
        self._net = _mlp(in_channels, hidden, outputs, nn.Softplus() if kind == "softplus" else nn.ReLU(True))

    def forward(self, x: torch.Tensor, centres: torch.Tensor, prev_embedding: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(moved centres in the running units, centres in metres), both [B,n_bins,h,w] at x's size."""
        x = x + _resize_as(prev_embedding, x.shape[-2:])
        points = self._net(x)
        if self.kind == "normed":
            n, _, h, w = points.shape
            points = (points + 1e-3).view(n, self.n_attractors, 2, h, w)[:, :, 0]
        centres = _resize_as(centres, points.shape[-2:])
        moved = centres.clone()
        shift = torch.zeros_like(centres)
        for index in range(self.n_attractors):  # one attractor at a time keeps memory at one [B,bins,h,w] map
            offset = points[:, index:index + 1] - centres
            shift = shift + offset / (1 + self.alpha * offset.pow(self.gamma))
        moved = moved + shift / self.n_attractors
        if self.kind == "softplus":
            return moved, moved
        metres = (self.head.max_depth - self.head.min_depth) * moved + self.head.min_depth
        metres = torch.sort(metres, dim=1).values.clamp(self.head.min_depth, self.head.max_depth)
        return moved, metres


class LogBinomial(nn.Module):
    """Per-pixel probabilities over n_bins from a binomial with success probability p and temperature t."""

    def __init__(self, n_bins: int) -> None:
        super().__init__()
        self.register_buffer("k_idx", torch.arange(0, n_bins).view(1, -1, 1, 1))
        self.register_buffer("K_minus_1", torch.tensor([float(n_bins - 1)]).view(1, -1, 1, 1))

    def forward(self, p: torch.Tensor, temperature: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
        p = p.unsqueeze(1)
        n, k = self.K_minus_1.to(p.dtype), self.k_idx.to(p.dtype)
        n_, k_ = n + 1e-7, k + 1e-7  # log of the binomial coefficient via x log x, kept finite at k = 0 and k = n
        log_choose = n_ * torch.log(n_) - k_ * torch.log(k_) - (n_ - k_) * torch.log(n_ - k_ + 1e-7)
        logits = log_choose + k * torch.log(p.clamp(eps, 1)) + (n - k) * torch.log((1 - p).clamp(eps, 1))
        return torch.softmax(logits / temperature, dim=1)


class ConditionalLogBinomial(nn.Module):
    """Bin probabilities from the final features, conditioned on the bin embedding."""

    def __init__(self, in_channels: int, condition_channels: int, n_bins: int, bottleneck_factor: int,
                 min_temp: float, max_temp: float) -> None:
        super().__init__()
        bottleneck = (in_channels + condition_channels) // bottleneck_factor
        self.mlp = nn.Sequential(nn.Conv2d(in_channels + condition_channels, bottleneck, 1), nn.GELU(),
                                 nn.Conv2d(bottleneck, 4, 1), nn.Softplus())
        self.log_binomial_transform = LogBinomial(n_bins)
        self.min_temp, self.max_temp = min_temp, max_temp

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        pt = self.mlp(torch.cat((x, condition), dim=1)) + 1e-4
        p = pt[:, 0] / (pt[:, 0] + pt[:, 1])
        t = (pt[:, 2] / (pt[:, 2] + pt[:, 3])).unsqueeze(1)
        t = (self.max_temp - self.min_temp) * t + self.min_temp
        return self.log_binomial_transform(p, t)


class DomainRouter(nn.Module):
    """ZoeDepth NK's classifier: a 4-layer transformer over the bottleneck (1x1 patches plus a class token) whose
    class token decides indoor (NYU head) or outdoor (KITTI head)."""

    def __init__(self, in_channels: int, dim: int = 128, heads: int = 4, layers: int = 4) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=1024)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.embedding_convPxP = nn.Conv2d(in_channels, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token embedding [B, dim]."""
        tokens = F.pad(self.embedding_convPxP(x).flatten(2), (1, 0)).permute(2, 0, 1)  # S, B, E
        length, _, dim = tokens.shape
        position = torch.arange(length, dtype=torch.float32, device=x.device)[:, None]
        steps = torch.arange(0, dim, 2, dtype=torch.float32, device=x.device)
        frequency = torch.exp(steps * (-math.log(10000.0) / dim))
        angles = position * frequency[None]
        encoding = torch.cat((angles.sin(), angles.cos()), dim=1)[:, None].to(tokens.dtype)
        return self.transformer_encoder(tokens + encoding)[0]


class MidasCore(nn.Module):
    """Holds the MiDaS network as `core`, as the released checkpoints nest it (`core.core.*`)."""

    def __init__(self) -> None:
        super().__init__()
        self.core = midas_dpt.build(midas_dpt.BEIT_L_384)


class ZoeDepth(nn.Module):
    """Normalized RGB [B,3,h,w] (multiples of 32, mean = std = 0.5) -> metric depth [B,h,w] in metres."""

    def __init__(self, config: ZoeDepthConfig = ZOE_N) -> None:
        super().__init__()
        self.config = config
        embed = config.bin_embedding_dim
        routed = config.routed
        self.core = MidasCore()
        self.conv2 = nn.Conv2d(CORE_FEATURES, CORE_FEATURES, 1)
        # NK's heads are slimmer (half-width MLPs, bottleneck factor 4) and not conditioned on MiDaS' relative depth.
        hidden = embed // 2 if routed else None
        if routed:
            self.patch_transformer = DomainRouter(CORE_FEATURES)
            self.mlp_classifier = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
        self.seed_projector = Projector(CORE_FEATURES, embed, hidden or 128)
        self.projectors = nn.ModuleList(Projector(CORE_FEATURES, embed, hidden or 128)
                                        for _ in config.n_attractors)

        def seed(head: MetricHead) -> SeedBins:
            return SeedBins(CORE_FEATURES, head, hidden or 256, config.bin_centers)

        def attractors(head: MetricHead) -> nn.ModuleList:
            return nn.ModuleList(Attractors(embed, n, head, config.bin_centers, config.attractor_alpha,
                                            config.attractor_gamma) for n in config.n_attractors)

        def bins(head: MetricHead) -> ConditionalLogBinomial:
            return ConditionalLogBinomial(HEAD_FEATURES + (0 if routed else 1), embed, head.n_bins,
                                          4 if routed else 2, config.min_temp, config.max_temp)

        if routed:
            self.seed_bin_regressors = nn.ModuleDict({h.name: seed(h) for h in config.heads})
            self.attractors = nn.ModuleDict({h.name: attractors(h) for h in config.heads})
            self.conditional_log_binomial = nn.ModuleDict({h.name: bins(h) for h in config.heads})
        else:
            self.seed_bin_regressor = seed(config.heads[0])
            self.attractors = attractors(config.heads[0])
            self.conditional_log_binomial = bins(config.heads[0])

    def metric_depth(self, x: torch.Tensor) -> torch.Tensor:
        """One pass: [B,3,h,w] normalized -> [B,h,w] metres, without padding or flip averaging."""
        relative, features = self.core.core.forward_with_intermediates(x)
        bottleneck = self.conv2(features["l4_rn"])
        blocks = [features[name] for name in ("r4", "r3", "r2", "r1")]
        last = features["out_conv"]
        if not self.config.routed:
            condition = _resize_as(relative.unsqueeze(1), last.shape[-2:])
            return self._head(self.config.heads[0], self.seed_bin_regressor, self.attractors,
                              self.conditional_log_binomial, bottleneck, blocks, torch.cat([last, condition], 1))
        # The authors vote once per batch; here every image is routed on its own, so a batch may mix scenes.
        outdoor = self.mlp_classifier(self.patch_transformer(bottleneck)).argmax(dim=1) == 1
        results = [self._head(h, self.seed_bin_regressors[h.name], self.attractors[h.name],
                              self.conditional_log_binomial[h.name], bottleneck, blocks, last)
                   for h in self.config.heads]
        return torch.where(outdoor.view(-1, 1, 1), results[1], results[0])

    def _head(self, head: MetricHead, seed: SeedBins, attractors: nn.ModuleList, binner: ConditionalLogBinomial,
              bottleneck: torch.Tensor, blocks: list[torch.Tensor], last: torch.Tensor) -> torch.Tensor:
        centres = seed(bottleneck)
        embedding = self.seed_projector(bottleneck)
        metres = centres
        for projector, attractor, block in zip(self.projectors, attractors, blocks):
            block_embedding = projector(block)
            centres, metres = attractor(block_embedding, centres, embedding)
            embedding = block_embedding
        embedding = _resize_as(embedding, last.shape[-2:])
        probabilities = binner(last, embedding)
        metres = _resize_as(metres, probabilities.shape[-2:])
        return (probabilities * metres).sum(dim=1)

    def padded_metric_depth(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' padding augmentation: reflect-pad by sqrt(side/2) * 3, resize back to the network size,
        predict, bring the prediction to the padded size and crop the padding off."""
        if not self.config.pad_input:
            return self.metric_depth(x)
        height, width = x.shape[-2:]
        pad_h = int(math.sqrt(height / 2) * PAD_FACTOR) if height > 1 else 0
        pad_w = int(math.sqrt(width / 2) * PAD_FACTOR) if width > 1 else 0
        pad_h, pad_w = min(pad_h, height - 1), min(pad_w, width - 1)
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
        squeezed = F.interpolate(padded, size=(height, width), mode="bilinear", align_corners=True)
        depth = self.metric_depth(squeezed).unsqueeze(1)
        depth = F.interpolate(depth, size=padded.shape[-2:], mode="bicubic", align_corners=False)
        return depth[:, 0, pad_h:pad_h + height, pad_w:pad_w + width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = self.padded_metric_depth(x)
        if self.config.flip_average:
            depth = 0.5 * (depth + self.padded_metric_depth(x.flip(-1)).flip(-1))
        return depth.clamp_min(1e-3)


def build(config: ZoeDepthConfig = ZOE_N) -> ZoeDepth:
    return ZoeDepth(config)


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> ZoeDepthConfig | None:
    """ZOE_N, ZOE_K or ZOE_NK for a state dict in the released layout, else None."""
    if "core.core.scratch.output_conv.4.weight" not in state_dict or "conv2.weight" not in state_dict:
        return None
    if all(f"seed_bin_regressors.{head.name}._net.0.weight" in state_dict for head in ZOE_NK.heads):
        return ZOE_NK
    attractor = state_dict.get("attractors.0._net.2.weight")
    if attractor is None or "seed_bin_regressor._net.0.weight" not in state_dict:
        return None
    # The normed (KITTI) attractors predict two values per attractor point.
    return ZOE_K if attractor.shape[0] == 2 * ZOE_K.n_attractors[0] else ZOE_N
