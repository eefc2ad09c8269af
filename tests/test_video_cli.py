"""Videos through `python -m depth_core` and `write_video_depth`: lossless 16-bit depth video, raw .npy written frame
by frame, image models on videos, and bad input (corrupt, truncated, variable frame rate, odd sizes, one image)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from depth_core.cli import main
from depth_core.depth import DepthKind, distance
from depth_core.models import depth_anything_v2
from depth_core.registry import build_estimator
from depth_core.video_depth import NearnessRange, windowed_depth, write_video_depth
from depth_core.video_io import DepthVideoWriter, iter_depth_video, iter_frames, probe_video, video_metadata
from test_video_depth import one_thread, vda_state_dict  # noqa: F401  (one_thread: autouse fixture)
from video_clips import pan_frames, write_clip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.save(vda_state_dict(), folder / "video_depth_anything_vits.pth")
    torch.manual_seed(0)
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), folder / "depth_anything_v2_vits.pth")
    return folder


def run(clip, model, out, *extra: str) -> int:
    return main([str(clip), "--model", str(model), "--outputs", "depth", "--out", str(out), "--resolution", "28",
                 *extra])


def test_video_gives_lossless_16_bit_depth_and_raw_frames(models, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", pan_frames(26, 48, 64), fps=12)
    out = tmp_path / "out"
    assert run(clip, models / "video_depth_anything_vits.pth", out, "--raw-depth") == 0
    printed = capsys.readouterr().out
    assert "frame 26/26" in printed
    assert sorted(p.name for p in out.iterdir()) == ["clip_depth.mkv", "clip_depth.npy"]
    raw = np.load(out / "clip_depth.npy", mmap_mode="r")
    assert raw.dtype == np.float32 and raw.shape == (26, 48, 64)
    estimator = build_estimator(models / "video_depth_anything_vits.pth")
    expected = torch.cat(list(windowed_depth(estimator, iter_frames(clip, 8), resolution=28)))
    np.testing.assert_allclose(raw, expected.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    info = probe_video(out / "clip_depth.mkv")
    assert (info.codec, info.frame_count, info.width, info.height, info.fps) == ("ffv1", 26, 64, 48, 12)
    codes = np.concatenate(list(iter_depth_video(out / "clip_depth.mkv")))
    mapping = NearnessRange.from_tags(video_metadata(out / "clip_depth.mkv"))
    restored = mapping.values_from_codes(codes).numpy()
    assert np.abs(restored - raw).max() <= (mapping.high - mapping.low) / 65535  # lossless up to 16-bit steps
    nearest = np.unravel_index(np.argmax(raw[5]), raw[5].shape)
    assert codes[5][nearest] == codes[5].max()  # near = bright


def test_image_models_and_odd_sizes_and_streaming_mode(models, tmp_path):
    clip = write_clip(tmp_path / "odd.mkv", pan_frames(9, 33, 47), fps=10, codec="ffv1")
    out = tmp_path / "out"
    assert run(clip, models / "depth_anything_v2_vits.pth", out, "--raw-depth") == 0
    assert np.load(out / "odd_depth.npy").shape == (9, 33, 47)
    info = probe_video(out / "odd_depth.mkv")
    assert (info.width, info.height, info.frame_count) == (47, 33, 9)
    streamed = tmp_path / "streamed"
    assert run(clip, models / "video_depth_anything_vits.pth", streamed, "--video-mode", "streaming") == 0
    assert probe_video(streamed / "odd_depth.mkv").frame_count == 9


def test_a_video_model_given_one_image_runs_a_one_frame_video(models, tmp_path):
    Image.fromarray(pan_frames(1, 48, 64)[0]).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert run(tmp_path / "photo.png", models / "video_depth_anything_vits.pth", out) == 0
    depth = np.asarray(Image.open(out / "photo_depth.png"))
    assert depth.dtype == np.uint16 and depth.shape == (48, 64) and depth.max() > depth.min()


def test_variable_frame_rate_keeps_one_depth_frame_per_source_frame(models, tmp_path, capsys):
    irregular = [i * 100 + (i % 3) * 30 for i in range(12)]
    clip = write_clip(tmp_path / "vfr.mp4", pan_frames(12, 48, 64), fps=12, timestamps=irregular)
    assert run(clip, models / "video_depth_anything_vits.pth", tmp_path / "out") == 0
    assert "variable frame rate" in capsys.readouterr().out
    assert probe_video(tmp_path / "out" / "vfr_depth.mkv").frame_count == 12


def test_bad_videos_fail_clearly_and_write_nothing(models, tmp_path):
    out = tmp_path / "out"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 2048)
    with pytest.raises(SystemExit, match="broken.mp4.*cannot be opened"):
        run(broken, models / "video_depth_anything_vits.pth", out)
    cut = tmp_path / "cut.mkv"
    with DepthVideoWriter(tmp_path / "whole.mkv", 16, 16, 24) as writer:
        writer.write((np.random.default_rng(0).random((12, 16, 16)) * 65535).astype(np.uint16))
    data = (tmp_path / "whole.mkv").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match="truncated"):
        run(cut, models / "video_depth_anything_vits.pth", out, "--raw-depth")
    assert not out.exists() or list(out.iterdir()) == []


def test_a_run_stopped_midway_leaves_no_file(models, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", pan_frames(30, 48, 64), fps=12)
    estimator = build_estimator(models / "video_depth_anything_vits.pth")

    def cancel(done: int, total: int) -> None:
        if done >= 24:
            raise KeyboardInterrupt("cancelled")

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        write_video_depth(estimator, clip, out / "d.mkv", preview=out / "d.mp4", raw=out / "d.npy", resolution=28,
                          progress=cancel)
    assert list(out.iterdir()) == []


def test_metric_video_depth_is_metres_for_the_geometry_nodes(models, tmp_path):
    metric_file = tmp_path / "metric_video_depth_anything_vits.pth"
    metric_file.write_bytes((models / "video_depth_anything_vits.pth").read_bytes())
    clip = write_clip(tmp_path / "clip.mp4", pan_frames(5, 48, 64), fps=12)
    result = write_video_depth(build_estimator(metric_file), clip, tmp_path / "d.mkv", resolution=28,
                               keep_frames=True)
    assert result.depth.kind is DepthKind.METRIC and result.nearness.kind is DepthKind.METRIC
    torch.testing.assert_close(distance(result.depth), result.depth.values.clamp_min(1e-6))
    assert video_metadata(tmp_path / "d.mkv")["depth_kind"] == "metric"
