"""A tiny random Marigold depth pipeline in the official diffusers folder layout, built by the tests.

Same components and classes as prs-eth/marigold-depth-* (UNet2DConditionModel with 8 input channels: image latent
+ depth latent; AutoencoderKL; DDIM or LCM scheduler; CLIP text encoder and tokenizer; model_index.json), with
widths of a few channels so it runs in well under a second on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {token: index for index, token in enumerate([*letters, *(f"{c}</w>" for c in letters),
                                                          *CLIP_SPECIAL_TOKENS])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def build_tiny_marigold(folder: Path, scheduler: str = "ddim", prediction_type: str = "depth",
                        default_steps: int = 2, processing_resolution: int = 32, seed: int = 0,
                        widths: tuple[int, int] = (8, 16)) -> Path:
    """Save a random Marigold pipeline to `folder` (safetensors weights) and return the folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler, MarigoldDepthPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_width = 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=widths,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_width, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=widths, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=text_width, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        vocab_size=64, max_position_embeddings=8, bos_token_id=52, eos_token_id=53, pad_token_id=53))
    scheduler_class = LCMScheduler if scheduler == "lcm" else DDIMScheduler
    pipeline = MarigoldDepthPipeline(
        unet=unet, vae=vae, scheduler=scheduler_class(num_train_timesteps=100, prediction_type="v_prediction"),
        text_encoder=text_encoder, tokenizer=_tokenizer(folder / "tokenizer"), prediction_type=prediction_type,
        default_denoising_steps=default_steps, default_processing_resolution=processing_resolution)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    return folder
