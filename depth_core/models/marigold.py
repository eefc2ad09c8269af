"""Marigold (Ke et al., CVPR 2024): Stable Diffusion fine-tuned to denoise depth, run through diffusers'
`MarigoldDepthPipeline` (v1.0, v1.1 and the LCM variant).

A Marigold model is a diffusers folder (model_index.json, unet/, vae/, scheduler/, text_encoder/, tokenizer/) under
models/depth/, named after its Hugging Face repository. Weights are read from safetensors only. diffusers is
imported when a Marigold model is loaded, never when the pack is imported, so ComfyUI starts without it.

The pipeline returns affine-invariant depth in 0..1 (0 = near plane, 1 = far plane, scale and shift unknown). The
pack's relative kind is inverse depth, so it becomes 1 / (depth + near offset), which keeps the order and keeps
planes planar for scenes whose near plane lies `NEAR_OFFSET` of the depth range in front of the camera; negating
it (the old extension's choice) would bend them.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..depth import Depth, DepthKind, inverse_of_affine_depth, set_outside_mask_to_far
from ..estimate import DepthEstimator, Resolution
from ..image import bhwc_to_bchw, to_rgb
from ..loading import CorruptCheckpointError, ModelFileMissingError, download
from ..progress import ProgressFn, no_progress
from .base import HALF_MEAN, HALF_STD, ModelCard, Preprocess

FAMILY = "marigold"
COMPONENTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
"""Sub-folders of a Marigold diffusers folder, besides model_index.json."""
NEAR_OFFSET = 0.1
"""Distance of the near plane in units of the predicted depth range (a far/near ratio of 11)."""
DEFAULT_ENSEMBLE_SIZE = 1
NATIVE_PROCESSING_RESOLUTION = 768


@dataclass(frozen=True)
class MarigoldSettings:
    """What a user sets per run. None: the model's own default (from its model_index.json)."""

    denoising_steps: int | None = None
    ensemble_size: int = DEFAULT_ENSEMBLE_SIZE
    processing_resolution: int | None = None
    """Longer side the image is processed at; 0 = the input's own size."""
    seed: int = 0


@dataclass(frozen=True)
class KnownMarigold:
    """A released Marigold diffusers folder: where its files come from."""

    folder: str
    repo: str
    license: str
    title: str
    files: tuple[str, ...]

    def url(self, relative: str) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{relative}"

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.repo}"


def _release_files() -> tuple[str, ...]:
    # The fp16 safetensors variant: half the download, upcast on load where fp32 is wanted.
    weights = ("unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
               "text_encoder/model.fp16.safetensors")
    configs = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
               "text_encoder/config.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
               "tokenizer/tokenizer_config.json", "tokenizer/vocab.json")
    return configs + weights


KNOWN_FOLDERS: list[KnownMarigold] = [
    KnownMarigold("marigold-depth-v1-1", "prs-eth/marigold-depth-v1-1", "RAIL++-M (Marigold repository)",
                  "Marigold depth v1.1", _release_files()),
    KnownMarigold("marigold-depth-v1-0", "prs-eth/marigold-depth-v1-0", "Apache-2.0", "Marigold depth v1.0",
                  _release_files()),
    KnownMarigold("marigold-depth-lcm-v1-0", "prs-eth/marigold-depth-lcm-v1-0", "Apache-2.0",
                  "Marigold depth LCM v1.0", _release_files()),
]


def known_folders() -> dict[str, KnownMarigold]:
    return {known.folder: known for known in KNOWN_FOLDERS}


