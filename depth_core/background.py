"""Background removal with the salient-object networks rembg distributes (U²-Net, IS-Net, BiRefNet).

rembg supplies the model files (names, release URLs, checksums, its download code) and the pymatting-based alpha
matting. The networks themselves are run here with onnxruntime: a chunk of images is resized and normalized in
torch in one go, only the network's main output is copied back, and the mask is post-processed in torch.
`rembg.remove()` instead resizes one PIL image at a time with Lanczos, fetches every side output of the network,
and min-max stretches each prediction, which turns an image with no subject into a false subject. Here the
network's probability is used as it is, so an empty scene gives an (almost) empty mask.

The catalogue of rembg's models is `BACKGROUND_MODELS`; finding and downloading their files is model_files.py's job.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .depth import Depth, fill_non_finite, set_outside_mask_to_far
from .image import gaussian_blur, to_rgb
from .progress import ProgressFn, no_progress

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RELEASE_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
ONNX_SUFFIX = ".onnx"


@dataclass(frozen=True)
class InputContract:
    """How a network wants its input and what its first output means."""

    size: tuple[int, int]
    """(height, width) the network was exported for; a model file with fixed input dims overrides it."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logits: bool | None
    """True: the output needs a sigmoid. False: it is already a probability. None: decide from the values."""


U2NET_CONTRACT = InputContract((320, 320), IMAGENET_MEAN, IMAGENET_STD, logits=False)
ISNET_CONTRACT = InputContract((1024, 1024), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), logits=False)
ISNET_ANIME_CONTRACT = InputContract((1024, 1024), IMAGENET_MEAN, (1.0, 1.0, 1.0), logits=False)
BIREFNET_CONTRACT = InputContract((1024, 1024), IMAGENET_MEAN, IMAGENET_STD, logits=True)
CUSTOM_1024_CONTRACT = InputContract((1024, 1024), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), logits=None)
"""rembg's `dis_custom` input rule, for a dropped-in file we know nothing about; logits are detected."""
CUSTOM_320_CONTRACT = InputContract((320, 320), IMAGENET_MEAN, IMAGENET_STD, logits=None)
"""rembg's `u2net_custom` input rule, for a dropped-in file whose input is 320x320."""


@dataclass(frozen=True)
class BackgroundModel:
    name: str
    """rembg's session name, also the model's name in the node's list."""
    release_file: str
    """File name in rembg's release, for the download address."""
    contract: InputContract
    summary: str

    @property
    def file_name(self) -> str:
        """The name rembg stores the file under."""
        return f"{self.name}{ONNX_SUFFIX}"

    @property
    def url(self) -> str:
        return RELEASE_URL + self.release_file


BACKGROUND_MODELS: dict[str, BackgroundModel] = {model.name: model for model in [
    BackgroundModel("isnet-general-use", "isnet-general-use.onnx", ISNET_CONTRACT,
               "IS-Net (DIS), general objects; sharp edges, 1024 px, 170 MB"),
    BackgroundModel("isnet-anime", "isnet-anime.onnx", ISNET_ANIME_CONTRACT, "IS-Net trained on anime characters"),
    BackgroundModel("u2net", "u2net.onnx", U2NET_CONTRACT, "U²-Net, general objects, 320 px, 170 MB (the old default)"),
    BackgroundModel("u2netp", "u2netp.onnx", U2NET_CONTRACT, "U²-Net small, 4.7 MB, fast and rough"),
    BackgroundModel("u2net_human_seg", "u2net_human_seg.onnx", U2NET_CONTRACT, "U²-Net trained on people"),
    BackgroundModel("silueta", "silueta.onnx", U2NET_CONTRACT, "U²-Net pruned to 43 MB"),
    BackgroundModel("birefnet-general", "BiRefNet-general-epoch_244.onnx", BIREFNET_CONTRACT,
               "BiRefNet general, the most accurate and the slowest (1024 px, 930 MB)"),
    BackgroundModel("birefnet-general-lite", "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx", BIREFNET_CONTRACT,
               "BiRefNet with a Swin-T backbone, 4x faster than general"),
    BackgroundModel("birefnet-portrait", "BiRefNet-portrait-epoch_150.onnx", BIREFNET_CONTRACT, "BiRefNet for portraits"),
    BackgroundModel("birefnet-dis", "BiRefNet-DIS-epoch_590.onnx", BIREFNET_CONTRACT,
               "BiRefNet for dichotomous image segmentation (fine structures)"),
    BackgroundModel("birefnet-hrsod", "BiRefNet-HRSOD_DHU-epoch_115.onnx", BIREFNET_CONTRACT,
               "BiRefNet for high-resolution salient objects"),
    BackgroundModel("birefnet-cod", "BiRefNet-COD-epoch_125.onnx", BIREFNET_CONTRACT,
               "BiRefNet for camouflaged objects"),
    BackgroundModel("birefnet-massive", "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx", BIREFNET_CONTRACT,
               "BiRefNet trained on the largest data mix"),
    BackgroundModel("birefnet-general-fp16", "BiRefNet-general-epoch_244.onnx", BIREFNET_CONTRACT,
               "birefnet-general converted to float16 by rembg on first use (GPU only; needs onnx and "
               "onnxconverter-common)"),
]}
DEFAULT_MODEL = "isnet-general-use"


