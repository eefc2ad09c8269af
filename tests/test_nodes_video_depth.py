"""DepthToolkit.VideoDepth and DepthEstimate with Video Depth Anything inside real ComfyUI (skipped without
COMFYUI_PATH)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_video_depth import one_thread, vda_state_dict  # noqa: F401  (one_thread: autouse fixture)
from video_clips import pan_frames, write_clip

SETTINGS = {"mode": "windows", "resolution": "custom", "custom_resolution": 28, "stabilize": True,
            "stabilize_window": 8, "scene_cut_threshold": 0.3, "output_frames": False,
            "filename_prefix": "video_depth/test"}


@pytest.fixture()
def vda_model(pack, tmp_path, monkeypatch):
    import folder_paths

    folder = tmp_path / "depth"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "depth", ([str(folder)], {".pth"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    torch.save(vda_state_dict(), folder / "video_depth_anything_vits.pth")
    loader = pack.nodes.depth_estimate.LoadDepthModel
    return loader.execute(model="video_depth_anything_vits.pth", device="cpu", precision="auto").result[0]


@pytest.fixture()
def clip(tmp_path):
    return write_clip(tmp_path / "clip.mp4", pan_frames(25, 48, 64), fps=12)


def run(pack, video, model, **options):
    return pack.nodes.video_depth.VideoDepth.execute(video=video, depth_model=model, **(SETTINGS | options))


def test_schema_has_tooltips_everywhere(pack):
    schema = pack.nodes.video_depth.VideoDepth.define_schema()
    assert schema.node_id == "DepthToolkit.VideoDepth" and schema.is_output_node
    for socket in schema.inputs + schema.outputs:
        assert socket.tooltip, f"{socket.id} has no tooltip"
    assert [i.id for i in schema.inputs][2:] == list(SETTINGS)


def test_video_in_file_backed_video_and_lossless_depth_out(pack, vda_model, clip, comfy_output_dir):
    from comfy_api.latest import InputImpl
    from comfy_execution.graph_utils import ExecutionBlocker

    video, depth_file, depth, picture = run(pack, InputImpl.VideoFromFile(str(clip)), vda_model).result
    assert depth_file.endswith("_depth.mkv") and depth_file.startswith(str(comfy_output_dir))
    assert isinstance(depth, ExecutionBlocker) and isinstance(picture, ExecutionBlocker)
    assert video.get_dimensions() == (64, 48) and video.get_frame_count() == 25
    io_module = pack.depth_core.video_io
    codes = np.concatenate(list(io_module.iter_depth_video(depth_file)))
    assert codes.shape == (25, 48, 64) and codes.dtype == np.uint16 and codes.std() > 0
    assert io_module.video_metadata(depth_file)["depth_kind"] == "relative_inverse"
    assert sorted(p.suffix for p in (comfy_output_dir / "video_depth").iterdir()) == [".mkv", ".mp4"]

    _, _, depth, picture = run(pack, InputImpl.VideoFromFile(str(clip)), vda_model, output_frames=True).result
    assert depth.values.shape == (25, 48, 64) and picture.shape == (25, 48, 64, 3)
    # The streamed video depth equals DepthEstimate on the same frames as an IMAGE batch (a video model treats
    # the batch as a clip).
    frames = InputImpl.VideoFromFile(str(clip)).get_components().images
    estimated = pack.nodes.depth_estimate.DepthEstimate.execute(
        images=frames, depth_model=vda_model, resolution="custom", custom_resolution=28,
        normalize="whole batch").result[0]
    torch.testing.assert_close(estimated.values, depth.values, rtol=1e-4, atol=1e-4 * float(depth.values.max()))


def test_in_memory_video_and_interrupt_leave_no_half_written_files(pack, vda_model, comfy_output_dir):
    import comfy.model_management
    from comfy_api.latest import InputImpl, Types

    frames = torch.from_numpy(pan_frames(6, 32, 48)).float() / 255
    video = InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, audio=None, frame_rate=12))
    result = run(pack, video, vda_model, mode="streaming", output_frames=True).result
    assert result[2].values.shape == (6, 32, 48)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(pack, video, vda_model, filename_prefix="video_depth/stopped")
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert not [p for p in (comfy_output_dir / "video_depth").iterdir() if "stopped" in p.name]


def test_bad_video_is_a_clear_error(pack, vda_model, tmp_path, comfy_output_dir):
    from comfy_api.latest import InputImpl

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match="cannot be opened"):
        run(pack, InputImpl.VideoFromFile(str(broken)), vda_model)
    assert not list(comfy_output_dir.rglob("*.m*"))
