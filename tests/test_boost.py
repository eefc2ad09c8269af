"""BoostMerge without a network: R_x selection, patch selection, merging, alignment and the whole pipeline, driven by
a fake estimator whose output blurs at low resolution and loses global layout above its receptive field."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from depth_core import boost as B
from depth_core.depth import DepthKind
from depth_core.image import gaussian_blur
from depth_core.loading import load_state_dict
from depth_core.models import pix2pix

KEYS = Path(__file__).parent / "data" / "keys"


class FakeEstimator:
    """The image's mean channel is the true nearness. At network size n the 'network' sees the scene at n pixels
    (details finer than that are lost) and, above its receptive field, adds a smooth layout error that grows with
    n / receptive_field, the two failure modes boosting trades off."""

    def __init__(self, receptive_field: int = 64, kind: DepthKind = DepthKind.RELATIVE_INVERSE) -> None:
        self.card = SimpleNamespace(receptive_field=receptive_field, output_kind=kind, name="fake")
        self.calls: list[tuple[int, int]] = []

    def infer(self, images: torch.Tensor, net_size=None) -> torch.Tensor:
        n = int(net_size or self.card.receptive_field)
        self.calls.append((images.shape[0], n))
        _, _, h, w = images.shape
        seen = B.resize(B.resize(images.mean(1, keepdim=True), (n, n)), (h, w))[:, 0]
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        strength = max(0.0, n / self.card.receptive_field - 1.0)
        nearness = seen + 0.2 * strength * torch.sin(math.pi * xx) * torch.cos(math.pi * yy)
        if self.card.output_kind is DepthKind.METRIC:
            return 1.0 / (0.1 + nearness.clamp_min(0))  # metres
        return nearness


def aligned_error(estimate: torch.Tensor, truth: torch.Tensor, region: torch.Tensor | None = None) -> float:
    """Mean absolute error after the best scale and shift (depth from one image is only defined up to those)."""
    scale, shift = B.fit_scale_shift(estimate[None].double(), truth[None].double())
    error = (B.apply_scale_shift(estimate[None].double(), scale, shift)[0] - truth).abs()
    if region is not None:
        return float((error * region).sum() / region.sum())
    return float(error.mean())


def detailed_scene(height: int = 192, width: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(RGB image encoding the nearness, true nearness, detail region): a ramp with checkerboard detail."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    checker = ((torch.arange(height) // 3 % 2)[:, None] * (torch.arange(width) // 3 % 2)[None, :]).float()
    region = (((xx > 0.1) & (xx < 0.4) & (yy > 0.2) & (yy < 0.6)) | ((xx > 0.6) & (yy > 0.5))).float()
    truth = 0.3 + 0.4 * xx + 0.2 * checker * region
    return truth.expand(3, -1, -1).clone(), truth, region


def stripes(spacing: int, size: int = 512) -> torch.Tensor:
    image = torch.zeros(3, size, size)
    image[:, :, ::spacing] = 1.0
    return image


# --------------------------------------------------------------------------------------------------------------------
# R_x selection


def test_r_selection_on_two_lines_matches_hand_computation():
    # Lines at x = 0 and x = 256 of a 512 x 512 image, receptive field 384: the search runs at sizes 12, 18, 24...
    # (x32) with a 12-pixel dilation. At size 18 the two lines sit 9 px apart and leave columns 15..17 (3/18 = 17 %)
    # uncovered: too many for R0 (0 %), allowed for R20; at size 24 columns 18..23 (25 %) are uncovered.
    image = stripes(256)
    r0 = B.whole_image_resolution(image, 384, B.BoostSettings(context_threshold=0.0))
    r20 = B.whole_image_resolution(image, 384, B.BoostSettings(context_threshold=0.2))
    assert r0.size == 12 * 32
    assert r20.size == 18 * 32


def test_r_selection_grows_with_edge_density_up_to_the_cap():
    sizes = [B.whole_image_resolution(stripes(spacing), 384).size for spacing in (16, 64, 128, 256)]
    assert sizes == sorted(sizes, reverse=True)
    # Dense edges reach the largest size tried below min(R_max 1600, 3 x 512): 12 + 6k <= 47 -> 42 x 32.
    assert sizes[0] == 42 * 32
    assert sizes[-1] < sizes[0]
    smaller_cap = B.whole_image_resolution(stripes(16), 384, B.BoostSettings(max_whole_size=800))
    assert smaller_cap.size == 24 * 32  # sizes 12, 18, 24 are below 800 / 32 = 25


def test_r_selection_without_edges_stays_at_the_receptive_field():
    flat = B.whole_image_resolution(torch.full((3, 300, 400), 0.5), 448)
    assert flat.size == 448 and flat.edge_coverage == 0.0
    tiny = B.whole_image_resolution(torch.rand(3, 1, 1), 518)
    assert tiny.size == 518


def test_edges_in_one_corner_give_low_resolution_and_small_coverage():
    image = torch.zeros(3, 512, 512)
    image[:, :128, :128] = (torch.rand(128, 128, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    corner = B.whole_image_resolution(image, 384)
    everywhere = B.whole_image_resolution(stripes(16), 384)
    assert corner.size == 384
    assert corner.edge_coverage < 0.25 < everywhere.edge_coverage


# --------------------------------------------------------------------------------------------------------------------
# Patch selection


def independent_density(gradient: np.ndarray, rect: tuple[int, int, int, int]) -> float:
    x, y, w, h = rect
    return float(gradient[y:y + h, x:x + w].sum() / (w * h))


def thresholded_gradient(image: torch.Tensor) -> np.ndarray:
    gradient = B.sobel_magnitude(B.luminance(image)).numpy()
    threshold = gradient[gradient > 0].mean()
    return np.where(gradient < threshold, 0.0, gradient)


def test_patches_cover_the_textured_half_only_and_stop_growing_at_the_image_density():
    generator = torch.Generator().manual_seed(1)
    image = torch.zeros(3, 320, 480)
    image[:, :, :200] = torch.rand(320, 200, generator=generator)
    receptive_field, factor = 64, 1.0
    patches = B.select_patches(image, receptive_field, factor)
    gradient = thresholded_gradient(image)
    image_density = gradient.mean()

    assert patches, "the textured half must yield patches"
    sizes = [w for _, _, w, _ in patches]
    assert sizes == sorted(sizes, reverse=True)
    grow, half = int(32 / factor), int(32 / factor) // 2
    for x, y, w, h in patches:
        assert w == h and w >= 2 * receptive_field and (w - 2 * receptive_field) % grow == 0
        assert x >= 0 and y >= 0 and x + w <= 480 and y + h <= 320
        assert x < 200, "a patch must start in the textured half"
        assert independent_density(gradient, (x, y, w, h)) >= image_density
        bigger = (x - half, y - half, w + grow, h + grow)
        inside = bigger[0] >= 0 and bigger[1] >= 0 and bigger[0] + bigger[2] <= 480 and bigger[1] + bigger[3] <= 320
        assert not inside or independent_density(gradient, bigger) < image_density
    # Every grid square lying entirely inside the texture qualifies; none lying entirely in the flat part does.
    grid_x = range(64, 480 - 64, 48)
    grid_y = range(64, 320 - 64, 48)
    textured_squares = sum(1 for cx in grid_x for _ in grid_y if cx + 64 <= 200)
    assert len(patches) >= textured_squares
    flat_only = [p for p in patches if p[0] >= 200]
    assert not flat_only


def test_flat_image_and_small_image_have_no_patches():
    assert B.select_patches(torch.full((3, 400, 400), 0.3), 64, 1.0) == []
    assert B.select_patches(torch.rand(3, 100, 100), 64, 1.0) == []  # no room for a 128-px square


# --------------------------------------------------------------------------------------------------------------------
# Merging, alignment, blending


def synthetic_pair(size: int = 256):
    """True map with fine detail; a low-res estimate that lost the detail; a high-res one with the detail but a
    wrong large-scale layout, scale and shift."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    checker = ((torch.arange(size) // 3 % 2)[:, None] * (torch.arange(size) // 3 % 2)[None, :]).float()
    region = ((xx > 0.2) & (xx < 0.6) & (yy > 0.3) & (yy < 0.7)).float()
    truth = 0.5 * xx + 0.2 * yy + 0.15 * checker * region
    low_net = size // 4
    low = gaussian_blur(B.resize(B.resize(truth[None, None], (low_net, low_net)), (size, size)), 2.0)
    high = 1.7 * (truth + 0.3 * torch.sin(math.pi * xx) * torch.sin(math.pi * yy)) + 0.3
    return truth, region, low, high[None, None], size / low_net


