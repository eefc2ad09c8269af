"""Video files of the 3D photo: PyAV mp4/webm, atomic writes, missing encoders."""
from __future__ import annotations

import av
import pytest
import torch

from depth_core.photo3d import video
from depth_core.photo3d.video import write_video


def decode(path: str) -> list:
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def gradient_frames(count: int, height: int, width: int) -> torch.Tensor:
    ys = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(0, 1, width)[None, :].expand(height, width)
    return torch.stack([torch.stack([xs, ys, torch.full_like(xs, i / max(1, count - 1))], -1) for i in range(count)])


@pytest.mark.parametrize("video_format", ["mp4", "webm"])
def test_video_decodes_to_the_requested_frames_and_size(tmp_path, video_format):
    frames = gradient_frames(7, 32, 48)
    path = write_video(frames, str(tmp_path / f"clip.{video_format}"), fps=12.0)
    decoded = decode(path)
    assert len(decoded) == 7
    assert decoded[0].shape == (32, 48, 3)
    # Lossy, but the picture is there: the first frame's gradient survives encoding.
    assert abs(float(decoded[0][16, :, 0].astype(float).mean()) - 127.5) < 12
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(12.0)
    assert not list(tmp_path.glob(".partial-*"))


def test_odd_and_one_pixel_sizes_are_made_encodable(tmp_path):
    path = write_video(gradient_frames(2, 33, 47), str(tmp_path / "odd.mp4"), fps=24.0)
    assert decode(path)[0].shape == (32, 46, 3)
    path = write_video(gradient_frames(1, 1, 1), str(tmp_path / "dot.mp4"), fps=24.0)
    decoded = decode(path)
    assert len(decoded) == 1 and decoded[0].shape == (2, 2, 3)


def test_missing_encoder_names_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "encoder_available", lambda name: False)
    with pytest.raises(ValueError, match="Choose format 'webm'"):
        write_video(gradient_frames(2, 8, 8), str(tmp_path / "clip.mp4"), fps=24.0)
    with pytest.raises(ValueError, match="Choose format 'mp4'"):
        write_video(gradient_frames(2, 8, 8), str(tmp_path / "clip.webm"), fps=24.0)
    assert not list(tmp_path.iterdir())


def test_interrupted_write_leaves_no_file(tmp_path):
    class Interrupted(Exception):
        pass

    def progress(done: int, total: int) -> None:
        if done == 3:
            raise Interrupted()

    with pytest.raises(Interrupted):
        write_video(gradient_frames(6, 16, 16), str(tmp_path / "clip.mp4"), fps=24.0, progress=progress)
    assert not list(tmp_path.iterdir())


def test_bad_frames_and_formats_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="N >= 1"):
        write_video(torch.zeros(0, 8, 8, 3), str(tmp_path / "clip.mp4"), fps=24.0)
    with pytest.raises(ValueError, match="Unknown video format"):
        write_video(gradient_frames(1, 8, 8), str(tmp_path / "clip.avi"), fps=24.0)
    with pytest.raises(ValueError, match="fps"):
        write_video(gradient_frames(1, 8, 8), str(tmp_path / "clip.mp4"), fps=0.0)
