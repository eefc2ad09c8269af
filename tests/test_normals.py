"""Normal maps: the old extension's Sobel method against OpenCV, geometric normals against analytic scenes."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from depth_core.camera import Pinhole
from depth_core.depth import Depth, DepthKind
from depth_core.image import gaussian_kernel
from depth_core.normals import (encode_normals, geometric_normals, normal_map,
                                sixteen_bit_nearness, sobel_kernels, sobel_normals)


def old_extension_reference(depth_u16: np.ndarray, pre_blur, sobel, post_blur, invert) -> np.ndarray:
    """The old extension's create_normalmap steps (inventory section 4), with OpenCV, before its uint8 encoding."""
    z = (depth_u16 if invert else depth_u16 * -1.0) / 256.0
    if pre_blur:
        z = cv2.GaussianBlur(z, (pre_blur, pre_blur), pre_blur)
    if sobel:
        zx = cv2.Sobel(np.float64(z), cv2.CV_64F, 1, 0, ksize=sobel)
        zy = cv2.Sobel(np.float64(z), cv2.CV_64F, 0, 1, ksize=sobel)
    else:
        zy, zx = np.gradient(z)
    normal = np.dstack((zx, -zy, np.ones_like(z)))
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    if post_blur:
        normal = cv2.GaussianBlur(normal, (post_blur, post_blur), post_blur)
        normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    return (normal + 1) / 2


def bumpy_depth(height=23, width=31) -> Depth:
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return Depth((1 + x + 0.3 * torch.sin(7 * y) * torch.cos(5 * x))[None], DepthKind.RELATIVE_INVERSE)


@pytest.mark.parametrize("pre_blur,sobel,post_blur,invert", [
    (0, 3, 0, False), (0, 3, 0, True), (3, 5, 0, False), (0, 1, 0, False), (5, 7, 3, False), (0, 0, 0, False),
    (0, 31, 0, False), (0, 3, 9, True),
])
def test_sobel_method_matches_the_old_extension(pre_blur, sobel, post_blur, invert):
    depth = bumpy_depth()
    depth16 = sixteen_bit_nearness(depth)
    reference = old_extension_reference(depth16[0].numpy(), pre_blur, sobel, post_blur, invert)
    ours = normal_map(depth, "sobel", pre_blur=pre_blur, sobel_kernel=sobel, post_blur=post_blur, invert=invert)
    assert ours.shape == (1, 23, 31, 3)
    assert np.abs(ours[0].numpy() - reference).max() < 1e-5


def test_sixteen_bit_conversion_matches_convert_to_i16():
    depth = bumpy_depth()
    unit = ((depth.values - depth.values.min()) / (depth.values.max() - depth.values.min())).double().numpy()
    expected = np.clip(unit * 65536 + 0.0001, 0, 65535.9).astype("uint16")
    assert np.array_equal(sixteen_bit_nearness(depth).numpy().astype("uint16"), expected)


def test_kernels_match_opencv():
    for size in (1, 3, 5, 7, 11, 31):
        smooth, derivative = sobel_kernels(size)
        kx, ky = cv2.getDerivKernels(1, 0, size)
        assert np.allclose(derivative.numpy(), kx.ravel())
        if size > 1:
            assert np.allclose(smooth.numpy(), ky.ravel())
    assert np.allclose(gaussian_kernel(7, 7.0).numpy(), cv2.getGaussianKernel(7, 7.0, cv2.CV_64F).ravel())


def test_kernel_sizes_are_validated():
    with pytest.raises(ValueError, match="odd"):
        normal_map(bumpy_depth(), "sobel", sobel_kernel=4)
    with pytest.raises(ValueError, match="odd"):
        normal_map(bumpy_depth(), "sobel", pre_blur=33)


# ------------------------------------------------------------------------------------------- geometric


def plane(camera: Pinhole, normal: torch.Tensor, distance: float = 3.0) -> torch.Tensor:
    rays = camera.pixel_rays(dtype=torch.float64)
    point = torch.tensor([0.0, 0.0, -distance], dtype=torch.float64)
    return (normal @ point) / (rays @ normal)


def unit(v) -> torch.Tensor:
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.norm()


def decode(picture: torch.Tensor) -> torch.Tensor:
    n = picture.double() * 2 - 1
    return n / n.norm(dim=-1, keepdim=True)


def mean_angle(picture: torch.Tensor, truth: torch.Tensor) -> float:
    return float(torch.rad2deg(torch.acos((decode(picture) * truth).sum(-1).clamp(-1, 1))).mean())


@pytest.mark.parametrize("normal", [(0, 0, 1), (0.5, 0, 1), (0, -0.7, 1), (-0.6, 0.4, 0.7), (1.5, 0.2, 1)])
def test_geometric_planes_are_exact_for_metric_and_relative(normal):
    camera = Pinhole.from_fov(48, 36, 60.0)
    truth = unit(normal)
    distances = plane(camera, truth)
    metric = Depth(distances.float()[None], DepthKind.METRIC)
    assert mean_angle(normal_map(metric, "geometric", 60.0)[0], truth) < 0.05
    ratio = max(float(distances.max() / distances.min()), 1.01)
    relative = Depth((1.0 / distances).float()[None] * 7.0 + 3.0, DepthKind.RELATIVE_INVERSE)  # affine disparity
    assert mean_angle(normal_map(relative, "geometric", 60.0, depth_range=ratio)[0], truth) < 0.05