# ---------------------------------------------------------------------------------------------------------------
# Input rules of model files (finding and fetching them: model_files.py)


def known_contract(choice: str) -> InputContract | None:
    """The input rule of a model chosen by its rembg name; None for a file (its own name then decides)."""
    model = BACKGROUND_MODELS.get(choice)
    return model.contract if model is not None else None


def contract_for_file(path: str | os.PathLike) -> InputContract | None:
    """The input rule of a known model whose name the file name starts with (longest name wins), e.g.
    isnet-general-use-quint8.onnx is an IS-Net; None if the name says nothing."""
    stem = Path(path).name.lower()
    matches = [name for name in BACKGROUND_MODELS if stem.startswith(name.lower())]
    return BACKGROUND_MODELS[max(matches, key=len)].contract if matches else None


# ---------------------------------------------------------------------------------------------------------------
# Running a network


class ForegroundNetwork(Protocol):
    """What `predict_foreground` needs from a network: its input rule and a numpy forward pass."""

    contract: InputContract
    input_size: tuple[int, int]
    max_batch: int

    def run(self, batch: np.ndarray, release_memory: bool = False) -> np.ndarray:
        """float32 [b,3,h,w] normalized -> first output, [b,1,h,w] or [b,h,w]; `release_memory` on the last call
        of a run lets the network free its working memory."""


def onnxruntime_package(system: str, nvidia: bool, rocm: bool) -> str:
    """The pip package of ONNX Runtime that runs background removal on this hardware."""
    if nvidia:
        return "onnxruntime-gpu"
    if rocm and system == "Linux":
        return "onnxruntime-rocm"
    if system == "Windows":
        return "onnxruntime-directml"  # any DirectX 12 GPU (AMD, Intel, NVIDIA)
    return "onnxruntime"  # the CPU build; on Apple silicon it includes CoreML


def import_onnxruntime():
    """onnxruntime, or an error that names the package to install for this machine.

    Requirements never list a runtime: pip would install the CPU build over a GPU build (onnxruntime-gpu,
    -directml, -rocm all provide the same `onnxruntime` package), so the user picks the build that fits."""
    try:
        import onnxruntime
    except ImportError as error:
        import platform

        rocm = bool(getattr(torch.version, "hip", None))
        package = onnxruntime_package(platform.system(), torch.cuda.is_available() and not rocm, rocm)
        raise ModuleNotFoundError(
            f"Background removal needs ONNX Runtime, which is not installed. For this machine install {package} "
            f"into ComfyUI's Python: python -m pip install {package}   (only one onnxruntime build at a time: "
            "onnxruntime-gpu for NVIDIA, onnxruntime-directml for other GPUs on Windows, onnxruntime-rocm for AMD "
            "on Linux, onnxruntime for the CPU and Apple silicon).", name="onnxruntime") from error
    return onnxruntime


