"""The torch rasterizer against analytic projections, and the camera paths of the 3D photo."""
from __future__ import annotations

import math

import pytest
import torch

from depth_core.camera import Pinhole
from depth_core.photo3d import build_photo3d, camera_path, render_path
from depth_core.photo3d.paths import PATH_NAMES
from depth_core.photo3d.render import Mesh, rasterize, render_frame

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def plane_mesh(size: float, cells: int, rotation_y_degrees: float, centre: tuple[float, float, float],
               texture) -> Mesh:
    """A square plane (side `size`) turned about +Y and moved to `centre`; colour = texture(u, v) of plane coords."""
    u, v = torch.meshgrid(torch.linspace(-size / 2, size / 2, cells + 1, dtype=torch.float64),
                          torch.linspace(-size / 2, size / 2, cells + 1, dtype=torch.float64), indexing="xy")
    angle = math.radians(rotation_y_degrees)
    x = u * math.cos(angle) + centre[0]
    z = -u * math.sin(angle) + centre[2]
    y = v + centre[1]
    vertices = torch.stack([x, y, z], -1).reshape(-1, 3)
    colors = texture(u, v).reshape(-1, 3)
    index = torch.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([b, d, c], -1).reshape(-1, 3)])
    return Mesh(vertices.float(), colors.float(), faces)


