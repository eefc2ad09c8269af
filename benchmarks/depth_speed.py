"""Depth estimation speed and memory on the CPU, fp32: Depth Toolkit's path against a plain eager baseline.

The baseline runs the same network the way the reference repositories do: NCHW tensors, attention written out
(no scaled_dot_product_attention), under torch.no_grad rather than inference_mode. Random weights: speed does not
depend on their values.

    .venv/bin/python benchmarks/depth_speed.py
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import best_time, machine_line, peak_memory  # noqa: E402

from depth_core.estimate import DepthEstimator  # noqa: E402
from depth_core.models import depth_anything_v2, midas_dpt  # noqa: E402

BATCH = 2


@contextmanager
def explicit_attention(network: torch.nn.Module):
    """Switch timm's fused (SDPA) attention off, as in the reference code."""
    switched = [m for m in network.modules() if getattr(m, "fused_attn", False)]
    for module in switched:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in switched:
            module.fused_attn = True


def baseline(estimator: DepthEstimator, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    network_input = estimator.prepare(images, size).contiguous()  # back to NCHW
    with torch.no_grad(), explicit_attention(estimator.network):
        return estimator.network(network_input)


def toolkit(estimator: DepthEstimator, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return estimator.infer(images, net_size=size)


def compare(name: str, estimator: DepthEstimator, size: int) -> None:
    torch.manual_seed(0)
    images = torch.rand(BATCH, 3, size, size)
    net = (size, size)
    with peak_memory() as base_memory:
        base_time = best_time(lambda: baseline(estimator, images, net))
    with peak_memory() as fast_memory:
        fast_time = best_time(lambda: toolkit(estimator, images, net))
    print(f"{name} @ {size}px, batch {BATCH}:")
    print(f"  baseline  {BATCH / base_time:6.2f} images/s  ({base_time / BATCH * 1000:7.1f} ms/image)  "
          f"peak +{base_memory.added_mib:7.1f} MiB")
    print(f"  toolkit   {BATCH / fast_time:6.2f} images/s  ({fast_time / BATCH * 1000:7.1f} ms/image)  "
          f"peak +{fast_memory.added_mib:7.1f} MiB")
    print(f"  speed-up  {base_time / fast_time:.2f}x   memory ratio {fast_memory.added_mib / max(base_memory.added_mib, 1e-6):.2f}")


def huge_input(estimator: DepthEstimator) -> None:
    image = torch.rand(1, 4096, 4096, 3)
    with peak_memory() as memory:
        time_s = best_time(lambda: estimator.predict(image), repeats=1, warmup=0)
    print(f"4096x4096 input, native resolution: {time_s:.2f} s, process peak resident {memory.peak / 2**30:.2f} GiB "
          f"(+{memory.added_mib:.0f} MiB over the 192 MiB input already held)")


def main() -> None:
    print(machine_line())
    if "--huge-only" in sys.argv:
        huge_input(DepthEstimator(depth_anything_v2.KNOWN_MODELS[0].card,
                                  depth_anything_v2.build(depth_anything_v2.SMALL)))
        return
    small = DepthEstimator(depth_anything_v2.KNOWN_MODELS[0].card, depth_anything_v2.build(depth_anything_v2.SMALL))
    compare("Depth Anything V2 Small", small, 518)
    hybrid_known = next(k for k in midas_dpt.KNOWN_MODELS if k.filename.startswith("dpt_hybrid"))
    hybrid = DepthEstimator(hybrid_known.card, midas_dpt.build(hybrid_known.config))
    compare("DPT Hybrid", hybrid, 384)
    huge_input(small)


if __name__ == "__main__":
    main()
