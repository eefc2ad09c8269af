"""The post-processing, depth file and normal-map nodes inside real ComfyUI (skip without COMFYUI_PATH)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


def depth_value(pack, values, metric=False):
    kind = pack.depth_core.depth.DepthKind
    return pack.depth_core.depth.Depth(values.float(), kind.METRIC if metric else kind.RELATIVE_INVERSE, "test")


def ramp_batch(batch=2, height=6, width=10):
    return torch.stack([torch.linspace(1, 2 + i, width).expand(height, width) for i in range(batch)])


CLIP_DEFAULTS = dict(mode="range", near=1.0, far=0.0, invert=False, gamma=1.0, contrast=1.0, normalize="per image",
                     stabilize=False, stabilize_window=2, metric_output="keep metres")


def clip(pack, depth, **changes):
    return pack.nodes.postprocess.ClipRenormalize.execute(depth, **{**CLIP_DEFAULTS, **changes})


# --------------------------------------------------------------------------------------- ClipRenormalize


def test_clip_renormalize_outputs_and_histogram_payload(pack, comfy_output_dir):
    depth = depth_value(pack, ramp_batch())
    out = clip(pack, depth, near=0.9, far=0.1, mode="range")
    result_depth, picture = out.args
    assert isinstance(result_depth, pack.depth_core.depth.Depth)
    assert picture.shape == (2, 6, 10, 3) and float(picture.min()) == 0.0 and float(picture.max()) == 1.0
    payload = out.ui["depthtoolkit_histogram"]
    assert isinstance(payload, list) and len(payload) == 1
    entry = payload[0]
    assert set(entry) == {"counts", "near", "far", "mode"}
    assert len(entry["counts"]) == 256 and sum(entry["counts"]) == 2 * 6 * 10
    assert all(isinstance(c, int) for c in entry["counts"])
    assert (entry["near"], entry["far"], entry["mode"]) == (0.9, 0.1, "range")
    json.dumps(out.ui)  # the browser receives it as JSON
    images = out.ui["images"]
    assert len(images) == 2 and images[0]["type"] == "temp"
    preview = cv2.imread(str(comfy_output_dir.parent / "temp" / images[0]["subfolder"] / images[0]["filename"]))
    assert preview[0, 0].max() == 0 and preview[0, -1].min() == 255  # the unclipped input picture


def test_clip_renormalize_takes_a_depth_image(pack, comfy_output_dir):
    image = torch.linspace(0, 1, 20).expand(1, 4, 20).unsqueeze(-1).expand(1, 4, 20, 4).contiguous()  # RGBA
    out = clip(pack, image, mode="percentile", near=0.9, far=0.1, invert=True)
    depth, picture = out.args
    assert depth.kind.value == "relative_inverse" and picture.shape == (1, 4, 20, 3)
    assert float(picture[0, 0, 0, 0]) == 1.0 and float(picture[0, 0, -1, 0]) == 0.0  # inverted: near = black
    assert out.ui["depthtoolkit_histogram"][0]["mode"] == "percentile"


def test_clip_renormalize_metric_modes(pack, comfy_output_dir):
    metres = depth_value(pack, ramp_batch(1), metric=True)
    kept = clip(pack, metres, near=0.8, far=0.2).args[0]
    relative = clip(pack, metres, near=0.8, far=0.2, metric_output="relative 0..1").args[0]
    assert kept.kind.value == "metric" and 1.0 < float(kept.values.min()) < float(kept.values.max()) < 2.0
    assert relative.kind.value == "relative_inverse" and float(relative.values.max()) == 1.0


def test_clip_renormalize_batch_and_stabilize(pack, comfy_output_dir):
    base = torch.rand(16, 16, generator=torch.Generator().manual_seed(0)) + 1
    frames = torch.stack([base * s + b for s, b in ((1.0, 0.0), (1.5, -0.3), (0.7, 0.2), (1.2, 0.1))])
    depth = depth_value(pack, frames)
    whole = clip(pack, depth, normalize="whole batch").args[1]
    stable = clip(pack, depth, stabilize=True).args[1]
    flicker = pack.depth_core.postprocess.flicker
    assert flicker(stable[..., 0]) < 0.1 * flicker(whole[..., 0])


def test_clip_renormalize_bad_input(pack, comfy_output_dir):
    depth = depth_value(pack, ramp_batch())
    with pytest.raises(ValueError, match="above the far clip"):
        clip(pack, depth, near=0.2, far=0.5)
    with pytest.raises(ValueError, match="empty"):
        clip(pack, depth_value(pack, torch.zeros(0, 3, 3)))
    constant = clip(pack, depth_value(pack, torch.full((1, 3, 3), 5.0)), mode="percentile", near=0.9, far=0.1)
    assert torch.isfinite(constant.args[1]).all() and float(constant.args[1].max()) == 0.0
    broken = ramp_batch(1)
    broken[0, 0, 0] = float("nan")
    assert torch.isfinite(clip(pack, depth_value(pack, broken)).args[1]).all()
    one_pixel = clip(pack, torch.rand(1, 1, 1, 3))
    assert one_pixel.args[1].shape == (1, 1, 1, 3)


# ---------------------------------------------------------------------------------------------- Colorize


def test_colorize_node(pack):
    depth = depth_value(pack, ramp_batch())
    for colormap in ("turbo", "inferno", "viridis", "gray"):
        picture = pack.nodes.postprocess.Colorize.execute(depth, colormap, False, "per image").args[0]
        assert picture.shape == (2, 6, 10, 3)
    gray = pack.nodes.postprocess.Colorize.execute(depth, "gray", True, "whole batch").args[0]
    assert float(gray[1, 0, -1, 0]) == 0.0 and float(gray[0, 0, -1, 0]) > 0.0  # inverted, one batch range
    with pytest.raises(ValueError, match="colormap"):
        pack.nodes.postprocess.Colorize.execute(depth, "jet", False, "per image")


# ------------------------------------------------------------------------------------ SaveDepth / LoadDepth


def save(pack, depth, prefix="depth/test", file_format="png16", normalize="per image", invert=False):
    return pack.nodes.depth_io.SaveDepth.execute(depth, prefix, file_format, normalize, invert)


def test_save_depth_png16_naming_and_metadata(pack, comfy_output_dir):
    depth = depth_value(pack, ramp_batch(3), metric=True)
    out = save(pack, depth)
    names = sorted(os.listdir(comfy_output_dir / "depth"))
    assert names == ["test_00001_.png", "test_00002_.png", "test_00003_.png"]
    assert [image["filename"] for image in out.ui.as_dict()["images"]] == names
    pixels = cv2.imread(str(comfy_output_dir / "depth" / names[0]), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint16 and pixels.ndim == 2
    save(pack, depth)
    assert len(os.listdir(comfy_output_dir / "depth")) == 6  # the counter continues, nothing overwritten


@pytest.mark.parametrize("file_format", ["png16", "exr", "npy"])
def test_save_then_load_round_trip(pack, comfy_output_dir, file_format, monkeypatch):
    import folder_paths

    depth = depth_value(pack, ramp_batch(1) * 3, metric=True)
    save(pack, depth, prefix="rt", file_format=file_format)
    written = [n for n in os.listdir(comfy_output_dir) if not n.endswith(".json")]
    assert len(written) == 1
    input_dir = comfy_output_dir.parent / "input"
    input_dir.mkdir()
    for name in os.listdir(comfy_output_dir):
        (input_dir / name).write_bytes((comfy_output_dir / name).read_bytes())
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(input_dir))
    node = pack.nodes.depth_io.LoadDepth
    assert written[0] in node.define_schema().inputs[0].options
    loaded, picture = node.execute(written[0], "from file").args
    assert loaded.kind.value == "metric" and picture.shape == (1, 6, 10, 3)
    if file_format == "png16":
        assert torch.allclose(loaded.values, depth.values, rtol=1e-4)
    else:
        assert torch.equal(loaded.values, depth.values)
    relabelled = node.execute(written[0], "relative inverse depth").args[0]
    assert relabelled.kind.value == "relative_inverse"
    assert node.validate_inputs("missing.png", "from file") is not True


def test_save_depth_exr_and_npy_preview(pack, comfy_output_dir):
    depth = depth_value(pack, ramp_batch(2))
    out = save(pack, depth, prefix="f", file_format="exr")
    names = sorted(os.listdir(comfy_output_dir))
    assert names == ["f_00001_.exr", "f_00001_.exr.json", "f_00002_.exr", "f_00002_.exr.json"]
    assert out.ui.as_dict()["images"][0]["type"] == "temp"


def test_save_depth_failure_leaves_nothing(pack, comfy_output_dir):
    depth = depth_value(pack, ramp_batch(2), metric=True)
    with pytest.raises(ValueError, match="relative depth"):
        save(pack, depth, normalize="keep 0..1 values")
    with pytest.raises(ValueError, match="empty"):
        save(pack, depth_value(pack, torch.zeros(0, 2, 2)))
    assert not any(Path(comfy_output_dir).rglob("*"))


def test_load_depth_bad_file(pack, comfy_output_dir, monkeypatch):
    import folder_paths

    input_dir = comfy_output_dir.parent / "input"
    input_dir.mkdir()
    (input_dir / "broken.png").write_text("hello")
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(input_dir))
    with pytest.raises(ValueError, match="not a PNG"):
        pack.nodes.depth_io.LoadDepth.execute("broken.png", "from file")


def test_load_depth_refuses_names_that_leave_the_input_folder(pack, comfy_output_dir, monkeypatch):
    import folder_paths

    input_dir = comfy_output_dir.parent / "input"
    (input_dir / "linked").mkdir(parents=True)
    outside = comfy_output_dir.parent / "outside.npy"
    np.save(outside, np.ones((4, 4), np.float32))
    elsewhere = comfy_output_dir.parent / "disk2"
    elsewhere.mkdir()
    np.save(elsewhere / "d.npy", np.full((4, 4), 2.0, np.float32))
    (input_dir / "linked").rmdir()
    (input_dir / "linked").symlink_to(elsewhere, target_is_directory=True)  # a folder the user linked in
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(input_dir))
    node = pack.nodes.depth_io.LoadDepth
    for name in ("../outside.npy", str(outside), "linked/../../outside.npy", "../outside.npy [input]"):
        with pytest.raises(ValueError, match="outside ComfyUI's input folder"):
            node.execute(name, "from file")
        assert "outside ComfyUI's input folder" in node.validate_inputs(name, "from file")
    loaded = node.execute("linked/d.npy", "from file").args[0]
    assert float(loaded.values.max()) == 2.0 and node.validate_inputs("linked/d.npy", "from file") is True


# -------------------------------------------------------------------------------------------- NormalMap


NORMAL_DEFAULTS = dict(method="geometric", fov=55.0, strength=1.0, green="OpenGL (Y up)", depth_range=10.0,
                       sobel_kernel=3, pre_blur=0, post_blur=0, invert=False)


def test_normal_map_node(pack):
    depth = depth_value(pack, ramp_batch(2))
    node = pack.nodes.normal_map.NormalMap
    geometric = node.execute(depth, **NORMAL_DEFAULTS).args[0]
    sobel = node.execute(depth, **{**NORMAL_DEFAULTS, "method": "sobel (old extension)", "pre_blur": 3,
                                   "post_blur": 3}).args[0]
    directx = node.execute(depth, **{**NORMAL_DEFAULTS, "green": "DirectX (Y down)"}).args[0]
    for picture in (geometric, sobel, directx):
        assert picture.shape == (2, 6, 10, 3) and float(picture.min()) >= 0 and float(picture.max()) <= 1
    assert torch.allclose(directx[..., 1], 1 - geometric[..., 1], atol=1e-6)
    image = node.execute(torch.rand(1, 5, 7, 1), **NORMAL_DEFAULTS).args[0]  # a gray depth IMAGE
    assert image.shape == (1, 5, 7, 3)
    with pytest.raises(ValueError, match="odd"):
        node.execute(depth, **{**NORMAL_DEFAULTS, "method": "sobel (old extension)", "pre_blur": 2})


def test_schemas_have_tooltips(pack):
    for module, names in ((pack.nodes.postprocess, ["ClipRenormalize", "Colorize"]),
                          (pack.nodes.depth_io, ["SaveDepth", "LoadDepth"]),
                          (pack.nodes.normal_map, ["NormalMap"])):
        for name in names:
            schema = getattr(module, name).define_schema()
            assert schema.node_id == f"DepthToolkit.{name}" and schema.description and schema.display_name
            for item in list(schema.inputs) + list(schema.outputs or []):
                assert item.tooltip, (name, item.id)


def test_clip_renormalize_previews_at_most_16_frames(pack, comfy_output_dir):
    frames = torch.rand(20, 4, 5, generator=torch.Generator().manual_seed(1))
    out = clip(pack, depth_value(pack, frames), normalize="whole batch")
    assert len(out.ui["images"]) == 16 and out.args[1].shape[0] == 20
    assert sum(out.ui["depthtoolkit_histogram"][0]["counts"]) == 20 * 4 * 5  # the histogram covers every frame
