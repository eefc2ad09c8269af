"""Background removal: seconds per 1024x1024 image with warm sessions, Depth Toolkit vs rembg.remove().

Both run the same ONNX file (the IS-Net of ../shared/models, or $DEPTH_TOOLKIT_TEST_ISNET) in the same process,
interleaved so background load on a shared machine hits both alike; the median of the repetitions is reported.
rembg runs it through its `dis_custom` session (IS-Net input rule), which only accepts files under its home, so
U2NET_HOME is pointed at the file's folder for this process. rembg gets PIL images ready-made (its conversion
from a ComfyUI tensor is not counted); ours starts from the IMAGE tensor and returns IMAGE + MASK tensors.

    .venv/bin/python benchmarks/background.py [--images 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._measure import peak_memory, resident_bytes  # noqa: E402
from depth_core import background as bg  # noqa: E402


def rss_mib() -> float:
    return resident_bytes() / 2**20


def test_images(count: int) -> torch.Tensor:
    """scikit-image photos scaled to 1024x1024, [count,1024,1024,3]."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    batch = []
    for index in range(count):
        x = torch.from_numpy(photos[index % len(photos)]).float().permute(2, 0, 1)[None] / 255.0
        batch.append(F.interpolate(x, size=(1024, 1024), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(batch).permute(0, 2, 3, 1).clamp(0, 1).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2, help="images per timed call")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per method")
    parser.add_argument("--model", default=os.environ.get(
        "DEPTH_TOOLKIT_TEST_ISNET", str(ROOT.parent / "shared" / "models" / "isnet-general-use-quint8.onnx")))
    args = parser.parse_args()
    model = Path(args.model).resolve()
    if not model.is_file():
        sys.exit(f"Model {model} not found: pass --model or set DEPTH_TOOLKIT_TEST_ISNET.")
    os.environ["U2NET_HOME"] = str(model.parent)  # before rembg is imported: dis_custom only reads files there

    from PIL import Image
    from rembg import new_session, remove

    images = test_images(args.images)
    pil_images = [Image.fromarray((img.numpy() * 255 + 0.5).astype(np.uint8)) for img in images]
    print(f"model {model.name}, {args.images} images of 1024x1024 per call, {args.repeats} calls per method, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")

    # soft mask and RGBA, the closest match to remove()'s default output
    settings = bg.MaskSettings(threshold=0.0)

    def run_ours():
        result = bg.remove_background(network, images, settings, background=None)
        return result.stacked()

    def run_rembg():
        return [remove(image, session=session) for image in pil_images]

    # Each side is loaded and warmed up on its own, so its memory is measured before the other one exists.
    base = rss_mib()
    start = time.perf_counter()
    network = bg.load_network(model)
    ours_load = time.perf_counter() - start
    with peak_memory() as ours_memory:
        run_ours()
    ours_kept = rss_mib() - base
    base = rss_mib()
    start = time.perf_counter()
    session = new_session("dis_custom", model_path=str(model))
    rembg_load = time.perf_counter() - start
    with peak_memory() as rembg_memory:
        run_rembg()
    rembg_kept = rss_mib() - base
    print(f"session load: ours {ours_load:.2f} s, rembg {rembg_load:.2f} s; network batch dimension "
          f"{'free' if network.max_batch > 1 else 'fixed at 1'} (max {network.max_batch} per call)")
    print(f"memory during a call (RSS above the start of the call): ours +{ours_memory.added_mib:.0f} MiB, "
          f"rembg +{rembg_memory.added_mib:.0f} MiB")
    print(f"memory kept afterwards by the cached session (RSS above before loading): ours +{ours_kept:.0f} MiB, "
          f"rembg +{rembg_kept:.0f} MiB")

    ours_times, rembg_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        cutouts, masks = run_ours()
        ours_times.append((time.perf_counter() - start) / args.images)
        start = time.perf_counter()
        rembg_out = run_rembg()
        rembg_times.append((time.perf_counter() - start) / args.images)

    ours, theirs = statistics.median(ours_times), statistics.median(rembg_times)
    print(f"ours        {ours:.3f} s/image  (runs: {', '.join(f'{t:.3f}' for t in ours_times)})")
    print(f"rembg       {theirs:.3f} s/image  (runs: {', '.join(f'{t:.3f}' for t in rembg_times)})")
    print(f"ratio rembg/ours {theirs / ours:.2f}x  (>1 = ours faster)")

    # the network step alone, to show what the surrounding pre/post-processing costs each side
    x = bg.network_input([images[0]], network.contract, network.input_size, "cpu").numpy()
    start = time.perf_counter()
    network.run(x)
    print(f"network forward alone {time.perf_counter() - start:.3f} s/image")

    alphas = torch.stack([torch.from_numpy(np.asarray(out, dtype=np.float32)[..., 3] / 255.0) for out in rembg_out])
    ours_hard, rembg_hard = masks >= 0.5, alphas >= 0.5
    iou = float((ours_hard & rembg_hard).sum() / (ours_hard | rembg_hard).sum().clamp_min(1))
    print(f"agreement with rembg: mask IoU at 0.5 {iou:.4f}, mean |alpha difference| "
          f"{float((masks - alphas).abs().mean()):.4f}")


if __name__ == "__main__":
    main()
