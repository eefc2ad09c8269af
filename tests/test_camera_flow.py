"""The camera flows: a field of view predicted by a model (or set once) travels with DEPTH, and the geometry nodes
use it unless their own fov is set, and say which one they used."""
from __future__ import annotations

import importlib
import math

import pytest
import torch
from small_networks import SMALL_DEPTH_PRO, small_depth_pro

from test_nodes_depth import model_folders  # noqa: F401  (fixture)

from depth_core.camera import DEFAULT_FOV_DEGREES, choose_fov
from depth_core.depth import Depth, DepthKind, match_depth_to_images


def test_depth_keeps_its_camera_through_batch_operations():
    depth = Depth(torch.rand(3, 4, 5) + 1, DepthKind.METRIC, "test", (50.0, 60.0, 70.0))
    assert depth.select(1).fov_degrees == (60.0,) and depth.select(1).values.shape == (1, 4, 5)
    assert depth.to("cpu").fov_degrees == depth.fov_degrees
    assert depth.with_values(depth.values * 2).fov_degrees == depth.fov_degrees
    # One value serves a whole batch; per-image values that no longer line up are dropped, never misassigned.
    single = Depth(torch.rand(1, 4, 5), DepthKind.METRIC, "test", (40.0,))
    assert match_depth_to_images(single, 3, (8, 10)).fov_for(2) == 40.0
    assert depth.with_values(depth.values[:2]).fov_degrees is None
    assert Depth(torch.rand(2, 4, 5), DepthKind.METRIC).fov_for(1) is None
    with pytest.raises(ValueError, match="field of view"):
        Depth(torch.rand(2, 4, 5), DepthKind.METRIC, "test", (50.0, 60.0, 70.0))
    with pytest.raises(ValueError, match="field of view"):
        Depth(torch.rand(1, 4, 5), DepthKind.METRIC, "test", (190.0,))


def test_a_node_setting_wins_then_the_carried_camera_then_the_default():
    assert choose_fov(40.0, 70.0)[0] == 40.0 and "set on the node" in choose_fov(40.0, 70.0)[1]
    assert choose_fov(0.0, 70.0)[0] == 70.0 and "carried by the depth" in choose_fov(0.0, 70.0)[1]
    assert choose_fov(0.0, None) == (DEFAULT_FOV_DEGREES, choose_fov(0.0, None)[1])
    assert "default" in choose_fov(0.0, None)[1]


def _photo(height: int = 24, width: int = 32) -> torch.Tensor:
    from skimage import data
    from torch.nn.functional import interpolate

    photo = torch.from_numpy(data.astronaut()).float().div(255).permute(2, 0, 1)[None]
    return interpolate(photo, size=(height, width), mode="area").permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="module")
def predicted_depth(pack):
    """A Depth (the pack's own class, as nodes receive it) with the field of view Depth Pro predicted."""
    module = importlib.import_module(f"{pack.__name__}.depth_core.models.depth_pro")
    card = module.card_for_config(module.KNOWN_MODELS[0].card, SMALL_DEPTH_PRO)
    depth = pack.depth_core.estimate.DepthEstimator(card, small_depth_pro(module)).predict(_photo())
    assert depth.fov_degrees is not None and abs(depth.fov_degrees[0] - 75.0) < 10.0
    return depth


def test_predicted_focal_length_reaches_the_mesh_geometry(pack, predicted_depth, comfy_output_dir):
    from test_nodes_mesh import SETTINGS

    predicted = predicted_depth.fov_degrees[0]
    image = torch.rand(1, 24, 32, 3)
    settings = SETTINGS | {"discontinuity_threshold": 0.0}

    def mesh_vertices(fov: float) -> tuple[torch.Tensor, dict]:
        output = pack.nodes.mesh.MeshExport.execute(image=image, depth=predicted_depth, **(settings | {"fov": fov}))
        return output.result[1].vertices[0], output.ui

    automatic, ui = mesh_vertices(0.0)
    assert "carried by the depth" in ui["text"][0] and f"{predicted:.1f}" in ui["text"][0]
    # The corner pixels' rays: x / distance = tan(fov / 2) x (1 - 1 / width) at pixel centres.
    half_width = (automatic[:, 0] / -automatic[:, 2]).abs().max().item()
    assert half_width == pytest.approx(math.tan(math.radians(predicted) / 2) * (1 - 1 / 32), rel=1e-4)
    explicit, _ = mesh_vertices(predicted)
    assert torch.allclose(explicit, automatic, rtol=1e-5)
    guessed, ui = mesh_vertices(DEFAULT_FOV_DEGREES)
    assert "set on the node" in ui["text"][0]
    assert not torch.allclose(guessed, automatic, rtol=1e-2)


