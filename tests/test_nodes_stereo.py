"""StereoSBS and Anaglyph nodes in real ComfyUI: outputs, layouts, the ui payload and bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SETTINGS = dict(divergence=2.5, separation=0.0, convergence=0.0, balance=0.0, depth_exponent=1.0,
                fill="background", depth_mode="auto", baseline_mm=65.0, fov_degrees=55.0, normalize="per image")


def scene(batch: int = 2, height: int = 24, width: int = 40):
    images = torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(1))
    nearness = torch.zeros(1, height, width)
    nearness[:, 8:16, 12:24] = 1.0
    return images, nearness


def stereo(pack, images, depth, **options):
    node = pack.nodes.stereo.StereoSBS
    return node.execute(images=images, depth=depth, **({"layout": "side-by-side", "swap_eyes": False} | SETTINGS
                                                        | options))


def anaglyph_node(pack, images, **options):
    node = pack.nodes.stereo.Anaglyph
    args = {"method": "dubois red/cyan", "swap_eyes": False} | SETTINGS | options
    return node.execute(images=images, **args)


def test_schema_has_tooltips_everywhere(pack):
    for node in pack.nodes.stereo.NODES:
        schema = node.define_schema()
        assert schema.node_id.startswith("DepthToolkit.") and schema.description and schema.display_name
        for socket in list(schema.inputs) + list(schema.outputs):
            assert socket.tooltip, f"{schema.node_id}.{socket.id} has no tooltip"


def test_stereo_sbs_outputs_and_ui_payload(pack, comfy_output_dir):
    images, nearness = scene()
    depth = pack.depth_core.depth.Depth(nearness, "relative_inverse")      # one depth for the batch
    output = stereo(pack, images, depth)
    sbs, left, right = output.args
    assert sbs.shape == (2, 24, 80, 3) and left.shape == right.shape == (2, 24, 40, 3)
    torch.testing.assert_close(sbs[:, :, :40], left)
    torch.testing.assert_close(sbs[:, :, 40:], right)
    # The near block moved right in the left eye and left in the right eye (2.5 % of 40 px in total).
    assert not torch.allclose(left, right)
    temp = Path(comfy_output_dir).parent / "temp"
    assert len(output.ui["images"]) == 2
    pairs = output.ui["depthtoolkit_stereo"]
    assert len(pairs) == 2
    for pair in pairs:
        for eye in ("left", "right"):
            entry = pair[eye]
            assert set(entry) == {"filename", "subfolder", "type"} and entry["type"] == "temp"
            assert (temp / entry["subfolder"] / entry["filename"]).is_file()
    assert not list(temp.rglob("*.partial"))


@pytest.mark.parametrize("layout,shape", [("side-by-side half", (1, 24, 40, 3)), ("top-bottom", (1, 48, 40, 3)),
                                          ("top-bottom half", (1, 24, 40, 3)), ("left only", (1, 24, 40, 3))])
def test_layouts(pack, comfy_output_dir, layout, shape):
    images, nearness = scene(batch=1)
    sbs = stereo(pack, images, nearness.unsqueeze(-1).expand(-1, -1, -1, 3), layout=layout).args[0]
    assert sbs.shape == shape


def test_swap_eyes_and_zero_divergence(pack, comfy_output_dir):
    images, nearness = scene(batch=1)
    depth_image = nearness.unsqueeze(-1).expand(-1, -1, -1, 3)
    plain = stereo(pack, images, depth_image).args
    swapped = stereo(pack, images, depth_image, swap_eyes=True).args[0]
    torch.testing.assert_close(swapped[:, :, :40], plain[2])
    flat = stereo(pack, images, depth_image, divergence=0.0).args
    torch.testing.assert_close(flat[1], images, atol=1e-5, rtol=0)
    torch.testing.assert_close(flat[2], images, atol=1e-5, rtol=0)


def test_depth_of_another_size_is_resized_and_batches_must_pair(pack, comfy_output_dir):
    images, _ = scene(batch=2)
    small_depth = torch.rand(2, 12, 20, 3)
    assert stereo(pack, images, small_depth).args[0].shape == (2, 24, 80, 3)
    with pytest.raises(ValueError, match="depth maps for 2 images"):
        stereo(pack, images, torch.rand(3, 24, 40, 3))


def test_rgba_gray_one_pixel_wide_and_broken_depth(pack, comfy_output_dir):
    rgba = torch.rand(1, 10, 12, 4)
    assert stereo(pack, rgba, torch.rand(1, 10, 12, 3)).args[1].shape == (1, 10, 12, 3)
    gray = torch.rand(1, 10, 12, 1)
    assert stereo(pack, gray, torch.rand(1, 10, 12, 3)).args[2].shape == (1, 10, 12, 3)
    thin = torch.rand(2, 9, 1, 3)
    assert stereo(pack, thin, torch.rand(1, 9, 1, 3)).args[0].shape == (2, 9, 2, 3)
    broken = torch.rand(1, 10, 12)
    broken[0, 2, 3] = float("nan")
    broken[0, 4, 5] = float("inf")
    depth = pack.depth_core.depth.Depth(broken, "relative_inverse")
    assert all(torch.isfinite(t).all() for t in stereo(pack, torch.rand(1, 10, 12, 3), depth).args)
    constant = pack.depth_core.depth.Depth(torch.full((1, 10, 12), 3.0), "metric")
    out = stereo(pack, torch.rand(1, 10, 12, 3), constant, divergence=-4.0).args
    assert all(torch.isfinite(t).all() for t in out)


def test_metric_mode_needs_metric_depth(pack, comfy_output_dir):
    images, nearness = scene(batch=1)
    with pytest.raises(ValueError, match="metric"):
        stereo(pack, images, nearness.unsqueeze(-1).expand(-1, -1, -1, 3), depth_mode="metric")
    metric = pack.depth_core.depth.Depth(1.0 + 4.0 * (1.0 - nearness), "metric")
    left, right = stereo(pack, images, metric, depth_mode="metric").args[1:]
    assert not torch.allclose(left, right)


def test_anaglyph_from_pair_and_from_depth(pack, comfy_output_dir):
    images, nearness = scene(batch=2)
    right = torch.rand(2, 24, 40, 3)
    out = anaglyph_node(pack, images, right=right, method="color red/cyan")
    result = out.args[0]
    torch.testing.assert_close(result[..., 0], images[..., 0])
    torch.testing.assert_close(result[..., 1:], right[..., 1:])
    assert len(out.ui["depthtoolkit_stereo"]) == 2 and len(out.ui["images"]) == 2
    from_depth = anaglyph_node(pack, images, depth=nearness.unsqueeze(-1).expand(-1, -1, -1, 3)).args[0]
    assert from_depth.shape == (2, 24, 40, 3) and from_depth.min() >= 0 and from_depth.max() <= 1


def test_anaglyph_bad_input(pack, comfy_output_dir):
    images, _ = scene(batch=1)
    with pytest.raises(ValueError, match="connect 'right'"):
        anaglyph_node(pack, images)
    with pytest.raises(ValueError, match="same size"):
        anaglyph_node(pack, images, right=torch.rand(1, 20, 40, 3))
