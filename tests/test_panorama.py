"""depth_core.panorama: seamless depth of equirectangular panoramas from perspective views, and 360° stereo (ODS).

The scene is a textured box-shaped room seen from inside (tests/panorama_scene.py) with analytic distances; the
"networks" return each view's true depth along its own axis (metric) or inverse depth with a different random scale
and shift per view (relative).
"""
from __future__ import annotations

import math

import pytest
import torch

from depth_core.camera import equirectangular_directions
from depth_core.depth import Depth, DepthKind
from depth_core.panorama import (OdsSettings, align_views, check_panorama, estimate_panorama_depth, locate_in_views,
                                 ods_shifts, ods_views, sample_views, view_set)
from panorama_scene import ROOM_MAX, ROOM_MIN, TruthEstimator, render_room

WIDTH, HEIGHT = 256, 128


@pytest.fixture(scope="module")
def room():
    return render_room(WIDTH, HEIGHT)


def column_steps(values: torch.Tensor) -> torch.Tensor:
    """|value[x+1] - value[x]| for every column pair including the wrap-around one (last -> first), [H,W]."""
    return (torch.roll(values, -1, dims=-1) - values).abs()


def away_from_room_edges(distance: torch.Tensor) -> torch.Tensor:
    """[H,W] True where the true distance has no kink (a room edge) within 2 pixels: there bilinear sampling of the
    views necessarily rounds the kink off, elsewhere the reassembled depth must be exact."""
    padded = torch.cat([distance[:, -1:], distance, distance[:, :1]], dim=1)
    across_columns = (padded[:, 2:] - 2 * padded[:, 1:-1] + padded[:, :-2]).abs()
    across_rows = torch.zeros_like(distance)
    across_rows[1:-1] = (distance[2:] - 2 * distance[1:-1] + distance[:-2]).abs()
    smooth_curvature = 0.01 * distance
    kink = ((across_columns > smooth_curvature) | (across_rows > smooth_curvature)).float()
    near_kink = torch.nn.functional.max_pool2d(kink[None, None], 5, stride=1, padding=2)[0, 0]
    return near_kink == 0


@pytest.mark.parametrize("views", ["cube", "icosahedral"])
def test_views_cover_the_whole_sphere_with_overlap(views):
    located = locate_in_views(equirectangular_directions(128, 64), view_set(views))
    covering = (located.weight > 0).sum(0)
    assert int(covering.min()) >= 1
    # Every view shares directions with others, so the overlap graph is connected through alignment.
    assert float((covering >= 2).float().mean()) > 0.3


def test_sampled_views_are_perspective_pictures_of_the_panorama(room):
    image, distance = room
    views = view_set("cube", 0.0)
    size = 64
    faces = sample_views(image[0].permute(2, 0, 1), views, size)
    # The front face (looking down -Z) sees the front wall at z = ROOM_MIN[2] as a plane: its blue channel (the
    # distance) times cos(angle to the axis) is constant.
    rays = torch.stack(torch.meshgrid((torch.arange(size) + 0.5) / size * 2 - 1, (torch.arange(size) + 0.5) / size * 2 - 1,
                                      indexing="ij"), -1)
    ray_length = torch.sqrt((rays ** 2).sum(-1) + 1.0)
    axis_depth = faces[0, 2] * 6.0 / ray_length
    centre = axis_depth[22:42, 12:52]          # inside the front wall (not the ceiling, floor or side walls)
    assert float(centre.std()) < 0.01 * float(centre.mean())
    assert float(centre.mean()) == pytest.approx(-float(ROOM_MIN[2]), rel=0.01)


