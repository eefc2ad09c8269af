"""The edge, depth and colour inpainting networks of Shih et al., "3D Photography using Context-aware Layered Depth
Inpainting" (CVPR 2020), written here to load their released checkpoints (`edge-model.pth`, `depth-model.pth`,
`color-model.pth`, the key layout of vt-vl-lab/3d-photo-inpainting) safely, without their code.

Layout notes (what the checkpoints contain):
- depth and colour: partial-convolution U-Nets, 7 stride-2 encoder stages `enc_1..enc_7`, each
  `enc_i.conv.input_conv` (+ an all-ones `enc_i.conv.mask_conv`) and, except the first, `enc_i.bn`; decoders
  `dec_7..dec_1` (depth) or `dec_7, dec_6, dec_5A..dec_1A` (colour) with nearest upsampling and skip connections.
- edge: an encoder / 8 dilated residual blocks / decoder network with instance norm whose convolutions (all but the
  last) are spectrally normalised, so they are stored as `weight_orig`, `weight_u`, `weight_v`. The effective weight
  is folded once at load time (weight_orig / sigma, sigma = u . W v, what spectral norm computes in eval mode), so
  inference uses plain convolutions.

`load_context_aware_inpainter` returns an `Inpainter` for `build_layered_depth_image`: the hidden band is the hole,
the background outside the dilated band is the context, and the networks only ever see context pixels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..interrupt import interruptible
from ..loading import load_state_dict

NETWORK_FILES = ("edge-model.pth", "depth-model.pth", "color-model.pth")
"""The three released checkpoints, looked for in the depth model folder; used only when all are present."""

UNIT = 128
"""Network inputs are padded to a multiple of this (7 stride-2 stages)."""

WORKING_SIDE = 768
"""The networks run at most at this longer side; results are resized back for the hole."""

EDGE_THRESHOLD = 0.002
"""Edge-network output above this inside the hole counts as a depth edge (the released configuration's value)."""


class PartialConv(nn.Module):
    """Convolution that only sees valid (mask = 1) inputs and renormalises by how many it saw."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int, bias: bool):
        super().__init__()
        self.input_conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bias)
        self.mask_conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        nn.init.constant_(self.mask_conv.weight, 1.0)
        self.window = in_channels * kernel * kernel

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.input_conv(features * mask)
        bias = self.input_conv.bias.view(1, -1, 1, 1) if self.input_conv.bias is not None else 0.0
        with torch.no_grad():
            seen = self.mask_conv(mask)
        holes = seen == 0
        output = ((output - bias) * self.window / seen.masked_fill(holes, 1.0) + bias).masked_fill(holes, 0.0)
        return output, (~holes).to(output.dtype)


class PartialBlock(nn.Module):
    """Partial convolution + optional batch norm + activation (`conv`, `bn` keys)."""

    SAMPLES = {"down-7": (7, 2, 3), "down-5": (5, 2, 2), "down-3": (3, 2, 1), "same-3": (3, 1, 1)}

    def __init__(self, in_channels: int, out_channels: int, sample: str = "same-3", batch_norm: bool = True,
                 activation: str | None = "relu", bias: bool = False):
        super().__init__()
        kernel, stride, padding = self.SAMPLES[sample]
        self.conv = PartialConv(in_channels, out_channels, kernel, stride, padding, bias)
        if batch_norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.activation = {"relu": nn.ReLU(), "leaky": nn.LeakyReLU(0.2), None: nn.Identity()}[activation]

    def forward(self, features, mask):
        features, mask = self.conv(features, mask)
        if hasattr(self, "bn"):
            features = self.bn(features)
        return self.activation(features), mask


class _PartialUNet(nn.Module):
    """Shared encoder/decoder walk of the depth and colour networks."""

    encoder_names: tuple[str, ...] = tuple(f"enc_{i}" for i in range(1, 8))
    decoder_names: tuple[str, ...] = ()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # The last two channels are context and hole: together they are where input values are known or wanted.
        mask = (inputs[:, -2:-1] + inputs[:, -1:]).clamp(0, 1).expand_as(inputs).contiguous()
        features, masks = [inputs], [mask]
        for name in self.encoder_names:
            feature, mask = getattr(self, name)(features[-1], masks[-1])
            features.append(feature)
            masks.append(mask)
        feature, mask = features.pop(), masks.pop()
        for name in self.decoder_names:
            feature = F.interpolate(feature, scale_factor=2, mode="nearest")
            mask = F.interpolate(mask, scale_factor=2, mode="nearest")
            feature, mask = getattr(self, name)(torch.cat([feature, features.pop()], 1), torch.cat([mask, masks.pop()], 1))
        return feature


class DepthInpaintNet(_PartialUNet):
    """Input: (log depth minus its context mean, edges, context, hole) -> log-depth residual, 1 channel."""

    decoder_names = tuple(f"dec_{i}" for i in range(7, 0, -1))

    def __init__(self):
        super().__init__()
        self.enc_1 = PartialBlock(4, 64, "down-7", batch_norm=False, bias=True)
        self.enc_2 = PartialBlock(64, 128, "down-5", bias=True)
        self.enc_3 = PartialBlock(128, 256, "down-5")
        self.enc_4 = PartialBlock(256, 512, "down-3")
        for i in range(5, 8):
            setattr(self, f"enc_{i}", PartialBlock(512, 512, "down-3"))
            setattr(self, f"dec_{i}", PartialBlock(1024, 512, activation="leaky"))
        self.dec_4 = PartialBlock(768, 256, activation="leaky")
        self.dec_3 = PartialBlock(384, 128, activation="leaky")
        self.dec_2 = PartialBlock(192, 64, activation="leaky")
        self.dec_1 = PartialBlock(68, 1, batch_norm=False, activation=None, bias=True)


class ColorInpaintNet(_PartialUNet):
    """Input: (rgb, edges, context, hole) -> rgb 0..1."""

    decoder_names = ("dec_7", "dec_6", "dec_5A", "dec_4A", "dec_3A", "dec_2A", "dec_1A")

    def __init__(self):
        super().__init__()
        self.enc_1 = PartialBlock(6, 64, "down-7", batch_norm=False)
        self.enc_2 = PartialBlock(64, 128, "down-5")
        self.enc_3 = PartialBlock(128, 256, "down-5")
        self.enc_4 = PartialBlock(256, 512, "down-3")
        for i in range(5, 8):
            setattr(self, f"enc_{i}", PartialBlock(512, 512, "down-3"))
        self.dec_7 = PartialBlock(1024, 512, activation="leaky")
        self.dec_6 = PartialBlock(1024, 512, activation="leaky")
        self.dec_5A = PartialBlock(1024, 512, activation="leaky")
        self.dec_4A = PartialBlock(768, 256, activation="leaky")
        self.dec_3A = PartialBlock(384, 128, activation="leaky")
        self.dec_2A = PartialBlock(192, 64, activation="leaky")
        self.dec_1A = PartialBlock(70, 3, batch_norm=False, activation=None, bias=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(inputs))


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, track_running_stats=False)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        # Indices 1 and 5 are the convolutions, as in the checkpoints' `middle.<n>.conv_block.<i>` keys.
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(dilation), nn.Conv2d(channels, channels, 3, dilation=dilation, bias=False),
            _norm(channels), nn.LeakyReLU(0.2),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), _norm(channels),
        )

    def forward(self, features):
        return features + self.conv_block(features)


class EdgeInpaintNet(nn.Module):
    """Input: (rgb, disparity / max, edges, context, hole) -> edge probability in the hole, 1 channel."""

    def __init__(self, residual_blocks: int = 8):
        super().__init__()
        self.encoder_0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(7, 64, 7), _norm(64), nn.ReLU(True))
        self.encoder_1 = nn.Sequential(nn.Conv2d(64, 128, 4, 2, 1), _norm(128), nn.ReLU(True))
        self.encoder_2 = nn.Sequential(nn.Conv2d(128, 256, 4, 2, 1), _norm(256), nn.ReLU(True))
        self.middle = nn.Sequential(*[ResidualBlock(256, 2) for _ in range(residual_blocks)])
        self.decoder_0 = nn.Sequential(nn.ConvTranspose2d(512, 128, 4, 2, 1), _norm(128), nn.ReLU(True))
        self.decoder_1 = nn.Sequential(nn.ConvTranspose2d(256, 64, 4, 2, 1), _norm(64), nn.ReLU(True))
        self.decoder_2 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(128, 1, 7))

    def forward(self, inputs):
        x1 = self.encoder_0(inputs)
        x2 = self.encoder_1(x1)
        x3 = self.encoder_2(x2)
        x4 = self.middle(x3)
        x5 = self.decoder_0(torch.cat([x4, x3], 1))
        x6 = self.decoder_1(torch.cat([x5, x2], 1))
        return torch.sigmoid(self.decoder_2(torch.cat([x6, x1], 1)))


def fold_spectral_norm(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Replace `<name>.weight_orig/_u/_v` by the effective `<name>.weight` spectral norm uses in eval mode."""
    folded = {k: v for k, v in state.items() if not k.endswith(("weight_orig", "weight_u", "weight_v"))}
    modules = dict(module.named_modules())
    for key in state:
        if not key.endswith(".weight_orig"):
            continue
        prefix = key[: -len(".weight_orig")]
        weight, u, v = state[key].float(), state[f"{prefix}.weight_u"].float(), state[f"{prefix}.weight_v"].float()
        # torch's spectral_norm flattens ConvTranspose weights along their output channels (dim 1).
        transposed = isinstance(modules.get(prefix), nn.ConvTranspose2d)
        matrix = (weight.transpose(0, 1) if transposed else weight).reshape(u.numel(), -1)
        sigma = torch.dot(u, matrix @ v)
        folded[f"{prefix}.weight"] = weight / sigma
    return folded


def load_network(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> nn.Module:
    if any(key.endswith("weight_orig") for key in state):
        state = fold_spectral_norm(state, module)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        details = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"wrong shape {wrong_shape[:3]}" if wrong_shape else "") if part)
        raise ValueError(f"{name} is not a 3d-photo-inpainting {type(module).__name__} checkpoint ({details}). Use "
                         f"the released edge-model.pth, depth-model.pth and color-model.pth, or remove the file to "
                         "use the weight-free inpainting.")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return module.eval()