def test_frequency_split_recovers_detail_better_than_either_input():
    truth, region, low, high, low_pixel = synthetic_pair()
    merged = B.FrequencySplitMerger().merge(low, high, low_pixel)[0, 0]
    errors = {name: aligned_error(x, truth) for name, x in (("low", low[0, 0]), ("high", high[0, 0]),
                                                            ("merged", merged))}
    detail = {name: aligned_error(x, truth, region) for name, x in (("low", low[0, 0]), ("high", high[0, 0]),
                                                                    ("merged", merged))}
    assert errors["merged"] < 0.7 * min(errors["low"], errors["high"]), errors
    assert detail["merged"] < 0.7 * min(detail["low"], detail["high"]), detail


def test_laplacian_split_with_equal_inputs_is_the_identity():
    values = torch.rand(1, 1, 37, 53, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(B.laplacian_split(values, values, 8.0), values, atol=1e-5)


def test_fit_scale_shift_recovers_known_affine_map():
    source = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(3))
    target = source * torch.tensor([2.0, -0.5, 1.0]).view(3, 1, 1) + torch.tensor([0.1, 3.0, -2.0]).view(3, 1, 1)
    scale, shift = B.fit_scale_shift(source, target)
    assert torch.allclose(scale, torch.tensor([2.0, -0.5, 1.0]), atol=1e-5)
    assert torch.allclose(shift, torch.tensor([0.1, 3.0, -2.0]), atol=1e-5)
    flat_scale, flat_shift = B.fit_scale_shift(torch.ones(1, 20, 30), target[:1])
    assert flat_scale.item() == 0.0 and flat_shift.item() == pytest.approx(target[0].mean().item(), abs=1e-5)


