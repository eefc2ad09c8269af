"""The converter on a local Ray cluster (2 CPUs): same files as the sequential path, dead workers' segments redone,
finished segments kept. Few and small: Ray takes a while to start on a 2-core machine."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from convert_clips import clip_with_depth

from depth_core.convert import ConvertOptions, DepthSpec, convert_segment, convert_videos, plan_video
from depth_core.convert.ray_runner import convert_on_ray, run_segment
from depth_core.video_io import iter_frames

ray = pytest.importorskip("ray")

OPTIONS = ConvertOptions(format="half-sbs", segment_seconds=0.5, chunk_frames=4, crf=0, pixel_format="yuv444p")
"""Lossless, so that "frame for frame" compares the conversions and not x264's run-to-run variation of lossy
streams (tests/test_convert.py LOSSLESS)."""


@pytest.fixture(scope="module")
def cluster():
    root = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Three short clips (3 segments each) in one folder, their depth videos in another."""
    root = tmp_path_factory.mktemp("library")
    for name, photo in (("a", "astronaut"), ("b", "coffee"), ("c", "chelsea")):
        clip_with_depth(root / "made", name, count=16, photo=photo, audio=name != "b")
    (root / "videos").mkdir()
    (root / "depths").mkdir()
    for name in "abc":
        (root / "made" / f"{name}.mp4").rename(root / "videos" / f"{name}.mp4")
        (root / "made" / f"{name}_depth.mkv").rename(root / "depths" / f"{name}_depth.mkv")
    sequential = convert_videos([root / "videos"], root / "sequential", OPTIONS,
                                DepthSpec(depth=str(root / "depths")).open(), log=lambda line: None)
    assert len(sequential.converted) == 3
    return root


def frames(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_frames(path, 64, output="numpy")))


def test_two_workers_give_the_sequential_files_frame_for_frame(cluster, library):
    out = library / "ray"
    report = convert_on_ray([library / "videos"], out, OPTIONS, DepthSpec(depth=str(library / "depths")),
                            log=lambda line: None)
    assert not report.failed and len(report.converted) == 3
    for name in "abc":
        produced, expected = out / f"{name}_Half_SBS.mp4", library / "sequential" / f"{name}_Half_SBS.mp4"
        np.testing.assert_array_equal(frames(produced), frames(expected))
    assert sorted(p.name for p in out.iterdir()) == ["a_Half_SBS.mp4", "b_Half_SBS.mp4", "c_Half_SBS.mp4"]


def test_a_killed_worker_is_redone_and_finished_segments_are_not(cluster, library):
    out = library / "ray_killed"
    depth = DepthSpec(depth=str(library / "depths"))
    # An earlier run finished segment 0 of clip a.
    plan = plan_video(library / "videos" / "a.mp4", out, OPTIONS, depth.open())
    convert_segment(plan, 0, OPTIONS, depth.open())
    journal = library / "journal"
    journal.mkdir()

    def dies_once(plan, index, options, spec):
        # Every call leaves a line; the first try of clip a's segment 1 kills its own worker process mid-task.
        with open(journal / f"{plan.source.stem}_{index}", "a") as log:
            log.write(f"{os.getpid()}\n")
        marker = journal / "killed"
        if plan.source.stem == "a" and index == 1 and not marker.exists():
            marker.touch()
            os._exit(1)
        return run_segment(plan, index, options, spec)

    report = convert_on_ray([library / "videos"], out, OPTIONS, depth, segment_task=dies_once,
                            log=lambda line: None)
    assert not report.failed and len(report.converted) == 3
    assert (journal / "killed").exists()
    tries = {path.name: path.read_text().split() for path in journal.iterdir() if path.name != "killed"}
    assert "a_0" not in tries                             # finished before: not submitted again
    assert len(tries["a_1"]) == 2 and tries["a_1"][0] != tries["a_1"][1]   # redone by another worker process
    assert all(len(pids) == 1 for name, pids in tries.items() if name != "a_1")
    for name in "abc":
        np.testing.assert_array_equal(frames(out / f"{name}_Half_SBS.mp4"),
                                      frames(library / "sequential" / f"{name}_Half_SBS.mp4"))