def _pad_to_unit(tensor: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    height, width = tensor.shape[-2:]
    pad_h, pad_w = (-height) % UNIT, (-width) % UNIT
    box = (pad_h // 2, pad_h // 2 + height, pad_w // 2, pad_w // 2 + width)
    return F.pad(tensor, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)), box


class ContextAwareInpainter:
    """Runs edge, depth and colour networks on the whole hidden band at once (instead of per edge, as the original
    does), at a working resolution, and returns the hole's colour and distance at full resolution."""

    def __init__(self, edge: EdgeInpaintNet, depth: DepthInpaintNet, color: ColorInpaintNet):
        self.edge, self.depth, self.color = edge, depth, color

    @torch.no_grad()
    def __call__(self, hole: torch.Tensor, context: torch.Tensor, rgb: torch.Tensor,
                 distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with interruptible(self.edge), interruptible(self.depth), interruptible(self.color):
            return self._inpaint(hole, context, rgb, distance)

    def _inpaint(self, hole: torch.Tensor, context: torch.Tensor, rgb: torch.Tensor,
                 distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.depth.parameters()).device
        height, width = hole.shape
        scale = min(1.0, WORKING_SIDE / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))

        def fit(tensor: torch.Tensor, mode: str) -> torch.Tensor:
            tensor = tensor.to(device=device, dtype=torch.float32)
            tensor = tensor[None, None] if tensor.ndim == 2 else tensor[None]
            return F.interpolate(tensor, size=size, mode=mode) if size != (height, width) else tensor

        hole_small = (fit(hole.float(), "area") > 0).float()
        context_small = (fit(context.float(), "area") >= 1.0 - 1e-6).float() * (1 - hole_small)
        rgb_small = fit(rgb, "area") * context_small
        log_distance = fit(distance.clamp_min(1e-6).log(), "area")
        disparity = (-log_distance).exp() * context_small
        log_depth = log_distance * context_small
        mean = log_depth.sum() / context_small.sum().clamp_min(1)
        zero_mean = (log_depth - mean) * context_small
        # Edges of the context (depth jumps between context pixels) guide the networks.
        jumps = torch.zeros_like(log_distance)
        jumps[..., :, 1:] += (log_distance[..., :, 1:] - log_distance[..., :, :-1]).abs() > 0.04
        jumps[..., 1:, :] += (log_distance[..., 1:, :] - log_distance[..., :-1, :]).abs() > 0.04
        context_edges = (jumps > 0).float() * context_small

        edge_input, box = _pad_to_unit(torch.cat([rgb_small, disparity / disparity.max().clamp_min(1e-6),
                                                  context_edges, context_small, hole_small], 1))
        top, bottom, left, right = box
        predicted = self.edge(edge_input)[..., top:bottom, left:right]
        edges = ((predicted > EDGE_THRESHOLD).float() * hole_small + context_edges).clamp(0, 1)

        depth_input, _ = _pad_to_unit(torch.cat([zero_mean, edges, context_small, hole_small], 1))
        residual = self.depth(depth_input)[..., top:bottom, left:right]
        hole_distance = (residual + mean).exp()
        color_input, _ = _pad_to_unit(torch.cat([rgb_small, edges, context_small, hole_small], 1))
        hole_rgb = self.color(color_input)[..., top:bottom, left:right]

        if size != (height, width):
            hole_rgb = F.interpolate(hole_rgb, size=(height, width), mode="bilinear", align_corners=False)
            hole_distance = F.interpolate(hole_distance, size=(height, width), mode="bilinear", align_corners=False)
        out_device = rgb.device
        return hole_rgb[0].clamp(0, 1).to(out_device), hole_distance[0, 0].to(out_device)


def load_context_aware_inpainter(edge_path: str, depth_path: str, color_path: str,
                                 device: torch.device | str = "cpu") -> ContextAwareInpainter:
    """Load the three released checkpoints (weights only; safetensors or torch.load(weights_only=True))."""
    edge = load_network(EdgeInpaintNet(), load_state_dict(edge_path), edge_path)
    depth = load_network(DepthInpaintNet(), load_state_dict(depth_path), depth_path)
    color = load_network(ColorInpaintNet(), load_state_dict(color_path), color_path)
    return ContextAwareInpainter(edge.to(device), depth.to(device), color.to(device))

