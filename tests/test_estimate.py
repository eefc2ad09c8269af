"""The estimator's preprocessing rules, RGB order, chunking and masking, with small stand-in networks."""
from __future__ import annotations

import pytest
import torch

from depth_core.depth import DepthKind, set_outside_mask_to_far
from depth_core.estimate import (MAX_ASPECT_AREA, DepthEstimator, cap_network_size, constrain_to_multiple,
                                 network_input_size)
from depth_core.interrupt import set_interrupt_check
from depth_core.models.base import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD, ModelCard, Preprocess

DEPTH_ANYTHING = Preprocess(518, 14, "lower_bound", IMAGENET_MEAN, IMAGENET_STD)
DPT_384 = Preprocess(384, 32, "minimal", HALF_MEAN, HALF_STD)
MIDAS_V21 = Preprocess(384, 32, "upper_bound", IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("preprocess, size, expected", [
    # Depth Anything: shorter side reaches 518, both multiples of 14.
    (DEPTH_ANYTHING, (480, 640), (518, 686)),
    (DEPTH_ANYTHING, (1000, 500), (1036, 518)),
    # DPT "minimal": the side whose scale is closest to 1 decides.
    (DPT_384, (480, 640), (384, 512)),
    # MiDaS v2.1 "upper_bound": the longer side shrinks to at most 384.
    (MIDAS_V21, (480, 640), (288, 384)),
    (MIDAS_V21, (200, 100), (384, 192)),
])
def test_resize_rules_follow_the_authors(preprocess, size, expected):
    assert network_input_size(*size, preprocess) == expected


def test_constrain_to_multiple_respects_bounds():
    assert constrain_to_multiple(690.7, 14) == 686
    assert constrain_to_multiple(524.0, 14, minimum=518) == 518
    assert constrain_to_multiple(526.0, 14, minimum=518) == 532
    assert constrain_to_multiple(390.0, 32, maximum=384) == 384


class RedChannel(torch.nn.Module):
    """Predicts the (normalized) red channel at half resolution: reveals channel order and resizing."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input = x
        return (x[:, 0] * self.scale)[:, ::2, ::2]


def estimator(preprocess: Preprocess = DPT_384, kind: DepthKind = DepthKind.RELATIVE_INVERSE) -> DepthEstimator:
    card = ModelCard("red", "test", preprocess, kind, preprocess.net_size)
    return DepthEstimator(card, RedChannel())


def test_images_are_fed_rgb_normalized_and_resized():
    images = torch.zeros(1, 40, 60, 3)
    images[..., 0] = 1.0  # pure red
    model = estimator(DPT_384)
    depth = model.predict(images)
    fed = model.network.last_input
    assert fed.shape[-2:] == network_input_size(40, 60, DPT_384)
    assert torch.allclose(fed[:, 0], torch.ones(()), atol=1e-5)   # red (1 - 0.5) / 0.5
    assert torch.allclose(fed[:, 2], -torch.ones(()), atol=1e-5)  # blue (0 - 0.5) / 0.5
    assert depth.values.shape == (1, 40, 60)
    assert depth.kind is DepthKind.RELATIVE_INVERSE and depth.source == "red"


def test_output_follows_the_image_content_at_input_size():
    images = torch.zeros(1, 64, 64, 3)
    images[:, :, 32:, 0] = 1.0  # right half red
    depth = estimator().predict(images, resolution=(64, 64)).values[0]
    assert depth[:, :24].max() < 0 < depth[:, 40:].min()


def test_chunked_batches_equal_one_by_one():
    torch.manual_seed(0)
    images = torch.rand(5, 30, 50, 3)
    model = estimator()
    model.chunk_size = lambda pixels: 2
    reports = []
    together = model.predict(images, progress=lambda done, total: reports.append((done, total))).values
    alone = torch.cat([model.predict(images[i:i + 1]).values for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-6)
    assert reports[0] == (0, 5) and reports[-1] == (5, 5) and len(reports) == 4


def test_gray_and_rgba_inputs_are_accepted():
    model = estimator()
    assert model.predict(torch.rand(2, 20, 20, 1)).values.shape == (2, 20, 20)
    assert model.predict(torch.rand(1, 20, 20, 4)).values.shape == (1, 20, 20)


def test_empty_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        estimator().predict(torch.zeros(0, 8, 8, 3))


def test_match_input_resolution_uses_the_image_size():
    model = estimator(DEPTH_ANYTHING)
    model.predict(torch.rand(1, 100, 150, 3), resolution="match")
    assert model.network.last_input.shape[-2:] == (98, 154)


def test_mask_sets_background_to_the_subjects_farthest_depth():
    values = torch.tensor([[[5.0, 4.0], [3.0, 9.0]]])
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    relative = set_outside_mask_to_far(values, mask, DepthKind.RELATIVE_INVERSE)
    assert relative.tolist() == [[[5.0, 4.0], [4.0, 4.0]]]  # far = smallest inverse depth among kept
    metric = set_outside_mask_to_far(values, mask, DepthKind.METRIC)
    assert metric.tolist() == [[[5.0, 4.0], [5.0, 5.0]]]  # far = largest distance among kept


def test_one_mask_serves_a_batch_and_wrong_counts_fail():
    values = torch.rand(3, 4, 4)
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1.0
    out = set_outside_mask_to_far(values, mask, DepthKind.RELATIVE_INVERSE)
    assert out.shape == values.shape and torch.equal(out[:, :2], values[:, :2])
    with pytest.raises(ValueError, match="one mask per image"):
        set_outside_mask_to_far(values, torch.ones(2, 4, 4), DepthKind.RELATIVE_INVERSE)


def test_an_extreme_aspect_ratio_plans_a_bounded_network_input():
    model = estimator(DEPTH_ANYTHING)
    assert model.planned_size(1, 200) == (518, 103_600)  # the authors' rule: 518 rows for a 1-pixel strip
    height, width = model.input_size(1, 200)
    assert height * width <= MAX_ASPECT_AREA * 518 * 518
    assert height % 14 == 0 and width % 14 == 0 and 190 < width / height < 215  # about the same shape
    assert model.input_size(480, 640) == (518, 686)  # ordinary images keep the authors' plan
    strip_h, strip_w = model.input_size(1, 10_000_000)  # beyond any aspect ratio: still bounded
    assert strip_h * strip_w <= MAX_ASPECT_AREA * 518 * 518 and strip_h == 14
    depth = model.predict(torch.rand(1, 1, 200, 3))
    assert depth.values.shape == (1, 1, 200)
    assert model.network.last_input.shape[-2:] == (height, width)


def test_cap_network_size_keeps_sizes_within_the_budget():
    assert cap_network_size((518, 686), 10**6, 14) == (518, 686)
    assert cap_network_size((1400, 1400), 700 * 700, 14) == (700, 700)
    assert cap_network_size((14, 10**6), 14 * 1000, 14) == (14, 994)


class Blocks(torch.nn.Module):
    """A network of 8 blocks that counts how many ran."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Conv2d(3, 3, 1) for _ in range(8))
        self.ran = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
            self.ran += 1
        return x[:, 0]


def test_a_forward_pass_stops_between_blocks_when_the_host_asks():
    card = ModelCard("blocks", "test", DPT_384, DepthKind.RELATIVE_INVERSE, 384)
    model = DepthEstimator(card, Blocks())
    checks = []

    def cancel_at_the_fourth_check() -> None:
        checks.append(1)
        if len(checks) == 4:
            raise KeyboardInterrupt("cancelled")

    set_interrupt_check(cancel_at_the_fourth_check)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.predict(torch.rand(1, 32, 32, 3))
        assert model.network.ran == 2  # the network's own check, two blocks, then the third block's check
        set_interrupt_check(lambda: None)
        model.network.ran = 0
        model.predict(torch.rand(1, 32, 32, 3))
        assert model.network.ran == 8
    finally:
        set_interrupt_check(None)
    assert all(not block._forward_pre_hooks for block in model.network.blocks)  # hooks removed after the pass
