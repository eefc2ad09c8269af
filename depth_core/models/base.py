"""What every depth network family provides, so the estimator, the registry and BoostMerge treat them alike.

A family module (e.g. `depth_anything_v2.py`) defines a config dataclass, presets, `build(config) -> nn.Module`
and `config_from_state_dict(state_dict) -> config` (to recognise any checkpoint file a user drops in). The built
module maps a normalized image batch [B,3,h,w] (h, w already multiples of `Preprocess.multiple_of`) to a raw
prediction [B,h',w'] at the network's own output resolution; upsampling to the input size is the estimator's job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..depth import DepthKind

ResizeRule = Literal["lower_bound", "upper_bound", "minimal", "exact"]
"""How the input is scaled to the network size (MiDaS' `Resize` semantics):
lower_bound: both sides at least net size (short side = net size); upper_bound: both sides at most net size;
minimal: the scale that changes the image least while reaching net size on one side; exact: net size x net size."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocess:
    """The input rule its authors specify for a network. Images are always fed RGB."""

    net_size: int
    multiple_of: int
    resize_rule: ResizeRule
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear", "area"] = "bicubic"
    keep_aspect: bool = True
    upsample: Literal["bilinear", "bicubic"] = "bilinear"
    """How the authors bring the prediction back to the input size."""
    upsample_align_corners: bool = False
    fixed_size: bool = False
    """The network takes only net_size x net_size (Depth Pro): resolution choices do not apply."""


@dataclass(frozen=True)
class ModelCard:
    """Everything about a network the rest of the pack needs, besides its weights."""

    name: str
    family: str
    preprocess: Preprocess
    output_kind: DepthKind
    receptive_field: int
    """Resolution at which the network sees the most context without losing structure (BoostMerge's R0)."""
    output_is_inverse: bool = False
    """Metric networks that predict 1/metres: the estimator upsamples the inverse and inverts afterwards, as their
    authors do (Depth Pro)."""
    focal_scaled: bool = False
    """The metric output holds for a camera whose focal length equals the image width; the estimator rescales it
    with the field of view the network predicts, the user gives, or camera.DEFAULT_FOV_DEGREES (Depth Pro,
    Depth Anything 3 Metric)."""


@dataclass(frozen=True)
class KnownModel:
    """A released checkpoint the pack knows how to find, fetch and build.

    Each family module lists its own in `KNOWN_MODELS`; depth_core/registry.py gathers them.
    """

    card: ModelCard
    config: object
    """The family's config dataclass instance for this checkpoint."""
    filename: str
    urls: tuple[str, ...]
    """Official download locations, tried in order."""
    sha256: str | None
    """Hex sha256 of the released file, or its leading part where that is all the authors publish (torch.hub's
    `name-<prefix>.pt` convention); checked as a prefix. None: only the server's own digest can be checked."""
    license: str
    size_bytes: int | None = None


def relative_card(name: str, family: str, net_size: int, multiple_of: int, resize_rule: ResizeRule,
                  mean: tuple[float, float, float], std: tuple[float, float, float]) -> ModelCard:
    """The card of a relative-depth network fed bicubic-resized RGB, whose receptive field is its native size
    (MiDaS, DPT, Depth Anything: the authors resize with cv2.INTER_CUBIC)."""
    return ModelCard(name=name, family=family,
                     preprocess=Preprocess(net_size, multiple_of, resize_rule, mean, std, interpolation="bicubic"),
                     output_kind=DepthKind.RELATIVE_INVERSE, receptive_field=net_size)
