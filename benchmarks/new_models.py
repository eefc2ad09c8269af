"""Seconds per image on the CPU for the models added by issue 16, against the authors' code in the same process.

    .venv/bin/python benchmarks/new_models.py [--sizes s,b,l] [--marigold-steps 1] [--skip marigold]

Depth Anything v1 and metric Depth Anything V2 run at their native 518 x 518 (fp32, random weights in the official
layout, loaded into both implementations). Marigold runs at its native 768 processing resolution and 1 denoising
step (v1.1's default) with the real architecture's block layout (SD 2 UNet: three cross-attention down blocks and
one plain, two layers each, linear attention projections; the 4-level VAE; a CLIP text encoder) at a quarter of
the real widths, because the full 865 M-parameter UNet takes minutes per image on this CPU; both pipelines run
the same component networks, so they differ only in the code around them. The authors' code is read from the fetched
repositories under /work/.mirror at run time (never part of this project); a model whose reference is not there
is measured alone.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import best_time, machine_line  # noqa: E402

from depth_core.models import depth_anything_v2 as da  # noqa: E402

MIRRORS = Path(os.environ.get("REFERENCE_MIRRORS", "/work/.mirror"))
ENCODERS = {"s": "vits", "b": "vitb", "l": "vitl"}
NATIVE = 518


def extract(repo: str, paths: list[str], into: Path) -> Path | None:
    """The authors' files at the mirror's HEAD, unpacked into `into`; None when the repository is not fetched."""
    git_dir = MIRRORS / repo / "repo"
    if not git_dir.exists():
        return None
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(git_dir), "archive", "HEAD", *paths], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@contextlib.contextmanager
def imported_from(folder: Path, package: str):
    """Import the authors' `package` from `folder` (their code loads DINOv2 from a path relative to the cwd)."""
    previous = os.getcwd()
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
            del sys.modules[name]


def interleaved_best(ours, theirs, repeats: int = 3) -> tuple[float, float]:
    """Best seconds of each, timed alternately after one warm-up each, so a load change on this shared machine
    hits both alike."""
    ours()
    theirs()
    best_ours = best_theirs = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        best_ours = min(best_ours, time.perf_counter() - start)
        start = time.perf_counter()
        theirs()
        best_theirs = min(best_theirs, time.perf_counter() - start)
    return best_ours, best_theirs


def random_state_dict(config) -> dict[str, torch.Tensor]:
    from test_model_architectures import _random_network

    return _random_network(da, config)[1]


def report(name: str, ours_s: float, theirs_s: float | None, difference: float | None, scale: float) -> None:
    line = f"{name:<44} toolkit {ours_s:7.2f} s/image"
    if theirs_s is not None:
        line += (f"   authors {theirs_s:7.2f} s/image   speed ratio {theirs_s / ours_s:5.2f}x   "
                 f"max |difference| {difference:.2e} (output scale {scale:.2f})")
    else:
        line += "   authors' code not fetched: not compared"
    print(line, flush=True)


def depth_anything(sizes: str, workdir: Path) -> None:
    v1_code = extract("LiheYoung+Depth-Anything", ["depth_anything", "torchhub"], workdir / "da1")
    v2_code = extract("DepthAnything+Depth-Anything-V2", ["metric_depth/depth_anything_v2"], workdir / "da2")
    image = torch.randn(1, 3, NATIVE, NATIVE, generator=torch.Generator().manual_seed(0))
    for letter in sizes.split(","):
        encoder = ENCODERS[letter]
        v1 = next(k for k in da.KNOWN_MODELS if k.filename == f"depth_anything_{encoder}14.pth")
        metric = next(k for k in da.KNOWN_MODELS if k.filename == f"depth_anything_v2_metric_hypersim_{encoder}.pth")
        state_dict = random_state_dict(v1.config)
        kwargs = {"features": v1.config.features, "out_channels": list(v1.config.out_channels)}
        for known, code, package in ((v1, v1_code, "depth_anything"), (metric, v2_code, "depth_anything_v2")):
            ours = da.build(known.config).eval()
            ours.load_state_dict(state_dict, strict=True)
            with torch.inference_mode():
                ours_out = ours(image)
            ours_s = theirs_s = difference = None
            if code is not None:
                folder = code if package == "depth_anything" else code / "metric_depth"
                with imported_from(folder, package):
                    if package == "depth_anything":
                        from depth_anything.dpt import DPT_DINOv2 as Reference
                        reference = Reference(encoder=encoder, **kwargs)
                    else:
                        from depth_anything_v2.dpt import DepthAnythingV2 as Reference
                        reference = Reference(encoder=encoder, max_depth=known.config.max_depth, **kwargs)
                reference.load_state_dict(state_dict, strict=True)
                reference.eval()
                with torch.no_grad():
                    difference = float((reference(image) - ours_out).abs().max())

                def run_ours():
                    with torch.inference_mode():
                        return ours(image)

                def run_theirs():
                    with torch.no_grad():
                        return reference(image)

                ours_s, theirs_s = interleaved_best(run_ours, run_theirs)
                del reference
            if ours_s is None:
                with torch.inference_mode():
                    ours_s = best_time(lambda: ours(image), repeats=2)
            report(f"{known.card.name} @ {NATIVE}", ours_s, theirs_s, difference, float(ours_out.abs().max()))
            del ours


