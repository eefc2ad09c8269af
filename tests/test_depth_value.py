"""The shared depth value and camera: meaning-preserving conversions everyone downstream relies on."""
from __future__ import annotations

import math

import pytest
import torch

from depth_core.camera import Pinhole, equirectangular_directions
from depth_core.depth import (Depth, DepthKind, as_depth, depth_to_image, distance, fill_non_finite,
                              match_depth_to_images, normalized_nearness)


def test_relative_and_metric_both_picture_near_as_white():
    near_left = torch.tensor([[[2.0, 1.0]]])
    assert normalized_nearness(Depth(near_left, DepthKind.RELATIVE_INVERSE)).tolist() == [[[1.0, 0.0]]]
    metres = torch.tensor([[[1.0, 4.0]]])  # left is nearer
    assert normalized_nearness(Depth(metres, DepthKind.METRIC)).tolist() == [[[1.0, 0.0]]]


def test_whole_batch_normalization_uses_one_range():
    frames = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 3.0)])
    frames[0, 0, 0] = 0.0
    per_batch = normalized_nearness(Depth(frames, DepthKind.RELATIVE_INVERSE), per_image=False)
    assert per_batch[1].eq(1.0).all() and per_batch[0, 0, 0] == 0.0 and per_batch[0, 1, 1] == pytest.approx(1 / 3)


def test_flat_and_non_finite_depth_never_produce_nan():
    flat = Depth(torch.full((1, 3, 3), 7.0), DepthKind.RELATIVE_INVERSE)
    assert depth_to_image(flat).eq(0).all()
    broken = torch.tensor([[[1.0, float("nan")], [float("inf"), 3.0]]])
    filled = fill_non_finite(broken, "far", DepthKind.RELATIVE_INVERSE)
    assert filled.tolist() == [[[1.0, 1.0], [1.0, 3.0]]]
    metric = fill_non_finite(broken, "far", DepthKind.METRIC)
    assert metric.tolist() == [[[1.0, 3.0], [3.0, 3.0]]]
    assert torch.isfinite(fill_non_finite(torch.full((1, 2, 2), float("nan")))).all()


def test_relative_distance_keeps_a_tilted_plane_planar():
    # Disparity of a plane is affine in pixel coordinates; its depth must come back as a plane in 3D.
    width, height = 64, 48
    camera = Pinhole.from_fov(width, height, 60.0)
    u = torch.arange(width) + 0.5
    disparity = (2.0 + 0.02 * u).expand(height, width)[None]
    z = distance(Depth(disparity, DepthKind.RELATIVE_INVERSE), near=1.0, far=4.0)
    points = camera.unproject(z[0]).reshape(-1, 3)
    centred = points - points.mean(0)
    smallest_singular_value = torch.linalg.svdvals(centred)[-1]
    assert smallest_singular_value / torch.linalg.svdvals(centred)[0] < 1e-4
    assert z.min() == pytest.approx(1.0, rel=1e-4) and z.max() == pytest.approx(4.0, rel=1e-4)


def test_metric_distance_is_kept_in_metres():
    metres = torch.tensor([[[1.5, 2.5]]])
    assert torch.equal(distance(Depth(metres, DepthKind.METRIC)), metres)
    with pytest.raises(ValueError, match="near < far"):
        distance(Depth(metres, DepthKind.RELATIVE_INVERSE), near=3.0, far=2.0)


def test_depth_images_from_other_packs_are_read_as_near_white():
    image = torch.zeros(1, 2, 2, 3)
    image[0, 0, 0] = 1.0
    depth = as_depth(image)
    assert depth.kind is DepthKind.RELATIVE_INVERSE and depth.values[0, 0, 0] == 1.0
    assert as_depth(depth) is depth
    with pytest.raises(TypeError):
        as_depth("not a depth")


def test_match_depth_resizes_and_broadcasts_or_explains():
    depth = Depth(torch.rand(1, 10, 10), DepthKind.RELATIVE_INVERSE)
    matched = match_depth_to_images(depth, 3, (20, 30))
    assert matched.values.shape == (3, 20, 30)
    with pytest.raises(ValueError, match="one depth map per image"):
        match_depth_to_images(Depth(torch.rand(2, 4, 4), DepthKind.RELATIVE_INVERSE), 3, (4, 4))


def test_pinhole_project_inverts_unproject():
    camera = Pinhole.from_fov(40, 30, 55.0)
    depth = torch.rand(30, 40) * 5 + 1
    points = camera.unproject(depth)
    assert (points[..., 2] < 0).all()
    assert points[0, 20, 1] > points[29, 20, 1]  # top row is up (+Y)
    pixels = camera.project(points)
    v, u = torch.meshgrid(torch.arange(30) + 0.5, torch.arange(40) + 0.5, indexing="ij")
    assert torch.allclose(pixels[..., 0], u, atol=1e-4) and torch.allclose(pixels[..., 1], v, atol=1e-4)
    assert camera.horizontal_fov_degrees == pytest.approx(55.0)


def test_equirectangular_directions_are_unit_and_centre_looks_forward():
    directions = equirectangular_directions(64, 32)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(32, 64), atol=1e-5)
    centre = directions[16, 32]
    assert centre[2] < -0.99 and abs(math.degrees(math.asin(directions[0, 0, 1]))) > 80
