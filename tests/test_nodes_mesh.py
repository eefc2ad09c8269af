"""DepthToolkit.MeshExport inside real ComfyUI (skipped without COMFYUI_PATH)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")

SETTINGS = {
    "format": "glb", "projection": "perspective", "fov": 55.0, "near": 1.0, "far": 10.0,
    "discontinuity_threshold": 0.15, "keep_background": False, "resolution": 1024, "simplify_to_faces": 0,
    "filename_prefix": "3d/depth_mesh",
}


def export(pack, image, depth, **options):
    return pack.nodes.mesh.MeshExport.execute(image=image, depth=depth, **(SETTINGS | options))


def smooth_depth_picture(batch: int, height: int, width: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    near_is_white = 0.3 + 0.5 * rows + 0.2 * cols
    return near_is_white[None, ..., None].expand(batch, height, width, 3).contiguous()


def files_in(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_schema_has_tooltips_everywhere(pack):
    schema = pack.nodes.mesh.MeshExport.define_schema()
    assert schema.node_id == "DepthToolkit.MeshExport" and schema.is_output_node
    assert schema.display_name and schema.description
    for socket in schema.inputs + schema.outputs:
        assert socket.tooltip, f"{socket.id} has no tooltip"
    assert [i.id for i in schema.inputs][2:] == list(SETTINGS)


def test_batch_writes_one_glb_per_item_and_a_mesh_batch(pack, comfy_output_dir):
    torch.manual_seed(0)
    images = torch.rand(2, 12, 16, 3)
    # One smaller depth picture for both images; a shallow scene so the smooth slope is not cut.
    output = export(pack, images, smooth_depth_picture(1, 6, 8), far=2.0)
    model_file, mesh = output.result
    assert model_file == "3d/depth_mesh_00001_.glb"
    assert files_in(comfy_output_dir) == ["3d/depth_mesh_00001_.glb", "3d/depth_mesh_00002_.glb"]
    assert output.ui == {"3d": [
        {"filename": "depth_mesh_00001_.glb", "subfolder": "3d", "type": "output"},
        {"filename": "depth_mesh_00002_.glb", "subfolder": "3d", "type": "output"},
    ], "text": ["Mesh Export: field of view 55° (set on the node)"]}
    assert mesh.vertices.shape == (2, 12 * 16, 3) and mesh.faces.shape == (2, 2 * 11 * 15, 3)
    loaded = trimesh.load(comfy_output_dir / model_file, force="mesh", process=False)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, mesh.faces[0].numpy())
    texture = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB")) / 255.0
    np.testing.assert_allclose(texture, images[0].numpy(), atol=1 / 255 + 1e-6)
    # A second run counts on instead of overwriting.
    again = export(pack, images[:1], smooth_depth_picture(1, 6, 8), far=2.0).result[0]
    assert again == "3d/depth_mesh_00003_.glb"


def test_metric_depth_keeps_metres_and_orientation(pack, comfy_output_dir):
    Depth = pack.depth_core.depth.Depth
    metres = torch.full((1, 10, 10), 4.0)
    _, mesh = export(pack, torch.rand(1, 10, 10, 3), Depth(metres, "metric"), near=0.5, far=1.0).result
    vertices = mesh.vertices[0].view(10, 10, 3)
    assert torch.allclose(vertices[..., 2], torch.tensor(-4.0))
    assert bool((vertices[0, :, 1] > vertices[-1, :, 1]).all())


def test_uneven_batch_is_padded_with_unused_vertices_and_degenerate_faces(pack, comfy_output_dir):
    Depth = pack.depth_core.depth.Depth
    metres = torch.full((2, 6, 6), 2.0)
    metres[1, :, 3:] = 8.0  # the second item's step is cut, so it has fewer faces
    _, mesh = export(pack, torch.rand(2, 6, 6, 3), Depth(metres, "metric")).result
    full, cut = 2 * 5 * 5, 2 * 5 * 5 - 2 * 5
    assert mesh.faces.shape == (2, full, 3)
    assert bool((mesh.faces[1, cut:] == 0).all())
    counts = getattr(mesh, "face_counts", None)
    if counts is not None:  # cores newer than v0.8.0 carry the real lengths
        assert counts.tolist() == [full, cut]


@pytest.mark.parametrize("format, written", [
    ("obj", ["3d/depth_mesh_00001_.mtl", "3d/depth_mesh_00001_.obj", "3d/depth_mesh_00001_.png"]),
    ("ply", ["3d/depth_mesh_00001_.ply"]),
])
def test_obj_and_ply_files(pack, comfy_output_dir, format, written):
    model_file, _ = export(pack, torch.rand(1, 8, 8, 3), smooth_depth_picture(1, 8, 8), format=format,
                           far=2.0).result
    assert files_in(comfy_output_dir) == written
    loaded = trimesh.load(comfy_output_dir / model_file, force="mesh", process=False)
    assert len(loaded.vertices) == 64 and len(loaded.faces) == 2 * 7 * 7


def test_panorama_is_a_sphere(pack, comfy_output_dir):
    Depth = pack.depth_core.depth.Depth
    _, mesh = export(pack, torch.rand(1, 8, 16, 3), Depth(torch.full((1, 8, 16), 5.0), "metric"),
                     projection="equirectangular").result
    assert torch.allclose(mesh.vertices[0].norm(dim=-1), torch.tensor(5.0), atol=1e-4)


def test_threshold_that_removes_everything_says_raise_it_and_writes_nothing(pack, comfy_output_dir):
    Depth = pack.depth_core.depth.Depth
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    jumps = torch.exp(0.5 * (rows + cols))[None]
    with pytest.raises(ValueError, match="[Rr]aise it"):
        export(pack, torch.rand(2, 6, 6, 3), Depth(jumps.expand(2, 6, 6), "metric"), discontinuity_threshold=0.1)
    assert files_in(comfy_output_dir) == []


def test_bad_inputs_are_clear_errors(pack, comfy_output_dir):
    with pytest.raises(ValueError, match="at least 2x2"):
        export(pack, torch.rand(1, 1, 1, 3), torch.rand(1, 1, 1, 3))
    with pytest.raises(ValueError, match="depth maps for 3 images"):
        export(pack, torch.rand(3, 6, 6, 3), torch.rand(2, 6, 6, 3))
    with pytest.raises(ValueError, match="empty"):
        export(pack, torch.rand(0, 6, 6, 3), torch.rand(1, 6, 6, 3))
    assert files_in(comfy_output_dir) == []


def test_unwritable_target_folder_is_a_clear_error(pack, comfy_output_dir):
    (comfy_output_dir / "3d").write_text("a file where the folder should be")
    with pytest.raises(ValueError, match="filename_prefix"):
        export(pack, torch.rand(1, 6, 6, 3), smooth_depth_picture(1, 6, 6))
    assert files_in(comfy_output_dir) == ["3d"]


def test_failed_write_leaves_no_partial_file(pack, comfy_output_dir, monkeypatch):
    mesh_module = pack.depth_core.mesh

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mesh_module.os, "replace", full_disk)
    with pytest.raises(ValueError, match="No space left"):
        export(pack, torch.rand(1, 6, 6, 3), smooth_depth_picture(1, 6, 6))
    assert files_in(comfy_output_dir) == []


def test_core_preview3d_and_saveglb_accept_the_outputs(pack, comfy_output_dir, monkeypatch):
    from comfy.cli_args import args
    from comfy_extras.nodes_hunyuan3d import SaveGLB
    from comfy_extras.nodes_load_3d import Preview3D

    model_file, mesh = export(pack, torch.rand(1, 8, 10, 3), smooth_depth_picture(1, 8, 10), far=2.0).result
    preview = Preview3D.execute(model_file=model_file)
    assert preview.ui.as_dict()["result"][0] == model_file
    assert os.path.isfile(comfy_output_dir / model_file)  # the viewer loads model_file from the output folder
    monkeypatch.setattr(args, "disable_metadata", True)  # no prompt to embed outside a running server
    saved = SaveGLB.execute(mesh=mesh, filename_prefix="3d/core_copy").ui["3d"][0]
    core_copy = trimesh.load(comfy_output_dir / saved["subfolder"] / saved["filename"], force="mesh", process=False)
    assert len(core_copy.vertices) == 80 and len(core_copy.faces) == 2 * 7 * 9