def test_normal_map_stereo_and_3d_photo_use_the_carried_camera(pack, predicted_depth, comfy_output_dir):
    normal_map = importlib.import_module(f"{pack.__name__}.depth_core.normals").normal_map
    predicted = predicted_depth.fov_degrees[0]
    output = pack.nodes.normal_map.NormalMap.execute(
        depth=predicted_depth, method="geometric", fov=0.0, strength=1.0, green="OpenGL (Y up)", depth_range=10.0,
        sobel_kernel=3, pre_blur=0, post_blur=0, invert=False)
    assert torch.allclose(output.result[0].cpu(), normal_map(predicted_depth, "geometric", predicted), atol=1e-5)
    assert not torch.allclose(output.result[0].cpu(), normal_map(predicted_depth, "geometric", 30.0), atol=1e-3)
    assert "carried by the depth" in output.ui.as_dict()["text"][0]

    stereo = pack.nodes.stereo.StereoSBS
    common = dict(images=torch.rand(1, 24, 32, 3), depth=predicted_depth, divergence=2.5, separation=0.0,
                  convergence=0.0, balance=0.5, depth_exponent=1.0, fill="nearest", layout="side-by-side",
                  swap_eyes=False, depth_mode="metric", baseline_mm=65.0, normalize="per image")
    automatic = stereo.execute(**common, fov_degrees=0.0)
    explicit = stereo.execute(**common, fov_degrees=predicted)
    assert torch.equal(automatic.result[0], explicit.result[0])
    assert "carried by the depth" in automatic.ui["text"][0]

    photo = pack.nodes.photo3d.InpaintedMeshVideo.execute(
        image=torch.rand(1, 24, 32, 3), depth=predicted_depth, path="circle", frames=2, fps=10.0, translate_x=0.04,
        translate_y=0.0, translate_z=0.0, crop=0.0, supersampling=1, fov=0.0, format="none", mesh_format="none",
        filename_prefix="3d_photo/flow")
    assert "carried by the depth" in photo.ui["text"][0] and f"{predicted:.1f}" in photo.ui["text"][0]


def test_depth_estimate_carries_a_field_of_view_set_once(pack, model_folders):
    module = importlib.import_module(f"{pack.__name__}.depth_core.models.depth_pro")
    torch.save(small_depth_pro(module).state_dict(), model_folders["depth"] / "depth_pro.pt")
    model = pack.nodes.depth_estimate.LoadDepthModel.execute(model="depth_pro.pt", device="cpu",
                                                             precision="auto").result[0]
    estimate = pack.nodes.depth_estimate.DepthEstimate.execute
    settings = dict(images=_photo(), depth_model=model, resolution="native", custom_resolution=518,
                    normalize="per image")
    predicted = estimate(**settings).result[0]
    given = estimate(**settings, fov=40.0).result[0]
    assert predicted.is_metric and given.fov_degrees == (40.0,)
    # Depth Pro's metres follow the focal length: a narrower known field of view means a farther scene.
    ratio = math.tan(math.radians(predicted.fov_degrees[0] / 2)) / math.tan(math.radians(20.0))
    assert torch.allclose(given.values, predicted.values * ratio, rtol=1e-4)


@pytest.mark.parametrize("file_format, suffix", [("png16", ".png"), ("npy", ".npy"), ("exr", ".exr")])
def test_saved_depth_files_keep_the_camera(tmp_path, file_format, suffix):
    from depth_core.depth_io import encode_depth_files, load_depth, sidecar_path

    depth = Depth(torch.rand(2, 6, 8) + 1, DepthKind.METRIC, "test", (48.5, 71.25))
    for index, (data, sidecar) in enumerate(encode_depth_files(depth, file_format)):
        path = tmp_path / f"depth_{index}{suffix}"
        path.write_bytes(data)
        if sidecar is not None:
            sidecar_path(path).write_bytes(sidecar)
        loaded = load_depth(path)
        assert loaded.is_metric and loaded.fov_degrees == (depth.fov_degrees[index],)
    plain = tmp_path / f"no_camera{suffix}"
    data, sidecar = encode_depth_files(Depth(torch.rand(1, 6, 8) + 1, DepthKind.METRIC), file_format)[0]
    plain.write_bytes(data)
    if sidecar is not None:
        sidecar_path(plain).write_bytes(sidecar)
    assert load_depth(plain).fov_degrees is None


def test_command_line_meshes_through_the_recorded_camera(tmp_path, capsys):
    trimesh = pytest.importorskip("trimesh")
    from PIL import Image

    from depth_core.cli import main
    from depth_core.depth_io import save_depth_png16

    photo = (_photo() * 255).round().byte()[0].numpy()
    Image.fromarray(photo).save(tmp_path / "photo.png")
    depth = Depth(1.0 + torch.rand(1, 24, 32), DepthKind.METRIC, "test", (70.0,))
    save_depth_png16(tmp_path / "photo_depth.png", depth)
    assert main([str(tmp_path / "photo.png"), "--depth", str(tmp_path / "photo_depth.png"), "--outputs", "mesh",
                 "--out", str(tmp_path / "out")]) == 0
    assert "70.0° (carried by the depth)" in capsys.readouterr().out
    vertices = trimesh.load(tmp_path / "out" / "photo_mesh.glb", force="mesh", process=False).vertices
    half_width = abs(vertices[:, 0] / vertices[:, 2]).max()
    assert half_width == pytest.approx(math.tan(math.radians(35.0)) * (1 - 1 / 32), rel=1e-3)
