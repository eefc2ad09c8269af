"""What every Depth Toolkit node shares: socket types, the depth input, progress, devices.

Node files stay thin: they adapt ComfyUI tensors and call depth_core; anything two nodes need lives here.
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.utils
import folder_paths

from ..depth_core.camera import AUTO_FOV
from ..depth_core.depth import Depth, as_depth, depth_to_image
from ..depth_core.interrupt import set_interrupt_check
from ..depth_core.progress import ProgressFn

CATEGORY = "Depth Toolkit"

DepthType = io.Custom("DEPTHTOOLKIT_DEPTH")
"""A depth_core.Depth: the raw float prediction and what it means (relative inverse depth or metres)."""

DepthModelType = io.Custom("DEPTHTOOLKIT_MODEL")
"""A loaded depth network (see nodes/depth_estimate.py)."""

DEPTH_INPUT_TOOLTIP = (
    "Depth to use: the DEPTH output of a Depth Toolkit node (keeps raw values and whether they are metric), or "
    "any depth IMAGE (near = white), e.g. from another pack or a loaded PNG. A depth of another size than the "
    "image is resized to the image."
)


def depth_input(id: str = "depth", tooltip: str = DEPTH_INPUT_TOOLTIP, optional: bool = False) -> io.MultiType.Input:
    """One socket that takes a DEPTH or a depth IMAGE."""
    return io.MultiType.Input(id, [DepthType, io.Image], tooltip=tooltip, optional=optional)


def read_depth(value: Depth | torch.Tensor) -> Depth:
    return as_depth(value)


FOV_TOOLTIP = ("Horizontal field of view of the photo in degrees. 0 = auto: the one the depth carries (predicted by "
               "Depth Pro, or set on Depth Estimate), else 55 (a 35 mm lens on full frame; phones about 65-75). The "
               "field of view used is logged and shown on the node.")


def fov_input(id: str = "fov", note: str = "", maximum: float = 179.0) -> io.Float.Input:
    """The field-of-view setting of the geometry nodes: 0 = auto (the depth's camera, else the default)."""
    return io.Float.Input(id, default=AUTO_FOV, min=0.0, max=maximum, step=0.5, tooltip=note + FOV_TOOLTIP)


def report_fov(node: str, sources: list[str]) -> str:
    """Log which field of view a node used (one line per distinct choice) and return the text for its ui."""
    text = f"{node}: " + "; ".join(dict.fromkeys(sources))
    logging.getLogger("DepthToolkit").info(text)
    return text


def depth_outputs() -> list:
    """The DEPTH + depth IMAGE pair every depth-producing node returns, in this order."""
    return [
        DepthType.Output("depth", tooltip="Raw depth with its meaning (relative inverse depth or metres), for the "
                                          "geometry nodes (stereo, normals, mesh, 3D photo)."),
        io.Image.Output("depth_image", tooltip="Depth as a grayscale picture, near = white, 0..1."),
    ]


def to_output_device(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(comfy.model_management.intermediate_device())


def depth_picture(depth: Depth, per_image: bool = True) -> torch.Tensor:
    return to_output_device(depth_to_image(depth.to("cpu"), per_image))


def compute_device() -> torch.device:
    return comfy.model_management.get_torch_device()


def comfy_progress(total: int) -> ProgressFn:
    """A ProgressFn that drives the node's progress bar and raises if the user pressed Cancel."""
    bar = comfy.utils.ProgressBar(total)

    def report(done: int, total_now: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_now)

    return report


def ready_estimator(depth_model):
    """The depth_core DepthEstimator inside a DEPTHTOOLKIT_MODEL value, loaded onto its device through ComfyUI's
    model management (which may first unload other models to make room)."""
    install_interrupt_check()
    comfy.model_management.load_models_gpu([depth_model.patcher])
    return depth_model.estimator


def install_interrupt_check() -> None:
    """Let depth_core stop between network blocks when the user presses Cancel (or /interrupt)."""
    set_interrupt_check(comfy.model_management.throw_exception_if_processing_interrupted)


def output_paths(filename_prefix: str, width: int, height: int,
                 base_folder: str | None = None) -> tuple[str, str, int, str]:
    """(folder, filename, counter, subfolder) for new files under ComfyUI's naming, in the output folder (or
    `base_folder`), with an error that says what to do when the prefix points somewhere unusable."""
    try:
        return folder_paths.get_save_image_path(filename_prefix, base_folder or folder_paths.get_output_directory(),
                                                width, height)[:4]
    except OSError as error:
        raise ValueError(f"Cannot use the output folder for filename_prefix {filename_prefix!r}: "
                         f"{error.strerror or error}. Choose another filename_prefix.") from error
