"""Video depth: memory against clip length, Video Depth Anything speed against its authors' offline algorithm, and
flicker of image-model depth with and without stabilization (static camera; across a scene cut).

    .venv/bin/python benchmarks/video_depth.py                   # all three parts
    .venv/bin/python benchmarks/video_depth.py --part speed --authors-code /path/to/Video-Depth-Anything

Random weights in the official layouts (speed and memory do not depend on their values). Test clips are built here:
slow pans over scikit-image photos encoded with PyAV. The offline reference is tests/vda_reference.py, the authors'
`infer_video_depth` restated plainly (every frame in memory, every window's 32 inputs through the whole network) on
the same network; with --authors-code pointing at a checkout of DepthAnything/Video-Depth-Anything, their own
class and function are timed too (never part of this repository).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from _measure import machine_line  # noqa: E402

from depth_core.models import depth_anything_v2  # noqa: E402
from depth_core.models import video_depth_anything as vda  # noqa: E402
from depth_core.postprocess import flicker  # noqa: E402
from depth_core.registry import build_estimator  # noqa: E402
from depth_core.video_depth import (image_model_video_depth, video_network_size, windowed_depth,  # noqa: E402
                                    write_video_depth)
from video_clips import pan_frames, scene_cut_frames, write_clip  # noqa: E402

MEMORY_SIZE = (96, 128)
MEMORY_LENGTHS = (40, 160)
MEMORY_RESOLUTION = 140
SPEED_SIZE = (112, 112)
SPEED_FRAMES = 40
SPEED_ORDER = ("pack", "reference", "reference", "pack")
"""Alternated, best of two each: the shared machine's load drifts during a run of several minutes."""


def random_checkpoint(folder: Path, module, config, filename: str) -> Path:
    """Random weights in the official layout (the tests' scheme), with a non-negative last layer so the final ReLU
    leaves a depth map rather than zeros."""
    from test_model_architectures import _random_network

    _, state = _random_network(module, config)
    for key in state:
        if key.endswith("scratch.output_conv2.2.weight"):
            state[key] = state[key].abs()
        elif key.endswith("scratch.output_conv2.2.bias"):
            state[key] = torch.full_like(state[key], 0.01)
    path = folder / filename
    torch.save(state, path)
    return path


def memory_child(clip: str, checkpoint: str, out: str) -> None:
    """Runs in a subprocess: depth of one clip to files; prints the process's peak resident memory."""
    estimator = build_estimator(checkpoint)
    loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = write_video_depth(estimator, clip, Path(out) / "depth.mkv", preview=Path(out) / "depth.mp4",
                               raw=Path(out) / "depth.npy", resolution=MEMORY_RESOLUTION)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": result.frame_count, "peak_mib": peak_mib, "loaded_mib": loaded_mib}))


def memory_part(folder: Path, checkpoint: Path) -> None:
    print(f"\n## Peak resident memory against clip length ({MEMORY_SIZE[1]}x{MEMORY_SIZE[0]} frames, Video Depth "
          f"Anything Small windows at network size {MEMORY_RESOLUTION}, 16-bit MKV + preview mp4 + raw .npy)")
    peaks = {}
    for length in MEMORY_LENGTHS:
        clip = write_clip(folder / f"clip_{length}.mp4", pan_frames(length, *MEMORY_SIZE), fps=24)
        out = folder / f"out_{length}"
        out.mkdir()
        started = time.perf_counter()
        report = subprocess.run([sys.executable, __file__, "--memory-child", str(clip), str(checkpoint), str(out)],
                                check=True, capture_output=True, text=True)
        figures = json.loads(report.stdout.strip().splitlines()[-1])
        peaks[length] = figures["peak_mib"]
        added = figures["peak_mib"] - figures["loaded_mib"]
        print(f"{length:4d} frames: peak RSS {figures['peak_mib']:.0f} MiB ({added:.0f} MiB above the process with "
              f"the model loaded), {time.perf_counter() - started:.1f} s (whole process)")
    ratio = peaks[MEMORY_LENGTHS[1]] / peaks[MEMORY_LENGTHS[0]]
    print(f"ratio {MEMORY_LENGTHS[1]} / {MEMORY_LENGTHS[0]} frames: {ratio:.3f} (goal: at most 1.25)")


def authors_offline(code_dir: Path, checkpoint: Path, frames: np.ndarray) -> tuple[float, np.ndarray]:
    """Time the authors' own VideoDepthAnything.infer_video_depth (fp32 on the CPU) from a checkout of their code."""
    import types

    sys.modules.setdefault("easydict", types.SimpleNamespace(EasyDict=type("EasyDict", (dict,), {
        "__getattr__": lambda self, key: self[key]})))
    sys.path.insert(0, str(code_dir))
    from video_depth_anything.video_depth import VideoDepthAnything  # type: ignore

    network = VideoDepthAnything(encoder="vits", features=64, out_channels=[48, 96, 192, 384]).eval()
    network.load_state_dict(torch.load(checkpoint, weights_only=True), strict=True)
    started = time.perf_counter()
    depth, _ = network.infer_video_depth(frames, 24, input_size=518, device="cpu", fp32=True)
    return time.perf_counter() - started, depth


