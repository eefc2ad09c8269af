"""depth_core.mesh: geometry, cuts, UVs, orientation, files, bad input."""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest
import torch

import depth_core.mesh as mesh_module
from depth_core.camera import DEFAULT_FOV_DEGREES, Pinhole, equirectangular_directions
from depth_core.depth import Depth, DepthKind
from depth_core.mesh import depth_to_mesh, grid_size, save_mesh

trimesh = pytest.importorskip("trimesh")


def metric(values: torch.Tensor) -> Depth:
    return Depth(values.float()[None], DepthKind.METRIC)


def relative(values: torch.Tensor) -> Depth:
    return Depth(values.float()[None], DepthKind.RELATIVE_INVERSE)


def pixel_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")


def face_normals(mesh) -> torch.Tensor:
    corners = mesh.vertices[mesh.faces]
    normals = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=1)
    return normals / normals.norm(dim=1, keepdim=True)


def gradient_image(height: int, width: int) -> torch.Tensor:
    rows, cols = pixel_grid(height, width)
    return torch.stack([cols / max(width - 1, 1), rows / max(height - 1, 1), 0.5 * torch.ones_like(rows)], dim=-1)


# --- geometry -----------------------------------------------------------------------------------------------------


def test_fronto_parallel_plane_counts_and_normals():
    height, width = 4, 5
    mesh = depth_to_mesh(gradient_image(height, width), metric(torch.full((height, width), 2.0)), resolution=0)
    assert mesh.vertex_count == height * width
    assert mesh.face_count == 2 * (height - 1) * (width - 1)
    assert torch.allclose(mesh.vertices[:, 2], torch.full((height * width,), -2.0))
    # Every triangle faces the camera (+Z, towards the origin from z = -2).
    assert torch.allclose(face_normals(mesh), torch.tensor([0.0, 0.0, 1.0]).expand(mesh.face_count, 3), atol=1e-6)


def test_relative_depth_affine_in_pixels_gives_one_tilted_plane():
    height, width = 9, 12
    rows, cols = pixel_grid(height, width)
    disparity = 1.0 + 0.05 * cols + 0.02 * rows  # affine inverse depth = a plane in 3D
    mesh = depth_to_mesh(gradient_image(height, width), relative(disparity), near=1.0, far=4.0, resolution=0,
                         discontinuity_threshold=0)
    centred = mesh.vertices.double() - mesh.vertices.double().mean(0)
    singular = torch.linalg.svdvals(centred)
    assert singular[2] / singular[0] < 1e-5, "vertices are not coplanar"
    normals = face_normals(mesh).double()
    assert torch.allclose(normals, normals[0].expand_as(normals), atol=1e-4)
    assert normals[0][2] > 0.5  # faces the camera
    assert float(normals[0][0]) != pytest.approx(0.0, abs=1e-3)  # and is really tilted
    distances = -mesh.vertices[:, 2]
    assert float(distances.min()) == pytest.approx(1.0, rel=1e-4)
    assert float(distances.max()) == pytest.approx(4.0, rel=1e-4)


def test_blender_orientation_y_up_scene_at_negative_z():
    height, width = 6, 8
    mesh = depth_to_mesh(gradient_image(height, width), metric(torch.full((height, width), 3.0)), resolution=0)
    grid = mesh.vertices.view(height, width, 3)
    assert bool((grid[0, :, 1] > grid[-1, :, 1]).all()), "top image row must have the larger Y"
    assert bool((grid[:, 0, 0] < grid[:, -1, 0]).all()), "left image column must have the smaller X"
    assert bool((mesh.vertices[:, 2] < 0).all()), "the scene must lie in front of the camera, at negative Z"
    # The field of view is the horizontal one: the outer pixel centres sit at +-(W-1)/W of the half-width.
    half_width = 3.0 * math.tan(math.radians(DEFAULT_FOV_DEGREES) / 2)
    assert float(grid[0, -1, 0]) == pytest.approx(half_width * (width - 1) / width, rel=1e-5)


def test_full_resolution_vertices_match_pinhole_unproject():
    height, width = 5, 7
    distances = torch.rand(height, width) + 1.0
    mesh = depth_to_mesh(gradient_image(height, width), metric(distances), fov_degrees=70.0, resolution=0,
                         discontinuity_threshold=0)
    expected = Pinhole.from_fov(width, height, 70.0).unproject(distances).reshape(-1, 3)
    assert torch.allclose(mesh.vertices, expected, atol=1e-6)


