"""The converter on a Ray cluster, for libraries one machine cannot get through.

Every segment of every video (depth_core/convert/pipeline.py cuts videos at keyframes) becomes a Ray task that
needs one GPU when the cluster has GPUs, else one CPU. Tasks write their segment files into the output folder, so
the folder must be one every node sees (local disk for a one-machine cluster, a network share otherwise). A task
whose worker dies is retried by Ray; segments finished by an earlier run, or by a task before its worker died, are
not submitted again. When all segments of a video exist, the driver joins them (no re-encoding, audio copied).

Ray is optional (`pip install depth-toolkit[ray]`) and imported only here, only when asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .depth_sources import DepthSpec
from .pipeline import (CONTAINERS, ConversionError, ConversionReport, ConvertOptions, VideoPlan, convert_segment,
                       finish_video, list_videos, output_path, plan_video)

TASK_RETRIES = 3
"""Times Ray reruns a segment whose worker died (killed, out of memory, node lost)."""

SegmentTask = Callable[[VideoPlan, int, ConvertOptions, DepthSpec], int]


def run_segment(plan: VideoPlan, index: int, options: ConvertOptions, depth: DepthSpec) -> int:
    """One segment in a Ray worker: the depth source (a loaded network) is kept per worker process."""
    convert_segment(plan, index, options, depth.open(), device=depth.torch_device())
    return index


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise ConversionError("--ray needs Ray: pip install 'depth-toolkit[ray]' (or pip install 'ray>=2.40').") \
            from error
    return ray


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def convert_on_ray(inputs: list[Path], out_dir: Path, options: ConvertOptions, depth: DepthSpec,
                   address: str | None = None, max_parallel: int | None = None,
                   segment_task: SegmentTask = run_segment, log: Callable[[str], None] = print) -> ConversionReport:
    """Convert the videos of `inputs` into `out_dir` with Ray: `address` None starts (or joins) a local Ray, else
    "auto" or "ray://host:port". max_parallel: at most this many segments at once (None: as many as the cluster
    runs). segment_task: what a task runs (run_segment; tests wrap it)."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # Workers import depth_core from this checkout (a remote cluster gets it uploaded).
        runtime_env = {"env_vars": {"PYTHONPATH": _package_root()}} if address is None else \
            {"py_modules": [str(Path(__file__).resolve().parents[1])]}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    try:
        return _convert(ray, inputs, Path(out_dir), options, depth, max_parallel, segment_task, log)
    finally:
        if started_here:
            ray.shutdown()


def _convert(ray, inputs, out_dir, options, depth, max_parallel, segment_task, log) -> ConversionReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ConversionReport()
    plans: list[VideoPlan] = []
    source = depth.open()
    for video in list_videos(inputs):
        existing = [p for p in (output_path(video, out_dir, options, c) for c in CONTAINERS) if p.exists()]
        if existing:
            report.skipped.append(existing[0])
            continue
        try:
            plans.append(plan_video(video, out_dir, options, source))
        except ValueError as error:
            report.failed[video] = str(error)
            log(f"{video.name}: not converted: {error}")
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = ray.remote(max_retries=TASK_RETRIES)(segment_task).options(
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
    pending = [(plan, index) for plan in plans
               for index in sorted(set(range(len(plan.segments))) - plan.finished_segments())]
    running: dict = {}
    remaining = {id(plan): {index for p, index in pending if p is plan} for plan in plans}
    failed: set[int] = set()
    limit = max_parallel or len(pending) or 1
    while pending or running:
        while pending and len(running) < limit:
            plan, index = pending.pop(0)
            if id(plan) in failed:
                continue
            running[task.remote(plan, index, options, depth)] = (plan, index)
        if not running:
            break
        done, _ = ray.wait(list(running), num_returns=1)
        plan, index = running.pop(done[0])
        try:
            ray.get(done[0])
        except Exception as error:      # the task's own error, or its worker died more often than retried
            failed.add(id(plan))
            report.failed[plan.source] = f"segment {index}: {_reason(error)}"
            log(f"{plan.source.name}: not converted: segment {index}: {_reason(error)}")
            continue
        remaining[id(plan)].discard(index)
        if not remaining[id(plan)] and id(plan) not in failed:
            report.converted.append(finish_video(plan, options))
            log(f"{plan.source.name}: wrote {plan.output}")
    for plan in plans:      # videos with nothing left to convert (every segment done by an earlier run)
        if not remaining[id(plan)] and id(plan) not in failed and plan.output not in report.converted:
            report.converted.append(finish_video(plan, options))
    return report


def _reason(error: Exception) -> str:
    """The task's own error message (Ray wraps it), else the first line of Ray's."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return str(cause)
    return (str(error).splitlines() or [type(error).__name__])[0]