def available_providers() -> list[str]:
    ort = import_onnxruntime()

    return list(ort.get_available_providers())


def providers_for(device: torch.device | str) -> list:
    """onnxruntime execution providers for a torch device: its GPU provider when onnxruntime has one."""
    device = torch.device(device)
    available = available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    if device.type == "cuda" and "ROCMExecutionProvider" in available:
        return [("ROCMExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _fixed_dim(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclass
class OnnxForegroundNetwork:
    """An onnxruntime session plus the input rule its model was trained with."""

    path: Path
    session: object
    contract: InputContract
    input_name: str
    output_name: str
    input_size: tuple[int, int]
    max_batch: int
    providers: list[str] = field(default_factory=list)

    def run(self, batch: np.ndarray, release_memory: bool = False) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch},
                                self._shrinking_run_options() if release_memory else None)[0]

    def _shrinking_run_options(self):
        """Run options that hand onnxruntime's memory arena back at the end of the pass. The arena keeps the
        peak of a pass (about 1.7 GB for IS-Net at 1024x1024) for as long as the cached session lives; turning
        it off instead makes every pass fault its memory in again (measured ~20% slower on a loaded CPU), so it
        is kept within a call and released after the call's last chunk."""
        ort = import_onnxruntime()

        arenas = ["cpu:0"] + [f"gpu:{options.get('device_id', 0)}" for name, options in self._provider_options()
                              if name in ("CUDAExecutionProvider", "ROCMExecutionProvider")]
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", ";".join(arenas))
        return options

    def _provider_options(self) -> list[tuple[str, dict]]:
        get = getattr(self.session, "get_provider_options", None)
        return list(get().items()) if get else []


BATCH_LIMIT = 4
"""Images per network call for models exported with a free batch dimension (memory grows with it)."""


def open_network(path: str | os.PathLike, contract: InputContract | None = None,
                 device: torch.device | str = "cpu") -> OnnxForegroundNetwork:
    """Load an ONNX segmentation model; a file onnxruntime cannot read gives a ValueError naming the file."""
    ort = import_onnxruntime()

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Background removal model file {path} does not exist.")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = providers_for(device)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:
        raise ValueError(f"{path} is not a usable ONNX model ({type(error).__name__}: {str(error)[:300]}). The file "
                         "is probably incomplete or damaged: delete it and download it again (known models are "
                         "fetched again automatically when downloading is on).") from error
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape) if inputs else []
    if len(inputs) != 1 or len(shape) != 4 or _fixed_dim(shape[1]) not in (None, 3) or not outputs:
        raise ValueError(f"{path} is not an image segmentation model of the kind rembg runs: it takes "
                         f"{[(i.name, i.shape) for i in inputs]}, expected one image input [batch, 3, height, "
                         "width]. Choose a U²-Net, IS-Net or BiRefNet ONNX file.")
    if contract is None:
        contract = contract_for_file(path)
    height, width = _fixed_dim(shape[2]), _fixed_dim(shape[3])
    if contract is None:
        contract = CUSTOM_320_CONTRACT if (height, width) == (320, 320) else CUSTOM_1024_CONTRACT
    input_size = (height or contract.size[0], width or contract.size[1])
    max_batch = BATCH_LIMIT if _fixed_dim(shape[0]) is None else 1
    active = session.get_providers()
    wanted = [p[0] if isinstance(p, tuple) else p for p in providers]
    if wanted[0] != "CPUExecutionProvider" and wanted[0] not in active:
        log.warning("onnxruntime could not start %s (CUDA/cuDNN libraries missing?); %s runs on the CPU.",
                    wanted[0], path.name)
    return OnnxForegroundNetwork(path, session, contract, inputs[0].name, outputs[0].name, input_size, max_batch,
                                 active)


_SESSION_CACHE: "OrderedDict[tuple, OnnxForegroundNetwork]" = OrderedDict()
SESSION_CACHE_SIZE = 2
"""Sessions kept between runs; a BiRefNet session holds about a gigabyte, so only the last few."""
_cache_lock = threading.Lock()