def speed_part(checkpoint: Path, authors_code: Path | None) -> None:
    estimator = build_estimator(checkpoint)
    frames_uint8 = pan_frames(SPEED_FRAMES, *SPEED_SIZE)
    frames = torch.from_numpy(frames_uint8).float() / 255
    size = video_network_size(estimator, *SPEED_SIZE)
    print(f"\n## Video Depth Anything Small at its native size ({size[1]}x{size[0]} network input), "
          f"{SPEED_FRAMES} frames of {SPEED_SIZE[1]}x{SPEED_SIZE[0]}, fp32 CPU")
    from vda_reference import reference_video_depth

    def pack() -> torch.Tensor:
        return torch.cat(list(windowed_depth(estimator, (frames[i:i + 8] for i in range(0, SPEED_FRAMES, 8)))))

    def reference() -> np.ndarray:
        return reference_video_depth(estimator.network, estimator.prepare(frames.permute(0, 3, 1, 2), size),
                                     SPEED_SIZE)

    times: dict[str, list[float]] = {"pack": [], "reference": []}
    outputs = {}
    for name in SPEED_ORDER:
        started = time.perf_counter()
        outputs[name] = (pack if name == "pack" else reference)()
        times[name].append(time.perf_counter() - started)
    ours, offline = min(times["pack"]), min(times["reference"])
    streamed, expected = outputs["pack"].numpy(), outputs["reference"]
    difference = float(np.abs(streamed - expected).max() / np.abs(expected).max())
    print(f"streamed windows (pack):        best {ours:6.1f} s  {SPEED_FRAMES / ours:.3f} fps  (runs: "
          f"{', '.join(f'{t:.1f}' for t in times['pack'])} s)")
    print(f"offline reference (all in RAM): best {offline:6.1f} s  {SPEED_FRAMES / offline:.3f} fps  (runs: "
          f"{', '.join(f'{t:.1f}' for t in times['reference'])} s)")
    print(f"speed ratio pack / reference: {offline / ours:.2f}x; max difference {difference:.1e} of the depth range")
    if authors_code is not None:
        seconds, depth = authors_offline(authors_code, checkpoint, frames_uint8)
        print(f"authors' infer_video_depth:     {seconds:7.1f} s  {SPEED_FRAMES / seconds:.3f} fps "
              f"(pack / authors: {seconds / ours:.2f}x; their cv2 resize differs slightly: max difference "
              f"{float(np.abs(streamed - depth).max() / np.abs(depth).max()):.1e})")


def _pictures(values: torch.Tensor) -> torch.Tensor:
    """One 0..1 range for the whole clip, as a depth video is shown."""
    return (values - values.min()) / (values.max() - values.min())


def flicker_part(checkpoint: Path) -> None:
    estimator = build_estimator(checkpoint)
    resolution = 126
    print(f"\n## Flicker of an image model on video (Depth Anything V2 Small, random weights, network size "
          f"{resolution}; mean |frame t+1 - frame t| of the clip-normalized picture)")
    rng = np.random.default_rng(0)
    static = pan_frames(40, 96, 128, travel=0.0, noise=3.0).astype(np.float32)
    static *= (1 + 0.04 * rng.standard_normal(40))[:, None, None, None]  # exposure flicker of a real camera
    frames = torch.from_numpy(np.clip(static, 0, 255)).float() / 255

    def run(clip: torch.Tensor, **options) -> torch.Tensor:
        return torch.cat(list(image_model_video_depth(estimator, (clip[i:i + 8] for i in range(0, len(clip), 8)),
                                                      resolution, **options)))

    raw = run(frames, stabilize=False)
    steady = run(frames)
    print(f"static camera, 40 frames: without stabilization {flicker(_pictures(raw)):.5f}, with "
          f"{flicker(_pictures(steady)):.5f} ({flicker(_pictures(raw)) / flicker(_pictures(steady)):.1f}x less)")

    cut = torch.from_numpy(scene_cut_frames(40, 96, 128, cut_at=20)).float() / 255
    with_cuts = run(cut)
    without_cuts = run(cut, cut_threshold=1.0)
    second_shot_alone = run(cut[20:])
    scale = float(second_shot_alone.abs().mean())

    def smear(values: torch.Tensor) -> float:
        """How far the second shot's depth is from that shot stabilized on its own (relative mean error)."""
        return float((values[20:] - second_shot_alone).abs().mean()) / scale

    print(f"scene cut at frame 20: second shot off its own stabilization by {smear(with_cuts):.4f} with cut "
          f"detection, {smear(without_cuts):.4f} without (relative mean error); flicker across the cut "
          f"{float((_pictures(with_cuts)[21:] - _pictures(with_cuts)[20:-1]).abs().mean()):.5f} within the new shot")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("memory", "speed", "flicker", "all"), default="all")
    parser.add_argument("--authors-code", type=Path, help="a checkout of DepthAnything/Video-Depth-Anything")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    print(machine_line())
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        video_checkpoint = random_checkpoint(folder, vda, vda.SMALL, "video_depth_anything_vits.pth")
        if args.part in ("memory", "all"):
            memory_part(folder, video_checkpoint)
        if args.part in ("speed", "all"):
            speed_part(video_checkpoint, args.authors_code)
        if args.part in ("flicker", "all"):
            image_checkpoint = random_checkpoint(folder, depth_anything_v2, depth_anything_v2.SMALL,
                                                 "depth_anything_v2_vits.pth")
            flicker_part(image_checkpoint)


if __name__ == "__main__":
    main()
