"""Streamed video I/O: probing, chunked decoding, lossless 16-bit and delivery writers, bad files."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from depth_core.video_io import (
    DeliveryVideoWriter,
    DepthVideoWriter,
    VideoReadError,
    iter_depth_video,
    iter_frames,
    probe_video,
    video_metadata,
)
from video_clips import pan_frames, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = pan_frames(23, 48, 64)
    return write_clip(tmp_path_factory.mktemp("clips") / "pan.mp4", frames, fps=12), frames


def test_probe_reports_count_rate_size_and_duration(clip):
    path, frames = clip
    info = probe_video(path)
    assert (info.frame_count, info.width, info.height) == (23, 64, 48)
    assert info.fps == Fraction(12) and isinstance(info.fps, Fraction)
    assert info.duration == pytest.approx(23 / 12, abs=1e-3)
    assert not info.has_audio and not info.variable_frame_rate


def test_frames_come_in_bounded_chunks_and_match_the_source(clip):
    path, frames = clip
    chunks = list(iter_frames(path, chunk_size=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    decoded = torch.cat(chunks)
    assert decoded.dtype == torch.float32 and decoded.shape == (23, 48, 64, 3)
    # H.264 at crf 12: the decoded pan is the encoded one, frame for frame, in display order.
    error = (decoded * 255 - torch.from_numpy(frames).float()).abs().mean(dim=(1, 2, 3))
    assert float(error.max()) < 4.0
    numpy_chunks = list(iter_frames(path, chunk_size=23, output="numpy"))
    assert numpy_chunks[0].dtype == np.uint8 and numpy_chunks[0].shape == (23, 48, 64, 3)


def test_depth_video_is_lossless_16_bit_and_keeps_metadata(tmp_path):
    codes = (np.random.default_rng(0).random((9, 37, 51)) * 65535).astype(np.uint16)
    path = tmp_path / "depth.mkv"
    with DepthVideoWriter(path, 51, 37, Fraction(30000, 1001), metadata={"depth_kind": "metric"}) as writer:
        writer.write(codes[:4])
        writer.write(torch.from_numpy(codes[4:].astype(np.int32)).to(torch.int32).numpy().astype(np.uint16))
    back = np.concatenate(list(iter_depth_video(path, chunk_size=4)))
    np.testing.assert_array_equal(back, codes)
    assert video_metadata(path)["depth_kind"] == "metric"
    info = probe_video(path)
    assert info.codec == "ffv1" and info.fps == Fraction(30000, 1001) and info.frame_count == 9


def test_delivery_video_handles_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    frames = torch.rand(6, 33, 47)
    with DeliveryVideoWriter(path, 47, 33, 24) as writer:
        writer.write(frames[:3])
        writer.write((frames[3:].numpy() * 255).astype(np.uint8))
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (46, 32, 6)
    with DeliveryVideoWriter(tmp_path / "line.mp4", 1, 5, 24) as writer:
        writer.write(torch.rand(2, 5, 1, 3))
    assert (probe_video(tmp_path / "line.mp4").width, probe_video(tmp_path / "line.mp4").height) == (2, 4)


def test_a_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError, match="stopped"):
        with DepthVideoWriter(tmp_path / "depth.mkv", 16, 16, 24) as writer:
            writer.write(np.zeros((3, 16, 16), np.uint16))
            raise RuntimeError("stopped")
    with pytest.raises(ValueError, match="No frames"):
        with DeliveryVideoWriter(tmp_path / "empty.mp4", 16, 16, 24):
            pass
    with pytest.raises(ValueError, match="uint16"):
        with DepthVideoWriter(tmp_path / "wrong.mkv", 16, 16, 24) as writer:
            writer.write(np.zeros((1, 16, 16), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_truncated_and_empty_files_are_refused(tmp_path, clip):
    path, _ = clip
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoReadError, match="cannot be opened"):
        probe_video(garbage)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"  # moov at the end: a cut file has no index at all
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="cannot be opened"):
        list(iter_frames(cut))

    depth = tmp_path / "depth.mkv"
    with DepthVideoWriter(depth, 16, 16, 24) as writer:
        writer.write((np.random.default_rng(1).random((12, 16, 16)) * 65535).astype(np.uint16))
    data = depth.read_bytes()
    cut_mkv = tmp_path / "cut.mkv"  # header first: the cut shows as fewer frames than the header's duration
    cut_mkv.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="truncated"):
        probe_video(cut_mkv)
    with pytest.raises(VideoReadError, match="truncated"):
        next(iter_frames(cut_mkv))

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width = stream.height = 16
        container.start_encoding()
    with pytest.raises(VideoReadError, match="no video frames"):
        probe_video(empty)
    with pytest.raises(VideoReadError, match="no video frames"):
        next(iter_frames(empty))
    with pytest.raises(VideoReadError, match="not found"):
        probe_video(tmp_path / "missing.mp4")


def test_variable_frame_rate_is_detected(tmp_path):
    frames = pan_frames(20, 32, 32)
    irregular = [i * 100 + (i % 3) * 30 for i in range(20)]
    info = probe_video(write_clip(tmp_path / "vfr.mp4", frames, fps=12, timestamps=irregular))
    assert info.variable_frame_rate and info.frame_count == 20
    regular = probe_video(write_clip(tmp_path / "cfr.mp4", frames, fps=12, timestamps=[i * 100 for i in range(20)]))
    assert not regular.variable_frame_rate