def load_network(path: str | os.PathLike, contract: InputContract | None = None,
                 device: torch.device | str = "cpu") -> OnnxForegroundNetwork:
    """`open_network`, cached: the same unchanged file on the same device reuses its session."""
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0, contract,
           str(torch.device(device)))
    with _cache_lock:
        if key in _SESSION_CACHE:
            _SESSION_CACHE.move_to_end(key)
            return _SESSION_CACHE[key]
    network = open_network(path, contract, device)
    with _cache_lock:
        _SESSION_CACHE[key] = network
        while len(_SESSION_CACHE) > SESSION_CACHE_SIZE:
            _SESSION_CACHE.popitem(last=False)
    return network


def clear_network_cache() -> None:
    with _cache_lock:
        _SESSION_CACHE.clear()


def as_image_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A [B,H,W,C] batch or a list of [H,W,C] / [1,H,W,C] images (sizes may differ) as a list of [H,W,3]."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        batch = list(to_rgb(images).unbind(0))
    else:
        batch = []
        for image in images:
            if image.ndim == 4 and image.shape[0] == 1:
                image = image[0]
            if image.ndim == 2:
                image = image.unsqueeze(-1)
            batch.extend(to_rgb(image.unsqueeze(0)).unbind(0))
    if not batch:
        raise ValueError("The image batch is empty: connect at least one image.")
    for image in batch:
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"An image of size {image.shape[1]}x{image.shape[0]} has no pixels.")
    return batch


