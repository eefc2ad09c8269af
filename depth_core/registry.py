"""All known depth networks, and building an estimator from any checkpoint file.

Each family module declares its checkpoints in `KNOWN_MODELS` and recognises its own state dicts in
`config_from_state_dict`, so a file the user renamed, or a converted fp16 safetensors, still builds the right network.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import torch

from .estimate import DepthEstimator
from .loading import CorruptCheckpointError, load_state_dict
from .models import depth_anything_v2 as depth_anything_variants
from .models.base import KnownModel
from .video_depth import VideoDepthEstimator

DEPTH_FAMILIES = ("video_depth_anything", "depth_anything_v2", "midas_dpt", "midas_v21", "leres", "zoedepth",
                  "depth_pro", "depth_anything_3")
"""Family modules of networks that predict depth from an image, in the order they are tried (Video Depth Anything
first: its checkpoints hold a Depth Anything V2 network plus temporal modules)."""


def family_modules() -> list[ModuleType]:
    modules = []
    for name in DEPTH_FAMILIES:
        try:
            modules.append(importlib.import_module(f".models.{name}", __package__))
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.models.{name}":
                raise
    return modules


def known_models() -> dict[str, KnownModel]:
    """Known checkpoints by file name, in the order the model list shows them."""
    return {known.filename: known for module in family_modules() for known in module.KNOWN_MODELS}


def identify(state_dict: dict[str, torch.Tensor]) -> tuple[ModuleType, object] | None:
    """The family module and config that this state dict belongs to, or None."""
    for module in family_modules():
        config = module.config_from_state_dict(state_dict)
        if config is not None:
            return module, config
    return None


def card_for(module: ModuleType, config: object, filename: str):
    """The model card of a known checkpoint with this config, named after the file the user chose."""
    candidates = [known for known in module.KNOWN_MODELS if known.config == config] or list(module.KNOWN_MODELS)
    by_name = next((known for known in candidates if known.filename == filename), candidates[0])
    card = replace(by_name.card, name=Path(filename).stem)
    # Families whose input size follows the config (Depth Pro) adapt the card to the file's network.
    return module.card_for_config(card, config) if hasattr(module, "card_for_config") else card


def build_without_initializing(module: ModuleType, config: object,
                               state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Build the network without its random initialization (seconds for ViT-L), which the checkpoint overwrites.

    Built on the meta device then given empty storage; this is only safe when every tensor of the module comes from
    the checkpoint, so a network with buffers the checkpoint lacks is built the ordinary way.
    """
    with torch.device("meta"):
        network = module.build(config)
    tensor_names = {name for name, _ in network.named_parameters()} | {name for name, _ in network.named_buffers()}
    if not tensor_names <= set(state_dict):
        return module.build(config)
    return network.to_empty(device="cpu")


MODEL_VARIANTS = depth_anything_variants.VARIANTS
"""What LoadDepthModel's and the command line's variant choice offers: auto (from the file) or an override for
families whose variants look alike in their weights (see `config_for_variant` in a family module)."""


def apply_variant(module: ModuleType, config: object, variant: str, filename: str) -> object:
    """The config completed by the variant (auto: what the file name says) for families that have variants."""
    if variant not in MODEL_VARIANTS:
        raise ValueError(f"Unknown model variant {variant!r}; choose one of {', '.join(MODEL_VARIANTS)}.")
    if hasattr(module, "config_for_variant"):
        return module.config_for_variant(config, variant, filename)
    if variant not in ("auto", "relative"):
        raise ValueError(f"Variant {variant!r} applies to Depth Anything files only; {filename} is a "
                         f"{module.__name__.rsplit('.', 1)[-1]} network. Choose variant 'auto'.")
    return config


def build_estimator(path: str | os.PathLike, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, variant: str = "auto") -> DepthEstimator:
    """Load a checkpoint safely, recognise its network, load its weights strictly and return an estimator.

    `variant` overrides what the file name says for networks whose variants share their weights' layout (Depth
    Anything v1 / V2 / metric V2). A folder is a Marigold diffusers pipeline."""
    path = Path(path)
    if path.is_dir():
        from .models import marigold

        apply_variant(marigold, None, variant, path.name)
        return marigold.build_estimator(path, device, dtype)
    state_dict = load_state_dict(path)
    found = identify(state_dict)
    if found is None:
        supported = ", ".join(known_models())
        if path.name in known_models():
            raise CorruptCheckpointError(
                f"{path.name} does not hold the weights its name promises: the file is damaged or was replaced. "
                f"Delete it and download it again ({known_models()[path.name].urls[0]})."
            )
        raise CorruptCheckpointError(
            f"{path.name} is not a depth network this pack knows (its weights match none of: {supported}). "
            "Choose one of those checkpoints."
        )
    module, config = found
    config = apply_variant(module, config, variant, path.name)
    network = build_without_initializing(module, config, state_dict)
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CorruptCheckpointError(
            f"{path.name} looks like {module.__name__.rsplit('.', 1)[-1]} but its weights do not fit the network "
            f"({str(error).splitlines()[0]}). The file may be damaged or a different variant: download it again."
        ) from error
    del state_dict
    network = network.to(device=device, dtype=dtype)
    estimator_class = VideoDepthEstimator if getattr(network, "is_video_model", False) else DepthEstimator
    return estimator_class(card_for(module, config, path.name), network)