def test_patch_blend_weight_is_zero_at_the_border_and_one_inside():
    mask = B.patch_blend_weight(160, 160)
    assert mask.shape == (160, 160)
    assert mask[0].max() < 0.01 and mask[:, 0].max() < 0.01
    assert mask[80, 80] == pytest.approx(1.0)
    assert torch.allclose(mask, mask.flip(0)) and torch.allclose(mask, mask.T)


# --------------------------------------------------------------------------------------------------------------------
# The whole pipeline


def test_boost_beats_the_single_estimate_and_counts_network_passes():
    image, truth, region = detailed_scene()
    estimator = FakeEstimator(receptive_field=64)
    settings = B.BoostSettings(max_whole_size=384)
    plan = B.plan_boost(image, 64, settings)
    depth, report = B.boost_depth(estimator, image[None], B.FrequencySplitMerger(), settings)

    assert depth.kind is DepthKind.RELATIVE_INVERSE and depth.values.shape == (1, 192, 256)
    assert torch.isfinite(depth.values).all()
    native = estimator.infer(image[None], 64)[0]
    assert aligned_error(depth.values[0], truth, region) < 0.85 * aligned_error(native, truth, region)
    assert plan.whole.size > 64 and len(plan.patches) > 0
    # Whole image at the receptive field and at R, then every patch at the receptive field and twice it.
    assert report.network_passes == 2 + 2 * len(plan.patches)
    assert report.patches == [len(plan.patches)] and report.whole_sizes == [plan.whole.size]
    assert "frequency split" in report.describe()