def network_input(images: Sequence[torch.Tensor], contract: InputContract, size: tuple[int, int],
                  device: torch.device | str) -> torch.Tensor:
    """[H,W,3] images 0..1 -> float32 [b,3,h,w] at the network size, normalized per the model's contract."""
    resized = []
    for image in images:
        x = image.to(device=device, dtype=torch.float32).clamp(0, 1).permute(2, 0, 1).unsqueeze(0)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        resized.append(x)
    batch = torch.cat(resized)
    mean = torch.tensor(contract.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(contract.std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def output_to_probability(raw: torch.Tensor, logits: bool | None) -> torch.Tensor:
    """The first network output [b,1,h,w] or [b,h,w] as a foreground probability [b,h,w] in 0..1."""
    if raw.ndim == 4:
        raw = raw[:, 0]
    raw = torch.nan_to_num(raw.float(), nan=0.0)
    if logits is None:
        logits = bool(raw.amin() < -1e-3) or bool(raw.amax() > 1 + 1e-3)
    return torch.sigmoid(raw) if logits else raw.clamp(0, 1)


def predict_foreground(network: ForegroundNetwork, images: torch.Tensor | Sequence[torch.Tensor],
                       device: torch.device | str = "cpu", progress: ProgressFn = no_progress) -> list[torch.Tensor]:
    """Foreground probability [H,W] per image (1 = subject), each at its image's own size."""
    batch = as_image_list(images)
    masks: list[torch.Tensor] = []
    step = max(1, network.max_batch)
    for start in range(0, len(batch), step):
        chunk = batch[start:start + step]
        x = network_input(chunk, network.contract, network.input_size, device)
        last = start + step >= len(batch)
        raw = torch.from_numpy(np.asarray(network.run(x.cpu().numpy(), release_memory=last))).to(device)
        probability = output_to_probability(raw, network.contract.logits)
        for image, p in zip(chunk, probability):
            size = tuple(image.shape[:2])
            resized = F.interpolate(p[None, None], size=size, mode="bilinear", align_corners=False,
                                    antialias=size[0] < p.shape[0] or size[1] < p.shape[1])
            masks.append(resized[0, 0].clamp(0, 1))
        progress(len(masks), len(batch))
    return masks


# ---------------------------------------------------------------------------------------------------------------
# Mask post-processing and compositing (torch, any device)


def _dilate_step(mask: torch.Tensor, square: bool) -> torch.Tensor:
    """One pixel of dilation on [b,1,H,W]; alternating square and cross steps grows an octagon, close to a disk."""
    if square:
        return F.max_pool2d(mask, 3, stride=1, padding=1)
    vertical = F.max_pool2d(mask, (3, 1), stride=1, padding=(1, 0))
    horizontal = F.max_pool2d(mask, (1, 3), stride=1, padding=(0, 1))
    return torch.maximum(vertical, horizontal)


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow [B,H,W] by `pixels` (negative shrinks). Shrinking does not eat in from the image border."""
    if pixels == 0:
        return mask
    x = mask.unsqueeze(1) if pixels > 0 else 1 - mask.unsqueeze(1)
    for step in range(abs(pixels)):
        x = _dilate_step(x, square=step % 2 == 1)
    return (x if pixels > 0 else 1 - x).squeeze(1)


def feather_mask(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Soften edges of [B,H,W] with a Gaussian whose transition is about `pixels` wide on each side."""
    if pixels <= 0:
        return mask
    # sigma = half the width: the transition from 2 % to 98 % spans about the requested pixels on each side
    return gaussian_blur(mask.unsqueeze(1).float(), pixels / 2).squeeze(1).clamp(0, 1)


def threshold_mask(mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """threshold 0 keeps the soft probability; otherwise pixels at or above it become 1, the rest 0."""
    if threshold <= 0:
        return mask
    return (mask >= threshold).to(mask.dtype)


@dataclass(frozen=True)
class MaskSettings:
    threshold: float = 0.5
    """0 keeps the network's soft probability; above 0, a hard mask cut at this value."""
    grow: int = 0
    """Pixels to grow (negative: shrink) the mask by."""
    feather: float = 0.0
    """Width in pixels of the soft edge added after growing."""
    alpha_matting: bool = False
    """Refine the edge with closed-form matting (pymatting, through rembg) inside a band around it."""
    matting_foreground: float = 240 / 255
    matting_background: float = 10 / 255
    matting_erode: int = 10
    """Half-width in pixels of the uncertain band the matting solves for (rembg's erode size)."""

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}.")
        if self.feather < 0:
            raise ValueError(f"feather must be 0 or more pixels, got {self.feather}.")


def alpha_matte(image: torch.Tensor, mask: torch.Tensor, settings: MaskSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """rembg's alpha matting for one image: ([H,W,3] foreground colours, [H,W] alpha) on the input's device.

    Matting needs both sure foreground and sure background; without them (an empty or full mask) the mask is
    returned unchanged with the original colours.
    """
    from PIL import Image
    from rembg.bg import alpha_matting_cutout  # loads pymatting/numba: only when matting is asked for

    from .image import image_to_uint8

    rgb = Image.fromarray(image_to_uint8(image))
    levels = Image.fromarray(image_to_uint8(mask.unsqueeze(-1))[..., 0], mode="L")
    try:
        cutout = alpha_matting_cutout(rgb, levels, round(settings.matting_foreground * 255),
                                      round(settings.matting_background * 255), settings.matting_erode)
    except ValueError as error:
        log.info("Alpha matting skipped for one image (%s); using the plain mask.", error)
        return image, mask
    rgba = torch.from_numpy(np.asarray(cutout, dtype=np.float32) / 255.0).to(image.device)
    return rgba[..., :3], rgba[..., 3]


def refine_mask(image: torch.Tensor, probability: torch.Tensor,
                settings: MaskSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold, grow/shrink, optional matting, feather: ([H,W,3] foreground colours, [H,W] mask)."""
    mask = threshold_mask(probability.unsqueeze(0), settings.threshold)
    mask = grow_mask(mask, settings.grow)[0]
    foreground = image
    if settings.alpha_matting:
        foreground, mask = alpha_matte(image, mask, settings)
    mask = feather_mask(mask.unsqueeze(0), settings.feather)[0]
    return foreground, mask


def composite(foreground: torch.Tensor, mask: torch.Tensor,
              background: tuple[float, float, float] | None) -> torch.Tensor:
    """[H,W,3] + [H,W] -> RGBA [H,W,4] (background None) or RGB on a solid colour [H,W,3]."""
    alpha = mask.unsqueeze(-1).to(foreground.dtype)
    if background is None:
        return torch.cat([foreground, alpha], dim=-1)
    colour = torch.tensor(background, dtype=foreground.dtype, device=foreground.device)
    return foreground * alpha + colour * (1 - alpha)


def parse_colour(text: str) -> tuple[float, float, float]:
    """'#RRGGBB', 'RRGGBB', '#RGB' or 'r, g, b' (0..255) -> RGB 0..1."""
    value = text.strip()
    digits = value.lstrip("#")
    try:
        if "," in value:
            parts = [float(part) for part in value.split(",")]
            if len(parts) == 3 and all(0 <= part <= 255 for part in parts):
                return tuple(part / 255.0 for part in parts)  # type: ignore[return-value]
        elif len(digits) in (3, 6):
            if len(digits) == 3:
                digits = "".join(c * 2 for c in digits)
            return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        pass
    raise ValueError(f"Cannot read the colour {text!r}: write it as #RRGGBB (e.g. #00FF00) or as r, g, b with "
                     "values 0 to 255.")


@dataclass
class BackgroundRemoval:
    """Per image: the cut-out ([H,W,4] RGBA, or [H,W,3] on a colour) and the foreground mask [H,W] (1 = subject)."""

    cutouts: list[torch.Tensor]
    masks: list[torch.Tensor]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """As [B,H,W,C] and [B,H,W]; all images must have the same size."""
        sizes = {tuple(m.shape) for m in self.masks}
        if len(sizes) > 1:
            raise ValueError(f"The images have different sizes {sorted(sizes)}; they cannot form one batch.")
        return torch.stack(self.cutouts), torch.stack(self.masks)


def remove_background(network: ForegroundNetwork, images: torch.Tensor | Sequence[torch.Tensor],
                      settings: MaskSettings = MaskSettings(),
                      background: tuple[float, float, float] | None = None,
                      device: torch.device | str = "cpu", progress: ProgressFn = no_progress) -> BackgroundRemoval:
    """Cut the subject out of every image. `background=None` gives RGBA cut-outs, a colour gives RGB on it."""
    # NaN/inf pixels would poison the network's whole output; they are read as black/white instead
    batch = [torch.nan_to_num(image.to(device=device, dtype=torch.float32), nan=0.0, posinf=1.0, neginf=0.0)
             for image in as_image_list(images)]
    total = len(batch)
    # Matting runs on the CPU per image and dominates then, so it gets its own share of the progress bar.
    steps = total * (2 if settings.alpha_matting else 1)
    probabilities = predict_foreground(network, batch, device,
                                       lambda done, _: progress(done, steps))
    cutouts, masks = [], []
    for index, (image, probability) in enumerate(zip(batch, probabilities)):
        foreground, mask = refine_mask(image, probability, settings)
        cutouts.append(composite(foreground, mask, background))
        masks.append(mask)
        if settings.alpha_matting:
            progress(total + index + 1, steps)
    return BackgroundRemoval(cutouts, masks)


# ---------------------------------------------------------------------------------------------------------------
# Depth


def mask_depth(depth: Depth, mask: torch.Tensor) -> Depth:
    """Set depth outside the subject (mask < 0.5, 1 = subject) to the farthest depth of the subject, as the old
    extension's post-depth background removal did, with the same rule DepthEstimate's mask input uses. A mask of
    another size is resized to the depth; one mask applies to every depth map, one depth map is repeated for
    every mask."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"The mask must be [B,H,W], got shape {tuple(mask.shape)}.")
    if mask.shape[0] == 0 or depth.batch_size == 0:
        raise ValueError("The mask or the depth batch is empty.")
    values = fill_non_finite(depth.values.float(), "far", depth.kind)
    batch = max(values.shape[0], mask.shape[0])
    if values.shape[0] not in (1, batch) or mask.shape[0] not in (1, batch):
        raise ValueError(f"Got {mask.shape[0]} masks for {values.shape[0]} depth maps: give one mask per depth "
                         "map, or one mask for all.")
    mask = torch.nan_to_num(mask.float(), nan=0.0)
    values = values.expand(batch, -1, -1).contiguous()
    return depth.with_values(set_outside_mask_to_far(values, mask, depth.kind))
