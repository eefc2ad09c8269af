"""Video to 3D: the streamed, segmented, resumable converter (depth_core.convert) and its command line."""
from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from convert_clips import clip_with_depth, ramp_depth_codes, write_clip_with_audio, write_depth_video
from video_clips import pan_frames

from depth_core.convert import (ConversionError, ConvertOptions, DepthSpec, DepthVideoSource, convert_segment,
                                convert_videos, finish_video, plan_video)
from depth_core.convert.layouts import FORMATS, FrameComposer, format_tag, vr180_eye_size, vr180_grid
from depth_core.convert.pipeline import stereo_frames
from depth_core.depth import Depth, DepthKind
from depth_core.stereo import StereoSettings
from depth_core.video_io import frame_timing, iter_frames, probe_video

FAST = dict(segment_seconds=0.5, chunk_frames=4)
"""Segments of 6 frames at 12 fps: a 20-frame clip with keyframes every 4 frames has segments 0-8, 8-16, 16-20."""

LOSSLESS = dict(crf=0, pixel_format="yuv444p")
"""For comparing conversions frame for frame: x264's lossy output can differ between two runs on the same frames
(seen here: two variants of the stream, decoded frames differing in a few pixels), its lossless output decodes to
exactly the frames it was given."""


def decode(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_frames(path, 64, output="numpy")))


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return clip_with_depth(tmp_path_factory.mktemp("clip"))


def test_full_sbs_keeps_frames_rate_and_audio_and_shows_the_stereo_pair(clip, tmp_path):
    video, depth = clip
    # Near-lossless encoding (crf 0, no chroma subsampling) so the pictures can be compared closely.
    options = ConvertOptions(format="full-sbs", **LOSSLESS, **FAST)
    report = convert_videos([video], tmp_path, options, DepthVideoSource(depth), log=lambda line: None)
    assert not report.failed
    output = tmp_path / "clip_LRF_Full_SBS.mp4"
    assert report.converted == [output] and sorted(p.name for p in tmp_path.iterdir()) == [output.name]
    info, source = probe_video(output), probe_video(video)
    assert (info.frame_count, info.fps, info.width, info.height) == (20, source.fps, 96, 32)
    assert info.has_audio and audio_packets(output) == audio_packets(video)     # copied, not re-encoded
    # Each half is the eye the stereo kernel makes from the decoded source and its depth (up to YUV rounding).
    frames = torch.from_numpy(decode(video)).float() / 255.0
    codes = ramp_depth_codes(20, 32, 48)
    depth = Depth(torch.from_numpy(codes.astype(np.float32) / 65535.0), DepthKind.RELATIVE_INVERSE)
    left, right = stereo_frames(frames, depth, options, None)
    expected = torch.cat([left, right], 2).numpy() * 255.0
    error = np.abs(decode(output).astype(np.float32) - expected)
    assert error.mean() < 1.0
    # The eyes really differ (a near square moved): against the source frame twice side by side the error is larger.
    unshifted = np.abs(decode(output).astype(np.float32) - np.concatenate([frames.numpy()] * 2, 2) * 255.0)
    assert unshifted.mean() > 4 * error.mean()


def test_segments_decode_alone_and_join_without_re_encoding(clip, tmp_path):
    video, depth = clip
    options = ConvertOptions(format="half-tb", **LOSSLESS, **FAST)
    source = DepthVideoSource(depth)
    plan = plan_video(video, tmp_path, options, source)
    assert plan.segments == ((0, 8), (8, 16), (16, 20)) and plan.output.name == "clip_TB.mp4"
    assert set(frame_timing(video).keyframes) >= {0, 8, 16}
    parts = [decode(convert_segment(plan, index, options, source)) for index in range(len(plan.segments))]
    assert [len(part) for part in parts] == [8, 8, 4]
    output = finish_video(plan, options)
    np.testing.assert_array_equal(decode(output), np.concatenate(parts))   # packets copied as they were
    assert not plan.work_dir.exists()
    # Segments decoded alone (each seeking to its keyframe) see the frames a decode from the start sees: losslessly
    # encoded, the joined video equals a conversion in one piece.
    whole = ConvertOptions(format="half-tb", **LOSSLESS, segment_seconds=100, chunk_frames=4)
    single = plan_video(video, tmp_path / "single", whole, source)
    assert single.segments == ((0, 20),)
    convert_segment(single, 0, whole, source)
    np.testing.assert_array_equal(decode(output), decode(finish_video(single, whole)))


