"""DepthToolkit.InpaintedMeshVideo inside real ComfyUI (skipped without COMFYUI_PATH)."""
from __future__ import annotations

import av
import pytest
import torch

SETTINGS = {
    "path": "circle", "frames": 4, "fps": 8.0, "translate_x": 0.04, "translate_y": 0.02, "translate_z": 0.05,
    "crop": 0.0, "supersampling": 2, "fov": 55.0, "format": "mp4", "mesh_format": "ply",
    "filename_prefix": "3d_photo/test", "edge_threshold": 0.1, "background_extension": 0.05, "panorama": False,
}


def run(pack, image, depth, **options):
    return pack.nodes.photo3d.InpaintedMeshVideo.execute(image=image, depth=depth, **(SETTINGS | options))


def step_depth(pack, height: int, width: int):
    values = torch.full((1, height, width), 4.0)
    values[:, :, width // 2:] = 1.5
    return pack.depth_core.depth.Depth(values, pack.depth_core.depth.DepthKind.METRIC, "test")


def files_in(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_schema_has_tooltips_everywhere(pack):
    schema = pack.nodes.photo3d.InpaintedMeshVideo.define_schema()
    assert schema.node_id == "DepthToolkit.InpaintedMeshVideo" and schema.is_output_node
    assert schema.display_name and schema.description and schema.category.startswith("Depth Toolkit/")
    for socket in schema.inputs + schema.outputs:
        assert socket.tooltip, f"{socket.id} has no tooltip"
    assert [i.id for i in schema.inputs][2:] == list(SETTINGS)
    assert [o.id for o in schema.outputs] == ["frames", "video", "mesh_path", "mesh"]


def test_frames_video_mesh_and_files(pack, comfy_output_dir):
    torch.manual_seed(0)
    image = torch.rand(1, 24, 36, 3)
    result = run(pack, image, step_depth(pack, 24, 36))
    frames, video, mesh_path, mesh = result.args
    assert frames.shape == (4, 24, 36, 3) and frames.min() >= 0 and frames.max() <= 1
    components = video.get_components()
    assert components.images.shape == (4, 24, 36, 3) and float(components.frame_rate) == 8.0
    assert mesh_path.endswith(".ply") and mesh_path.startswith(str(comfy_output_dir))
    assert open(mesh_path, "rb").read(40).startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert mesh.vertices.ndim == 3 and mesh.vertices.shape[0] == 1 and mesh.faces.shape[-1] == 3
    assert int(mesh.faces.max()) < mesh.vertices.shape[1]
    videos = [name for name in files_in(comfy_output_dir) if name.endswith(".mp4")]
    assert len(videos) == 1
    with av.open(str(comfy_output_dir / videos[0])) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (24, 36, 3)
    assert result.ui is not None
    # The first circle frame is a sideways view: the near half moved more than the far half, so it differs from
    # the photo, but only a little.
    difference = (frames[0] - image[0]).abs().mean()
    assert 0.005 < float(difference) < 0.35


def test_depth_picture_one_frame_and_no_files(pack, comfy_output_dir):
    image = torch.rand(1, 16, 16, 3)
    depth_picture = torch.linspace(0, 1, 16)[None, None, :, None].expand(1, 16, 16, 3)
    frames, video, mesh_path, mesh = run(pack, image, depth_picture, frames=1, format="none", mesh_format="none",
                                         path="straight line", translate_x=0.0, translate_y=0.0,
                                         translate_z=0.0, supersampling=1).args
    assert frames.shape == (1, 16, 16, 3)
    # No camera move and no supersampling: pixel centres hit the vertices, the frame is the photo itself.
    assert torch.allclose(frames[0], image[0], atol=2e-3)
    assert mesh_path == "" and files_in(comfy_output_dir) == []


def test_tiny_image_and_depth_of_another_size(pack, comfy_output_dir):
    image = torch.rand(1, 1, 1, 4)  # RGBA, one pixel
    frames = run(pack, image, torch.rand(1, 5, 5, 3), frames=2, format="webm", mesh_format="glb").args[0]
    assert frames.shape == (2, 1, 1, 3) and torch.isfinite(frames).all()


def test_interruption_mid_render_stops_and_leaves_no_video(pack, comfy_output_dir, monkeypatch):
    import comfy.model_management

    calls = {"count": 0}

    def interrupt_on_third_progress():
        calls["count"] += 1
        if calls["count"] >= 3:
            raise comfy.model_management.InterruptProcessingException()

    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted",
                        interrupt_on_third_progress)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run(pack, torch.rand(1, 16, 24, 3), step_depth(pack, 16, 24), frames=30)
    assert calls["count"] == 3
    assert files_in(comfy_output_dir) == []


def test_missing_codec_names_the_alternative(pack, comfy_output_dir, monkeypatch):
    monkeypatch.setattr(pack.depth_core.photo3d.video, "encoder_available", lambda name: False)
    with pytest.raises(ValueError, match="webm"):
        run(pack, torch.rand(1, 8, 8, 3), step_depth(pack, 8, 8), frames=2)
    assert [name for name in files_in(comfy_output_dir) if name.endswith(".mp4")] == []


def test_empty_batch_is_a_clear_error(pack, comfy_output_dir):
    with pytest.raises(ValueError, match="empty"):
        run(pack, torch.zeros(0, 8, 8, 3), step_depth(pack, 8, 8))


def test_interrupting_a_batch_leaves_none_of_its_files(pack, comfy_output_dir, monkeypatch):
    """The first image's mesh is finished when the second image is cancelled: it must not stay behind alone."""
    import comfy.model_management

    steps = {"count": 0}
    frames = 3

    def interrupt_in_the_second_image():
        steps["count"] += 1
        if steps["count"] > frames + 2:  # past the first image's layers and frames
            raise comfy.model_management.InterruptProcessingException()

    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted",
                        interrupt_in_the_second_image)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run(pack, torch.rand(2, 12, 16, 3), step_depth(pack, 12, 16), frames=frames, mesh_format="glb")
    assert files_in(comfy_output_dir) == []
    monkeypatch.undo()
    mesh_paths = run(pack, torch.rand(2, 12, 16, 3), step_depth(pack, 12, 16), frames=frames).args[2]
    assert len(mesh_paths.splitlines()) == 2
    assert sorted(files_in(comfy_output_dir)) == ["3d_photo/test_00001_.mp4", "3d_photo/test_00001_.ply",
                                                  "3d_photo/test_00002_.ply"]