def test_uvs_map_each_vertex_to_its_pixel_with_decimation():
    height, width = 11, 17
    image = torch.rand(height, width, 3)
    distances = 1.0 + torch.rand(height, width)
    mesh = depth_to_mesh(image, metric(distances), resolution=6, discontinuity_threshold=0)
    assert (mesh.vertex_count, mesh.face_count) == (4 * 6, 2 * 3 * 5)
    pixel = mesh.uvs * torch.tensor([width, height]) - 0.5
    assert torch.allclose(pixel, pixel.round(), atol=1e-4), "UVs must sit on pixel centres"
    columns, rows = pixel.round().long().unbind(1)
    assert columns.min() == 0 and columns.max() == width - 1 and rows.min() == 0 and rows.max() == height - 1
    assert torch.allclose(mesh.vertex_colors, image[rows, columns])
    # Projecting a vertex through the camera lands on the pixel its UV names, at that pixel's distance.
    camera = Pinhole.from_fov(width, height)
    assert torch.allclose(camera.project(mesh.vertices), mesh.uvs * torch.tensor([width, height]), atol=1e-3)
    assert torch.allclose(-mesh.vertices[:, 2], distances[rows, columns], atol=1e-6)


def test_grid_size_caps_the_longer_side():
    assert grid_size(3000, 4000, 1024) == (768, 1024)
    assert grid_size(4000, 3000, 1024) == (1024, 768)
    assert grid_size(600, 800, 1024) == (600, 800)
    assert grid_size(600, 800, 0) == (600, 800)
    with pytest.raises(ValueError, match="at least 2"):
        grid_size(600, 800, 1)


# --- discontinuities ---------------------------------------------------------------------------------------------