def test_a_stopped_conversion_resumes_from_its_last_finished_segment(clip, tmp_path):
    video, depth = clip
    options = ConvertOptions(format="half-sbs", **LOSSLESS, **FAST)
    converted = []

    class Stop(Exception):
        pass

    def stop_in_second_segment() -> None:
        converted.append(1)
        if len(converted) == 3:          # chunks of 4 frames: the second segment's first chunk
            raise Stop

    with pytest.raises(Stop):
        convert_videos([video], tmp_path / "out", options, DepthVideoSource(depth), log=lambda line: None,
                       interrupt=stop_in_second_segment)
    out = tmp_path / "out"
    assert not (out / "clip_Half_SBS.mp4").exists()          # nothing under the final name yet
    work = out / ".clip_Half_SBS.mp4.parts"
    assert sorted(p.name for p in work.glob("segment_*")) == ["segment_00000.mp4"]   # no half-written segment
    lines = []
    convert_videos([video], out, options, DepthVideoSource(depth), log=lines.append,
                   progress_line=lines.append)
    assert "8/20 frames" in lines[0] or " 8/20" not in lines[0]
    frames_done = [line for line in lines if "frames" in line]
    assert frames_done[0].split("% ")[1].startswith("12/20")   # resumed at frame 8, first new chunk ends at 12
    assert not work.exists()
    fresh = tmp_path / "fresh"
    convert_videos([video], fresh, options, DepthVideoSource(depth), log=lambda line: None)
    np.testing.assert_array_equal(decode(out / "clip_Half_SBS.mp4"), decode(fresh / "clip_Half_SBS.mp4"))


def test_changed_settings_start_over_instead_of_mixing_segments(clip, tmp_path):
    video, depth = clip
    source = DepthVideoSource(depth)
    first = plan_video(video, tmp_path, ConvertOptions(format="half-sbs", **FAST), source)
    convert_segment(first, 0, ConvertOptions(format="half-sbs", **FAST), source)
    again = plan_video(video, tmp_path, ConvertOptions(format="half-sbs", **FAST), source)
    assert again.finished_segments() == {0}
    stronger = plan_video(video, tmp_path, ConvertOptions(format="half-sbs", settings=StereoSettings(divergence=4.0),
                                                          **FAST), source)
    assert stronger.finished_segments() == set()


def test_clip_normalization_uses_one_range_for_every_segment(clip, tmp_path):
    video, depth = clip
    plan = plan_video(video, tmp_path, ConvertOptions(normalize="clip", **FAST), DepthVideoSource(depth))
    codes = ramp_depth_codes(20, 32, 48)
    assert plan.nearness_range == pytest.approx((codes.min() / 65535.0, codes.max() / 65535.0))


@pytest.mark.parametrize("name, size", [("full-sbs", (96, 32)), ("half-sbs", (48, 32)), ("full-tb", (48, 64)),
                                        ("half-tb", (48, 32)), ("anaglyph", (48, 32)), ("360-tb", (48, 64))])
def test_layout_sizes_and_player_tags(name, size):
    composer = FrameComposer(name, 32, 48)
    frames = composer(torch.rand(2, 32, 48, 3), torch.rand(2, 32, 48, 3))
    assert (frames.shape[2], frames.shape[1]) == size == (composer.width, composer.height)
    assert format_tag(name).startswith("_")
    assert {format_tag("vr180"), format_tag("full-sbs"), format_tag("half-sbs"), format_tag("half-tb")} == \
        {"_180_LR", "_LRF_Full_SBS", "_Half_SBS", "_TB"}
    assert format_tag("anaglyph", "dubois green/magenta") == "_Anaglyph_GreenMagenta"
    assert format_tag("360-tb") == "_360_TB"
    assert set(FORMATS) == {"full-sbs", "half-sbs", "full-tb", "half-tb", "vr180", "anaglyph", "360-tb"}


