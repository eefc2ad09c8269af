"""DepthToolkit.RemoveBackground and DepthToolkit.MaskDepth inside real ComfyUI (skipped without COMFYUI_PATH)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ISNET_PATH = Path(os.environ.get("DEPTH_TOOLKIT_TEST_ISNET",
                                 ROOT.parent / "shared" / "models" / "isnet-general-use-quint8.onnx"))


@pytest.fixture()
def nodes(pack):
    return importlib.import_module(f"{pack.__name__}.nodes.background")


@pytest.fixture()
def isolated_folders(nodes, monkeypatch, tmp_path):
    """models/rembg pointed at an empty temporary folder, rembg's own home too, no core background_removal."""
    import folder_paths

    rembg_dir = tmp_path / "rembg"
    rembg_dir.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "rembg", ([str(rembg_dir)], set()))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, "background_removal", raising=False)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "rembg-home"))
    return rembg_dir


def run_remove(nodes, images, model, download=False, background="alpha", colour="#000000", threshold=0.5, grow=0,
               feather=0.0, alpha_matting=False):
    return nodes.RemoveBackground.execute(images, model, download, background, colour, threshold, grow, feather,
                                          alpha_matting)


def test_schemas_have_tooltips_and_the_model_folder_is_registered(nodes):
    import folder_paths

    for node in nodes.NODES:
        schema = node.define_schema()
        assert schema.node_id.startswith("DepthToolkit.") and schema.description and schema.display_name
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip, (schema.node_id, item.id)
    remove = nodes.RemoveBackground.define_schema()
    assert [o.id for o in remove.outputs] == ["image", "mask"]
    assert "opposite polarity" in remove.outputs[1].tooltip
    assert os.path.join(folder_paths.models_dir, "rembg") in folder_paths.get_folder_paths("rembg")


def test_dropped_in_onnx_file_is_listed(nodes, isolated_folders):
    (isolated_folders / "my-matting-net.onnx").write_bytes(b"x")
    rembg_home_sam = isolated_folders.parent / "rembg-home" / "models" / "sam"
    rembg_home_sam.mkdir(parents=True)
    (rembg_home_sam / "sam_vit_b_01ec64.encoder.onnx").write_bytes(b"x")  # rembg's own, not a foreground model
    options = next(i for i in nodes.RemoveBackground.define_schema().inputs if i.id == "model").options
    assert options[0] == "isnet-general-use" and "birefnet-general" in options
    assert options[-1] == "my-matting-net.onnx"


def test_missing_model_offline_and_corrupt_file_are_clear_errors(nodes, isolated_folders):
    image = torch.rand(1, 8, 8, 3)
    with pytest.raises(ValueError) as error:
        run_remove(nodes, image, "u2net_human_seg", download=False)
    assert "u2net_human_seg.onnx" in str(error.value) and str(isolated_folders) in str(error.value)
    assert "releases/download" in str(error.value)
    (isolated_folders / "broken.onnx").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="broken.onnx is not a usable ONNX model"):
        run_remove(nodes, image, "broken.onnx")
    with pytest.raises(ValueError, match="#RRGGBB"):
        run_remove(nodes, image, "broken.onnx", background="colour", colour="blue-ish")


def test_remove_background_with_the_real_isnet(nodes, pack, isolated_folders, monkeypatch):
    if not ISNET_PATH.is_file():
        pytest.skip(f"IS-Net test model not found at {ISNET_PATH}: set DEPTH_TOOLKIT_TEST_ISNET.")
    import folder_paths
    from skimage import data

    # the shared file is listed from its own folder, as a file a user dropped into models/rembg/ would be
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "rembg",
                        ([str(isolated_folders), str(ISNET_PATH.parent)], set()))
    image = torch.from_numpy(data.astronaut()[::4, ::4].copy()).float()[None] / 255.0  # 128x128
    rgba = torch.cat([image, torch.ones(1, 128, 128, 1)], -1)
    cutout, mask = run_remove(nodes, rgba, ISNET_PATH.name, background="colour", colour="#00FF00", grow=2).args
    assert cutout.shape == (1, 128, 128, 3) and mask.shape == (1, 128, 128)
    assert cutout.device.type == "cpu" and mask.device.type == "cpu"
    assert float(mask[0, 60:68, 60:68].mean()) == 1.0  # the astronaut (1 = subject)
    assert float(mask[0, :8, :8].mean()) == 0.0
    inside, outside = mask[0] == 1, mask[0] == 0
    assert torch.equal(cutout[0][inside], image[0][inside])
    assert torch.equal(cutout[0][outside], torch.tensor([0.0, 1.0, 0.0]).expand(int(outside.sum()), 3))

    # the mask goes straight into Mask Depth: background to the subject's farthest depth
    depth = pack.depth_core.depth.Depth(torch.rand(1, 64, 64) + 0.5, "relative_inverse")
    masked, picture = nodes.MaskDepth.execute(depth, mask, False).args
    small_mask = torch.nn.functional.interpolate(mask[None], size=(64, 64), mode="bilinear")[0]
    keep = small_mask >= 0.5
    far = float(depth.values[keep].min())
    assert torch.equal(masked.values[keep], depth.values[keep])
    assert torch.all(masked.values[~keep] == far)
    assert picture.shape == (1, 64, 64, 3)


def test_mask_depth_node_takes_a_depth_image_and_an_inverted_mask(nodes, pack):
    depth_picture = torch.linspace(0, 1, 16).view(1, 4, 4, 1).expand(-1, -1, -1, 3)  # near = white
    core_mask = torch.zeros(1, 4, 4)
    core_mask[0, :2] = 1  # core LoadImage: 1 = transparent, so the top half is background
    depth, picture = nodes.MaskDepth.execute(depth_picture, core_mask, True).args
    assert isinstance(depth, pack.depth_core.depth.Depth)
    kept_far = float(depth_picture[0, 2:, :, 0].min())
    assert torch.all(depth.values[0, :2] == kept_far)
    assert torch.allclose(depth.values[0, 2:], depth_picture[0, 2:, :, 0])
    assert picture.shape == (1, 4, 4, 3) and float(picture[0, 0, 0, 0]) == 0.0
