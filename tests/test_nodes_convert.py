"""VideoTo3D inside real ComfyUI: core VIDEO in, a file-backed VIDEO out that core Save Video copies."""
from __future__ import annotations

import importlib

import av
import numpy as np
import pytest
import torch
from convert_clips import clip_with_depth, ramp_depth_codes

STEREO = dict(divergence=2.5, separation=0.0, convergence=0.0, balance=0.0, depth_exponent=1.0, fill="background",
              depth_mode="auto", baseline_mm=65.0, fov_degrees=0.0, normalize="per image")
SETTINGS = dict(swap_eyes=False, anaglyph_method="dubois red/cyan", vr180_fov=90.0, codec="h264", crf=0,
                resolution="custom", custom_resolution=28)


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def run(pack, **inputs):
    node = pack.nodes.convert.VideoTo3D
    stereo = {name: value for name, value in STEREO.items() if name in _input_names(node)}
    return node.execute(**SETTINGS, **stereo, **inputs).result[0]


def _input_names(node) -> set[str]:
    return {item.id for item in node.define_schema().inputs}


def test_depth_video_input_gives_a_file_backed_video_for_save_video(pack, comfy_output_dir, tmp_path):
    from comfy_api.latest import InputImpl

    video_path, depth_path = clip_with_depth(tmp_path / "clip", count=10)
    video = InputImpl.VideoFromFile(str(video_path))
    result = run(pack, video=video, depth_video=InputImpl.VideoFromFile(str(depth_path)), format="half-sbs")
    source = result.get_stream_source()
    assert isinstance(source, str) and source.endswith("_Half_SBS.mp4")
    assert result.get_dimensions() == (48, 32)
    assert frames_of(source).shape == (10, 32, 48, 3)
    with av.open(source) as container:
        assert container.streams.audio                             # the source's audio came along
    # What core Save Video does with it (format and codec "auto"): a stream copy, the same frames.
    written = comfy_output_dir / "threed.mp4"
    result.save_to(str(written))
    np.testing.assert_array_equal(frames_of(written), frames_of(source))
    # The same conversion again reuses the finished file.
    again = run(pack, video=video, depth_video=InputImpl.VideoFromFile(str(depth_path)), format="half-sbs")
    assert again.get_stream_source() == source


def test_depth_model_input_and_clear_errors(pack, comfy_output_dir, tmp_path, monkeypatch):
    import folder_paths
    from comfy_api.latest import InputImpl

    family = importlib.import_module(f"{pack.__name__}.depth_core.models.depth_anything_v2")
    folder = tmp_path / "models"
    folder.mkdir()
    torch.save(family.build(family.SMALL).state_dict(), folder / "depth_anything_v2_vits.pth")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "depth", ([str(folder)], {".pth"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    model = pack.nodes.depth_estimate.LoadDepthModel.execute(model="depth_anything_v2_vits.pth", device="cpu",
                                                             precision="auto").result[0]
    video_path, depth_path = clip_with_depth(tmp_path / "clip", count=6)
    video = InputImpl.VideoFromFile(str(video_path))
    result = run(pack, video=video, depth_model=model, format="anaglyph")
    assert result.get_stream_source().endswith("_Anaglyph_RedCyan.mp4")
    assert frames_of(result.get_stream_source()).shape == (6, 32, 48, 3)
    # 360-tb: a 2:1 video gets panorama depth per frame (the converter refuses a network not in panorama mode);
    # any other shape is refused.
    from convert_clips import write_clip_with_audio
    from video_clips import pan_frames

    panorama = write_clip_with_audio(tmp_path / "pano.mp4", pan_frames(2, 32, 64), audio=False)
    result = run(pack, video=InputImpl.VideoFromFile(str(panorama)), depth_model=model, format="360-tb")
    assert result.get_stream_source().endswith("_360_TB.mp4")
    assert frames_of(result.get_stream_source()).shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match=r"48x32 \(1.50:1\).*2:1"):
        run(pack, video=video, depth_model=model, format="360-tb")
    with pytest.raises(ValueError, match="either a depth_model"):
        run(pack, video=video, format="full-sbs")
    with pytest.raises(ValueError, match="either a depth_model"):
        run(pack, video=video, depth_model=model, depth_video=InputImpl.VideoFromFile(str(depth_path)),
            format="full-sbs")
    short = tmp_path / "short"
    short.mkdir()
    from convert_clips import write_depth_video

    write_depth_video(short / "d.mkv", ramp_depth_codes(3, 32, 48))
    with pytest.raises(ValueError, match="3 frames, fewer than the 6"):
        run(pack, video=video, depth_video=InputImpl.VideoFromFile(str(short / "d.mkv")), format="full-sbs")