def test_metric_depth_stays_in_metres():
    image, truth, region = detailed_scene()
    estimator = FakeEstimator(receptive_field=64, kind=DepthKind.METRIC)
    depth, _ = B.boost_depth(estimator, image[None], B.FrequencySplitMerger(), B.BoostSettings(max_whole_size=384))
    native = estimator.infer(image[None], 64)[0]
    assert depth.kind is DepthKind.METRIC
    ratio = (depth.values[0] / native).median().item()
    assert ratio == pytest.approx(1.0, abs=0.03)
    assert depth.values.min() >= native.min() - 1e-4 and depth.values.max() <= native.max() + 1e-4
    assert aligned_error(1 / depth.values[0], truth, region) < aligned_error(1 / native, truth, region)


def test_bad_inputs_give_clear_errors_or_finite_results():
    estimator = FakeEstimator()
    merger = B.FrequencySplitMerger()
    with pytest.raises(ValueError, match="empty"):
        B.boost_depth(estimator, torch.zeros(0, 3, 8, 8), merger)
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        B.boost_depth(estimator, torch.zeros(1, 4, 8, 8), merger)
    nan_image = torch.rand(1, 3, 40, 50)
    nan_image[0, :, 5:9, 5:9] = float("nan")
    depth, _ = B.boost_depth(estimator, nan_image, merger)
    assert torch.isfinite(depth.values).all()
    one_pixel, report = B.boost_depth(estimator, torch.rand(1, 3, 1, 1), merger)
    assert one_pixel.values.shape == (1, 1, 1) and report.patches == [0]
    flat, _ = B.boost_depth(estimator, torch.full((2, 3, 48, 64), 0.5), merger)
    assert flat.values.shape == (2, 48, 64) and torch.isfinite(flat.values).all()


