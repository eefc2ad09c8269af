"""Small configurations of large architectures, for tests and the end-to-end runs: same code paths and key layout
(the loaders recognise them from their shapes), a fraction of the compute."""
from __future__ import annotations

from types import ModuleType
from typing import Callable

import torch

from depth_core.models import depth_pro
from depth_core.models.depth_pro import DepthProConfig

SMALL_DEPTH_PRO = DepthProConfig(embed_dim=64, depth=12, patch_size=4, encoder_dims=(8, 8, 16, 16),
                                 decoder_features=8)
"""Depth Pro with the released token geometry (24 x 24 tokens per ViT input, 5 x 5 + 3 x 3 + 1 patches, the FOV
head's 6 x 6 kernel) on 4-pixel patches: 384 px input instead of 1536, thin ViTs and decoder."""


def small_depth_pro(family: ModuleType = depth_pro, fov_degrees: float = 75.0) -> torch.nn.Module:
    """SMALL_DEPTH_PRO with random weights that behave like a trained network's in kind: depth with structure
    (not the final ReLU's zeros) and a field-of-view head near `fov_degrees`. `family`: the depth_pro module to
    build from (node tests pass the pack's own import of it)."""
    torch.manual_seed(0)
    network = family.build(SMALL_DEPTH_PRO).eval()
    with torch.no_grad():
        network.head[4].weight.abs_()
        network.head[4].bias.fill_(0.05)
        network.fov.head[-1].bias.fill_(fov_degrees)
    return network


SMALL_TEST_NETWORKS: dict[str, Callable[[], torch.nn.Module]] = {"depth_pro.pt": small_depth_pro}
"""Release file name -> small network built in its place when a workflow names it (the end-to-end harness)."""
