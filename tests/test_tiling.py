"""Tiling mode: depth of a repeating texture that repeats without a seam, measured against the plain estimate."""
from __future__ import annotations

import pytest
import torch
from skimage import data

from depth_core.estimate import DepthEstimator
from depth_core.image import numpy_to_image
from depth_core.models import depth_anything_v2
from depth_core.tiling import fold_onto_tile, seam_ratio, tileable_depth, wrap_pad

from test_model_architectures import _random_network


def _texture(size: int = 56) -> torch.Tensor:
    """A real photo made tileable by mirroring (coffee beans), IMAGE [1,size,size,3]."""
    crop = numpy_to_image(data.coffee())[:, 40:240, 150:350]
    tile = torch.cat([crop, crop.flip(2)], 2)
    tile = torch.cat([tile, tile.flip(1)], 1)
    return torch.nn.functional.interpolate(tile.permute(0, 3, 1, 2), size=(size, size),
                                           mode="area").permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def estimator() -> DepthEstimator:
    network, _ = _random_network(depth_anything_v2, depth_anything_v2.SMALL)
    return DepthEstimator(depth_anything_v2.KNOWN_MODELS[0].card, network)


def test_wrap_pad_continues_the_texture_and_folding_undoes_it():
    images = torch.rand(2, 5, 7, 3)
    padded = wrap_pad(images, 3, 9)  # a margin wider than the image wraps more than once
    assert padded.shape == (2, 11, 25, 3)
    assert torch.equal(padded[:, 3:8, 9:16], images)
    assert torch.equal(padded[:, 0, 9:16], images[:, 2]) and torch.equal(padded[:, :, 0], padded[:, :, 7])
    values = images[..., 0]
    torch.testing.assert_close(fold_onto_tile(wrap_pad(values[..., None], 3, 9)[..., 0], 5, 7, 3, 9), values)


def test_seam_ratio_is_one_for_a_periodic_map_and_large_for_a_ramp():
    angle = torch.linspace(0, 2 * torch.pi, 65)[:-1]
    periodic = (torch.sin(angle)[None, :] + torch.cos(angle)[:, None])[None]
    # Across the wrap a periodic map changes like any neighbour pair (here at the sine's steepest point: 1/0.64).
    assert 0.5 < seam_ratio(periodic) < 1.6
    ramp = torch.arange(64.0).expand(1, 64, 64)
    assert seam_ratio(ramp) > 30


def test_tiled_depth_has_no_seam_where_the_plain_estimate_has_one(estimator):
    texture = _texture()
    plain = estimator.predict(texture, resolution=56)
    tiled = tileable_depth(estimator, texture, resolution=56)
    assert tiled.values.shape == plain.values.shape == (1, 56, 56) and tiled.kind is plain.kind
    plain_seam, tiled_seam = seam_ratio(plain.values), seam_ratio(tiled.values)
    # Measured: plain ~15-20x the interior neighbour difference, tiled ~0.7-1.
    assert plain_seam > 3
    assert tiled_seam < 1.5 and tiled_seam < plain_seam / 5
    # Still the same picture away from the borders (measured 0.61: a random network's prediction depends much on
    # where a pixel sits in the frame, and the padded frame moves every pixel).
    inner = (slice(None), slice(14, 42), slice(14, 42))
    correlation = torch.corrcoef(torch.stack([plain.values[inner].flatten(), tiled.values[inner].flatten()]))[0, 1]
    assert correlation > 0.4


def test_tiling_keeps_masks_and_refuses_a_bad_margin(estimator):
    texture = _texture(28)
    mask = torch.zeros(1, 28, 28)
    mask[:, 7:21, 7:21] = 1
    depth = tileable_depth(estimator, texture, resolution=28, mask=mask)
    outside = depth.values[0, :3]
    assert torch.allclose(outside, outside.flatten()[0].expand_as(outside), rtol=1e-4)
    with pytest.raises(ValueError, match="margin"):
        tileable_depth(estimator, texture, resolution=28, margin=0)


def test_tileable_option_of_depth_estimate(pack, tmp_path, monkeypatch):
    import folder_paths

    for name in ("depth", "depthanything"):
        (tmp_path / name).mkdir()
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(tmp_path / name)], {".pth"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    _, state_dict = _random_network(depth_anything_v2, depth_anything_v2.SMALL)
    torch.save(state_dict, tmp_path / "depth" / "depth_anything_v2_vits.pth")
    nodes = pack.nodes.depth_estimate
    model = nodes.LoadDepthModel.execute(model="depth_anything_v2_vits.pth", device="cpu", precision="auto").result[0]
    texture = _texture(42)
    options = dict(images=texture, depth_model=model, resolution="custom", custom_resolution=42,
                   normalize="per image")
    plain, _ = nodes.DepthEstimate.execute(**options).result
    tiled, picture = nodes.DepthEstimate.execute(**options, tileable=True).result
    assert picture.shape == (1, 42, 42, 3)
    assert seam_ratio(tiled.values) < 1.5 < seam_ratio(plain.values)