def step_depth(height: int = 5, width: int = 6, near: float = 1.0, far: float = 2.0) -> torch.Tensor:
    distances = torch.full((height, width), far)
    distances[:, : width // 2] = near
    return distances


@pytest.mark.parametrize("threshold", [0.3, 0.69])
def test_step_edge_is_cut_above_the_threshold(threshold):
    height, width = 5, 6
    mesh = depth_to_mesh(gradient_image(height, width), metric(step_depth(height, width)), resolution=0,
                         discontinuity_threshold=threshold)  # the step is log(2) = 0.693
    full = 2 * (height - 1) * (width - 1)
    assert mesh.face_count == full - 2 * (height - 1)
    corner_z = mesh.vertices[mesh.faces][..., 2]
    assert bool((corner_z.amax(1) - corner_z.amin(1) < 1e-6).all()), "a kept triangle still spans the step"
    assert mesh.vertex_count == height * width  # every vertex is still used by one side


@pytest.mark.parametrize("threshold", [0.0, 0.7, 2.0])
def test_step_edge_is_kept_at_or_below_the_threshold(threshold):
    height, width = 5, 6
    mesh = depth_to_mesh(gradient_image(height, width), metric(step_depth(height, width)), resolution=0,
                         discontinuity_threshold=threshold)
    assert mesh.face_count == 2 * (height - 1) * (width - 1)


def test_keep_background_rebuilds_cut_triangles_behind_the_foreground():
    height, width = 5, 6
    mesh = depth_to_mesh(gradient_image(height, width), metric(step_depth(height, width)), resolution=0,
                         discontinuity_threshold=0.3, keep_background=True)
    assert mesh.face_count == 2 * (height - 1) * (width - 1)
    assert mesh.vertex_count == height * width + height  # one background copy per foreground edge vertex
    copies = torch.arange(height * width, mesh.vertex_count)
    assert torch.allclose(mesh.vertices[copies, 2], torch.full((height,), -2.0))
    rebuilt = torch.isin(mesh.faces, copies).any(1)
    assert int(rebuilt.sum()) == 2 * (height - 1)
    assert torch.allclose(mesh.vertices[mesh.faces[rebuilt]][..., 2], torch.tensor(-2.0))
    # The foreground keeps its own vertices at 1 m.
    assert int((mesh.vertices[:, 2] == -1.0).sum()) == height * (width // 2)


def test_threshold_removing_every_triangle_says_to_raise_it():
    height, width = 6, 6
    rows, cols = pixel_grid(height, width)
    distances = torch.exp(0.5 * (rows + cols))  # every neighbour step is a big jump
    with pytest.raises(ValueError, match="removed every triangle.*[Rr]aise"):
        depth_to_mesh(gradient_image(height, width), metric(distances), resolution=0, discontinuity_threshold=0.1)


# --- panoramas ---------------------------------------------------------------------------------------------------


def test_equirectangular_maps_onto_a_sphere_of_the_depth_radius():
    height, width = 8, 16
    mesh = depth_to_mesh(gradient_image(height, width), metric(torch.full((height, width), 3.0)),
                         projection="equirectangular", resolution=0)
    assert torch.allclose(mesh.vertices.norm(dim=1), torch.full((mesh.vertex_count,), 3.0), atol=1e-5)
    # The 360 degree seam is closed with one duplicated column: 2 triangles per cell all the way around, and one
    # more per column in each pole's cap (with its own copy of the pole vertex).
    assert mesh.vertex_count == height * (width + 1) + 2 * width
    assert mesh.face_count == 2 * (height - 1) * width + 2 * width
    grid = mesh.vertices[:height * (width + 1)].view(height, width + 1, 3)
    assert torch.allclose(grid[:, 0], grid[:, -1])
    assert float(mesh.uvs[:, 0].max()) == 1.0
    assert bool((grid[0, :, 1] > 2.9).all()) and bool((grid[-1, :, 1] < -2.9).all()), "top row = up (+Y)"
    expected = 3.0 * equirectangular_directions(width, height)
    assert torch.allclose(grid[:, :width], expected, atol=1e-5)
    # The image centre looks down -Z, like the perspective camera.
    centre = grid[height // 2, width // 2]
    assert float(centre[2]) < -2.5


def test_equirectangular_sphere_is_closed_at_the_seam_and_the_poles():
    height, width = 16, 32
    mesh = depth_to_mesh(gradient_image(height, width), metric(torch.full((height, width), 2.0)),
                         projection="equirectangular", resolution=0)
    closed = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=True)   # merges the seam copies
    assert closed.is_watertight
    assert abs(closed.volume) == pytest.approx(4.0 / 3.0 * math.pi * 2.0 ** 3, rel=0.03)
    # Every triangle faces the centre, like the grid's (counter-clockwise seen from the camera).
    centres = mesh.vertices[mesh.faces].mean(1)
    assert bool(((face_normals(mesh) * centres).sum(1) < 0).all())
    poles = mesh.vertices[height * (width + 1):]
    assert torch.allclose(poles[:width], torch.tensor([0.0, 2.0, 0.0]).expand(width, 3))
    assert torch.allclose(poles[width:], torch.tensor([0.0, -2.0, 0.0]).expand(width, 3))


def test_equirectangular_relative_depth_radius_between_near_and_far():
    height, width = 8, 16
    rows, cols = pixel_grid(height, width)
    disparity = 1.0 + torch.sin(cols / width * 2 * math.pi) ** 2
    mesh = depth_to_mesh(gradient_image(height, width), relative(disparity), projection="equirectangular",
                         near=2.0, far=5.0, resolution=0, discontinuity_threshold=0)
    radius = mesh.vertices.norm(dim=1)
    assert float(radius.min()) == pytest.approx(2.0, rel=1e-4)
    assert float(radius.max()) == pytest.approx(5.0, rel=1e-4)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_constant_relative_depth_is_a_plane_at_far():
    mesh = depth_to_mesh(gradient_image(4, 4), relative(torch.full((4, 4), 0.7)), near=1.0, far=6.0, resolution=0)
    assert mesh.face_count == 18
    assert torch.allclose(mesh.vertices[:, 2], torch.tensor(-6.0))


def test_nan_depth_is_filled_and_all_nan_is_a_clear_error():
    distances = torch.full((6, 6), 2.0)
    distances[2, 3] = float("nan")
    distances[0, 0] = float("inf")
    mesh = depth_to_mesh(gradient_image(6, 6), metric(distances), resolution=0)
    assert bool(torch.isfinite(mesh.vertices).all())
    assert 0 < mesh.face_count <= 50
    with pytest.raises(ValueError, match="no finite value"):
        depth_to_mesh(gradient_image(6, 6), metric(torch.full((6, 6), float("nan"))))


def test_one_pixel_image_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2x2"):
        depth_to_mesh(torch.rand(1, 1, 3), relative(torch.rand(1, 1)))


def test_depth_of_another_size_is_resized_to_the_image():
    mesh = depth_to_mesh(torch.rand(8, 10, 3), metric(torch.full((3, 4), 2.5)), resolution=0)
    assert mesh.vertex_count == 80
    assert torch.allclose(mesh.vertices[:, 2], torch.tensor(-2.5))


@pytest.mark.parametrize("depth_size", [(5, 6), (30, 44)])
def test_sampling_a_depth_of_another_size_equals_resizing_it_first(depth_size):
    from depth_core.depth import match_depth_to_images

    torch.manual_seed(3)
    depth = metric(1.0 + torch.rand(depth_size))
    image = torch.rand(12, 16, 3)
    resized = match_depth_to_images(depth, 1, (12, 16))
    for resolution in (0, 7):
        direct = depth_to_mesh(image, depth, resolution=resolution, discontinuity_threshold=0)
        reference = depth_to_mesh(image, resized, resolution=resolution, discontinuity_threshold=0)
        assert torch.allclose(direct.vertices, reference.vertices, atol=1e-5)


def test_depth_batch_and_bad_options_are_clear_errors():
    two = Depth(torch.rand(2, 4, 4), DepthKind.RELATIVE_INVERSE)
    with pytest.raises(ValueError, match="one depth map"):
        depth_to_mesh(torch.rand(4, 4, 3), two)
    with pytest.raises(ValueError, match="projection"):
        depth_to_mesh(torch.rand(4, 4, 3), relative(torch.rand(4, 4)), projection="fisheye")
    with pytest.raises(ValueError, match="near < far"):
        depth_to_mesh(torch.rand(4, 4, 3), relative(torch.rand(4, 4)), near=5.0, far=1.0)


@pytest.mark.parametrize("channels", [1, 4])
def test_gray_and_rgba_images_become_rgb_textures(channels):
    mesh = depth_to_mesh(torch.rand(4, 5, channels), metric(torch.full((4, 5), 1.0)), resolution=0)
    assert mesh.texture.shape == (4, 5, 3)
    assert mesh.vertex_colors.shape == (20, 3)


# --- quadric simplification --------------------------------------------------------------------------------------


def test_quadric_simplification_keeps_uvs_on_the_projection():
    pytest.importorskip("fast_simplification")
    height, width = 40, 60
    rows, cols = pixel_grid(height, width)
    disparity = 1.0 + torch.sin(cols / 9.0) * torch.cos(rows / 7.0) * 0.3
    image = gradient_image(height, width)
    mesh = depth_to_mesh(image, relative(disparity), resolution=0, simplify_to_faces=1500)
    assert 0 < mesh.face_count <= 1600
    camera = Pinhole.from_fov(width, height)
    assert torch.allclose(camera.project(mesh.vertices), mesh.uvs * torch.tensor([width, height]), atol=1e-2)
    assert bool(((mesh.uvs >= 0) & (mesh.uvs <= 1)).all())


def test_simplification_without_the_package_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fast_simplification(name, *args, **kwargs):
        if name == "fast_simplification":
            raise ImportError("No module named 'fast_simplification'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fast_simplification)
    with pytest.raises(ValueError, match="fast-simplification"):
        depth_to_mesh(gradient_image(10, 10), relative(torch.rand(10, 10)), resolution=0,
                      discontinuity_threshold=0, simplify_to_faces=20)


# --- files -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_mesh():
    height, width = 7, 9
    rows, cols = pixel_grid(height, width)
    distances = 2.0 + 0.1 * cols + 0.05 * rows
    distances[:, 6:] = 6.0  # a step that gets cut, so the mesh is not a full grid
    return depth_to_mesh(torch.rand(height, width, 3), metric(distances), resolution=0)


def load(path: str):
    return trimesh.load(path, force="mesh", process=False)


def test_glb_reloads_with_geometry_uvs_and_texture(small_mesh, tmp_path):
    paths = save_mesh(small_mesh, tmp_path / "scene.glb")
    assert paths == [str(tmp_path / "scene.glb")]
    loaded = load(paths[0])
    np.testing.assert_allclose(loaded.vertices, small_mesh.vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, small_mesh.faces.numpy())
    uvs = small_mesh.uvs.numpy()
    np.testing.assert_allclose(loaded.visual.uv, np.c_[uvs[:, 0], 1 - uvs[:, 1]], atol=1e-6)
    texture = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    assert texture.shape == (7, 9, 3)
    np.testing.assert_allclose(texture / 255.0, small_mesh.texture.numpy(), atol=1 / 255 + 1e-6)


def test_glb_texcoords_follow_the_gltf_convention(small_mesh, tmp_path):
    """Read the raw GLB: TEXCOORD_0 must have its origin at the image's top-left, as glTF viewers expect."""
    path = save_mesh(small_mesh, tmp_path / "raw.glb")[0]
    data = open(path, "rb").read()
    json_length = struct.unpack_from("<I", data, 12)[0]
    tree = json.loads(data[20: 20 + json_length])
    binary = data[20 + json_length + 8:]
    primitive = tree["meshes"][0]["primitives"][0]
    accessor = tree["accessors"][primitive["attributes"]["TEXCOORD_0"]]
    view = tree["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    texcoords = np.frombuffer(binary, np.float32, accessor["count"] * 2, start).reshape(-1, 2)
    np.testing.assert_allclose(texcoords, small_mesh.uvs.numpy(), atol=1e-6)
    assert tree["images"][0]["mimeType"] == "image/png"
    assert tree["materials"][0]["pbrMetallicRoughness"].get("baseColorFactor", [1, 1, 1, 1]) == [1, 1, 1, 1]


def test_obj_writes_obj_mtl_png_that_reload(small_mesh, tmp_path):
    paths = save_mesh(small_mesh, tmp_path / "scene.obj")
    assert sorted(os.path.basename(p) for p in paths) == ["scene.mtl", "scene.obj", "scene.png"]
    assert "map_Kd scene.png" in (tmp_path / "scene.mtl").read_text()
    assert "Kd 1.0" in (tmp_path / "scene.mtl").read_text()
    loaded = load(paths[0])
    np.testing.assert_allclose(loaded.vertices, small_mesh.vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, small_mesh.faces.numpy())
    uvs = small_mesh.uvs.numpy()
    np.testing.assert_allclose(loaded.visual.uv, np.c_[uvs[:, 0], 1 - uvs[:, 1]], atol=1e-6)
    assert loaded.visual.material.image.size == (9, 7)


def test_ply_reloads_with_vertex_colours(small_mesh, tmp_path):
    path = save_mesh(small_mesh, tmp_path / "scene.ply")[0]
    loaded = load(path)
    np.testing.assert_allclose(loaded.vertices, small_mesh.vertices.numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, small_mesh.faces.numpy())
    expected = np.round(small_mesh.vertex_colors.numpy() * 255)
    np.testing.assert_allclose(loaded.visual.vertex_colors[:, :3], expected, atol=1)


def test_written_files_are_readable_by_others(small_mesh, tmp_path):
    path = save_mesh(small_mesh, tmp_path / "mode.glb")[0]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_missing_target_folder_is_a_clear_error_and_writes_nothing(small_mesh, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        save_mesh(small_mesh, blocker / "scene.glb")
    assert sorted(os.listdir(tmp_path)) == ["not_a_folder"]


def test_failure_while_renaming_leaves_no_file_behind(small_mesh, tmp_path, monkeypatch):
    real_replace = os.replace
    calls = []

    def failing_replace(source, target):
        calls.append(target)
        if len(calls) == 2:  # the .obj is in place, the texture fails
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(mesh_module.os, "replace", failing_replace)
    with pytest.raises(ValueError, match="No space left"):
        save_mesh(small_mesh, tmp_path / "scene.obj")
    assert os.listdir(tmp_path) == []


def test_failure_while_encoding_leaves_no_file_behind(small_mesh, tmp_path, monkeypatch):
    def broken_encoder(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(mesh_module, "mesh_file_contents", broken_encoder)
    with pytest.raises(RuntimeError):
        save_mesh(small_mesh, tmp_path / "scene.glb")
    assert os.listdir(tmp_path) == []


def test_unknown_format_is_a_clear_error(small_mesh, tmp_path):
    with pytest.raises(ValueError, match="glb, obj, ply"):
        save_mesh(small_mesh, tmp_path / "scene.fbx")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_mesh():
    torch.manual_seed(4)
    image, distances = torch.rand(20, 30, 3), 1.0 + torch.rand(20, 30)
    distances[:, 15:] += 3.0
    options = {"resolution": 12, "keep_background": True}
    on_cpu = depth_to_mesh(image, metric(distances), **options)
    on_gpu = depth_to_mesh(image, metric(distances), device="cuda", **options)
    assert on_gpu.vertices.device.type == "cpu"
    assert torch.allclose(on_cpu.vertices, on_gpu.vertices, atol=1e-5)
    assert torch.equal(on_cpu.faces, on_gpu.faces)
