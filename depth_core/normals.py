"""Normal maps from depth: the old extension's Sobel look, and true surface normals through a pinhole camera.

Both return unit normals [B,H,W,3] in the OpenGL tangent convention (x right, y up, z towards the viewer), which
is also the camera frame of depth_core.camera; `encode_normals` turns them into a 0..1 picture ((n + 1) / 2) and
flips green for DirectX.

Geometric method. A pinhole point is P = D * (x~, y~, -1) with x~ = (u - cx) / fx, y~ = -(v - cy) / fy. Written with
inverse distance w = 1/D, the normal is proportional to

    (-fx * dw/du,  fy * dw/dv,  w - x~ * fx * dw/du + y~ * fy * dw/dv)

A plane has w affine in (u, v), so finite differences of w are exact there and planes come out exact; curved
surfaces are second-order accurate. Differences across a depth edge would tilt the normals of both sides, so each
pixel blends its forward and backward difference with weights 1/difference^2: on smooth surfaces both agree (a
plane gets the exact slope), at an edge the side that stays on the same surface wins.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .camera import DEFAULT_FOV_DEGREES, Pinhole
from .depth import Depth, distance, normalized_nearness
from .image import gaussian_blur

METHODS = ("geometric", "sobel")
GREEN_CONVENTIONS = ("opengl", "directx")
DEFAULT_DEPTH_RANGE = 10.0
"""Assumed far/near distance ratio of relative depth, whose true range is unknown."""


# ---------------------------------------------------------------------------------- the old extension's method


def _check_kernel(name: str, size: int, allow_zero: bool = True) -> None:
    if size == 0 and allow_zero:
        return
    if size < 1 or size % 2 == 0 or size > 31:
        raise ValueError(f"The {name} kernel size must be odd between 1 and 31 (0 = off), got {size}.")


def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """OpenCV's default border (reflect without repeating the edge); replicate where the image is too small."""
    height, width = x.shape[-2:]
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=mode)