def test_vr180_maps_the_frame_to_its_field_of_view_inside_the_half_sphere():
    height, width, fov = 30, 40, 90.0
    eye = vr180_eye_size(height, width, fov)
    assert eye % 2 == 0 and eye == round(0.5 * width / math.tan(math.radians(fov / 2)) * math.pi) // 2 * 2
    grid = vr180_grid(height, width, eye, fov)[0]
    middle = eye // 2
    # Longitude 0 looks at the frame's centre; longitude +-45 degrees at its left and right edges (x = -1, 1).
    columns = grid[middle, :, 0]
    edge = int(torch.argmin((columns - 1.0).abs()))
    assert (edge + 0.5) / eye - 0.5 == pytest.approx(45.0 / 180.0, abs=1.0 / eye)
    # The frame's vertical extent is narrower: tan(lat) = (height / width) tan(45 deg) at the centre column.
    rows = grid[:, middle, 1]
    top = int(torch.argmin((rows + 1.0).abs()))
    latitude = ((top + 0.5) / eye - 0.5) * 180.0
    assert latitude == pytest.approx(-math.degrees(math.atan(height / width)), abs=180.0 / eye)
    # Outside the frame the eye is black; at the centre it shows the frame's centre pixel.
    frame = torch.rand(1, height, width, 3)
    frame[0, height // 2 - 1:height // 2 + 1, width // 2 - 1:width // 2 + 1] = torch.tensor([1.0, 0.0, 0.0])
    composed = FrameComposer("vr180", height, width, vr180_fov=fov)(frame, frame)
    assert composed.shape == (1, eye, 2 * eye, 3)
    assert composed[0, 0, 0].abs().max() == 0 and composed[0, middle, eye + middle, 0] > 0.9


def test_odd_sizes_give_even_half_sbs_frames_with_both_eyes_whole(tmp_path):
    # 4:4:4 H.264 stores odd sizes; yuv420p output needs even sides: each eye of 51 columns gets 25, the frame 50;
    # the odd last row is cropped.
    video = write_clip_with_audio(tmp_path / "odd.mp4", pan_frames(8, 33, 51), audio=False, pixel_format="yuv444p")
    (tmp_path / "depth").mkdir()
    report = convert_videos([video], tmp_path / "out", ConvertOptions(format="half-sbs", **FAST),
                            DepthVideoSource(tmp_path / "depth"), log=lambda line: None)
    assert "No depth for odd.mp4" in report.failed[video]
    write_depth_video(tmp_path / "depth" / "odd.mkv", ramp_depth_codes(8, 33, 51))
    report = convert_videos([video], tmp_path / "out", ConvertOptions(format="half-sbs", **FAST),
                            DepthVideoSource(tmp_path / "depth"), log=lambda line: None)
    assert not report.failed
    info = probe_video(report.converted[0])
    assert (info.width, info.height, info.frame_count) == (50, 32, 8)
    composer = FrameComposer("half-sbs", 33, 51)
    assert (composer.width, composer.height) == (50, 33)


def test_bad_inputs_are_reported_and_the_other_videos_converted(tmp_path):
    videos, depths, out = tmp_path / "videos", tmp_path / "depths", tmp_path / "out"
    clip_with_depth(tmp_path / "made", "good", count=8)
    videos.mkdir()
    depths.mkdir()
    (tmp_path / "made" / "good.mp4").rename(videos / "good.mp4")
    (tmp_path / "made" / "good_depth.mkv").rename(depths / "good_depth.mkv")
    silent = write_clip_with_audio(videos / "silent.mp4", pan_frames(8, 32, 48), audio=False)
    write_depth_video(depths / "silent.mkv", ramp_depth_codes(8, 32, 48))
    write_clip_with_audio(videos / "short_depth.mp4", pan_frames(8, 32, 48), audio=False)
    write_depth_video(depths / "short_depth.mkv", ramp_depth_codes(5, 32, 48))
    write_clip_with_audio(videos / "wrong_shape.mp4", pan_frames(8, 32, 48), audio=False)
    write_depth_video(depths / "wrong_shape.mkv", ramp_depth_codes(8, 32, 32))
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    report = convert_videos([videos], out, ConvertOptions(format="half-sbs", **FAST), DepthVideoSource(depths),
                            log=lambda line: None)
    assert sorted(path.name for path in report.converted) == ["good_Half_SBS.mp4", "silent_Half_SBS.mp4"]
    reasons = {path.name: reason for path, reason in report.failed.items()}
    assert set(reasons) == {"short_depth.mp4", "wrong_shape.mp4", "broken.mp4"}
    assert "5 frames, fewer than the 8" in reasons["short_depth.mp4"]
    assert "shapes differ" in reasons["wrong_shape.mp4"]
    assert "broken.mp4" in reasons["broken.mp4"]
    assert not probe_video(out / "silent_Half_SBS.mp4").has_audio            # no audio: a silent output
    assert sorted(p.name for p in out.iterdir()) == ["good_Half_SBS.mp4", "silent_Half_SBS.mp4"]   # nothing partial
    # Converted outputs are skipped on the next run; the failures are still reported.
    again = convert_videos([videos], out, ConvertOptions(format="half-sbs", **FAST), DepthVideoSource(depths),
                           log=lambda line: None)
    assert len(again.skipped) == 2 and not again.converted and len(again.failed) == 3
    with pytest.raises(ConversionError, match="does not exist"):
        DepthVideoSource(tmp_path / "nowhere")


def test_png_depth_frames_serve_as_depth(tmp_path):
    import cv2

    video = write_clip_with_audio(tmp_path / "v.mp4", pan_frames(8, 32, 48), audio=False)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, codes in enumerate(ramp_depth_codes(8, 32, 48)):
        cv2.imwrite(str(frames / f"{index:04d}.png"), codes)
    (tmp_path / "d").mkdir()
    video_depth = write_depth_video(tmp_path / "d" / "v.mkv", ramp_depth_codes(8, 32, 48))
    outputs = []
    for depth in (frames, video_depth):
        report = convert_videos([video], tmp_path / depth.stem, ConvertOptions(**LOSSLESS, **FAST),
                                DepthVideoSource(depth), log=lambda line: None)
        outputs.append(decode(report.converted[0]))
    np.testing.assert_array_equal(*outputs)       # the same codes, so the same frames


def test_command_line_with_a_depth_network_and_clip_normalization(tmp_path, capsys):
    from depth_core.cli import main
    from depth_core.models import depth_anything_v2

    checkpoint = tmp_path / "small.pth"
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), checkpoint)
    (tmp_path / "in").mkdir()
    video = write_clip_with_audio(tmp_path / "in" / "walk.mp4", pan_frames(6, 28, 42), audio=True)
    code = main(["convert", str(video), "--model", str(checkpoint), "--resolution", "28", "--to", "vr180",
                 "--vr180-fov", "120", "--normalize", "clip", "--codec", "h265", "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    assert code == 0
    output = tmp_path / "out" / "walk_180_LR.mp4"
    info = probe_video(output)
    eye = vr180_eye_size(28, 42, 120.0)
    assert (info.width, info.height, info.frame_count, info.codec, info.has_audio) == (2 * eye, eye, 6, "hevc", True)
    assert "converted 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", str(video), "--model", str(checkpoint), "--depth", str(video)])
    assert main(["convert", str(tmp_path / "missing.mp4"), "--depth", str(video), "--out", str(tmp_path)]) == 2