@pytest.mark.parametrize("views", ["cube", "icosahedral"])
def test_metric_depth_is_reassembled_seamlessly(room, views):
    image, distance = room
    estimator = TruthEstimator(view_set(views).fov_degrees)
    depth, report = estimate_panorama_depth(estimator, image, view_set_name=views)
    assert depth.kind is DepthKind.METRIC and depth.size == (HEIGHT, WIDTH)
    assert estimator.calls == 1, "all views go through the network in one batch"
    relative_error = (depth.values[0] - distance[0]).abs() / distance[0]
    assert float(relative_error.mean()) < 0.002
    # Only the room's edges (kinks of the distance, blurred by bilinear sampling) can differ by more than 0.5 %.
    assert float((relative_error > 0.005).float().mean()) < 0.03
    assert report.residuals[0] < 1e-3
    # No step anywhere: the error changes smoothly across view borders, the 360° border and the poles.
    smooth = away_from_room_edges(distance[0])
    assert float(smooth.float().mean()) > 0.8
    error_steps = column_steps(depth.values[0] - distance[0]) / distance[0]
    assert float(error_steps[smooth].max()) < 0.002     # resampling noise only; a seam would be a 1 % step
    row_steps = (depth.values[0, 1:] - depth.values[0, :-1] - (distance[0, 1:] - distance[0, :-1])).abs()
    assert float((row_steps / distance[0, 1:])[smooth[1:] & smooth[:-1]].max()) < 0.002
    wrap_step = (depth.values[0, :, 0] - depth.values[0, :, -1]).abs()
    true_wrap_step = (distance[0, :, 0] - distance[0, :, -1]).abs()
    assert float((wrap_step - true_wrap_step).abs().max()) < 0.005 * float(distance.min())
    # Each pole row is one point: every pixel of it has (nearly) the same distance.
    for pole_row in (depth.values[0, 0], depth.values[0, -1]):
        assert float(pole_row.std()) < 0.01 * float(pole_row.mean())


def test_relative_views_with_random_scale_and_shift_are_aligned_back(room):
    image, distance = room
    estimator = TruthEstimator(view_set("cube").fov_degrees, relative=True, seed=3)
    depth, report = estimate_panorama_depth(estimator, image, view_set_name="cube")
    assert depth.kind is DepthKind.RELATIVE_INVERSE
    inverse = 1.0 / distance[0]
    # The result is inverse distance up to one global scale; even the shift comes out as 0 because views only fit
    # together under the true geometry.
    scale = float((depth.values[0] * inverse).sum() / (depth.values[0] ** 2).sum())
    relative_error = (scale * depth.values[0] - inverse).abs() / inverse
    assert float(relative_error.mean()) < 0.002
    smooth = away_from_room_edges(distance[0])
    assert float(column_steps(scale * depth.values[0] - inverse).div(inverse)[smooth].max()) < 0.002
    assert report.residuals[0] < 1e-3


