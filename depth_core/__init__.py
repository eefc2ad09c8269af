"""Depth Toolkit's algorithms and models: torch/numpy only, no ComfyUI imports, usable on their own.

    python -m depth_core --help
"""
from .depth import Depth, DepthKind, as_depth, depth_to_image, distance, normalized_nearness

__all__ = ["Depth", "DepthKind", "as_depth", "depth_to_image", "distance", "normalized_nearness"]
__version__ = "0.1.0"