def test_variable_frame_rate_video_is_converted_in_one_piece_with_every_frame(tmp_path):
    from video_clips import write_clip

    stamps = [0, 100, 150, 300, 320, 500, 700, 710, 900, 1000]       # irregular: 1/(100 x 12) s units
    video = write_clip(tmp_path / "vfr.mp4", pan_frames(10, 32, 48), fps=12, timestamps=stamps)
    assert probe_video(video).variable_frame_rate
    (tmp_path / "d").mkdir()
    write_depth_video(tmp_path / "d" / "vfr.mkv", ramp_depth_codes(10, 32, 48))
    options = ConvertOptions(format="half-sbs", **FAST)
    plan = plan_video(video, tmp_path / "out", options, DepthVideoSource(tmp_path / "d"))
    assert plan.segments == ((0, 10),)
    report = convert_videos([video], tmp_path / "out", options, DepthVideoSource(tmp_path / "d"),
                            log=lambda line: None)
    assert probe_video(report.converted[0]).frame_count == 10


def test_a_video_network_streams_its_windows_through_the_converter(tmp_path):
    from depth_core.models import video_depth_anything
    from depth_core.registry import build_estimator
    from depth_core.convert import ModelDepth

    checkpoint = tmp_path / "video_depth_anything_vits.pth"
    torch.manual_seed(0)
    torch.save(video_depth_anything.build(video_depth_anything.SMALL).state_dict(), checkpoint)
    estimator = build_estimator(checkpoint)
    video, _ = clip_with_depth(tmp_path / "clip", count=12, audio=False)
    options = ConvertOptions(format="half-sbs", segment_seconds=100, chunk_frames=5)
    report = convert_videos([video], tmp_path / "out", options, ModelDepth(estimator, 28), log=lambda line: None)
    assert not report.failed and probe_video(report.converted[0]).frame_count == 12


