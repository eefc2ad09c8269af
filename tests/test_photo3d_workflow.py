"""The 3D-photo job as node and command line run it (depth_core/photo3d/workflow.py), without ComfyUI."""
from __future__ import annotations

import pytest
import torch

from depth_core.depth import Depth, DepthKind
from depth_core.photo3d.workflow import Photo3DSettings, make_photo3d, numbered_file_names


def step_depth(height: int, width: int, batch: int = 1) -> Depth:
    values = torch.full((batch, height, width), 4.0)
    values[:, :, width // 2:] = 1.5
    return Depth(values, DepthKind.METRIC, "test")


def test_numbered_file_names_follow_comfyuis_counter(tmp_path):
    settings = Photo3DSettings(video_format="webm", mesh_format="obj")
    video, meshes = numbered_file_names(tmp_path, "clip", 7, 3, settings)
    assert video == tmp_path / "clip_00007_.webm"
    assert meshes == [tmp_path / f"clip_{n:05}_.obj" for n in (7, 8, 9)]
    assert numbered_file_names(tmp_path, "c", 1, 2, Photo3DSettings(video_format="none", mesh_format="none")) == \
        (None, [])


def test_a_batch_writes_all_its_files_or_none(tmp_path):
    settings = Photo3DSettings(frames=2, fps=4.0, supersampling=1, edge_threshold=0.1)
    images = torch.rand(2, 10, 14, 3)
    names = [tmp_path / "a.ply", tmp_path / "b.ply"]
    steps = []

    def stop_in_the_second_image(done: int, total: int) -> None:
        steps.append(done)
        if done > settings.frames + 1:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        make_photo3d(images, step_depth(10, 14), settings, tmp_path / "v.mp4", names,
                     progress=stop_in_the_second_image)
    assert list(tmp_path.iterdir()) == []  # the first image's mesh was written, then taken back
    result = make_photo3d(images, step_depth(10, 14, 2), settings, tmp_path / "v.mp4", names,
                          progress=lambda done, total: steps.append((done, total)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply", "b.ply", "v.mp4"]
    assert result.frames.shape == (4, 10, 14, 3) and result.mesh_paths == names
    assert steps[-1] == (settings.steps(2), settings.steps(2))
    assert len(result.fov_sources) == 2 and all("default" in source for source in result.fov_sources)
    with pytest.raises(ValueError, match="mesh file names"):
        make_photo3d(images, step_depth(10, 14), settings, None, names[:1])