def is_marigold_folder(path: str | os.PathLike) -> bool:
    """A diffusers folder whose pipeline is Marigold's depth pipeline (the component check comes at load time)."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    try:
        return "Marigold" in json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError):
        return False


def missing_components(folder: Path) -> list[str]:
    """What a Marigold folder lacks: model_index.json, or component folders without their config."""
    missing = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    for component in COMPONENTS:
        part = folder / component
        if not part.is_dir() or not any(part.iterdir()):
            missing.append(f"{component}/")
    return missing


def ensure_folder(known: KnownMarigold, folders: Sequence[str | os.PathLike], download_folder: str | os.PathLike,
                  allow_download: bool = True, progress: ProgressFn = no_progress) -> Path:
    """The folder of a known Marigold model: found complete in `folders`, or its missing files downloaded into
    `download_folder`/<name>/ (each file checked against the server's sha256 where it gives one).

    Offline (or with downloads disallowed) the error names the folder, where it was looked for and the address."""
    for base in map(Path, folders):
        if not missing_components(base / known.folder):
            return base / known.folder
    target = Path(download_folder) / known.folder
    by_hand = (f"Download the repository {known.page} (the files {', '.join(known.files)}) into {target}")
    if not allow_download:
        raise ModelFileMissingError(f"Marigold model folder {known.folder} was not found in "
                                    f"{', '.join(str(Path(f)) for f in folders)}. {by_hand}.")
    todo = [relative for relative in known.files if not (target / relative).is_file()]
    for index, relative in enumerate(todo):
        try:
            download(known.url(relative), target / relative, None,
                     lambda done, total, i=index: progress(i * 1000 + 1000 * done // max(total, 1), 1000 * len(todo)))
        except (OSError, TimeoutError) as error:
            raise ModelFileMissingError(
                f"Marigold model folder {known.folder} is incomplete in {target} and {relative} could not be "
                f"downloaded ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})."
                f" {by_hand}.") from error
    progress(1, 1)
    return target


def card(name: str) -> ModelCard:
    # The pipeline's own input rule: longer side = processing resolution, padded to the VAE's multiple of 8,
    # RGB in [-1, 1].
    return ModelCard(name=name, family=FAMILY,
                     preprocess=Preprocess(NATIVE_PROCESSING_RESOLUTION, 8, "upper_bound", HALF_MEAN, HALF_STD,
                                           interpolation="bilinear"),
                     output_kind=DepthKind.RELATIVE_INVERSE, receptive_field=NATIVE_PROCESSING_RESOLUTION)


def _weight_variant(folder: Path) -> str | None:
    """"fp16" when the folder holds the fp16 variant files (the ones this pack downloads), else None."""
    return "fp16" if any(folder.glob("unet/*.fp16.safetensors")) else None


def load_pipeline(folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """diffusers' MarigoldDepthPipeline from a local folder, safetensors only, nothing fetched."""
    folder = Path(folder)
    missing = missing_components(folder)
    if missing:
        raise CorruptCheckpointError(
            f"The Marigold folder {folder} lacks {', '.join(missing)}. A Marigold model is a diffusers folder with "
            f"model_index.json and the sub-folders {', '.join(c + '/' for c in COMPONENTS)}: download the whole "
            "repository again (e.g. https://huggingface.co/prs-eth/marigold-depth-v1-1), or delete the folder to have "
            "a known model downloaded on next use.")
    from diffusers import MarigoldDepthPipeline  # heavy; only when a Marigold model is used

    try:
        with warnings.catch_warnings():
            # torch_dtype works on every diffusers this pack supports; newer releases prefer `dtype`, which the
            # older ones do not know.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipeline = MarigoldDepthPipeline.from_pretrained(
                str(folder), torch_dtype=dtype, variant=_weight_variant(folder), use_safetensors=True,
                local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as error:
        raise CorruptCheckpointError(
            f"Cannot load the Marigold folder {folder} ({str(error).strip().splitlines()[0]}). Its weights must be "
            ".safetensors files; download the repository again.") from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class MarigoldEstimator(DepthEstimator):
    """A Marigold pipeline behind the estimator interface (card, network, infer, predict). `network` holds the
    pipeline's networks as one module, for ComfyUI's model management to move between devices."""

    def __init__(self, name: str, pipeline) -> None:
        networks = torch.nn.ModuleDict(
            {"unet": pipeline.unet, "vae": pipeline.vae, "text_encoder": pipeline.text_encoder})
        super().__init__(card(name), networks)
        self.pipeline = pipeline
        self.settings = MarigoldSettings()

    @property
    def default_steps(self) -> int:
        return int(self.pipeline.default_denoising_steps or 10)

    def run_count(self, batch: int, settings: MarigoldSettings) -> int:
        """UNet evaluations for a batch: denoising steps x ensemble members x images (one at a time)."""
        return (settings.denoising_steps or self.default_steps) * settings.ensemble_size * batch

    def infer(self, images: torch.Tensor, net_size: Resolution = None,
              settings: MarigoldSettings | None = None) -> torch.Tensor:
        """Relative inverse depth [B,H,W] float32 at the input's size for images [B,3,H,W] RGB 0..1. `net_size`:
        None = the settings' (or the model's) processing resolution, "match" = the input's own size, an int = that
        longer side."""
        settings = settings or self.settings
        processing = settings.processing_resolution
        if net_size == "match":
            processing = 0
        elif isinstance(net_size, int):
            processing = net_size
        elif isinstance(net_size, tuple):
            processing = max(net_size)
        predictions = []
        for index in range(images.shape[0]):
            # One generator per image: the same seed gives each image the same depth, alone or in a batch.
            generator = torch.Generator(device="cpu").manual_seed(settings.seed)
            output = self.pipeline(
                images[index:index + 1].to(self.device, self.dtype), num_inference_steps=settings.denoising_steps,
                ensemble_size=settings.ensemble_size, processing_resolution=processing, match_input_resolution=True,
                generator=generator, output_type="pt")
            predictions.append(output.prediction.float().cpu()[:, 0])
        values = torch.cat(predictions)
        if self.pipeline.config.prediction_type == "disparity":
            return values
        return inverse_of_affine_depth(values, NEAR_OFFSET)

    def predict(self, images: torch.Tensor, resolution: Resolution = None, mask: torch.Tensor | None = None,
                progress: ProgressFn = no_progress, settings: MarigoldSettings | None = None) -> Depth:
        """Depth for an IMAGE batch [B,H,W,C] 0..1, with a progress report (and interrupt point) before every
        denoising step of every ensemble member."""
        settings = settings or self.settings
        total = self.run_count(images.shape[0], settings)
        calls = [0]

        def count_step(*_: object) -> None:
            progress(calls[0], total)
            calls[0] += 1

        hook = self.pipeline.unet.register_forward_pre_hook(count_step)
        try:
            values = self.infer(bhwc_to_bchw(to_rgb(images)).float(), resolution, settings)
        finally:
            hook.remove()
        progress(total, total)
        if mask is not None:
            values = set_outside_mask_to_far(values, mask, self.output_kind)
        return Depth(values, self.output_kind, self.name)


def build_estimator(folder: str | os.PathLike, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> MarigoldEstimator:
    pipeline = load_pipeline(folder, dtype)
    pipeline.to(device)
    return MarigoldEstimator(Path(folder).name, pipeline)