def test_av1_output_is_joined_without_an_encoder_for_its_decoder(tmp_path):
    video, depth = clip_with_depth(tmp_path / "clip", count=8)
    report = convert_videos([video], tmp_path / "out", ConvertOptions(codec="av1", **FAST), DepthVideoSource(depth),
                            log=lambda line: None)
    assert not report.failed
    info = probe_video(report.converted[0])
    assert "av1" in info.codec or info.codec == "libdav1d"
    assert (info.frame_count, info.has_audio) == (8, True) and len(decode(report.converted[0])) == 8


def test_a_model_given_by_path_loads_only_when_depth_is_needed(tmp_path):
    from depth_core.convert import ModelDepth
    from depth_core.models import depth_anything_v2

    checkpoint = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), checkpoint)
    source = DepthSpec(model=str(checkpoint), resolution=28, device="cpu").open()
    video, _ = clip_with_depth(tmp_path / "clip", count=4, audio=False)
    plan = plan_video(video, tmp_path / "out", ConvertOptions(**FAST), source)      # planning needs no network
    assert isinstance(source, ModelDepth) and source._estimator is None
    assert plan.nearness_range is None
    convert_segment(plan, 0, ConvertOptions(**FAST), source)
    assert source._estimator is not None and source.identity(video)["model"] == checkpoint.name


# ---------------------------------------------------------------------------------------------------------------
# 360° video: omni-directional top-bottom stereo (format 360-tb)


