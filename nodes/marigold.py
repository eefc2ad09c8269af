"""Marigold's diffusion settings: DepthToolkit.MarigoldSettings, for Depth Estimate's optional settings input."""
from __future__ import annotations

from comfy_api.latest import io

from ..depth_core.models.marigold import DEFAULT_ENSEMBLE_SIZE, MarigoldSettings
from ._common import CATEGORY

MarigoldSettingsType = io.Custom("DEPTHTOOLKIT_MARIGOLD_SETTINGS")
"""A depth_core.models.marigold.MarigoldSettings."""


class MarigoldSettingsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.MarigoldSettings",
            display_name="Marigold Settings",
            category=f"{CATEGORY}/depth",
            description="Denoising steps, ensemble size, processing resolution and seed for Marigold models. Connect "
                        "it to Depth Estimate's marigold_settings input; other models ignore it.",
            inputs=[
                io.Int.Input("denoising_steps", default=0, min=0, max=100,
                             tooltip="Diffusion steps per prediction. 0: the model's own default (v1.0: 10, "
                                     "v1.1: 1, LCM: 1-4). More steps are slower and rarely sharper."),
                io.Int.Input("ensemble_size", default=DEFAULT_ENSEMBLE_SIZE, min=1, max=32,
                             tooltip="Predictions averaged per image (median after aligning their scale and "
                                     "shift): less noise, proportionally slower. The old extension used 5."),
                io.Int.Input("processing_resolution", default=0, min=0, max=4096, step=8,
                             tooltip="Longer side the image is processed at. 0: the model's default (768). "
                                     "Depth Estimate's resolution input, when not native, takes precedence."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the starting noise: the same seed gives the same depth."),
            ],
            outputs=[MarigoldSettingsType.Output("marigold_settings",
                                                 tooltip="For Depth Estimate's marigold_settings input.")],
        )

    @classmethod
    def execute(cls, denoising_steps: int, ensemble_size: int, processing_resolution: int,
                seed: int) -> io.NodeOutput:
        return io.NodeOutput(MarigoldSettings(denoising_steps=denoising_steps or None, ensemble_size=ensemble_size,
                                              processing_resolution=processing_resolution or None, seed=seed))


NODES = [MarigoldSettingsNode]