def test_geometric_sphere_is_accurate_and_beats_sobel():
    camera = Pinhole.from_fov(96, 72, 55.0)
    rays = camera.pixel_rays(dtype=torch.float64)
    centre, radius = torch.tensor([0.0, 0.0, -4.0], dtype=torch.float64), 1.2
    rr, rc = (rays * rays).sum(-1), rays @ centre
    disc = rc * rc - rr * (centre @ centre - radius ** 2)
    hit = disc > 0
    depth = torch.where(hit, (rc - disc.clamp_min(0).sqrt()) / rr, torch.full_like(rr, 8.0))
    truth = torch.where(hit.unsqueeze(-1), (depth.unsqueeze(-1) * rays - centre) / radius,
                        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    metric = Depth(depth.float()[None], DepthKind.METRIC)
    geometric = mean_angle(normal_map(metric, "geometric", 55.0)[0], truth)
    sobel = mean_angle(normal_map(metric, "sobel")[0], truth)
    print(f"sphere mean angular error: geometric {geometric:.3f} deg, sobel {sobel:.3f} deg")
    assert geometric < 2.0 and sobel > 5 * geometric


def test_orientation_and_green_convention():
    camera = Pinhole.from_fov(32, 32, 50.0)
    floor_like = unit((0.0, 0.6, 1.0))  # surface facing up and towards the camera
    metric = Depth(plane(camera, floor_like).float()[None], DepthKind.METRIC)
    opengl = normal_map(metric, "geometric", 50.0, green="opengl")[0]
    directx = normal_map(metric, "geometric", 50.0, green="directx")[0]
    assert float(opengl[..., 1].mean()) > 0.7 and float(opengl[..., 2].mean()) > 0.8
    assert torch.allclose(directx[..., 1], 1.0 - opengl[..., 1], atol=1e-6)
    assert torch.equal(directx[..., ::2], opengl[..., ::2])
    sobel_gl = normal_map(metric, "sobel", green="opengl")[0]
    assert float(sobel_gl[..., 1].mean()) > 0.5  # the old method agrees on which way is up
    with pytest.raises(ValueError, match="Green"):
        normal_map(metric, green="vulkan")


def test_strength_scales_slopes():
    camera = Pinhole.from_fov(24, 24, 50.0)
    tilted = Depth(plane(camera, unit((0.5, 0.0, 1.0))).float()[None], DepthKind.METRIC)
    flat = decode(normal_map(tilted, fov_degrees=50.0, strength=0.0)[0])
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(flat), atol=1e-6)
    angle = {s: float(torch.rad2deg(torch.acos(decode(normal_map(tilted, fov_degrees=50.0, strength=s)[0])[..., 2]))
                      .mean())
             for s in (0.5, 1.0, 2.0)}
    assert angle[0.5] < angle[1.0] < angle[2.0]
    assert angle[1.0] == pytest.approx(math.degrees(math.atan(0.5)), abs=0.1)
    with pytest.raises(ValueError, match="Strength"):
        normal_map(tilted, strength=-1.0)


def test_invert_flips_geometric_normals():
    depth = bumpy_depth()
    plain, flipped = decode(normal_map(depth)[0]), decode(normal_map(depth, invert=True)[0])
    assert torch.allclose(flipped[..., :2], -plain[..., :2], atol=1e-5)


def test_depth_edges_do_not_tilt_both_sides():
    camera = Pinhole.from_fov(40, 20, 50.0)
    values = torch.full((20, 40), 2.0, dtype=torch.float64)
    values[:, 20:] = 6.0  # two fronto-parallel walls with a step between them
    normals = decode(normal_map(Depth(values.float()[None], DepthKind.METRIC))[0])
    assert float(normals[..., 2].min()) > 0.999  # no pixel, not even at the step, leans over


def test_bad_and_degenerate_input():
    one_pixel = Depth(torch.tensor([[[3.0]]]), DepthKind.METRIC)
    for method in ("geometric", "sobel"):
        picture = normal_map(one_pixel, method)
        assert picture.shape == (1, 1, 1, 3) and torch.allclose(picture, torch.tensor([0.5, 0.5, 1.0]))
    constant = Depth(torch.full((2, 5, 6), 4.0), DepthKind.RELATIVE_INVERSE)
    for method in ("geometric", "sobel"):
        picture = normal_map(constant, method)
        assert torch.isfinite(picture).all() and torch.allclose(picture[..., 2], torch.ones(2, 5, 6))
    broken = bumpy_depth().values.clone()
    broken[0, 3, 3], broken[0, 4, 4], broken[0, 5, 5] = float("nan"), float("inf"), float("-inf")
    for kind in DepthKind:
        for method in ("geometric", "sobel"):
            assert torch.isfinite(normal_map(Depth(broken.abs() + 0.1, kind), method)).all()
    with pytest.raises(ValueError, match="empty"):
        normal_map(Depth(torch.zeros(0, 3, 3), DepthKind.METRIC))
    with pytest.raises(ValueError, match="method"):
        normal_map(constant, "magic")
    with pytest.raises(ValueError, match="depth range"):
        normal_map(constant, depth_range=1.0)


def test_encode_normals_and_geometric_camera_check():
    n = torch.tensor([[[[0.0, 1.0, 0.0]]]])
    assert torch.allclose(encode_normals(n), torch.tensor([0.5, 1.0, 0.5]))
    assert torch.allclose(encode_normals(n, "directx"), torch.tensor([0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="Camera"):
        geometric_normals(torch.ones(1, 4, 4), Pinhole.from_fov(5, 4))
    assert sobel_normals(torch.zeros(1, 3, 3)).shape == (1, 3, 3, 3)
