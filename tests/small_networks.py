"""Small configurations of large architectures, for tests and the end-to-end runs: same code paths and key layout
(the loaders recognise them from their shapes), a fraction of the compute."""
from __future__ import annotations

from depth_core.models.depth_pro import DepthProConfig

SMALL_DEPTH_PRO = DepthProConfig(embed_dim=64, depth=12, patch_size=4, encoder_dims=(8, 8, 16, 16),
                                 decoder_features=8)
"""Depth Pro with the released token geometry (24 x 24 tokens per ViT input, 5 x 5 + 3 x 3 + 1 patches, the FOV
head's 6 x 6 kernel) on 4-pixel patches: 384 px input instead of 1536, thin ViTs and decoder."""