def test_straight_room_edges_stay_straight(room):
    image, distance = room
    depth, _ = estimate_panorama_depth(TruthEstimator(90.0), image, view_set_name="icosahedral")
    points = equirectangular_directions(WIDTH, HEIGHT) * depth.values[0, ..., None]
    true_points = equirectangular_directions(WIDTH, HEIGHT) * distance[0, ..., None]
    # Points of the front wall (well inside it) lie on the plane z = ROOM_MIN[2]: planes stay planes.
    front = (true_points[..., 2] - float(ROOM_MIN[2])).abs() < 1e-4
    inner = front & (true_points[..., 0].abs() < 1.2) & (true_points[..., 1].abs() < 0.8)
    assert int(inner.sum()) > 100
    assert float((points[..., 2][inner] - float(ROOM_MIN[2])).abs().max()) < 0.01
    # The vertical edge between the front and right walls (x = ROOM_MAX[0], z = ROOM_MIN[2]) is the farthest
    # point of each row near it: it stays in one column (a straight vertical line), where it truly is.
    edge_longitude = math.atan2(float(ROOM_MAX[0]), -float(ROOM_MIN[2]))
    edge_column = (edge_longitude + math.pi) / (2 * math.pi) * WIDTH - 0.5
    window = slice(int(edge_column) - 6, int(edge_column) + 7)
    rows = slice(HEIGHT // 2 - 8, HEIGHT // 2 + 8)      # between the floor's and the ceiling's edges
    peak = depth.values[0, rows, window].argmax(-1) + window.start
    assert int(peak.max() - peak.min()) <= 1
    assert abs(float(peak.float().mean()) - edge_column) <= 1.0


def test_a_view_that_disagrees_somewhere_does_not_pull_the_others():
    views = view_set("cube")
    estimator = TruthEstimator(views.fov_degrees)
    image, distance = render_room(WIDTH, HEIGHT)
    size = 48
    faces = sample_views(image[0].permute(2, 0, 1), views, size).permute(0, 2, 3, 1)
    predictions = estimator.predict(faces).values * torch.tensor([1.0, 1.3, 0.8, 1.1, 0.9, 1.2]).view(-1, 1, 1)
    predictions[1, :10, :10] *= 3.0       # a blunder in a corner of one view
    alignment = align_views(predictions, DepthKind.METRIC, views)
    corrected = alignment.scale * torch.tensor([1.0, 1.3, 0.8, 1.1, 0.9, 1.2])
    assert torch.allclose(corrected / corrected.mean(), torch.ones(6), rtol=0.01)


def test_views_with_flat_predictions_leave_the_others_aligned():
    # A clear sky or a plain ceiling can come out flat (a network with random weights gives flat views everywhere):
    # such views' scales and shifts are then undetermined (the normal equations are singular), which must not stop
    # the others from being aligned.
    views = view_set("cube")
    image, _ = render_room(WIDTH, HEIGHT)
    faces = sample_views(image[0].permute(2, 0, 1), views, 48).permute(0, 2, 3, 1)
    true_inverse = 1.0 / TruthEstimator(views.fov_degrees).predict(faces).values
    predictions = TruthEstimator(views.fov_degrees, relative=True, seed=5).predict(faces).values
    predictions[4:6] = 0.0        # the views looking up and down see "nothing" (a ReLU output at zero)
    alignment = align_views(predictions, DepthKind.RELATIVE_INVERSE, views)
    aligned = alignment.scale.view(-1, 1, 1) * predictions + alignment.shift.view(-1, 1, 1)
    assert bool(torch.isfinite(aligned).all())
    others = [0, 1, 2, 3]
    factor = float((aligned[others] * true_inverse[others]).sum() / (aligned[others] ** 2).sum())
    relative_error = (factor * aligned[others] - true_inverse[others]).abs() / true_inverse[others]
    assert float(relative_error.mean()) < 0.01
    # A flat view is put at its neighbours' level: about between the nearest and farthest its wall truly is.
    for flat in (4, 5):
        level = factor * float(aligned[flat].mean())
        assert 0.95 * float(true_inverse[flat].min()) <= level <= 1.05 * float(true_inverse[flat].max())


def test_not_two_to_one_is_refused_and_a_photo_is_warned_about(caplog):
    with pytest.raises(ValueError, match="twice as wide.*panorama mode off"):
        estimate_panorama_depth(TruthEstimator(90.0), torch.rand(1, 60, 80, 3))
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut()[:, :, :]).float()[None, :256, :512] / 255.0
    with caplog.at_level("WARNING"):
        warnings = check_panorama(photo)
    assert warnings and "left and right edges do not meet" in warnings[0]
    assert "left and right edges do not meet" in caplog.text
    panorama, _ = render_room(WIDTH, HEIGHT)
    assert check_panorama(panorama) == []
    assert check_panorama(torch.roll(panorama, 37, dims=2)) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_panorama_depth_and_stereo_on_the_gpu_match_the_cpu(room):
    image, distance = room
    cpu, _ = estimate_panorama_depth(TruthEstimator(90.0, relative=True, seed=1), image)
    gpu, _ = estimate_panorama_depth(TruthEstimator(90.0, relative=True, seed=1), image, device="cuda")
    assert gpu.values.device.type == "cpu"
    torch.testing.assert_close(gpu.values, cpu.values, rtol=1e-3, atol=1e-4)
    depth = Depth(distance, DepthKind.METRIC)
    cpu_eyes = ods_views(image, depth, OdsSettings(ipd_mm=200.0))
    gpu_eyes = ods_views(image, depth, OdsSettings(ipd_mm=200.0), device="cuda")
    for cpu_eye, gpu_eye in zip(cpu_eyes, gpu_eyes):
        assert float((cpu_eye - gpu_eye).abs().mean()) < 1e-3


