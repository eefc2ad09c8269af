"""Video to 3D (depth_core.convert): speed, memory and Ray scaling, with depth made beforehand (no network).

    .venv/bin/python benchmarks/convert.py speed [--frames 48] [--old-extension FILE]
    .venv/bin/python benchmarks/convert.py memory [--size 160x96]
    .venv/bin/python benchmarks/convert.py ray [--frames 48]

speed: a 1280x720 clip (a pan over a real photo, 24 fps) and its 16-bit depth video converted to full SBS H.264 end
to end (frames per second of the whole pipeline), then each stage alone on the same frames: decode, depth read,
stereo (both eyes, background fill), layout, encode. --old-extension FILE: the old depthmap extension's
src/stereoimage_generation.py (e.g. `git show HEAD:src/stereoimage_generation.py > /tmp/old_stereo.py` in a clone of
thygate/stable-diffusion-webui-depthmap-script; numba needed), run on the same frames and depth in this process for
its stereo routine's frames per second (create_stereoimages, polylines_sharp, left-right).
memory: peak resident memory of `python -m depth_core convert` in a subprocess (one torch thread) for a 10 s and a
60 s clip of the same size (24 fps, 160x96 by default so the 60 s clip converts in minutes on a shared 2-core
machine): streaming means the two should be within 1.25x.
ray: a folder of 4 clips converted on a local Ray cluster (2 CPUs) with at most 1 and at most 2 segments at once
(speed-up), and the cost of splitting a clip into segments and joining them (one clip as 1 segment vs 4 segments,
sequentially; the join alone).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine_line  # noqa: E402

from depth_core.convert import ConvertOptions, DepthVideoSource, convert_segment, convert_videos, plan_video  # noqa
from depth_core.convert.layouts import FrameComposer  # noqa: E402
from depth_core.convert.pipeline import finish_video, stereo_frames  # noqa: E402
from depth_core.video_io import DepthVideoWriter, EncodedVideoWriter, frame_timing, iter_frame_range  # noqa: E402

FPS = 24


def synthetic_clip(folder: Path, name: str, frames: int, height: int, width: int) -> tuple[Path, Path]:
    """A slow pan across a real photo (astronaut) as H.264 (a keyframe per second) with a depth video whose near
    blob follows the photo's content: `<name>.mp4` and `depths/<name>.mkv`."""
    import av
    from skimage import data
    from skimage.transform import resize

    base = resize(data.astronaut(), (height, width + frames), anti_aliasing=True)
    base = (base * 255).astype(np.uint8)
    rows, columns = np.mgrid[0:height, 0:width + frames]
    blob = np.exp(-(((rows - height * 0.55) / (height * 0.3)) ** 2 + ((columns - (width + frames) * 0.4) /
                                                                      (width * 0.2)) ** 2))
    depth = ((0.25 + 0.75 * blob) * (0.5 + 0.5 * rows / height) * 65535).astype(np.uint16)
    video, depth_path = folder / f"{name}.mp4", folder / "depths" / f"{name}.mkv"
    depth_path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(video), "w") as container, DepthVideoWriter(depth_path, width, height, Fraction(FPS)) as writer:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "g": str(FPS), "preset": "veryfast"}
        for index in range(frames):
            pixels = np.ascontiguousarray(base[:, index:index + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
            writer.write(np.ascontiguousarray(depth[:, index:index + width]))
        for packet in stream.encode():
            container.mux(packet)
    return video, depth_path


def speed(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="convert-bench-"))
    video, depth = synthetic_clip(work, "clip", args.frames, 720, 1280)
    options = ConvertOptions(format="full-sbs", segment_seconds=1.0)
    start = time.perf_counter()
    cpu = time.process_time()
    report = convert_videos([video], work / "out", options, DepthVideoSource(depth), log=lambda line: None)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert report.converted, report.failed
    print(f"end to end, 1280x720 -> full SBS 2560x720 H.264 crf 18 (preset medium), {args.frames} frames, depth "
          f"video: {elapsed:.1f} s = {args.frames / elapsed:.2f} fps wall; CPU {cpu:.1f} s = "
          f"{args.frames / cpu:.2f} frames per CPU second")

    timing = frame_timing(video)
    stages: dict[str, float] = {}
    cpu_stages: dict[str, float] = {}

    def timed(name, run):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = run()
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - begin
        cpu_stages[name] = cpu_stages.get(name, 0.0) + time.process_time() - begin_cpu
        return result

    chunks = timed("decode", lambda: list(iter_frame_range(video, timing, 0, args.frames, 8)))
    pairs = DepthVideoSource(depth).pairs(video, 0, args.frames, iter(chunks))
    depths = [timed("depth read", lambda: next(pairs)[1]) for _ in chunks]
    composer = FrameComposer("full-sbs", 720, 1280)
    outputs = []
    for chunk, chunk_depth in zip(chunks, depths):
        left, right = timed("stereo (both eyes)", lambda: stereo_frames(chunk, chunk_depth, options, None))
        outputs.append(timed("layout", lambda: composer(left, right)))
    with EncodedVideoWriter(work / "encode.mp4", composer.width, composer.height, Fraction(FPS)) as writer:
        for frames in outputs:
            timed("encode", lambda: writer.write(frames))
    total = sum(stages.values())
    print("stages alone on the same frames (wall s, fps; CPU s, frames per CPU second; share of the wall time):")
    for name, seconds in stages.items():
        print(f"  {name:20s} {seconds:7.2f} s {args.frames / seconds:8.2f} fps  CPU {cpu_stages[name]:7.2f} s "
              f"{args.frames / cpu_stages[name]:8.2f}  {100 * seconds / total:5.1f} %")

    if args.old_extension:
        old = load_module(args.old_extension)
        frames = [(chunk[i].numpy() * 255 + 0.5).astype(np.uint8) for chunk in chunks for i in range(len(chunk))]
        nearness = [d.values[i].numpy() for d in depths for i in range(d.values.shape[0])]
        old.create_stereoimages(frames[0], nearness[0], 2.5, modes=["left-right"], fill_technique="polylines_sharp")
        begin, begin_cpu = time.perf_counter(), time.process_time()
        for frame, near in zip(frames, nearness):
            old.create_stereoimages(frame, near, 2.5, modes=["left-right"], fill_technique="polylines_sharp")
        old_seconds, old_cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
        ours = stages["stereo (both eyes)"] + stages["layout"]
        ours_cpu = cpu_stages["stereo (both eyes)"] + cpu_stages["layout"]
        print(f"stereo stage (both eyes + SBS layout) vs the old extension's create_stereoimages (polylines_sharp, "
              f"left-right, numba) on the same {len(frames)} frames: wall ours {len(frames) / ours:.2f} fps, old "
              f"{len(frames) / old_seconds:.2f} fps, speed-up {old_seconds / ours:.2f}x; CPU ours "
              f"{len(frames) / ours_cpu:.2f}, old {len(frames) / old_cpu:.2f} frames per CPU second, speed-up "
              f"{old_cpu / ours_cpu:.2f}x")


def load_module(path: str):
    import importlib.util

    if "float_" not in np.__dict__:
        np.float_ = np.float64    # the old code predates NumPy 2, which removed this alias
    spec = importlib.util.spec_from_file_location("old_stereoimage_generation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def memory(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="convert-memory-"))
    peaks = {}
    for seconds in (10, 60):
        video, depth = synthetic_clip(work, f"clip{seconds}", seconds * FPS, height, width)
        command = [sys.executable, "-c",
                   "import resource, runpy, sys\n"
                   f"sys.argv = ['depth_core', 'convert', {str(video)!r}, '--depth', {str(depth)!r}, '--out', "
                   f"{str(work / 'out')!r}, '--to', 'full-sbs']\n"
                   "try:\n    runpy.run_module('depth_core', run_name='__main__')\n"
                   "except SystemExit:\n    pass\n"
                   "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"]
        begin = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        elapsed = time.perf_counter() - begin
        peak = int(next(line for line in result.stdout.splitlines() if line.startswith("PEAK_KIB")).split()[1])
        peaks[seconds] = peak / 1024
        print(f"{seconds:3d} s clip ({seconds * FPS} frames {width}x{height}): peak RSS {peak / 1024:.0f} MiB, "
              f"{elapsed:.1f} s ({seconds * FPS / elapsed:.1f} fps)")
    print(f"60 s / 10 s peak memory: {peaks[60] / peaks[10]:.3f}x (goal: within 1.25x)")


def ray_scaling(args: argparse.Namespace) -> None:
    import ray

    from depth_core.convert import DepthSpec
    from depth_core.convert.ray_runner import convert_on_ray

    work = Path(tempfile.mkdtemp(prefix="convert-ray-"))
    folder = work / "clips"
    folder.mkdir()
    for index in range(4):
        synthetic_clip(folder, f"clip{index}", args.frames, 180, 320)
    depth = DepthSpec(depth=str(folder / "depths"))
    options = ConvertOptions(format="full-sbs", segment_seconds=1.0)
    begin = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    print(f"ray.init: {time.perf_counter() - begin:.1f} s")
    times = {}
    try:
        for workers in (1, 2):
            begin = time.perf_counter()
            report = convert_on_ray([folder], work / f"out{workers}", options, depth, max_parallel=workers,
                                    log=lambda line: None)
            times[workers] = time.perf_counter() - begin
            assert len(report.converted) == 4, report.failed
            print(f"4 clips x {args.frames} frames 320x180 on Ray, at most {workers} segment(s) at once: "
                  f"{times[workers]:.1f} s ({4 * args.frames / times[workers]:.1f} fps)")
    finally:
        ray.shutdown()
    print(f"speed-up 2 vs 1 workers: {times[1] / times[2]:.2f}x")

    torch.set_num_threads(1)
    source = DepthVideoSource(folder / "depths")
    video = folder / "clip0.mp4"
    for seconds in (100.0, args.frames / FPS / 4):
        split = ConvertOptions(format="full-sbs", segment_seconds=seconds)
        plan = plan_video(video, work / f"split{seconds:g}", split, source)
        begin = time.perf_counter()
        for index in range(len(plan.segments)):
            convert_segment(plan, index, split, source)
        converted = time.perf_counter() - begin
        begin = time.perf_counter()
        finish_video(plan, split)
        joined = time.perf_counter() - begin
        print(f"one clip in {len(plan.segments)} segment(s), sequential, 1 thread: convert {converted:.2f} s, "
              f"join {joined * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "memory", "ray"))
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="160x96", help="memory: frame size")
    parser.add_argument("--old-extension", default="", help="speed: path of the old extension's "
                                                            "stereoimage_generation.py")
    parser.add_argument("--threads", type=int, default=0, help="torch and numba threads (0 = their defaults)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    torch.set_grad_enabled(False)
    print(f"{machine_line()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch threads "
          f"{torch.get_num_threads()}")
    {"speed": speed, "memory": memory, "ray": ray_scaling}[args.what](args)
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