def marigold(steps: int, workdir: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, MarigoldDepthPipeline, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextConfig, CLIPTextModel

    from depth_core.models.marigold import MarigoldEstimator, MarigoldSettings
    from marigold_tiny import _tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=8, out_channels=4, layers_per_block=2, block_out_channels=(80, 160, 320, 320),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=256,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 128, 128),
                        layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                                                num_attention_heads=4, vocab_size=64, max_position_embeddings=8,
                                                bos_token_id=52, eos_token_id=53, pad_token_id=53))
    scheduler = DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction", beta_schedule="scaled_linear",
                              timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False,
                              rescale_betas_zero_snr=True)
    tokenizer = _tokenizer(workdir / "tokenizer")
    components = dict(unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
    pipeline = MarigoldDepthPipeline(**components, prediction_type="depth", default_denoising_steps=steps,
                                     default_processing_resolution=768)
    pipeline.set_progress_bar_config(disable=True)
    estimator = MarigoldEstimator("marigold (quarter-width SD 2 layout)", pipeline)
    pixels = (np.random.default_rng(0).random((768, 768, 3)) * 255).astype(np.uint8)
    image = torch.from_numpy(pixels).float().div(255)[None]
    settings = MarigoldSettings(denoising_steps=steps, seed=0)
    ours = pipeline(image.permute(0, 3, 1, 2), num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                    output_type="pt").prediction[0, 0]
    code = extract("prs-eth+Marigold", ["marigold"], workdir / "marigold")
    theirs_s = difference = None
    if code is not None:
        # The authors import matplotlib for colour maps only, which color_map=None never uses.
        sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
        with imported_from(code, "marigold"):
            from marigold import MarigoldDepthPipeline as Reference
        reference = Reference(**components, scale_invariant=True, shift_invariant=True,
                              default_denoising_steps=steps, default_processing_resolution=768)

        def run_reference():
            return reference(Image.fromarray(pixels), denoising_steps=steps, ensemble_size=1,
                             generator=torch.Generator().manual_seed(0), color_map=None, show_progress_bar=False)

        difference = float((torch.from_numpy(run_reference().depth_np) - ours).abs().max())
        ours_s, theirs_s = interleaved_best(lambda: estimator.predict(image, settings=settings), run_reference,
                                            repeats=1)
    else:
        ours_s = best_time(lambda: estimator.predict(image, settings=settings), repeats=1)
    report(f"Marigold, {steps} steps, 768 (quarter widths)", ours_s, theirs_s, difference, 1.0)


def tiling() -> None:
    """Seam of a repeated depth map (across-the-wrap difference over interior neighbour differences, ~1 = no seam)
    for a tileable texture of a real photo, plain estimate against tiling mode, and what tiling mode costs."""
    from depth_core.estimate import DepthEstimator
    from depth_core.tiling import seam_ratio, tileable_depth
    from test_tiling import _texture

    estimator = DepthEstimator(da.KNOWN_MODELS[0].card, da.build(da.SMALL).eval())
    estimator.network.load_state_dict(random_state_dict(da.SMALL))
    texture = _texture(518)
    plain_s = best_time(lambda: estimator.predict(texture), repeats=1)
    tiled_s = best_time(lambda: tileable_depth(estimator, texture), repeats=1)
    plain, tiled = estimator.predict(texture), tileable_depth(estimator, texture)
    print(f"Tiling mode, Depth Anything V2 Small, 518 px coffee-bean texture: seam ratio plain "
          f"{seam_ratio(plain.values):.2f}, tileable {seam_ratio(tiled.values):.2f}; {plain_s:.2f} s vs "
          f"{tiled_s:.2f} s per image ({tiled_s / plain_s:.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="s,b,l")
    parser.add_argument("--marigold-steps", type=int, default=1, help="1: v1.1's default (trailing DDIM)")
    parser.add_argument("--skip", default="", help="comma-separated: depth_anything, marigold, tiling")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(machine_line())
    with tempfile.TemporaryDirectory() as scratch:
        if "depth_anything" not in args.skip:
            depth_anything(args.sizes, Path(scratch))
        if "marigold" not in args.skip:
            marigold(args.marigold_steps, Path(scratch))
    if "tiling" not in args.skip:
        tiling()


if __name__ == "__main__":
    main()