def linear_texture(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Affine in plane coordinates: perspective-correct barycentric interpolation reproduces it exactly.
    return torch.stack([0.5 + 0.4 * u, 0.5 + 0.4 * v, 0.25 + 0.1 * u + 0.2 * v], -1)


def expected_plane_image(camera: Pinhole, position, rotation_y_degrees, centre, size, texture):
    """Ray-plane intersection per pixel centre: the exact image and where the plane is seen."""
    rays = camera.pixel_rays(dtype=torch.float64)  # z = -1
    angle = math.radians(rotation_y_degrees)
    normal = torch.tensor([math.sin(angle), 0.0, math.cos(angle)], dtype=torch.float64)
    origin = torch.tensor(position, dtype=torch.float64)
    point_on_plane = torch.tensor(centre, dtype=torch.float64)
    t = ((point_on_plane - origin) @ normal) / (rays @ normal)
    hit = origin + t[..., None] * rays
    relative = hit - point_on_plane
    u = relative[..., 0] * math.cos(angle) - relative[..., 2] * math.sin(angle)
    v = relative[..., 1]
    inside = (u.abs() < size / 2) & (v.abs() < size / 2) & (t > 0)
    return texture(u, v).permute(2, 0, 1), inside


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rotation,size,cells", [(0.0, 2.0, 12), (25.0, 2.0, 12), (25.0, 8.0, 12), (25.0, 8.0, 96)])
def test_textured_plane_renders_to_the_analytic_image(device, rotation, size, cells):
    """size 8 overflows the view on every side: triangles cut by the image border must not wrap around. 96 cells
    make pixel-sized triangles (the fast 2x2 path and its padded border) instead of large ones."""
    camera = Pinhole.from_fov(48, 40, 60.0)
    centre = (0.1, -0.05, -3.0)
    position = (0.2, 0.1, 0.3)
    mesh = plane_mesh(size, cells, rotation, centre, linear_texture).to(device)
    image, covered = rasterize(mesh, camera, torch.tensor(position, device=device))
    expected, inside = expected_plane_image(camera, position, rotation, centre, size, linear_texture)
    # Away from the plane's outline (one pixel), every pixel is covered and has exactly the analytic colour.
    interior = inside.clone()
    for shift in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        interior &= torch.roll(inside, shift, (0, 1))
    assert interior.sum() > 400
    assert covered.cpu()[interior].all()
    assert not covered.cpu()[~inside].any()
    error = (image.cpu().double() - expected).abs()[:, interior]
    assert float(error.max()) < 2e-4


def test_a_prepared_mesh_renders_the_same_and_is_forgotten_with_its_mesh():
    import gc

    from depth_core.photo3d import render

    camera = Pinhole.from_fov(40, 30, 50.0)
    mesh = plane_mesh(2.0, 30, 20.0, (0.0, 0.0, -3.0), linear_texture)
    position = torch.tensor([0.1, 0.0, 0.2])
    plain, plain_coverage = render_frame(mesh, camera, position, supersampling=2)
    prepared = render.prepare(mesh)
    assert render.prepare(mesh) is prepared  # a loop passing the same Mesh prepares it once
    again, again_coverage = render_frame(prepared, camera, position, supersampling=2)
    assert torch.equal(plain, again) and torch.equal(plain_coverage, again_coverage)
    assert float(plain_coverage.mean()) > 0.3
    del mesh, prepared
    gc.collect()
    assert render._last_prepared is None, "the cache must not keep a dropped mesh alive"


def test_nearest_surface_wins_whatever_the_triangle_order():
    camera = Pinhole.from_fov(32, 32, 50.0)
    red = plane_mesh(2.0, 4, 0.0, (0.0, 0.0, -3.0), lambda u, v: torch.stack([u * 0 + 1, u * 0, u * 0], -1))
    green = plane_mesh(1.0, 4, 0.0, (0.0, 0.0, -2.0), lambda u, v: torch.stack([u * 0, u * 0 + 1, u * 0], -1))
    for first, second in ((red, green), (green, red)):
        offset = first.vertices.shape[0]
        mesh = Mesh(torch.cat([first.vertices, second.vertices]), torch.cat([first.colors, second.colors]),
                    torch.cat([first.faces, second.faces + offset]))
        image, _ = rasterize(mesh, camera, torch.zeros(3))
        assert image[1, 16, 16] == pytest.approx(1.0) and image[0, 16, 16] == pytest.approx(0.0)
        assert image[0, 16, 6] == pytest.approx(1.0)  # outside the small green plane: the red one behind


def test_supersampling_antialiases_an_edge():
    camera = Pinhole(8, 8, 8.0, 8.0, 4.0, 4.0)
    # A white plane covering x >= 0 at distance 1: the edge runs through the middle of pixel column 4.
    mesh = Mesh(torch.tensor([[-0.0625, -2, -1], [3, -2, -1], [-0.0625, 2, -1], [3, 2, -1]]).float(),
                torch.ones(4, 3), torch.tensor([[0, 1, 2], [1, 3, 2]]))
    _, coverage = render_frame(mesh, camera, torch.zeros(3), supersampling=4, fill_holes=False)
    # x = -0.0625 projects to u = 3.5: column 3 is half covered, column 4 fully, column 2 not at all.
    assert coverage[4, 3].item() == pytest.approx(0.5)
    assert coverage[4, 4].item() == pytest.approx(1.0) and coverage[4, 2].item() == 0.0


def test_moving_camera_sees_inpainted_background_behind_a_foreground_edge():
    height, width = 40, 60
    distance = torch.full((height, width), 6.0)
    distance[:, 30:] = 2.0
    image = torch.zeros(3, height, width)
    image[0, :, :30] = 1.0  # red wall
    image[1, :, 30:] = 1.0  # green box in front
    camera = Pinhole.from_fov(width, height, 55.0)
    _, layered = build_photo3d(image, distance, camera, band_fraction=0.15, border_fraction=0.1)
    # Camera moves left: the box shifts right more than the wall, opening a gap at the box's left edge.
    frame, coverage = render_frame(layered.mesh, camera, torch.tensor([-0.2, 0.0, 0.0]), supersampling=2,
                                   fill_holes=False)
    shift_box = camera.fx * 0.2 / 2.0
    gap = frame[:, 20, 31:int(30 + shift_box) - 1]
    assert gap.shape[1] >= 3
    assert (gap[0] > 0.95).all() and (gap[1] < 0.05).all(), "the gap shows the red wall, not the green box"
    assert float(coverage.min()) > 0.99


def test_translation_that_leaves_the_scene_still_renders_complete_frames():
    image = torch.rand(3, 16, 16)
    distance = torch.full((16, 16), 3.0)
    camera = Pinhole.from_fov(16, 16)
    _, layered = build_photo3d(image, distance, camera)
    for position in ([50.0, 0.0, 0.0], [0.0, 0.0, -10.0], [0.0, 0.0, 100.0]):
        frame, coverage = render_frame(layered.mesh, camera, torch.tensor(position), supersampling=2)
        assert frame.shape == (3, 16, 16) and torch.isfinite(frame).all()
        assert float(coverage.mean()) < 1.0
        assert frame.min() >= 0 and frame.max() <= 1


@pytest.mark.parametrize("name", PATH_NAMES)
def test_every_path_starts_and_ends_where_defined(name):
    x, y, z, frames, subject = 0.3, -0.2, 0.5, 7, 4.0
    path = camera_path(name, frames, (x, y, z), mean_location=subject)
    assert path.positions.shape == (frames, 3) and path.focal_scales.shape == (frames,)
    last_angle = 2 * math.pi * (frames - 1) / frames
    expected_first, expected_last = {
        "straight line": ((0, 0, 0), (x, y, z)),
        "double straight line": ((-x, -y, -z), (x, y, z)),
        "circle": ((x, 0, z), (x * math.cos(last_angle), y * math.sin(last_angle), z * math.cos(last_angle))),
        "swing": ((0, 0, 0), (x * math.sin(last_angle), y * math.sin(last_angle),
                              z * 0.5 * (1 - math.cos(2 * last_angle)))),
        "zoom in": ((0, 0, 0), (x, y, -z)),
        "dolly zoom": ((0, 0, 0), (x, y, z)),
    }[name]
    assert path.positions[0].tolist() == pytest.approx(expected_first, abs=1e-6)
    assert path.positions[-1].tolist() == pytest.approx(expected_last, abs=1e-6)
    if name == "dolly zoom":
        assert path.focal_scales[0].item() == pytest.approx(1.0)
        assert path.focal_scales[-1].item() == pytest.approx((subject + z) / subject)
    else:
        assert torch.equal(path.focal_scales, torch.ones(frames))


def test_dolly_zoom_keeps_the_subject_size():
    camera = Pinhole.from_fov(64, 64, 50.0)
    subject = 4.0
    path = camera_path("dolly zoom", 5, (0.0, 0.0, 2.0), mean_location=subject)
    # A bar of half-width 0.5 at the subject distance: its projected half-width must not change.
    half_widths = []
    for position, focal in zip(path.positions, path.focal_scales):
        distance = subject + float(position[2])
        half_widths.append(camera.fx * float(focal) * 0.5 / distance)
    assert half_widths == pytest.approx([half_widths[0]] * 5)
    assert path.focal_scales[-1] > 1.4  # the background does change: the focal length really moved


def test_one_frame_paths_are_the_first_pose():
    for name in PATH_NAMES:
        path = camera_path(name, 1, (0.1, 0.1, 0.1), 2.0)
        assert len(path) == 1
        assert path.positions[0].tolist() == pytest.approx(camera_path(name, 9, (0.1, 0.1, 0.1), 2.0).positions[0].tolist())


def test_bad_paths_are_clear_errors():
    with pytest.raises(ValueError, match="at least one frame"):
        camera_path("circle", 0, (0.1, 0.0, 0.0))
    with pytest.raises(ValueError, match="Choose one of"):
        camera_path("spiral", 5, (0.1, 0.0, 0.0))


def test_render_path_frames_and_crop():
    image = torch.rand(3, 20, 30)
    distance = torch.full((20, 30), 2.0)
    camera = Pinhole.from_fov(30, 20)
    _, layered = build_photo3d(image, distance, camera)
    calls = []
    frames = render_path(layered.mesh, camera, camera_path("swing", 4, (0.05, 0.0, 0.0)), supersampling=1, crop=0.1,
                         progress=lambda done, total: calls.append((done, total)))
    assert frames.shape == (4, 16, 24, 3)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # The first swing frame is the photo's own view: the render reproduces the photo (cropped).
    assert torch.allclose(frames[0].permute(2, 0, 1), image[:, 2:18, 3:27], atol=1e-4)