def test_progress_reaches_the_total_and_can_cancel():
    image, _, _ = detailed_scene()
    calls = []
    B.boost_depth(FakeEstimator(), image[None], B.FrequencySplitMerger(), B.BoostSettings(max_whole_size=384),
                  progress=lambda done, total: calls.append((done, total)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 1

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done >= 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        B.boost_depth(FakeEstimator(), image[None], B.FrequencySplitMerger(), B.BoostSettings(max_whole_size=384),
                      progress=cancel)


# --------------------------------------------------------------------------------------------------------------------
# pix2pix merge network


def test_pix2pix_generator_matches_the_official_key_layout():
    expected = json.loads((KEYS / "latest_net_G.json").read_text())
    with torch.device("meta"):
        generator = pix2pix.build()
        actual = {k: list(v.shape) for k, v in generator.state_dict().items()}
    assert actual == expected
    meta_state = {k: torch.empty(v, device="meta") for k, v in expected.items()}
    assert pix2pix.config_from_state_dict(meta_state) == pix2pix.Pix2PixConfig()


def test_pix2pix_checkpoint_in_official_layout_loads_strictly_and_merges(tmp_path):
    # Same layout with 6 levels instead of 10 so the forward pass runs at 64 x 64.
    small = pix2pix.Pix2PixConfig(levels=6)
    reference = pix2pix.build(small)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.05, generator=torch.Generator().manual_seed(4))
    path = tmp_path / "latest_net_G.pth"
    torch.save(reference.state_dict(), path)

    generator = pix2pix.load_generator(load_state_dict(path))
    assert generator.config == small
    pair = torch.rand(1, 2, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(generator(pair), reference(pair))

    merger = B.Pix2PixMerger(generator, size=64)
    image, _, _ = detailed_scene(96, 128)
    depth, report = B.boost_depth(FakeEstimator(), image[None], merger, B.BoostSettings(max_whole_size=256))
    assert torch.isfinite(depth.values).all() and report.merge == "pix2pix"
    assert report.merge_passes == 1 + 2 * report.patches[0]  # whole image, then per patch: its pair, then the base


def test_pix2pix_rejects_a_foreign_state_dict():
    with pytest.raises(ValueError, match="merge network"):
        pix2pix.load_generator({"encoder.weight": torch.zeros(3, 3)})


# --------------------------------------------------------------------------------------------------------------------
# The node (real ComfyUI; skipped without COMFYUI_PATH)


class TinyDepthNet(torch.nn.Module):
    """A stand-in network: positive depth from a 3x3 convolution of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(self.conv(x))[:, 0] + 0.5


def tiny_model(pack, kind: str):
    """A DEPTHTOOLKIT_MODEL value around TinyDepthNet with receptive field 64, as LoadDepthModel would return."""
    import comfy.model_patcher

    base = pack.depth_core.models.base
    kind = pack.depth_core.depth.DepthKind(kind)
    preprocess = base.Preprocess(64, 8, "lower_bound", base.IMAGENET_MEAN, base.IMAGENET_STD)
    card = base.ModelCard(name="tiny", family="test", preprocess=preprocess, output_kind=kind, receptive_field=64)
    torch.manual_seed(0)
    network = TinyDepthNet()
    estimator = pack.depth_core.estimate.DepthEstimator(card, network)
    patcher = comfy.model_patcher.ModelPatcher(network, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    return pack.nodes.depth_estimate.LoadedDepthModel(estimator, patcher)


@pytest.fixture()
def boost_model(pack, tmp_path, monkeypatch):
    """Model folders pointed at an empty temporary folder (no latest_net_G.pth), and a tiny relative model."""
    import folder_paths

    extensions = {".pth", ".pt", ".safetensors", ".ckpt", ".bin"}
    for name in ("depth", "depthanything"):
        (tmp_path / name).mkdir()
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(tmp_path / name)], extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    return tiny_model(pack, "relative_inverse")


def test_boost_merge_node_outputs_the_depth_estimate_pair_and_reports_its_merge(pack, boost_model):
    images = torch.rand(2, 96, 128, 4)  # RGBA is accepted
    output = pack.nodes.boost.BoostMerge.execute(images=images, depth_model=boost_model, max_whole_size=1600,
                                                 merge_method="auto", normalize="whole batch")
    depth, picture, report = output.result
    assert isinstance(depth, pack.depth_core.depth.Depth)
    assert depth.values.shape == (2, 96, 128) and depth.kind is pack.depth_core.depth.DepthKind.RELATIVE_INVERSE
    assert torch.isfinite(depth.values).all()
    assert picture.shape == (2, 96, 128, 3) and picture.min() == 0 and picture.max() == 1
    # No latest_net_G.pth in the model folders: auto falls back to the weight-free merge and says so.
    assert report.startswith("merge: frequency split") and "depth-network passes" in report
    assert output.ui.as_dict()["text"] == (report,)


def test_boost_merge_node_rejects_an_empty_batch(pack, boost_model):
    with pytest.raises(ValueError, match="empty"):
        pack.nodes.boost.BoostMerge.execute(images=torch.zeros(0, 8, 8, 3), depth_model=boost_model,
                                            max_whole_size=1600, merge_method="auto", normalize="per image")


def test_boost_merge_node_keeps_metric_depth_in_metres(pack, boost_model):
    metric = tiny_model(pack, "metric")
    images = torch.rand(1, 96, 128, 3)
    depth, picture, _ = pack.nodes.boost.BoostMerge.execute(images=images, depth_model=metric, max_whole_size=512,
                                                            merge_method="frequency split",
                                                            normalize="per image").result
    native = metric.estimator.infer(images.permute(0, 3, 1, 2), 64)
    assert depth.kind is pack.depth_core.depth.DepthKind.METRIC
    assert (depth.values / native).median().item() == pytest.approx(1.0, abs=0.05)
    # Near = white in the picture: the nearest metric pixel is the brightest.
    nearest = depth.values[0].flatten().argmin()
    assert picture[0, ..., 0].flatten()[nearest] == 1.0