def _correlate_1d(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlate the padded tensor x along `dim` with a symmetric or antisymmetric odd kernel, pairing the taps
    k_i (x[c+i] +- x[c-i]) as OpenCV does: a mirrored border then cancels to exactly zero even for the huge
    31-tap Sobel kernels, instead of leaving rounding noise that would tip the normal over."""
    radius = kernel.numel() // 2
    length = x.shape[dim] - 2 * radius
    centre = x.narrow(dim, radius, length)
    antisymmetric = bool(kernel[radius] == 0) and bool(kernel[0] == -kernel[-1]) and bool(kernel[0] != 0)
    out = torch.zeros_like(centre) if antisymmetric else centre * kernel[radius]
    for i in range(1, radius + 1):
        after, before = x.narrow(dim, radius + i, length), x.narrow(dim, radius - i, length)
        out = out + kernel[radius + i] * ((after - before) if antisymmetric else (after + before))
    return out


def _separable(x: torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """Correlate [N,1,H,W] with row (horizontal) then column (vertical) kernels, in OpenCV's order and with its
    border."""
    x = _pad(x, column.numel() // 2, row.numel() // 2)
    return _correlate_1d(_correlate_1d(x, row, 3), column, 2)


def sobel_kernels(size: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(smoothing, first derivative) 1-D kernels of cv2.Sobel(ksize=size): binomial smoothing of `size` taps and
    the derivative [-1, 0, 1] smoothed by `size - 2` binomial taps (size 1 = no smoothing, plain [-1, 0, 1])."""
    def binomial(taps: int) -> torch.Tensor:
        kernel = torch.ones(1, dtype=dtype, device=device)
        for _ in range(taps - 1):
            kernel = F.pad(kernel, (0, 1)) + F.pad(kernel, (1, 0))
        return kernel

    derivative_base = torch.tensor([-1.0, 0.0, 1.0], dtype=dtype, device=device)
    if size == 1:
        return torch.ones(1, dtype=dtype, device=device), derivative_base
    smooth = binomial(size - 2)
    derivative = F.conv1d(F.pad(smooth, (2, 2)).view(1, 1, -1), derivative_base.flip(0).view(1, 1, -1)).flatten()
    return binomial(size), derivative


def _numpy_gradient(z: torch.Tensor, dim: int) -> torch.Tensor:
    """np.gradient along `dim`: central differences inside, one-sided at the ends, zero for a single sample."""
    length = z.shape[dim]
    if length < 2:
        return torch.zeros_like(z)
    steps = z.diff(dim=dim)
    first, last = steps.narrow(dim, 0, 1), steps.narrow(dim, length - 2, 1)
    middle = (steps.narrow(dim, 1, length - 2) + steps.narrow(dim, 0, length - 2)) / 2.0
    return torch.cat([first, middle, last], dim=dim)


def sixteen_bit_nearness(depth: Depth, per_image: bool = True) -> torch.Tensor:
    """The old extension's uint16 depth picture (near = 65535) as float64 [B,H,W]: truncating x * 65536."""
    unit = normalized_nearness(depth, per_image).double()
    return torch.clamp(unit * 65536.0 + 0.0001, 0.0, 65535.9).floor()


def sobel_normals(depth16: torch.Tensor, pre_blur: int = 0, sobel_kernel: int = 3, post_blur: int = 0,
                  invert: bool = False) -> torch.Tensor:
    """The old extension's normal map from its 16-bit depth picture [B,H,W] (0..65535, near = bright).

    z = -depth/256 (+depth/256 when inverted); optional Gaussian pre-blur (size k, sigma k); Sobel of size k
    (0 = numpy.gradient); n = normalize(dz/dx, -dz/dy, 1); optional Gaussian post-blur and renormalize.
    Returns unit normals [B,H,W,3] (x right, y up, z to the viewer)."""
    _check_kernel("pre-blur", pre_blur)
    _check_kernel("Sobel", sobel_kernel)
    _check_kernel("post-blur", post_blur)
    z = (depth16.double() if invert else -depth16.double()) / 256.0
    z = z.unsqueeze(1)
    if pre_blur > 0:
        z = gaussian_blur(z, float(pre_blur), pre_blur // 2, border="reflect")
    if sobel_kernel > 0:
        smooth, derivative = sobel_kernels(sobel_kernel, z.dtype, z.device)
        dz_dx = _separable(z, derivative, smooth)
        dz_dy = _separable(z, smooth, derivative)
    else:
        dz_dx, dz_dy = _numpy_gradient(z, 3), _numpy_gradient(z, 2)
    normals = torch.cat([dz_dx, -dz_dy, torch.ones_like(z)], dim=1)
    normals = normals / torch.linalg.vector_norm(normals, dim=1, keepdim=True)
    if post_blur > 0:
        batch, _, height, width = normals.shape
        blurred = gaussian_blur(normals.reshape(batch * 3, 1, height, width), float(post_blur), post_blur // 2,
                                border="reflect")
        normals = blurred.view(batch, 3, height, width)
        normals = normals / torch.linalg.vector_norm(normals, dim=1, keepdim=True).clamp_min(1e-12)
    return normals.permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------- geometric normals


def _edge_aware_slope(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Derivative of w along `dim` blending forward and backward differences by 1/difference^2."""
    length = w.shape[dim]
    if length < 2:
        return torch.zeros_like(w)
    steps = w.diff(dim=dim)
    # The first and last samples reuse their one neighbouring step (linear extrapolation of w).
    padded = torch.cat([steps.narrow(dim, 0, 1), steps, steps.narrow(dim, length - 2, 1)], dim=dim)
    forward, backward = padded.narrow(dim, 1, length), padded.narrow(dim, 0, length)
    # (f b^2 + b f^2) / (f^2 + b^2) = f b (f + b) / (f^2 + b^2): exactly f when f == b, the smaller one at an edge.
    f2 = forward * forward
    denominator = backward * backward
    denominator.add_(f2).add_(1e-30)
    numerator = forward * backward
    numerator.mul_(forward + backward)
    return numerator.div_(denominator)


def geometric_normals(distances: torch.Tensor, camera: Pinhole, strength: float = 1.0) -> torch.Tensor:
    """Unit surface normals [B,H,W,3] of distances along the optical axis [B,H,W] seen through `camera`.

    strength scales the slopes (x, y) against z: 1 = the true surface, 0 = flat, above 1 exaggerated."""
    batch, height, width = distances.shape
    if (height, width) != (camera.height, camera.width):
        raise ValueError(f"Camera is {camera.width}x{camera.height} but the depth is {width}x{height}.")
    dtype, device = distances.dtype, distances.device
    w = distances.clamp_min(1e-12).reciprocal_()
    x_tilde = ((torch.arange(width, dtype=dtype, device=device) + 0.5 - camera.cx) / camera.fx).view(1, 1, width)
    y_tilde = (-(torch.arange(height, dtype=dtype, device=device) + 0.5 - camera.cy) / camera.fy).view(1, height, 1)
    nx = _edge_aware_slope(w, 2).mul_(-camera.fx)
    ny = _edge_aware_slope(w, 1).mul_(camera.fy)
    nz = torch.addcmul(w, x_tilde, nx).addcmul_(y_tilde, ny)
    if strength != 1.0:
        nx.mul_(strength)
        ny.mul_(strength)
    inverse_length = nx * nx
    inverse_length.addcmul_(ny, ny).addcmul_(nz, nz).clamp_min_(1e-30).rsqrt_()
    return torch.stack([nx.mul_(inverse_length), ny.mul_(inverse_length), nz.mul_(inverse_length)], dim=-1)


# ------------------------------------------------------------------------------------------------------ public


def encode_normals(normals: torch.Tensor, green: str = "opengl") -> torch.Tensor:
    """Unit normals [B,H,W,3] to a normal-map picture 0..1: (n + 1) / 2, green flipped for DirectX."""
    if green not in GREEN_CONVENTIONS:
        raise ValueError(f"Green convention must be one of {GREEN_CONVENTIONS}, got {green!r}.")
    picture = normals * 0.5
    picture.add_(0.5).clamp_(0.0, 1.0)
    if green == "directx":
        picture[..., 1].neg_().add_(1.0)
    return picture


def normal_map(depth: Depth, method: str = "geometric", fov_degrees: float = DEFAULT_FOV_DEGREES,
               strength: float = 1.0, green: str = "opengl", depth_range: float = DEFAULT_DEPTH_RANGE,
               pre_blur: int = 0, sobel_kernel: int = 3, post_blur: int = 0, invert: bool = False,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Normal-map picture [B,H,W,3] 0..1 ((n + 1) / 2, OpenGL or DirectX green) of a depth batch.

    geometric: back-projects through a pinhole with horizontal field of view `fov_degrees`; metric depth is used in
    metres, relative inverse depth is mapped to distances spanning `depth_range` (far / near), see
    depth_core.depth.distance. `invert` flips the normals (for depth whose near/far is reversed).
    sobel: the old extension (pre_blur, sobel_kernel, post_blur, invert as there); `strength` scales its slopes.
    """
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
    if method not in METHODS:
        raise ValueError(f"Normal map method must be one of {METHODS}, got {method!r}.")
    if not strength >= 0 or not math.isfinite(strength):
        raise ValueError(f"Strength must be 0 or more (1 = true surface), got {strength}.")
    if device is not None:
        depth = depth.to(device)
    if method == "sobel":
        normals = sobel_normals(sixteen_bit_nearness(depth), pre_blur, sobel_kernel, post_blur, invert).float()
        if strength != 1.0:
            normals = torch.cat([normals[..., :2] * strength, normals[..., 2:]], dim=-1)
            normals = normals / torch.linalg.vector_norm(normals, dim=-1, keepdim=True).clamp_min(1e-12)
    else:
        if not depth_range > 1.0:
            raise ValueError(f"The depth range (far / near) must be above 1, got {depth_range}.")
        height, width = depth.size
        camera = Pinhole.from_fov(width, height, fov_degrees)
        distances = distance(depth, 1.0, float(depth_range)).float()
        normals = geometric_normals(distances, camera, strength)
        if invert:
            normals = -normals
    return encode_normals(normals, green)