def panorama_clip(folder: Path, count: int = 4, width: int = 64) -> tuple[Path, Path, torch.Tensor, np.ndarray]:
    """A 360° video of the room of tests/panorama_scene.py turning 3 columns per frame (it wraps around the 360°
    border), its nearness as a (lossless) depth video, the true distance [N,H,W] and the depth video's codes."""
    from panorama_scene import render_room

    image, distance = render_room(width, width // 2)
    frames = torch.cat([image.roll(3 * index, dims=2) for index in range(count)])
    distances = torch.cat([distance.roll(3 * index, dims=2) for index in range(count)])
    folder.mkdir(parents=True, exist_ok=True)
    video = write_clip_with_audio(folder / "room.mp4", (frames * 255.0).round().byte().numpy(), audio=False,
                                  pixel_format="yuv444p")
    codes = (distances.min() / distances * 65535.0).round().numpy().astype(np.uint16)
    return video, write_depth_video(folder / "room_depth.mkv", codes), distances, codes


def split_eyes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    frames = decode(path).astype(np.float32) / 255.0
    half = frames.shape[1] // 2
    return frames[:, :half], frames[:, half:]


@pytest.mark.parametrize("normalize", ["frame", "clip"])
def test_360_tb_eyes_are_the_panorama_ods_views_of_each_frame(tmp_path, normalize):
    from depth_core.panorama import OdsSettings, ods_views

    video, depth, _, codes = panorama_clip(tmp_path / "in")
    options = ConvertOptions(format="360-tb", settings=StereoSettings(divergence=3.0), normalize=normalize,
                             **LOSSLESS, **FAST)
    report = convert_videos([video], tmp_path / "out", options, DepthVideoSource(depth), log=lambda line: None)
    assert not report.failed and report.converted == [tmp_path / "out" / "room_360_TB.mp4"]
    info = probe_video(report.converted[0])
    assert (info.width, info.height, info.frame_count) == (64, 64, 4)       # 2:1 eyes stacked: 1:1
    # Each eye is depth_core.panorama's ODS of the decoded frame and its depth, with the divergence asked for.
    frames = torch.from_numpy(decode(video)).float() / 255.0
    frame_depth = Depth(torch.from_numpy(codes.astype(np.float32) / 65535.0), DepthKind.RELATIVE_INVERSE)
    clip_range = (codes.min() / 65535.0, codes.max() / 65535.0) if normalize == "clip" else None
    assert options.ods_settings() == OdsSettings(divergence=3.0)
    left, right = ods_views(frames, frame_depth, OdsSettings(divergence=3.0), nearness_range=clip_range)
    top, bottom = split_eyes(report.converted[0])
    for eye, expected in ((top, left), (bottom, right)):
        error = np.abs(eye - expected.numpy()) * 255.0
        assert error.mean() < 0.5 and error.max() <= 3.0      # lossless H.264, up to RGB <-> YUV rounding
    # Real stereo: the eyes differ from each other by far more than that.
    assert np.abs(top - bottom).mean() * 255.0 > 5.0


def test_360_tb_with_a_network_estimates_each_frame_in_panorama_mode(tmp_path):
    from panorama_scene import TruthEstimator

    from depth_core.convert import ModelDepth
    from depth_core.panorama import OdsSettings, estimate_panorama_depth, ods_views

    video, _, distances, _ = panorama_clip(tmp_path / "in", count=3)
    options = ConvertOptions(format="360-tb", settings=StereoSettings(divergence=3.0, depth_mode="relative"),
                             **LOSSLESS, **FAST)
    flat = ModelDepth(TruthEstimator(90.0))
    assert "panorama=True" in convert_videos([video], tmp_path / "flat", options, flat,
                                             log=lambda line: None).failed[video]
    estimator = TruthEstimator(90.0)      # the views' true depth, read from the picture
    report = convert_videos([video], tmp_path / "out", options, ModelDepth(estimator, panorama=True),
                            log=lambda line: None)
    assert not report.failed and estimator.calls == 3          # one batch of perspective views per frame
    frames = torch.from_numpy(decode(video)).float() / 255.0
    depth, _ = estimate_panorama_depth(TruthEstimator(90.0), frames)
    # The stand-in "network" reads the distance the frames carry: panorama depth gets it back across the seam.
    assert float((depth.values - distances).abs().mean() / distances.mean()) < 0.05
    left, right = ods_views(frames, depth, OdsSettings(divergence=3.0, depth_mode="relative"))
    top, bottom = split_eyes(report.converted[0])
    assert np.abs(top - left.numpy()).max() * 255.0 <= 3.0
    assert np.abs(bottom - right.numpy()).max() * 255.0 <= 3.0


def test_360_tb_refuses_what_it_cannot_convert_before_writing_anything(tmp_path):
    from types import SimpleNamespace

    from depth_core.convert import ModelDepth

    out = tmp_path / "out"
    flat = write_clip_with_audio(tmp_path / "flat.mp4", pan_frames(4, 32, 48), audio=False)
    write_depth_video(tmp_path / "flat_depth.mkv", ramp_depth_codes(4, 32, 48))

    def never_loaded():
        raise AssertionError("a video that is not 2:1 is refused before the network loads")

    for depth in (DepthVideoSource(tmp_path / "flat_depth.mkv"), ModelDepth(never_loaded, model_name="net",
                                                                             panorama=True)):
        report = convert_videos([flat], out, ConvertOptions(format="360-tb", **FAST), depth, log=lambda line: None)
        assert "48x32 (1.50:1)" in report.failed[flat] and "2:1" in report.failed[flat]
        assert not report.converted and list(out.iterdir()) == []
    # A video network has no panorama mode (it would read a panorama's views as a sequence in time).
    video, _, _, _ = panorama_clip(tmp_path / "in", count=2)
    video_network = SimpleNamespace(name="video_depth_anything_vits", network=SimpleNamespace(is_video_model=True),
                                    predict=None)
    report = convert_videos([video], out, ConvertOptions(format="360-tb", **FAST),
                            ModelDepth(video_network, panorama=True), log=lambda line: None)
    assert "video network" in report.failed[video] and "image network" in report.failed[video]
    assert list(out.iterdir()) == []
    with pytest.raises(ValueError, match="divergence"):
        ConvertOptions(format="360-tb", settings=StereoSettings(divergence=-1.0))


def test_command_line_converts_a_360_video_to_top_bottom_ods(tmp_path, capsys):
    from depth_core.cli import main
    from depth_core.models import depth_anything_v2

    checkpoint = tmp_path / "small.pth"
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), checkpoint)
    video, _, _, _ = panorama_clip(tmp_path / "in", count=2)
    code = main(["convert", str(video), "--model", str(checkpoint), "--resolution", "28", "--to", "360-tb",
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0 and "converted 1" in capsys.readouterr().out
    info = probe_video(tmp_path / "out" / "room_360_TB.mp4")
    assert (info.width, info.height, info.frame_count) == (64, 64, 2)
