"""Clip & renormalize, curves, batch normalization, temporal stabilization, colormaps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from depth_core.colorize import COLORMAPS, apply_colormap, colorize_depth, colormap_lut
from depth_core.depth import Depth, DepthKind
from depth_core.postprocess import (ClipSettings, apply_curve, clip_renormalize, flicker, nearness_histogram,
                                    quantile, stabilize_frames)


def ramp(height: int = 8, width: int = 16, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.linspace(low, high, width).expand(height, width).clone()


def relative(*maps: torch.Tensor) -> Depth:
    return Depth(torch.stack(maps).float(), DepthKind.RELATIVE_INVERSE)


# ------------------------------------------------------------------------------------------------ clipping


def test_default_settings_only_normalize():
    depth = relative(ramp(low=3.0, high=7.0))
    result = clip_renormalize(depth)
    assert torch.allclose(result.picture[0], ramp(), atol=1e-6)
    assert result.depth.kind is DepthKind.RELATIVE_INVERSE
    assert torch.allclose(result.depth.values, result.picture)


def test_range_mode_clips_then_stretches():
    depth = relative(ramp(width=101))
    result = clip_renormalize(depth, ClipSettings(mode="range", near=0.8, far=0.2))
    row = result.picture[0, 0]
    source = ramp(width=101)[0]
    expected = ((source.clamp(0.2, 0.8) - 0.2) / 0.6)
    assert torch.allclose(row, expected, atol=1e-6)
    assert float(row[:20].max()) == 0.0 and float(row[81:].min()) == 1.0


def test_percentile_mode_matches_numpy_percentiles():
    torch.manual_seed(0)
    values = torch.randn(1, 20, 30)
    values[0, 0, 0] = 50.0  # an outlier that min-max normalization would let squash everything else
    result = clip_renormalize(Depth(values, DepthKind.RELATIVE_INVERSE),
                              ClipSettings(mode="percentile", near=0.98, far=0.02))
    flat = values.flatten().numpy()
    unit = (flat - flat.min()) / (flat.max() - flat.min())
    low, high = np.percentile(unit, [2.0, 98.0])
    expected = (np.clip(unit, low, high) - low) / (high - low)
    assert np.allclose(result.picture.flatten().numpy(), expected, atol=1e-5)
    assert float((result.picture == 1.0).float().mean()) == pytest.approx(0.02, abs=0.005)


def test_quantile_matches_numpy_linear_interpolation():
    values = torch.rand(3, 1001, dtype=torch.float64)
    for q in (0.0, 0.013, 0.5, 0.97, 1.0):
        assert np.allclose(quantile(values, q).numpy(), np.percentile(values.numpy(), q * 100, axis=1))


def test_large_batches_take_percentiles_from_a_sample(monkeypatch):
    import depth_core.postprocess as postprocess

    monkeypatch.setattr(postprocess, "_PERCENTILE_SAMPLES", 5000)
    unit = torch.rand(4, 100, 100, generator=torch.Generator().manual_seed(2))
    low, high = postprocess.clip_bounds(unit, "percentile", 0.9, 0.1, per_image=False)
    exact = np.percentile(unit.numpy(), [10, 90])
    assert float(low[0]) == pytest.approx(exact[0], abs=0.01) and float(high[3]) == pytest.approx(exact[1], abs=0.01)


def test_invert_affects_picture_not_depth():
    depth = relative(ramp())
    plain = clip_renormalize(depth)
    inverted = clip_renormalize(depth, ClipSettings(invert=True))
    assert torch.allclose(inverted.picture, 1.0 - plain.picture)
    assert torch.equal(inverted.depth.values, plain.depth.values)


def test_near_below_far_is_a_clear_error():
    with pytest.raises(ValueError, match="must be above the far clip"):
        clip_renormalize(relative(ramp()), ClipSettings(near=0.3, far=0.6))
    with pytest.raises(ValueError, match="between 0 and 1"):
        clip_renormalize(relative(ramp()), ClipSettings(near=1.5))
    with pytest.raises(ValueError, match="mode"):
        clip_renormalize(relative(ramp()), ClipSettings(mode="outliers"))


def test_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        clip_renormalize(Depth(torch.zeros(0, 4, 4), DepthKind.RELATIVE_INVERSE))
    with pytest.raises(ValueError, match="empty"):
        nearness_histogram(Depth(torch.zeros(0, 4, 4), DepthKind.RELATIVE_INVERSE))


@pytest.mark.parametrize("mode", ["range", "percentile"])
def test_constant_depth_gives_black_without_nan(mode):
    result = clip_renormalize(relative(torch.full((5, 5), 3.0)), ClipSettings(mode=mode, near=0.9, far=0.1))
    assert torch.isfinite(result.picture).all() and float(result.picture.abs().max()) == 0.0


def test_nan_and_inf_are_filled_as_far():
    values = ramp(4, 6, 1.0, 2.0)
    values[0, 0], values[1, 1], values[2, 2] = float("nan"), float("inf"), float("-inf")
    result = clip_renormalize(relative(values))
    assert torch.isfinite(result.picture).all()
    assert float(result.picture[0, 0, 0]) == 0.0  # NaN became the farthest value
    metric = Depth(values[None].abs() + 1.0, DepthKind.METRIC)
    assert torch.isfinite(clip_renormalize(metric).depth.values).all()


def test_one_pixel_image():
    result = clip_renormalize(relative(torch.tensor([[2.0]])), ClipSettings(mode="percentile", near=0.9, far=0.1))
    assert result.picture.shape == (1, 1, 1) and float(result.picture) == 0.0


# ---------------------------------------------------------------------------------------- metric meaning


def test_metric_keep_metres_clips_in_metres():
    metres = ramp(4, 41, 1.0, 5.0)
    depth = Depth(metres[None], DepthKind.METRIC)
    result = clip_renormalize(depth, ClipSettings(near=0.75, far=0.25, gamma=2.0, invert=True))
    assert result.depth.kind is DepthKind.METRIC
    out = result.depth.values[0]
    nearness = 1.0 / metres
    low, high = float(nearness.min()), float(nearness.max())
    nearest = 1.0 / (low + 0.75 * (high - low))
    farthest = 1.0 / (low + 0.25 * (high - low))
    assert float(out.min()) == pytest.approx(nearest, rel=1e-5)
    assert float(out.max()) == pytest.approx(farthest, rel=1e-5)
    inside = (metres > nearest) & (metres < farthest)
    assert torch.allclose(out[inside], metres[inside], rtol=1e-5)  # untouched values keep their metres


def test_metric_to_relative_on_request():
    depth = Depth(ramp(4, 8, 1.0, 5.0)[None], DepthKind.METRIC)
    result = clip_renormalize(depth, ClipSettings(keep_metric=False))
    assert result.depth.kind is DepthKind.RELATIVE_INVERSE
    assert float(result.depth.values[0, 0, 0]) == 1.0 and float(result.depth.values[0, 0, -1]) == 0.0


# -------------------------------------------------------------------------------------------- curves


def test_curve_keeps_ends_and_order():
    t = torch.linspace(0, 1, 257)
    for gamma, contrast in ((2.0, 1.0), (0.5, 1.0), (1.0, 3.0), (1.0, 0.4), (1.7, 2.2)):
        out = apply_curve(t, gamma, contrast)
        assert float(out[0]) == 0.0 and float(out[-1]) == pytest.approx(1.0)
        assert bool((out.diff() >= 0).all())
    assert float(apply_curve(torch.tensor(0.5), gamma=2.0)) == pytest.approx(0.25)
    steep = apply_curve(t, contrast=3.0)
    assert float(steep[64]) < 0.25 and float(steep[192]) > 0.75 and float(steep[128]) == pytest.approx(0.5)
    assert torch.equal(apply_curve(t), t)


def test_curve_reaches_outputs():
    depth = relative(ramp(width=11))
    result = clip_renormalize(depth, ClipSettings(gamma=2.0))
    assert torch.allclose(result.picture[0, 0], ramp(width=11)[0] ** 2, atol=1e-6)
    assert torch.allclose(result.depth.values, result.picture)


def test_gamma_and_contrast_must_be_positive():
    with pytest.raises(ValueError, match="above 0"):
        clip_renormalize(relative(ramp()), ClipSettings(gamma=0.0))
    with pytest.raises(ValueError, match="above 0"):
        clip_renormalize(relative(ramp()), ClipSettings(contrast=-1.0))


# ---------------------------------------------------------------------------------- batch normalization


def test_per_image_versus_whole_batch():
    depth = relative(ramp(low=0.0, high=1.0), ramp(low=0.0, high=2.0))
    per_image = clip_renormalize(depth, ClipSettings(per_image=True)).picture
    batch = clip_renormalize(depth, ClipSettings(per_image=False)).picture
    assert torch.allclose(per_image[0], per_image[1])
    assert float(batch[0].max()) == pytest.approx(0.5) and float(batch[1].max()) == pytest.approx(1.0)


def test_batch_percentiles_pool_all_frames():
    depth = relative(ramp(width=100, low=0.0, high=1.0), ramp(width=100, low=1.0, high=2.0))
    batch = clip_renormalize(depth, ClipSettings(mode="percentile", near=0.75, far=0.25, per_image=False)).picture
    # the pooled 25th/75th percentiles fall in the middle of frame 0 and of frame 1
    assert float(batch[0].max()) < 1.0 and float(batch[0].min()) == 0.0
    assert float(batch[1].max()) == 1.0 and float(batch[1].min()) > 0.0


def test_histogram_of_normalized_nearness():
    counts = nearness_histogram(relative(ramp(2, 256)), per_image=True, bins=256)
    assert len(counts) == 256 and sum(counts) == 512
    assert counts[0] == 2 and counts[-1] == 2
    metric = Depth(torch.tensor([[[1.0, 2.0, 4.0, float("nan")]]]), DepthKind.METRIC)
    counts = nearness_histogram(metric, bins=4)
    assert counts == [2, 1, 0, 1]  # nearness 1, .5, .25 -> unit 1, 1/3, 0 -> bins 3, 1, 0; NaN = farthest


# --------------------------------------------------------------------------------- temporal stabilization


def flickering_video(frames: int = 12, size: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    scene = 0.3 + 0.5 * x + 0.2 * torch.sin(6 * y)
    scales = 0.7 + 0.6 * torch.rand(frames, generator=generator)
    shifts = -0.3 + 0.6 * torch.rand(frames, generator=generator)
    video = scene * scales.view(-1, 1, 1) + shifts.view(-1, 1, 1)
    speckles = torch.rand(frames, size, size, generator=generator) < 0.003
    video = torch.where(speckles, video + 3.0 * torch.rand(frames, size, size, generator=generator), video)
    return video, scene


def test_stabilization_reduces_flicker():
    video, _ = flickering_video()
    depth = Depth(video, DepthKind.RELATIVE_INVERSE)
    per_image = flicker(clip_renormalize(depth, ClipSettings(per_image=True)).picture)
    batch = flicker(clip_renormalize(depth, ClipSettings(per_image=False)).picture)
    stable = flicker(clip_renormalize(depth, ClipSettings(stabilize=True)).picture)
    print(f"flicker per image {per_image:.4f}, whole batch {batch:.4f}, stabilized {stable:.4f}")
    assert stable < 0.5 * per_image and stable < 0.2 * batch


def test_stabilization_recovers_affine_changes_exactly():
    scene = torch.rand(32, 32, generator=torch.Generator().manual_seed(3)) + 0.5
    scales = torch.tensor([1.0, 2.0, 0.5, 1.5, 0.8])
    shifts = torch.tensor([0.0, -0.4, 0.3, 0.1, -0.2])
    frames = scene * scales.view(-1, 1, 1) + shifts.view(-1, 1, 1)
    aligned, _, _ = stabilize_frames(frames, window=2)
    spread = (aligned - aligned.mean(0, keepdim=True)).abs().max()
    assert float(spread) < 1e-3 * float(aligned.abs().mean())
    assert float(aligned.mean()) == pytest.approx(float(frames.mean()), rel=0.2)  # no collapse to zero


def test_stabilization_scale_only_for_metric():
    metres = torch.rand(24, 24, generator=torch.Generator().manual_seed(4)) * 3 + 1
    video = torch.stack([metres * s for s in (1.0, 1.3, 0.8, 1.1)])
    result = clip_renormalize(Depth(video, DepthKind.METRIC), ClipSettings(stabilize=True))
    out = result.depth.values
    assert result.depth.kind is DepthKind.METRIC
    ratios = out / out[:1]
    assert float((ratios - 1).abs().max()) < 1e-3  # every frame brought to one common scale
    assert 0.8 < float(out.mean() / video.mean()) < 1.25  # ... close to the sequence's own metres


def test_stabilization_handles_flat_frames_and_single_frames():
    frames = torch.stack([torch.full((8, 8), 2.0), ramp(8, 8), torch.zeros(8, 8)])
    aligned, scales, shifts = stabilize_frames(frames)
    assert torch.isfinite(aligned).all() and torch.isfinite(scales).all() and torch.isfinite(shifts).all()
    single, scale, shift = stabilize_frames(frames[:1])
    assert torch.equal(single, frames[:1]) and float(scale) == 1.0 and float(shift) == 0.0
    with pytest.raises(ValueError, match="window"):
        clip_renormalize(Depth(frames, DepthKind.RELATIVE_INVERSE), ClipSettings(stabilize=True, stabilize_window=0))


# -------------------------------------------------------------------------------------------- colorize


REFERENCE_COLOURS = {
    # published matplotlib/Google values at t = 0, 0.5, 1
    "viridis": [(0.267, 0.005, 0.329), (0.128, 0.567, 0.551), (0.993, 0.906, 0.144)],
    "inferno": [(0.001, 0.000, 0.014), (0.735, 0.216, 0.330), (0.988, 0.998, 0.645)],
    "turbo": [(0.190, 0.072, 0.232), None, (0.480, 0.016, 0.011)],
}


@pytest.mark.parametrize("name", ["viridis", "inferno"])
def test_colormaps_match_reference_colours(name):
    lut = colormap_lut(name, 1025)
    for t, colour in zip((0, 512, 1024), REFERENCE_COLOURS[name]):
        assert np.allclose(lut[t].numpy(), colour, atol=0.025), (name, t, lut[t])


def test_turbo_runs_blue_to_red():
    lut = colormap_lut("turbo", 1025)
    blue, end = lut[102].numpy(), lut[-1].numpy()
    assert blue[2] > 2 * blue[0] and end[0] > 5 * end[2]
    assert np.allclose(end, REFERENCE_COLOURS["turbo"][2], atol=0.1)
    assert float(lut[512, 1]) > 0.9  # green-yellow in the middle


def test_gray_and_colorize_shapes():
    assert torch.allclose(colormap_lut("gray", 5)[:, 0], torch.linspace(0, 1, 5).float())
    depth = relative(ramp(3, 9), ramp(3, 9) * 2)
    for name in COLORMAPS:
        picture = colorize_depth(depth, name)
        assert picture.shape == (2, 3, 9, 3) and picture.min() >= 0 and picture.max() <= 1
    near_colour = colorize_depth(depth, "gray")[0, 0, -1]
    assert torch.allclose(near_colour, torch.ones(3))
    assert torch.allclose(colorize_depth(depth, "gray", invert=True)[0, 0, -1], torch.zeros(3))
    batch = colorize_depth(depth, "gray", per_image=False)
    assert float(batch[0].max()) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="colormap"):
        colorize_depth(depth, "jet")


def test_apply_colormap_interpolates_and_handles_nan():
    lut = colormap_lut("viridis")
    mid = apply_colormap(torch.tensor([0.5 / (lut.shape[0] - 1)]), "viridis")[0]
    assert torch.allclose(mid, (lut[0] + lut[1]) / 2, atol=1e-6)
    assert torch.allclose(apply_colormap(torch.tensor([float("nan")]), "viridis")[0], lut[0])
