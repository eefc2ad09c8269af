"""Stereo warping: exact geometry on synthetic scenes, occlusion order, holes, and the real motorcycle pair."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depth_core.depth import Depth, DepthKind
from depth_core.stereo import (FILL_MODES, LAYOUTS, StereoSettings, compose_layout, eye_disparities,
                               fill_invalid_along_rows, stereo_pair, warp_by_disparity, warp_pair)

BOX_FILLS = ("none", "nearest", "interpolate", "background")
"""Fills that treat pixels as boxes: integer shifts reproduce the source exactly."""


def textured(height: int = 12, width: int = 40, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fill", BOX_FILLS)
@pytest.mark.parametrize("shift", [0, 1, 3])
def test_fronto_parallel_plane_shifts_by_exactly_its_disparity(fill, shift):
    image = textured()
    width = image.shape[-1]
    disparity = torch.full((1, 12, width), float(shift))
    right = warp_by_disparity(image, disparity, "right", fill)
    left = warp_by_disparity(image, disparity, "left", fill)
    torch.testing.assert_close(right.images[..., : width - shift], image[..., shift:], atol=1e-5, rtol=0)
    torch.testing.assert_close(left.images[..., shift:], image[..., : width - shift], atol=1e-5, rtol=0)
    # Only the strip that came in from outside the picture is a hole.
    expected_holes = torch.zeros(1, 12, width)
    if shift:
        expected_holes[..., width - shift:] = 1.0
    torch.testing.assert_close(right.holes, expected_holes, atol=1e-5, rtol=0)
    torch.testing.assert_close(left.holes, expected_holes.flip(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fill", BOX_FILLS)
def test_sub_pixel_shift_interpolates_between_neighbours(fill):
    image = textured()
    disparity = torch.full((1, 12, 40), 2.25)
    out = warp_by_disparity(image, disparity, "right", fill).images
    # Output pixel j sees source position j + 2.25: three quarters of pixel j+2 and one quarter of pixel j+3.
    expected = 0.75 * image[..., 2:-1] + 0.25 * image[..., 3:]
    torch.testing.assert_close(out[..., : expected.shape[-1]], expected, atol=1e-5, rtol=0)


def square_scene(width: int = 32, height: int = 20):
    """A textured background at disparity 1 with a flat white square (rows 6..13, columns 10..17) at disparity 5."""
    background = torch.linspace(0.0, 0.5, width).expand(height, width)
    image = torch.stack([background, background * 0.5, 1.0 - background])[None].clone()
    disparity = torch.ones(1, height, width)
    image[:, :, 6:14, 10:18] = 1.0
    disparity[:, 6:14, 10:18] = 5.0
    return image, disparity


def test_foreground_square_occludes_and_leaves_holes_only_behind_it():
    image, disparity = square_scene()
    result = warp_by_disparity(image, disparity, "right", "none")
    square_rows = slice(6, 14)
    # The square moved 5 pixels left, intact, over the background that was there.
    torch.testing.assert_close(result.images[:, :, square_rows, 5:13], torch.ones(1, 3, 8, 8), atol=1e-5, rtol=0)
    # Background elsewhere moved 1 pixel left.
    torch.testing.assert_close(result.images[:, :, :6, :31], image[:, :, :6, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.images[:, :, square_rows, :5], image[:, :, square_rows, 1:6], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.images[:, :, square_rows, 17:31], image[:, :, square_rows, 18:], atol=1e-5,
                               rtol=0)
    # Holes: exactly the background revealed right of the square (its right edge lands at 12.5, the background
    # pixel 18 at 16.5) and the one-pixel strip at the right border.
    expected = torch.zeros(1, 20, 32)
    expected[:, square_rows, 13:17] = 1.0
    expected[..., 31] = 1.0
    torch.testing.assert_close(result.holes, expected, atol=1e-5, rtol=0)
    assert result.images[:, :, square_rows, 13:17].abs().max() == 0.0


def test_left_eye_is_the_mirror_image_of_the_right_eye():
    image, disparity = square_scene()
    for fill in FILL_MODES:
        right = warp_by_disparity(image, disparity, "right", fill)
        left_of_mirror = warp_by_disparity(image.flip(-1), disparity.flip(-1), "left", fill)
        torch.testing.assert_close(left_of_mirror.images.flip(-1), right.images, atol=1e-5, rtol=0)


def test_nearer_pixel_wins_whichever_side_it_comes_from():
    # Two pixels land on the same spot: a far one from the left, a near one from the right (right eye), and the
    # mirrored case for the left eye. The near one must be visible both times.
    image = torch.zeros(1, 1, 1, 12)
    image[..., 3] = 0.25   # far
    image[..., 7] = 1.0    # near
    disparity = torch.zeros(1, 1, 12)
    disparity[..., 3] = 1.0
    disparity[..., 7] = 5.0                               # both land at column 2 in the right eye
    right = warp_by_disparity(image, disparity, "right", "none").images
    assert right[0, 0, 0, 2].item() == pytest.approx(1.0)
    left = warp_by_disparity(image.flip(-1), disparity.flip(-1), "left", "none").images
    assert left[0, 0, 0, 12 - 1 - 2].item() == pytest.approx(1.0)


def test_slanted_surface_has_no_holes_inside():
    image = textured(height=4, width=64)
    # Disparity grows from 0 to 24 across the row: the surface is stretched (up to 1.4 px per pixel) but continuous.
    disparity = torch.linspace(24.0, 0.0, 64).expand(1, 4, 64).contiguous()
    result = warp_by_disparity(image, disparity, "left", "none")
    # Only the strip left of where column 0 lands (at 24) is uncovered.
    assert result.holes[..., :24].min().item() == pytest.approx(1.0)
    assert result.holes[..., 25:].max().item() == 0.0


@pytest.mark.parametrize("fill", FILL_MODES)
def test_every_fill_keeps_values_finite_and_in_range(fill):
    image, disparity = square_scene()
    result = warp_by_disparity(image, disparity * 2.7 - 1.3, "right", fill)
    assert torch.isfinite(result.images).all()
    assert result.images.min() >= -1e-5 and result.images.max() <= 1 + 1e-5
    if fill in ("interpolate", "nearest", "polylines_sharp", "polylines_soft", "background"):
        # Nothing stays black: the square scene has no black pixel.
        assert (result.images.sum(1) > 1e-3).all()


def test_background_fill_takes_the_background_side():
    image, disparity = square_scene()
    result = warp_by_disparity(image, disparity, "right", "background", smoothing=0)
    hole = result.images[:, :, 6:14, 13:17]
    # The hole lies between the white square (left) and the background (right): it takes the mean of the first
    # background pixels on the right of the square (their source columns 18..20), never the square's white.
    background_right = image[:, :, 6:14, 18:21].mean(-1, keepdim=True)
    torch.testing.assert_close(hole, background_right.expand_as(hole), atol=1e-5, rtol=0)
    # With smoothing the hole colour is averaged over neighbouring rows of the same frame.
    smoothed = warp_by_disparity(image, disparity, "right", "background", smoothing=2).images[:, :, 6:14, 13:17]
    rows = image[:, :, 4:16, 18:21].mean(-1)
    expected = torch.stack([rows[..., r:r + 5].mean(-1) for r in range(8)], -1)[..., None].expand_as(smoothed)
    torch.testing.assert_close(smoothed, expected, atol=1e-5, rtol=0)


def test_one_pixel_wide_and_batch_broadcast():
    image = torch.rand(3, 3, 5, 1)
    result = warp_by_disparity(image, torch.zeros(1, 5, 1), "right", "background")
    torch.testing.assert_close(result.images, image)
    shifted = warp_by_disparity(image, torch.full((5, 1), 2.0), "left", "none")
    assert shifted.images.abs().max() == 0.0 and shifted.holes.min() == 1.0


def test_bad_arguments_raise_clear_errors():
    image = textured()
    with pytest.raises(ValueError, match="fill"):
        warp_by_disparity(image, torch.zeros(1, 12, 40), "right", "smear")
    with pytest.raises(ValueError, match="eye"):
        warp_by_disparity(image, torch.zeros(1, 12, 40), "middle")
    with pytest.raises(ValueError, match="does not match"):
        warp_by_disparity(image, torch.zeros(1, 12, 39), "right")
    with pytest.raises(ValueError, match="balance"):
        StereoSettings(balance=2.0)


def test_nan_and_inf_disparity_do_not_poison_the_view():
    image = textured()
    disparity = torch.full((1, 12, 40), 2.0)
    disparity[..., 5] = float("nan")
    disparity[..., 9] = float("inf")
    result = warp_by_disparity(image, disparity, "right", "background")
    assert torch.isfinite(result.images).all()


def relative(values: torch.Tensor) -> Depth:
    return Depth(values, DepthKind.RELATIVE_INVERSE)


def test_divergence_is_percent_of_width_split_by_balance():
    nearness = torch.linspace(0.0, 1.0, 50).expand(1, 4, 50).contiguous()
    left, right = eye_disparities(relative(nearness), 200, StereoSettings(divergence=2.5))
    total = left + right
    assert total.max().item() == pytest.approx(5.0)       # 2.5 % of 200 px for the nearest point
    assert total.min().item() == pytest.approx(0.0)       # the farthest point sits on the screen
    torch.testing.assert_close(left, right)
    left, right = eye_disparities(relative(nearness), 200, StereoSettings(divergence=2.5, balance=-1.0))
    assert left.abs().max() == 0.0 and right.max().item() == pytest.approx(5.0)
    left, right = eye_disparities(relative(nearness), 200, StereoSettings(divergence=2.5, convergence=1.0))
    assert (left + right).max().item() == pytest.approx(0.0, abs=1e-6)
    assert (left + right).min().item() == pytest.approx(-5.0)
    left, right = eye_disparities(relative(nearness), 200, StereoSettings(divergence=0.0, separation=1.0))
    torch.testing.assert_close(left, torch.full_like(left, -2.0))


def test_depth_exponent_bends_the_curve():
    nearness = torch.linspace(0.0, 1.0, 5).expand(1, 1, 5).contiguous()
    left, right = eye_disparities(relative(nearness), 100, StereoSettings(divergence=4.0, exponent=2.0))
    torch.testing.assert_close((left + right)[0, 0], 4.0 * torch.linspace(0.0, 1.0, 5) ** 2)


def test_metric_depth_uses_baseline_times_focal_over_depth():
    metres = torch.tensor([[[1.0, 2.0, 4.0]]])
    settings = StereoSettings(baseline_mm=100.0, fov_degrees=90.0, convergence=0.0)
    left, right = eye_disparities(Depth(metres, DepthKind.METRIC), 300, settings)
    focal = 150.0 / math.tan(math.radians(45.0))
    disparity = 0.1 * focal / metres
    torch.testing.assert_close(left + right, disparity - disparity.min())
    with pytest.raises(ValueError, match="metric"):
        eye_disparities(relative(metres), 300, StereoSettings(depth_mode="metric"))


def test_constant_and_non_finite_depth_give_a_valid_pair():
    image = textured()
    flat = relative(torch.full((1, 12, 40), 0.7))
    left, right = stereo_pair(image, flat, StereoSettings())
    torch.testing.assert_close(left.images, image)          # nothing is nearer than anything: no shift
    torch.testing.assert_close(right.images, image)
    broken = torch.rand(1, 12, 40)
    broken[0, 3, 4] = float("nan")
    broken[0, 5, 6] = float("inf")
    left, right = stereo_pair(image, relative(broken), StereoSettings(divergence=-3.0))
    assert torch.isfinite(left.images).all() and torch.isfinite(right.images).all()


@pytest.mark.parametrize("fill", FILL_MODES)
def test_warp_pair_matches_one_warp_per_eye_and_blocks_of_rows_change_nothing(fill, monkeypatch):
    image = textured(height=23, width=30, seed=4).expand(2, -1, -1, -1).clone()
    image[1] = image[1].flip(-2)
    left_disparity = torch.rand(2, 23, 30, generator=torch.Generator().manual_seed(5)) * 6.0 - 1.0
    right_disparity = left_disparity.flip(-1) * 0.5
    left, right = warp_pair(image, left_disparity, right_disparity, fill)
    expected_left = warp_by_disparity(image, left_disparity, "left", fill)
    expected_right = warp_by_disparity(image, right_disparity, "right", fill)
    torch.testing.assert_close(left.images, expected_left.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(right.images, expected_right.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(left.holes, expected_left.holes, atol=0, rtol=0)
    # The CPU path warps blocks of rows; 4-row blocks (the last one shorter) must give the same views.
    import depth_core.stereo as stereo
    monkeypatch.setattr(stereo, "_CPU_BLOCK_PIXELS", 4 * 30)
    blocked_left, blocked_right = warp_pair(image, left_disparity, right_disparity, fill)
    torch.testing.assert_close(blocked_left.images, left.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(blocked_right.images, right.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(blocked_right.holes, right.holes, atol=0, rtol=0)
    with pytest.raises(ValueError, match="does not match"):
        warp_pair(image, left_disparity[..., :29], right_disparity, fill)


def brute_force_hole_colours(planes: torch.Tensor, count: int, radius: int, height: int) -> torch.Tensor:
    """_hole_colours by its definition, one entry at a time."""
    channels, n_rows, width = planes.shape
    count, radius = min(count, width), min(radius, height - 1)
    table = torch.zeros(channels, n_rows, width + count + 1)
    for row in range(n_rows):
        frame, y = divmod(row, height)
        rows = [frame * height + r for r in range(max(0, y - radius), min(height, y + radius + 1))]
        for entry in range(-1, width + count):
            if entry == -1:
                columns = list(range(count))
            elif entry == width + count - 1:
                columns = list(range(width - count, width))
            else:
                columns = [min(max(c, 0), width - 1) for c in range(entry - count + 1, entry + 1)]
            table[:, row, entry + 1] = planes[:, rows][:, :, columns].mean((1, 2))
    return table


@pytest.mark.parametrize("count, radius, width", [(5, 2, 9), (3, 0, 12), (5, 3, 3), (3, 1, 1), (5, 6, 8)])
def test_hole_colour_table_averages_within_each_frame(count, radius, width, monkeypatch):
    import depth_core.stereo as stereo
    planes = torch.rand(3, 2 * 7, width, generator=torch.Generator().manual_seed(7))
    expected = brute_force_hole_colours(planes, count, radius, 7)
    torch.testing.assert_close(stereo._hole_colours(planes, count, radius, 7), expected, atol=1e-5, rtol=0)
    # Large radii sum the rows with a cumulative sum instead of shifted adds: the same table.
    monkeypatch.setattr(stereo, "_SHIFTED_ADD_RADIUS", -1)
    torch.testing.assert_close(stereo._hole_colours(planes, count, radius, 7), expected, atol=1e-5, rtol=0)


def brute_force_box_model(image: torch.Tensor, disparity: torch.Tensor, samples: int = 256) -> torch.Tensor:
    """The left eye's view of one row [C,W] by its definition: every pixel a box one pixel wide at x + d, joined to the
    next one by a straight ramp of colour and disparity; at each of `samples` points per output pixel the nearest
    (largest disparity) surface is seen; pixel values are the mean over their points."""
    channels, width = image.shape
    landing = torch.arange(width, dtype=torch.float64) + disparity.double()
    out = torch.zeros(channels, width, dtype=torch.float64)
    for column in range(width):
        for point in ((torch.arange(samples, dtype=torch.float64) + 0.5) / samples + column - 0.5).tolist():
            best, colour = -math.inf, None
            for i in range(width):
                if landing[i] - 0.5 <= point <= landing[i] + 0.5 and disparity[i] > best:
                    best, colour = float(disparity[i]), image[:, i].double()
                if i + 1 < width and landing[i] + 0.5 < point < landing[i + 1] - 0.5:
                    t = (point - landing[i] - 0.5) / (landing[i + 1] - landing[i] - 1.0)
                    nearness = float(disparity[i] + t * (disparity[i + 1] - disparity[i]))
                    if nearness > best:
                        best, colour = nearness, image[:, i].double() * (1 - t) + image[:, i + 1].double() * t
            if colour is not None:
                out[:, column] += colour / samples
    return out.float()


def test_shifts_and_occlusion_edges_match_exact_area_sampling():
    image = torch.rand(3, 1, 24, generator=torch.Generator().manual_seed(8))
    # Left eye: a near surface shifted 5.5 px covers a far one shifted 1.25 px (the near side wins the overlap),
    # then a far-to-near step opens a hole; every footprint holds at most pixel k-1's box end, a ramp and box k.
    disparity = torch.cat([torch.full((9,), 5.5), torch.full((8,), 1.25), torch.full((7,), 4.75)])
    ours = warp_by_disparity(image[None], disparity[None, None], "left", "interpolate").images[0, :, 0]
    expected = brute_force_box_model(image[:, 0], disparity)
    torch.testing.assert_close(ours[:, 6:], expected[:, 6:], atol=5e-3, rtol=0)


def test_stretched_surface_is_exact_and_squeezed_one_stays_close():
    image = torch.rand(3, 1, 24, generator=torch.Generator().manual_seed(9))
    # Stretched up to 1.9 px per pixel (exact), then squeezed to 0.5 px per pixel: where more than two pixels share a
    # footprint, pixel k-1 stands in for those left of it (the kernel's one approximation); a small error.
    disparity = torch.cat([torch.linspace(0.0, 9.0, 11), torch.linspace(8.5, 2.0, 13)])
    ours = warp_by_disparity(image[None], disparity[None, None], "left", "interpolate").images[0, :, 0]
    expected = brute_force_box_model(image[:, 0], disparity, samples=128)
    torch.testing.assert_close(ours[:, :19], expected[:, :19], atol=5e-3, rtol=0)
    assert (ours[:, 19:] - expected[:, 19:]).abs().mean() < 0.15


def test_layouts():
    left = torch.zeros(2, 10, 16, 3)
    right = torch.ones(2, 10, 16, 3)
    assert compose_layout(left, right, "side-by-side").shape == (2, 10, 32, 3)
    assert compose_layout(left, right, "side-by-side half").shape == (2, 10, 16, 3)
    assert compose_layout(left, right, "top-bottom").shape == (2, 20, 16, 3)
    assert compose_layout(left, right, "top-bottom half").shape == (2, 10, 16, 3)
    swapped = compose_layout(left, right, "side-by-side", swap_eyes=True)
    assert swapped[:, :, :16].min() == 1.0 and swapped[:, :, 16:].max() == 0.0
    assert compose_layout(left, right, "right only").min() == 1.0
    assert set(LAYOUTS) == {"side-by-side", "side-by-side half", "top-bottom", "top-bottom half", "left only",
                            "right only"}
    with pytest.raises(ValueError, match="layout"):
        compose_layout(left, right, "diagonal")


def test_fill_invalid_along_rows_interpolates_linearly():
    row = torch.tensor([[float("inf"), 2.0, float("nan"), float("nan"), 8.0, float("inf")]])
    torch.testing.assert_close(fill_invalid_along_rows(row), torch.tensor([[2.0, 2.0, 4.0, 6.0, 8.0, 8.0]]))


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(255.0 ** 2 / mse)


def test_motorcycle_right_view_from_left_view_and_true_disparity(motorcycle):
    left, right, disparity = motorcycle
    assert psnr_uint8(left, right) == pytest.approx(12.65, abs=0.01)    # the reference PSNR definition
    image = torch.from_numpy(left).float().permute(2, 0, 1)[None] / 255.0
    filled = fill_invalid_along_rows(torch.from_numpy(np.asarray(disparity, dtype=np.float32)))[None]
    view = warp_by_disparity(image, filled, "right", "background").images[0]
    synthesized = (view.permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    assert psnr_uint8(synthesized, right) > 23.0


def _iw3_and_layered_scenes():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import iw3_reference
    import stereo_scenes

    return iw3_reference, stereo_scenes


def _psnr(view: torch.Tensor, truth: torch.Tensor) -> float:
    as_uint8 = [(x.permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8) for x in (view, truth)]
    return psnr_uint8(*as_uint8)


def test_background_fill_beats_iw3_shift_fill_where_the_hidden_background_is_known():
    iw3_reference, stereo_scenes = _iw3_and_layered_scenes()
    Plane = stereo_scenes.Plane
    scenes = [stereo_scenes.LayeredScene(),
              stereo_scenes.LayeredScene(planes=(Plane("astronaut", 3.0), Plane("rocket", 15.0, (0.2, 0.2, 0.8, 0.5)),
                                                 Plane("coffee", 25.0, (0.3, 0.6, 0.7, 0.8))))]
    for scene in scenes:
        left, disparity, right = scene.stereo()
        ours = warp_by_disparity(left[None], disparity[None], "right", "background").images[0]
        theirs = iw3_reference.forward_fill_view(left, disparity, "right")
        assert _psnr(ours, right) >= _psnr(theirs, right)
        assert _psnr(theirs, right) > 20.0      # the reference really renders the scene (not a broken baseline)


def test_background_fill_beats_iw3_on_the_motorcycle(motorcycle):
    iw3_reference, _ = _iw3_and_layered_scenes()
    left, right, disparity = motorcycle
    image = torch.from_numpy(left).float().permute(2, 0, 1) / 255.0
    filled = fill_invalid_along_rows(torch.from_numpy(np.asarray(disparity, dtype=np.float32)))
    truth = torch.from_numpy(right).float().permute(2, 0, 1) / 255.0
    ours = _psnr(warp_by_disparity(image[None], filled[None], "right", "background").images[0], truth)
    theirs = _psnr(iw3_reference.forward_fill_view(image, filled, "right"), truth)
    assert theirs == pytest.approx(22.5, abs=0.1)     # the figure the issue quotes for iw3
    assert ours > theirs + 0.5


def test_background_fill_is_steady_on_a_panning_shot():
    iw3_reference, stereo_scenes = _iw3_and_layered_scenes()
    scene = stereo_scenes.LayeredScene(height=120, width=180, margin=30)
    frames = [scene.stereo(pan=step / 48) for step in range(6)]

    def flicker(render) -> float:
        """Mean change of the error from one frame to the next inside holes of both frames (0 = the fill moves with
        the scene exactly as the truth does)."""
        errors, holes = [], []
        for left, disparity, right in frames:
            errors.append(render(left, disparity) - right)
            holes.append(warp_by_disparity(left[None], disparity[None], "right", "none").holes[0] > 0.5)
        return float(np.mean([(errors[t] - errors[t - 1]).abs().mean(0)[holes[t] & holes[t - 1]].mean()
                              for t in range(1, len(frames))]))

    ours = flicker(lambda left, disparity: warp_by_disparity(left[None], disparity[None], "right").images[0])
    theirs = flicker(lambda left, disparity: iw3_reference.forward_fill_view(left, disparity, "right"))
    assert ours < 0.6 * theirs
