"""BoostMerge: high-resolution depth from any depth network by content-adaptive multi-resolution merging.

After "Boosting Monocular Depth Estimation Models to High-Resolution via Content-Adaptive Multi-Resolution Merging"
(Miangoleh, Dille, Mai, Paris, Sorkine-Hornung; CVPR 2021). A network run at its receptive-field size sees the whole
scene but blurs details; run at a higher size it resolves details but loses the global layout where edges are too
sparse for its receptive field. Boosting therefore

1. picks the highest whole-image size R at which (nearly) every pixel still lies within one receptive field of an
   image edge (the R_x rule: at most x of the pixels left without context; x = 0.2, "R20");
2. estimates at the receptive field and at R and merges the two ("double estimate");
3. picks high-detail patches from the image's gradient density, double-estimates each, merges it with the base
   estimate, aligns it to the base by least squares and blends it in with a feathered mask.

The merge step is the authors' pix2pix network when its weights are available, else a weight-free frequency split
(low frequencies from the low-resolution estimate, high frequencies from the high-resolution one).

Everything is computed in a "nearness" working space (larger = nearer, min-max normalized), where the authors'
merge network was trained: relative inverse depth as is, metric depth as its reciprocal. At the end the boosted map
is fitted by least squares to the network's own estimate at its receptive field, in inverse depth, so relative
output keeps the network's raw units and metric output (ZoeDepth) comes back in metres at the scale the network
itself predicted.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from .depth import Depth, DepthKind, normalize_min_max
from .image import gaussian_blur
from .interrupt import interruptible
from .progress import ProgressFn, no_progress

Rect = tuple[int, int, int, int]
"""(x, y, width, height) in pixels."""

MIN_PATCH_IMAGE_SIDE = 32
"""Images with a shorter side below this get only the whole-image double estimate (no room for patches)."""

MIN_PATCH_FRACTION = 0.5
"""Patches whose side in input pixels is below this fraction of the receptive field are skipped."""

SPEED_SCALE = 32
"""The R search runs on an edge map this many times smaller than the resolutions it tests (authors' value)."""


@dataclass(frozen=True)
class BoostSettings:
    max_whole_size: int = 1600
    """R_max: the largest whole-image network size tried (the old extension's default; the paper uses 3000)."""
    context_threshold: float = 0.2
    """x of R_x: the fraction of pixels allowed to lie farther than one receptive field from any edge."""
    max_upscale: float = 3.0
    """The whole-image size never exceeds this multiple of the image's longer side."""
    refine_patches: bool = True
    """False stops after the whole-image double estimate (the paper's R_x result)."""
    patch_batch: int = 4
    """Patches estimated per network call."""


class BoostableEstimator(Protocol):
    """What BoostMerge needs from a depth network (depth_core.estimate.DepthEstimator fits)."""

    card: object  # .receptive_field: int, .output_kind: DepthKind, .name: str

    def infer(self, images: torch.Tensor, net_size: int | tuple[int, int] | None = None) -> torch.Tensor: ...


class DepthMerger(Protocol):
    """Merges a low-resolution estimate (global layout) with a high-resolution one (details), both [N,1,h,w] in the
    working space. `low_pixel` is the size, in working pixels, of one network pixel of the low estimate."""

    name: str
    working_size: tuple[int, int] | None
    """The (h, w) both inputs must be resized to, or None for any size."""
    passes: int

    def merge(self, low: torch.Tensor, high: torch.Tensor, low_pixel: float) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------------------------------
# Image analysis


def luminance(image: torch.Tensor) -> torch.Tensor:
    """[3,H,W] RGB -> [H,W] gray with the weights the authors use."""
    weights = torch.tensor([0.2989, 0.5870, 0.1140], device=image.device, dtype=image.dtype)
    return torch.einsum("chw,c->hw", image, weights)


def sobel_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """|d/dx| + |d/dy| with 3x3 Sobel kernels and mirrored borders, [H,W] -> [H,W]."""
    x = gray[None, None].float()
    mode = "reflect" if min(gray.shape) > 1 else "replicate"
    x = F.pad(x, (1, 1, 1, 1), mode=mode)
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    kx = torch.outer(smooth, diff)[None, None]
    ky = torch.outer(diff, smooth)[None, None]
    return (F.conv2d(x, kx).abs() + F.conv2d(x, ky).abs())[0, 0]


def dilate(binary: torch.Tensor, kernel: int) -> torch.Tensor:
    """Binary dilation of [H,W] with a kernel x kernel square anchored at its centre (OpenCV's convention)."""
    if kernel <= 1:
        return binary
    before, after = kernel // 2, kernel - 1 - kernel // 2
    padded = F.pad(binary[None, None], (before, after, before, after), value=0.0)
    return F.max_pool2d(padded, kernel, stride=1)[0, 0]


def block_max(binary: torch.Tensor, block: int) -> torch.Tensor:
    """Max over non-overlapping block x block tiles (partial tiles at the end included)."""
    if block <= 1:
        return binary
    return F.max_pool2d(binary[None, None], block, stride=block, ceil_mode=True)[0, 0]


@dataclass(frozen=True)
class WholeImageResolution:
    size: int
    """R_x: the whole-image network size."""
    edge_coverage: float
    """The paper's k: the fraction of the image near edges (edge map dilated by a quarter receptive field)."""


def whole_image_resolution(image: torch.Tensor, receptive_field: int, settings: BoostSettings = BoostSettings()
                           ) -> WholeImageResolution:
    """The R_x rule (section 5 of the paper): the largest network size, in steps of half a receptive field, at which
    at most `context_threshold` of the pixels lie farther than one receptive field from an image edge.

    `image` is one RGB image [3,H,W] in 0..1. The search runs on a square edge map of the image's shorter side.
    """
    height, width = image.shape[-2:]
    side = min(height, width)
    gradient = sobel_magnitude(luminance(image.float()))
    gradient = F.interpolate(gradient[None, None].float(), size=(side, side), mode="area")[0, 0]
    low, high = gradient.min(), gradient.max()
    edges = (gradient >= low + 0.4 * (high - low)).float() if high > low else torch.zeros_like(gradient)

    kernel = max(1, int(receptive_field / SPEED_SCALE))
    quarter_kernel = max(1, int(receptive_field / (4 * SPEED_SCALE)))
    limit = min(settings.max_whole_size, settings.max_upscale * max(height, width))
    first = int(receptive_field / SPEED_SCALE)
    step = max(1, int(receptive_field / (2 * SPEED_SCALE)))

    best = receptive_field / SPEED_SCALE
    edges_at_size = None
    for size in range(first, int(limit / SPEED_SCALE), step):
        edges_at_size = block_max(edges, max(1, side // size))
        edges_at_size = F.interpolate(edges_at_size[None, None], size=(size, size), mode="nearest")[0, 0]
        uncovered = 1.0 - dilate(edges_at_size, kernel)
        if float(uncovered.mean()) > settings.context_threshold:
            break
        best = size
    if edges_at_size is None:  # image too small to search: stay at the receptive field
        edges_at_size = F.interpolate(block_max(edges, max(1, side // max(first, 1)))[None, None],
                                      size=(max(first, 1),) * 2, mode="nearest")[0, 0]
    coverage = float(dilate(edges_at_size, quarter_kernel).mean())
    return WholeImageResolution(int(best * SPEED_SCALE), coverage)


def patch_scale_factor(resolution: WholeImageResolution, max_whole_size: int) -> float:
    """The paper's section-6 multiplier: images with few, concentrated edges get a larger canvas so that patches
    of one receptive field can isolate the small detailed regions."""
    return max(min(1.0, 4.0 * resolution.edge_coverage * resolution.size / max_whole_size), 0.2)


def refinement_size(height: int, width: int, whole_size: int, factor: float) -> tuple[int, int]:
    """(h, w) of the canvas on which patches are chosen: longer side 2R, enlarged by 1/factor."""
    if height > width:
        h, w = 2 * whole_size, round(2 * whole_size * width / height)
    else:
        h, w = round(2 * whole_size * height / width), 2 * whole_size
    return max(1, int(round(h / factor))), max(1, int(round(w / factor)))


def select_patches(image: torch.Tensor, receptive_field: int, factor: float) -> list[Rect]:
    """High-detail patches of `image` [3,H,W] (section 6 of the paper), largest first.

    A grid of receptive-field-sized squares (stride three quarters of that) is kept where its density of strong
    gradients reaches the whole image's; each kept square then grows by 32/factor pixels per step while its density
    stays at least the whole image's and it stays inside the image.
    """
    height, width = image.shape[-2:]
    gradient = sobel_magnitude(luminance(image.float()))
    positive = gradient[gradient > 0]
    if positive.numel() == 0:
        return []
    gradient = torch.where(gradient < positive.mean(), torch.zeros_like(gradient), gradient)
    image_density = gradient.mean()
    if image_density <= 0:
        return []
    integral = F.pad(gradient.cumsum(0).cumsum(1), (1, 0, 1, 0))

    half = int(round(receptive_field))  # the authors' base size is 2 receptive fields; patches are half of it
    stride = int(round(half * 0.75))
    xs = torch.tensor(list(range(half, width - half, stride)), dtype=torch.long)
    ys = torch.tensor(list(range(half, height - half, stride)), dtype=torch.long)
    if xs.numel() == 0 or ys.numel() == 0:
        return []
    # Column-major grid order, as the authors enumerate it, so equal-sized patches keep their merge order.
    centre_x = xs.repeat_interleave(ys.numel())
    centre_y = ys.repeat(xs.numel())
    x0, y0 = centre_x - half, centre_y - half
    size = torch.full_like(x0, 2 * half)

    def density(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # Corners are clamped so candidates reaching outside the image can be evaluated (and then discarded).
        x1, y1 = x.clamp(0, width), y.clamp(0, height)
        x2, y2 = (x + w).clamp(0, width), (y + h).clamp(0, height)
        total = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
        return total / (w * h).clamp_min(1).to(total.dtype)

    keep = density(x0, y0, size, size) >= image_density
    x0, y0, size = x0[keep], y0[keep], size[keep]
    if x0.numel() == 0:
        return []

    grow = int(32 / factor)
    grow_half = int(grow / 2)
    steps = torch.arange(1, max(height, width) // max(grow, 1) + 2, dtype=torch.long)
    gx = x0[:, None] - steps[None] * grow_half
    gy = y0[:, None] - steps[None] * grow_half
    gs = size[:, None] + steps[None] * grow
    inside = (gx >= 0) & (gy >= 0) & (gy + gs <= height) & (gx + gs <= width)
    dense = density(gx, gy, gs, gs) >= image_density
    ok = inside & dense
    if grow <= 0:
        ok = torch.zeros_like(ok)
    # A patch grows while every step so far succeeded: count the leading run of successes.
    grown = ok.long().cumprod(1).sum(1)
    final_x = x0 - grown * grow_half
    final_y = y0 - grown * grow_half
    final_size = size + grown * grow

    order = torch.argsort(final_size, descending=True, stable=True)
    return [(int(final_x[i]), int(final_y[i]), int(final_size[i]), int(final_size[i])) for i in order]


# --------------------------------------------------------------------------------------------------------------------
# Blending and alignment


def patch_blend_weight(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[H,W] blending weight of a patch: 0 on a 15 % border, 1 inside, with a Gaussian ramp (sigma = side/16)
    between, so a patch fades into the estimate around it without a seam."""
    mask = torch.zeros(1, 1, height, width, device=device)
    by, bx = int(0.15 * height), int(0.15 * width)
    mask[..., by:height - by, bx:width - bx] = 1.0
    sigma = int(height / 16)
    mask = gaussian_blur(mask, sigma, radius=math.ceil(2 * sigma))[0, 0]
    return normalize_min_max(mask[None])[0] if mask.max() > mask.min() else torch.ones_like(mask)


def fit_scale_shift(source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (scale, shift) per batch item so that scale * source + shift ~ target; [N,...] inputs, [N]
    outputs. A constant source gets scale 0 and the target's mean."""
    s = source.flatten(1).double()
    t = target.flatten(1).double()
    w = torch.ones_like(s) if weight is None else weight.flatten(1).double().expand_as(s)
    w_sum = w.sum(1).clamp_min(1e-12)
    s_mean = (w * s).sum(1) / w_sum
    t_mean = (w * t).sum(1) / w_sum
    covariance = (w * (s - s_mean[:, None]) * (t - t_mean[:, None])).sum(1)
    variance = (w * (s - s_mean[:, None]) ** 2).sum(1)
    scale = torch.where(variance > 1e-12, covariance / variance.clamp_min(1e-12), torch.zeros_like(variance))
    shift = t_mean - scale * s_mean
    return scale.to(source.dtype), shift.to(source.dtype)


def apply_scale_shift(values: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    view = (-1,) + (1,) * (values.ndim - 1)
    return values * scale.view(view) + shift.view(view)


def resize(values: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize [N,C,H,W]; bicubic like the authors' cv2.INTER_CUBIC, with anti-aliasing when shrinking."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    shrinking = size[0] < values.shape[-2] or size[1] < values.shape[-1]
    return F.interpolate(values, size=size, mode=mode, align_corners=False, antialias=shrinking and mode != "nearest")


# --------------------------------------------------------------------------------------------------------------------
# Merging


class Pix2PixMerger:
    """The authors' merge network (depth_core.models.pix2pix) at its training size, 1024 x 1024."""

    name = "pix2pix"

    def __init__(self, generator: torch.nn.Module, size: int = 1024) -> None:
        self.generator = generator.eval()
        self.working_size = (size, size)
        self.passes = 0

    def merge(self, low: torch.Tensor, high: torch.Tensor, low_pixel: float) -> torch.Tensor:
        parameter = next(self.generator.parameters())
        pair = torch.cat([normalize_min_max(low), normalize_min_max(high)], 1) * 2.0 - 1.0
        with torch.inference_mode(), interruptible(self.generator):
            merged = self.generator(pair.to(parameter.device, parameter.dtype)).float().to(low.device)
        self.passes += low.shape[0]
        return (merged + 1.0) / 2.0


class FrequencySplitMerger:
    """Weight-free merge: low frequencies from the low-resolution estimate (reliable layout), high frequencies from
    the high-resolution one (sharp details), split with a Laplacian pyramid.

    The high estimate is first aligned to the low one by least squares; its band-pass levels finer than the cut-off
    are added to the coarse residual of the low estimate. The cut-off is tied to what the low estimate resolves:
    `detail_pixels` network pixels of the low estimate. (A guided filter was tried as the blend and rejected: where
    the low estimate lacks a detail entirely, its local linear fit has nothing to correlate with and attenuates the
    detail instead of transferring it; measured on the synthetic pair in tests/test_boost.py.)
    """

    name = "frequency split"
    working_size = None

    def __init__(self, detail_pixels: float = 2.0) -> None:
        self.detail_pixels = detail_pixels
        self.passes = 0

    def merge(self, low: torch.Tensor, high: torch.Tensor, low_pixel: float) -> torch.Tensor:
        low, high = normalize_min_max(low.float()), normalize_min_max(high.float())
        scale, shift = fit_scale_shift(high, low)
        high = apply_scale_shift(high, scale, shift)
        self.passes += low.shape[0]
        return laplacian_split(low, high, max(1.0, self.detail_pixels * low_pixel))


_generator_cache: dict[tuple[str, float], torch.nn.Module] = {}


def merger_for(pix2pix_path: "str | os.PathLike | None") -> "Pix2PixMerger | FrequencySplitMerger":
    """The authors' merge network from its file (kept in memory, on the CPU, between runs while the file is
    unchanged), or the weight-free frequency split when there is no file (see ModelFiles.merge_network)."""
    if pix2pix_path is None:
        return FrequencySplitMerger()
    from .loading import load_state_dict
    from .models.pix2pix import load_generator

    path = Path(pix2pix_path)
    key = (str(path), path.stat().st_mtime)
    if key not in _generator_cache:
        _generator_cache.clear()
        _generator_cache[key] = load_generator(load_state_dict(path))
    return Pix2PixMerger(_generator_cache[key])


def _pyramid_down(values: torch.Tensor) -> torch.Tensor:
    """Half size, low-passed (anti-aliased bilinear: one op, a close stand-in for the binomial pyramid kernel)."""
    size = (max(1, (values.shape[-2] + 1) // 2), max(1, (values.shape[-1] + 1) // 2))
    return F.interpolate(values, size=size, mode="bilinear", align_corners=False, antialias=True)


def laplacian_split(low: torch.Tensor, high: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Laplacian-pyramid blend: band-pass levels finer than `cutoff` pixels from `high`, the rest from `low`."""
    levels = max(1, int(round(math.log2(max(cutoff, 1.0)))) + 1)
    levels = min(levels, max(1, int(math.log2(max(2, min(low.shape[-2:]))))))
    details = []
    current = high
    for _ in range(levels):
        smaller = _pyramid_down(current)
        details.append(current - resize(smaller, current.shape[-2:], "bilinear"))
        current = smaller
    # The coarse residual of the low estimate, at the same pyramid level.
    base = low
    for _ in range(levels):
        base = _pyramid_down(base)
    for detail in reversed(details):
        base = resize(base, detail.shape[-2:], "bilinear") + detail
    return base


# --------------------------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class BoostPlan:
    """What boosting will do for one image, decided from the image alone (no network)."""

    height: int
    width: int
    receptive_field: int
    whole: WholeImageResolution
    factor: float
    canvas_size: tuple[int, int]
    """(h, w) at which patches were chosen."""
    patches: list[Rect]
    """Patch rectangles in input-image pixels, merged in this order."""


def plan_boost(image: torch.Tensor, receptive_field: int, settings: BoostSettings = BoostSettings()) -> BoostPlan:
    """R_x, the refinement canvas and the patches for one RGB image [3,H,W] in 0..1."""
    height, width = image.shape[-2:]
    whole = whole_image_resolution(image, receptive_field, settings)
    factor = patch_scale_factor(whole, settings.max_whole_size)
    patches: list[Rect] = []
    canvas = (height, width)
    if settings.refine_patches and min(height, width) >= MIN_PATCH_IMAGE_SIDE:
        canvas = refinement_size(height, width, whole.size, factor)
        on_canvas = resize(image[None].float(), canvas).clamp(0, 1)[0]
        to_input = height / canvas[0]
        for x, y, w, h in select_patches(on_canvas, receptive_field, factor):
            px, py = int(round(x * to_input)), int(round(y * to_input))
            pw, ph = int(round(w * to_input)), int(round(h * to_input))
            pw, ph = min(pw, width - px), min(ph, height - py)
            # A patch much smaller than the receptive field in real pixels would only be upsampled: no new detail.
            if min(pw, ph) >= max(2, receptive_field * MIN_PATCH_FRACTION):
                patches.append((px, py, pw, ph))
    return BoostPlan(height, width, receptive_field, whole, factor, canvas, patches)


@dataclass
class BoostReport:
    merge: str
    network_passes: int = 0
    """Images run through the depth network (a batch of n patches counts n)."""
    merge_passes: int = 0
    whole_sizes: list[int] = field(default_factory=list)
    patches: list[int] = field(default_factory=list)

    def describe(self) -> str:
        sizes = ", ".join(str(s) for s in self.whole_sizes)
        patches = ", ".join(str(p) for p in self.patches)
        return (f"merge: {self.merge}; {self.network_passes} depth-network passes, {self.merge_passes} merge passes; "
                f"whole-image size R20 = {sizes}; patches per image = {patches}")


class _CountingEstimator:
    def __init__(self, estimator: BoostableEstimator, report: BoostReport) -> None:
        self.estimator = estimator
        self.report = report

    def __call__(self, images: torch.Tensor, net_size: int) -> torch.Tensor:
        self.report.network_passes += images.shape[0]
        return self.estimator.infer(images, net_size).float()


def to_working_space(raw: torch.Tensor, kind: DepthKind) -> torch.Tensor:
    """Nearness (larger = nearer): inverse depth for metric predictions, the prediction itself otherwise."""
    raw = torch.nan_to_num(raw.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if kind is DepthKind.METRIC:
        return 1.0 / raw.clamp_min(1e-3)
    return raw


def from_working_space(boosted: torch.Tensor, reference: torch.Tensor, kind: DepthKind) -> torch.Tensor:
    """Fit the boosted nearness [N,H,W] to the network's own nearness by least squares and return raw values of the
    estimator's kind: relative inverse depth in the network's units, or metres for metric networks."""
    scale, shift = fit_scale_shift(boosted, reference)
    fitted = apply_scale_shift(boosted, scale, shift)
    if kind is DepthKind.METRIC:
        # Keep the inverse depth inside the range the network itself predicted, so no pixel goes to infinity.
        low = reference.flatten(1).amin(1).clamp_min(1e-6).view(-1, 1, 1)
        high = reference.flatten(1).amax(1).view(-1, 1, 1)
        return 1.0 / torch.maximum(torch.minimum(fitted, high), low)
    return fitted


def double_estimate(infer: _CountingEstimator, images: torch.Tensor, low_size: int, high_size: int,
                    merger: DepthMerger, kind: DepthKind, out_size: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate [N,3,H,W] at two network sizes and merge. Returns (merged nearness [N,1,h,w] normalized 0..1, the
    low-size estimate in working units [N,1,H,W])."""
    height, width = images.shape[-2:]
    low = to_working_space(infer(images, low_size), kind)[:, None]
    work = merger.working_size or out_size or (height, width)
    if high_size <= low_size:
        return normalize_min_max(resize(low, work)), low
    high = to_working_space(infer(images, high_size), kind)[:, None]
    low_pixel = max(work) / low_size
    merged = merger.merge(resize(normalize_min_max(low), work), resize(normalize_min_max(high), work), low_pixel)
    return normalize_min_max(merged), low


def boost_image(estimator: BoostableEstimator, image: torch.Tensor, merger: DepthMerger, plan: BoostPlan,
                report: BoostReport, settings: BoostSettings = BoostSettings(),
                step: Callable[[], None] | None = None) -> torch.Tensor:
    """Boosted raw depth [H,W] (the estimator's kind) for one RGB image [3,H,W] 0..1."""
    kind = DepthKind(estimator.card.output_kind)
    rf = plan.receptive_field
    height, width = plan.height, plan.width
    infer = _CountingEstimator(estimator, report)
    images = image[None].float()

    whole, reference = double_estimate(infer, images, rf, plan.whole.size, merger, kind, (height, width))
    estimate = normalize_min_max(resize(whole, (height, width)))[:, 0]  # [1,H,W]
    if step is not None:
        step()
    base = estimate.clone()
    patch_net = 2 * rf
    for start in range(0, len(plan.patches), max(1, settings.patch_batch)):
        chunk = plan.patches[start:start + max(1, settings.patch_batch)]
        crops = torch.cat([resize(images[..., y:y + h, x:x + w], (patch_net, patch_net)) for x, y, w, h in chunk])
        patch_estimates, _ = double_estimate(infer, crops.clamp(0, 1), rf, patch_net, merger, kind)
        for index, (x, y, w, h) in enumerate(chunk):
            base_crop = base[:, None, y:y + h, x:x + w]
            work = merger.working_size or (patch_net, patch_net)
            base_work = resize(base_crop, work)
            # One pixel of the whole-image estimate spans this many working pixels of the patch.
            base_pixel = (work[0] / h) * (max(height, width) / plan.whole.size)
            merged = merger.merge(base_work, resize(patch_estimates[index:index + 1], work), base_pixel)
            scale, shift = fit_scale_shift(merged, base_work)
            merged = resize(apply_scale_shift(merged, scale, shift), (h, w))[:, 0]
            mask = patch_blend_weight(h, w, merged.device)
            region = estimate[:, y:y + h, x:x + w]
            estimate[:, y:y + h, x:x + w] = region * (1 - mask) + merged * mask
            if step is not None:
                step()
    reference = resize(reference, (height, width))[:, 0]
    return from_working_space(estimate, reference, kind)[0]


def boost_depth(estimator: BoostableEstimator, images: torch.Tensor, merger: DepthMerger,
                settings: BoostSettings = BoostSettings(), progress: ProgressFn = no_progress
                ) -> tuple[Depth, BoostReport]:
    """BoostMerge for an RGB batch [B,3,H,W] in 0..1: one boosted Depth of the estimator's kind, and a report of
    the merge used and the network passes."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected RGB images [B,3,H,W], got shape {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("The image batch is empty: connect at least one image.")
    if settings.max_whole_size < 32:
        raise ValueError(f"max whole size must be at least 32, got {settings.max_whole_size}.")
    images = torch.nan_to_num(images.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    rf = int(estimator.card.receptive_field)
    plans = [plan_boost(image.cpu(), rf, settings) for image in images]
    report = BoostReport(merge=merger.name)
    total = sum(1 + len(plan.patches) for plan in plans)
    done = 0
    progress(done, total)

    def step() -> None:
        nonlocal done
        done += 1
        progress(done, total)

    device = getattr(estimator, "device", images.device)
    results = []
    for image, plan in zip(images, plans):
        report.whole_sizes.append(plan.whole.size)
        report.patches.append(len(plan.patches))
        results.append(boost_image(estimator, image.to(device), merger, plan, report, settings, step).cpu())
    report.merge_passes = merger.passes
    name = getattr(estimator.card, "name", "depth")
    return Depth(torch.stack(results), DepthKind(estimator.card.output_kind), f"{name} boosted"), report
