"""Panorama mode of DepthEstimate and the Stereo360 node in real ComfyUI (skipped without COMFYUI_PATH)."""
from __future__ import annotations

import pytest
import torch

from panorama_scene import render_room
from test_nodes_depth import estimate, model_folders, small_model  # noqa: F401  (fixtures shared with those tests)

ODS = dict(divergence=0.75, depth_exponent=1.0, depth_mode="auto", ipd_mm=65.0, pole_merge_degrees=60.0,
           fill="background", normalize="per image")


def test_schema_has_tooltips_everywhere(pack):
    for node in (pack.nodes.panorama.Stereo360, pack.nodes.depth_estimate.DepthEstimate):
        schema = node.define_schema()
        assert schema.node_id.startswith("DepthToolkit.") and schema.description
        for socket in list(schema.inputs) + list(schema.outputs):
            assert socket.tooltip, f"{schema.node_id}.{socket.id} has no tooltip"


def test_depth_estimate_panorama_mode_is_seamless(pack, small_model):  # noqa: F811
    panorama, _ = render_room(112, 56)
    depth, picture = estimate(pack, small_model, panorama, custom_resolution=56, panorama="360° cube views")
    assert depth.values.shape == (1, 56, 112) and picture.shape == (1, 56, 112, 3)
    assert "360° panorama" in depth.source
    values = depth.values[0]
    # Even a random-weight network leaves no seam: the 360° border is inside the views, never between them.
    wrap_step = (values[:, 0] - values[:, -1]).abs().mean()
    inner_steps = (values[:, 1:] - values[:, :-1]).abs().mean(0)
    assert float(wrap_step) <= float(inner_steps.max())
    plain, _ = estimate(pack, small_model, panorama, custom_resolution=56)
    assert not torch.allclose(plain.values, depth.values), "panorama mode really is another path"


def test_depth_estimate_panorama_mode_refuses_a_photo_that_is_not_2_to_1(pack, small_model):  # noqa: F811
    with pytest.raises(ValueError, match="twice as wide.*Turn panorama mode off"):
        estimate(pack, small_model, torch.rand(1, 48, 64, 3), panorama="360° icosahedral views")


def test_stereo360_saves_top_bottom_with_the_vr_name(pack, comfy_output_dir):
    panorama, distance = render_room(96, 48)
    depth = pack.depth_core.depth.Depth(distance, "metric")
    output = pack.nodes.panorama.Stereo360.execute(images=panorama, depth=depth, filename_prefix="vr/room", **ODS)
    stereo, left, right = output.args
    assert stereo.shape == (1, 96, 96, 3) and left.shape == right.shape == (1, 48, 96, 3)
    torch.testing.assert_close(stereo[:, :48], left)
    torch.testing.assert_close(stereo[:, 48:], right)
    assert not torch.allclose(left, right)
    (entry,) = output.ui["images"]
    assert entry["type"] == "output" and entry["filename"].endswith("_360_TB.png")
    assert (comfy_output_dir / entry["subfolder"] / entry["filename"]).is_file()
    again = pack.nodes.panorama.Stereo360.execute(images=panorama, depth=depth, filename_prefix="vr/room", **ODS)
    assert again.ui["images"][0]["filename"] != entry["filename"], "ComfyUI's counter still counts"
    preview_only = pack.nodes.panorama.Stereo360.execute(images=panorama, depth=depth, filename_prefix="", **ODS)
    assert preview_only.ui["images"][0]["type"] == "temp"


def test_3d_photo_of_a_panorama_looks_around(pack, comfy_output_dir):
    panorama, distance = render_room(128, 64)
    depth = pack.depth_core.depth.Depth(distance, "metric")
    output = pack.nodes.photo3d.InpaintedMeshVideo.execute(
        image=panorama, depth=depth, path="circle", frames=2, fps=10.0, translate_x=0.02, translate_y=0.0,
        translate_z=0.0, crop=0.0, supersampling=1, fov=0.0, format="none", mesh_format="glb",
        filename_prefix="pano/room", panorama=True)
    frames, _, mesh_path, mesh = output.args
    assert frames.shape == (2, 36, 64, 3)      # 90° views of a 128 px wide panorama, 16:9
    assert not torch.allclose(frames[0], frames[1]), "the second frame looks the other way"
    assert mesh_path.endswith(".glb") and (comfy_output_dir / "pano").is_dir()
    assert mesh.vertices.shape[1] > 6 * 100
    with pytest.raises(ValueError, match="twice as wide"):
        pack.nodes.photo3d.InpaintedMeshVideo.execute(
            image=torch.rand(1, 40, 60, 3), depth=depth, path="circle", frames=2, fps=10.0, translate_x=0.02,
            translate_y=0.0, translate_z=0.0, crop=0.0, supersampling=1, fov=0.0, format="none", mesh_format="none",
            filename_prefix="pano/room", panorama=True)
