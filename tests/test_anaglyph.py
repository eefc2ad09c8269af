"""Anaglyph methods: channel routing of the simple methods and the published Dubois matrices."""
from __future__ import annotations

import pytest
import torch

from depth_core.anaglyph import LINEAR_LIGHT_METHODS, METHODS, anaglyph, linear_to_srgb, srgb_to_linear


def views(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 6, 7, 3, generator=generator), torch.rand(2, 6, 7, 3, generator=generator)


def luma(image: torch.Tensor) -> torch.Tensor:
    return image @ torch.tensor([0.299, 0.587, 0.114])


def test_color_takes_red_from_the_left_eye_and_green_blue_from_the_right():
    left, right = views()
    out = anaglyph(left, right, "color red/cyan")
    torch.testing.assert_close(out[..., 0], left[..., 0])
    torch.testing.assert_close(out[..., 1:], right[..., 1:])


def test_half_color_and_gray():
    left, right = views()
    half = anaglyph(left, right, "half-color red/cyan")
    torch.testing.assert_close(half[..., 0], luma(left))
    torch.testing.assert_close(half[..., 1:], right[..., 1:])
    gray = anaglyph(left, right, "gray red/cyan")
    torch.testing.assert_close(gray[..., 0], luma(left))
    torch.testing.assert_close(gray[..., 1], luma(right))
    torch.testing.assert_close(gray[..., 2], luma(right))


def test_green_magenta_color_routes_green_to_the_left_eye():
    left, right = views()
    out = anaglyph(left, right, "color green/magenta")
    torch.testing.assert_close(out[..., 1], left[..., 1])
    torch.testing.assert_close(out[..., 0], right[..., 0])
    torch.testing.assert_close(out[..., 2], right[..., 2])


@pytest.mark.parametrize("method", sorted(LINEAR_LIGHT_METHODS))
def test_dubois_matrices_keep_white_white_and_black_black(method):
    # Dubois' least-squares projections map a white (and a black) pair to white (black): the rows of the two
    # published matrices sum to 1 within their three-decimal rounding. A mistyped number breaks this.
    left_matrix, right_matrix = (torch.tensor(m) for m in METHODS[method])
    torch.testing.assert_close(left_matrix.sum(1) + right_matrix.sum(1), torch.ones(3), atol=2.5e-3, rtol=0)
    white = torch.ones(1, 2, 2, 3)
    torch.testing.assert_close(anaglyph(white, white, method), white, atol=2e-3, rtol=0)
    black = torch.zeros(1, 2, 2, 3)
    torch.testing.assert_close(anaglyph(black, black, method), black)


def test_dubois_red_cyan_sends_the_left_eye_mostly_to_red():
    # Only the left view has content: the output is dominated by red (what the red filter passes).
    left = torch.full((1, 4, 4, 3), 0.8)
    right = torch.zeros(1, 4, 4, 3)
    out = anaglyph(left, right, "dubois red/cyan")
    assert out[..., 0].min() > 0.5 and out[..., 1:].max() < 0.05


def test_dubois_works_in_linear_light():
    values = torch.linspace(0.0, 1.0, 101)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-5, rtol=0)
    assert srgb_to_linear(torch.tensor(0.5)).item() == pytest.approx(0.2140, abs=1e-3)


@pytest.mark.parametrize("method", list(METHODS))
def test_swap_eyes_equals_swapping_the_inputs_and_stays_in_range(method):
    left, right = views(3)
    swapped = anaglyph(left, right, method, swap_eyes=True)
    torch.testing.assert_close(swapped, anaglyph(right, left, method))
    assert swapped.min() >= 0.0 and swapped.max() <= 1.0


def test_bad_input_raises_clear_errors():
    left, right = views()
    with pytest.raises(ValueError, match="method"):
        anaglyph(left, right, "purple/yellow")
    with pytest.raises(ValueError, match="same shape"):
        anaglyph(left, right[:, :5], "color red/cyan")