# --- 360° stereo ------------------------------------------------------------------------------------------------


def test_ods_shift_is_the_tangent_eye_angle():
    height, width = 64, 256
    metres = torch.full((1, height, width), 2.0)
    settings = OdsSettings(ipd_mm=64.0, pole_merge_degrees=90.0)
    shift = ods_shifts(Depth(metres, DepthKind.METRIC), width, settings)
    latitude = math.pi / 2 - (torch.arange(height) + 0.5) / height * math.pi
    expected = torch.asin((0.032 / (2.0 * torch.cos(latitude))).clamp(max=0.99)) * width / (2 * math.pi)
    assert torch.allclose(shift[0, :, 0], expected, rtol=1e-4)
    merged = ods_shifts(Depth(metres, DepthKind.METRIC), width, OdsSettings(ipd_mm=64.0))
    assert float(merged[0, 0].max()) < 0.05 * float(merged[0, height // 2].max()), "no parallax at the poles"
    # Relative depth: the nearest point on the horizon shifts divergence / 2 % of the width per eye.
    nearness = torch.rand(1, height, width)
    nearness[0, height // 2, 10] = 2.0
    relative = ods_shifts(Depth(nearness, DepthKind.RELATIVE_INVERSE), width, OdsSettings(divergence=1.0))
    assert float(relative[0, height // 2, 10]) == pytest.approx(0.005 * width, rel=0.03)


def test_ods_eyes_are_the_panorama_turned_by_the_eye_angle_and_wrap_around():
    """On a sphere of constant distance every row of each eye is the panorama row turned by that row's shift: left
    eye to the right, right eye to the left, wrapping around the 360° border."""
    height, width = 32, 128
    columns = torch.arange(width, dtype=torch.float32)
    stripes = 0.5 + 0.4 * torch.sin(columns / width * 2 * math.pi * 3)
    image = stripes.view(1, 1, width, 1).expand(1, height, width, 3).contiguous()
    depth = Depth(torch.full((1, height, width), 0.5), DepthKind.METRIC)
    settings = OdsSettings(ipd_mm=65.0, pole_merge_degrees=90.0)
    left, right = ods_views(image, depth, settings, fill="none")
    shift = ods_shifts(depth, width, settings)[0, :, 0]
    for row in (height // 2, height // 4):
        expected_left = 0.5 + 0.4 * torch.sin((columns - shift[row]) / width * 2 * math.pi * 3)
        expected_right = 0.5 + 0.4 * torch.sin((columns + shift[row]) / width * 2 * math.pi * 3)
        assert torch.allclose(left[0, row, :, 0], expected_left, atol=0.01)
        assert torch.allclose(right[0, row, :, 0], expected_right, atol=0.01)


def test_ods_of_the_room_has_no_seam_and_nearer_walls_shift_more(room):
    image, distance = room
    depth = Depth(distance, DepthKind.METRIC)
    left, right = ods_views(image, depth, OdsSettings(ipd_mm=200.0))
    for eye in (left, right):
        gray = eye[0].mean(-1)
        steps = column_steps(gray)
        assert float(steps[:, -1].mean()) < 3.0 * float(steps.mean()) + 0.01
    assert not torch.allclose(left, right)


# --- command line -------------------------------------------------------------------------------------------------


def test_cli_panorama_flag_writes_depth_360_stereo_and_sphere(tmp_path):
    import numpy as np
    from PIL import Image

    from depth_core.cli import main
    from depth_core.image import image_to_uint8
    from depth_core.models import depth_anything_v2

    torch.manual_seed(0)
    checkpoint = tmp_path / "small.pth"
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), checkpoint)
    panorama, _ = render_room(96, 48)
    Image.fromarray(image_to_uint8(panorama[0])).save(tmp_path / "room.png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main([str(tmp_path / "room.png"), "--model", str(checkpoint), "--resolution", "56", "--panorama", "cube",
                 "--outputs", "depth,sbs,mesh", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["room_360_TB.png", "room_depth.png", "room_mesh.glb"]
    assert Image.open(out / "room_360_TB.png").size == (96, 96)
    assert np.asarray(Image.open(out / "room_depth.png")).shape == (48, 96)
    with pytest.raises(SystemExit, match="photo.png.*twice as wide"):
        main([str(tmp_path / "photo.png"), "--model", str(checkpoint), "--resolution", "56", "--panorama",
              "--out", str(out)])


# --- 3D photo -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def room_photo3d():
    from depth_core.panorama import panorama_photo3d

    image, distance = render_room(WIDTH, HEIGHT)
    return image, distance, panorama_photo3d(image[0].permute(2, 0, 1), distance[0])


def test_panorama_3d_photo_mesh_is_the_room_all_around(room_photo3d):
    from panorama_scene import room_distance

    _, _, layered = room_photo3d
    vertices = layered.mesh.vertices.double()
    radius = vertices.norm(dim=1)
    truth = room_distance(vertices / radius[:, None])
    relative_error = ((radius - truth).abs() / truth).float()
    assert float(relative_error.median()) < 0.002
    assert float((relative_error > 0.02).float().mean()) < 0.02   # only the soft room edges may stray
    # The six faces together look every way: vertices in all eight octants, up to the poles.
    octants = ((vertices > 0).long() * torch.tensor([1, 2, 4])).sum(1).unique()
    assert len(octants) == 8
    assert float((vertices[:, 1] / radius).max()) > 0.99 and float((vertices[:, 1] / radius).min()) < -0.99
    assert layered.horizontal_fov == pytest.approx(2 * math.pi)


def test_look_around_frames_turn_a_full_circle_and_show_the_panorama(room_photo3d):
    from depth_core.camera import Pinhole
    from depth_core.image import image_to_uint8, psnr_uint8
    from depth_core.panorama import look_around_frame_size, look_around_frames, look_rotation, sample_directions

    image, _, layered = room_photo3d
    width, height = look_around_frame_size(WIDTH, 90.0)
    assert (width, height) == (64, 36)
    frames = look_around_frames(layered.mesh, 4, width, height, 90.0, "straight line", (0.0, 0.0, 0.0),
                                supersampling=2)
    assert frames.shape == (4, height, width, 3)
    rays = Pinhole.from_fov(width, height, 90.0).pixel_rays()
    for index, yaw in enumerate((0.0, 90.0, 180.0, 270.0)):
        forward = torch.tensor([math.sin(math.radians(yaw)), 0.0, -math.cos(math.radians(yaw))], dtype=torch.float64)
        world = rays @ look_rotation(forward).float().T
        expected = sample_directions(image[0].permute(2, 0, 1), world).permute(1, 2, 0)
        # Seen from the centre, the 3D photo is the panorama itself, turned the way the frame looks.
        assert psnr_uint8(image_to_uint8(frames[index]), image_to_uint8(expected)) > 20.0
    moved = look_around_frames(layered.mesh, 4, width, height, 90.0, "straight line", (0.3, 0.0, 0.0))
    assert not torch.allclose(moved[-1], frames[-1], atol=0.05), "the camera path moves the viewpoint"
