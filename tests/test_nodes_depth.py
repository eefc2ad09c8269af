"""LoadDepthModel and DepthEstimate inside real ComfyUI (skipped without COMFYUI_PATH)."""
from __future__ import annotations

import importlib

import pytest
import torch


@pytest.fixture()
def model_folders(pack, tmp_path, monkeypatch):
    """Our model folders pointed at empty temporary folders, so nothing touches the real models/ tree."""
    import folder_paths

    extensions = {".pth", ".pt", ".safetensors", ".ckpt", ".bin"}
    folders = {name: tmp_path / name for name in ("depth", "depthanything")}
    for name, folder in folders.items():
        folder.mkdir()
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(folder)], extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return folders


@pytest.fixture()
def small_model(pack, model_folders):
    family = importlib.import_module(f"{pack.__name__}.depth_core.models.depth_anything_v2")
    torch.manual_seed(0)
    network = family.build(family.SMALL)
    # Users of kijai's pack keep their files in models/depthanything/: those must be found too.
    torch.save(network.state_dict(), model_folders["depthanything"] / "depth_anything_v2_vits.pth")
    loader = pack.nodes.depth_estimate.LoadDepthModel
    return loader.execute(model="depth_anything_v2_vits.pth", device="cpu", precision="auto").result[0]


def estimate(pack, model, images, **options):
    settings = {"resolution": "custom", "custom_resolution": 70, "normalize": "per image"} | options
    return pack.nodes.depth_estimate.DepthEstimate.execute(images=images, depth_model=model, **settings).result


def test_loaded_model_runs_fp32_on_cpu_and_is_listed(pack, small_model):
    assert small_model.estimator.dtype == torch.float32
    assert small_model.patcher.load_device.type == "cpu"
    assert "depth_anything_v2_vits.pth" in pack.nodes.depth_estimate.model_choices()


def test_depth_and_picture_per_image_and_per_batch(pack, small_model):
    torch.manual_seed(1)
    images = torch.rand(3, 40, 56, 3)
    images[1] *= 0.2  # a dark frame: a different range, so the two normalizations differ
    depth, picture = estimate(pack, small_model, images)
    assert isinstance(depth, pack.depth_core.depth.Depth) and depth.values.shape == (3, 40, 56)
    assert picture.shape == (3, 40, 56, 3) and torch.equal(picture[..., 0], picture[..., 2])
    assert torch.allclose(picture.amin(dim=(1, 2, 3)), torch.zeros(3))
    assert torch.allclose(picture.amax(dim=(1, 2, 3)), torch.ones(3))
    same_depth, batch_picture = estimate(pack, small_model, images, normalize="whole batch")
    assert torch.allclose(same_depth.values, depth.values)
    assert batch_picture.min() == 0 and batch_picture.max() == 1
    assert batch_picture.amax(dim=(1, 2, 3)).lt(1).any()


def test_mask_sets_outside_pixels_farthest(pack, small_model):
    images = torch.rand(1, 32, 32, 3)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    depth, _ = estimate(pack, small_model, images, mask=mask)
    inside, outside = depth.values[0, 8:24, 8:24], depth.values[0, :4, :]
    assert torch.allclose(outside, inside.min().expand_as(outside))


def test_empty_batch_and_interrupt(pack, small_model):
    import comfy.model_management

    with pytest.raises(ValueError, match="empty"):
        estimate(pack, small_model, torch.zeros(0, 8, 8, 3))
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            estimate(pack, small_model, torch.rand(2, 16, 16, 3))
    finally:
        comfy.model_management.interrupt_current_processing(False)


def test_missing_model_offline_names_file_folder_and_source(pack, model_folders, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    loader = pack.nodes.depth_estimate.LoadDepthModel
    with pytest.raises(FileNotFoundError) as error:
        loader.execute(model="depth_anything_v2_vitb.pth", device="cpu", precision="auto")
    message = str(error.value)
    assert "depth_anything_v2_vitb.pth" in message and str(model_folders["depth"]) in message
    assert "huggingface.co/depth-anything/Depth-Anything-V2-Base" in message
    assert list(model_folders["depth"].iterdir()) == []


def test_every_input_and_output_has_a_tooltip(pack):
    for node in pack.nodes.depth_estimate.NODES:
        schema = node.define_schema()
        assert schema.node_id.startswith("DepthToolkit.") and schema.description
        assert all(item.tooltip for item in [*schema.inputs, *schema.outputs]), schema.node_id


def test_helper_networks_in_the_depth_folder_are_not_offered_as_depth_models(pack, model_folders):
    for name in ("latest_net_G.pth", "edge-model.pth", "my_own_depth.safetensors"):
        (model_folders["depth"] / name).write_bytes(b"x")
    choices = pack.nodes.depth_estimate.model_choices()
    assert "my_own_depth.safetensors" in choices
    assert "latest_net_G.pth" not in choices and "edge-model.pth" not in choices


def test_model_folders_are_registered_when_the_extension_loads(pack, monkeypatch, run_async):
    import os

    import folder_paths

    for name in ("depth", "depthanything", "rembg"):
        monkeypatch.delitem(folder_paths.folder_names_and_paths, name, raising=False)
    run_async(pack.nodes.DepthToolkitExtension().get_node_list())  # what ComfyUI calls at start-up
    for name in ("depth", "depthanything", "rembg"):
        assert os.path.join(folder_paths.models_dir, name) in folder_paths.get_folder_paths(name)
    assert ".safetensors" in folder_paths.folder_names_and_paths["depth"][1]


def test_interrupt_stops_a_forward_pass_between_blocks(pack, small_model):
    """/interrupt during one huge image must not wait for the whole pass: the next block checks the flag."""
    import comfy.model_management

    network = small_model.estimator.network
    hooked = set(pack.depth_core.interrupt.network_blocks(network))
    transformer_blocks = [module for name, module in network.named_modules()
                          if name.rsplit(".", 2)[-2:-1] == ["blocks"] and module in hooked]
    assert len(transformer_blocks) == 12  # ViT-S: every block is an interrupt point
    ran_after = []
    press_cancel = transformer_blocks[0].register_forward_hook(
        lambda *_: comfy.model_management.interrupt_current_processing(True))
    count_last = transformer_blocks[-1].register_forward_hook(lambda *_: ran_after.append(1))
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            estimate(pack, small_model, torch.rand(1, 28, 28, 3))
        assert ran_after == []
    finally:
        press_cancel.remove()
        count_last.remove()
        comfy.model_management.interrupt_current_processing(False)
