"""The depth value that flows between nodes: a raw prediction plus what it means.

Depth networks disagree on what their numbers mean. MiDaS and Depth Anything predict *relative inverse depth*
(disparity-like, larger = nearer, unknown scale and shift); ZoeDepth predicts *metric depth* in metres
(smaller = nearer). Every geometry node (stereo, normals, mesh, 3D photo) needs to know which one it got, so the
raw values travel together with their kind instead of being squashed into a 0..1 picture.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class DepthKind(str, enum.Enum):
    RELATIVE_INVERSE = "relative_inverse"
    """Affine-invariant inverse depth (disparity-like): larger = nearer, scale and shift unknown."""
    METRIC = "metric"
    """Distance along the optical axis in metres: smaller = nearer."""


@dataclass(frozen=True)
class Depth:
    """A batch of depth maps. `values` is float32 [B,H,W] on the CPU (or any device for internal use)."""

    values: torch.Tensor
    kind: DepthKind
    source: str = "image"
    fov_degrees: tuple[float, ...] | None = None
    """Horizontal field of view of the camera, in degrees: one value for the whole batch or one per image, when a
    model predicted it (Depth Pro) or the user set it; None = unknown, so geometry nodes use their own setting."""

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise ValueError(f"Depth values must be [B,H,W], got shape {tuple(self.values.shape)}.")
        if not self.values.is_floating_point():
            raise ValueError(f"Depth values must be floating point, got {self.values.dtype}.")
        object.__setattr__(self, "kind", DepthKind(self.kind))
        if self.fov_degrees is not None:
            fov = tuple(float(f) for f in self.fov_degrees)
            if len(fov) not in (1, self.batch_size) or not all(0.0 < f < 180.0 for f in fov):
                raise ValueError(f"Need one field of view (0-180 degrees) per depth map or one for all, got {fov} "
                                 f"for {self.batch_size} maps.")
            object.__setattr__(self, "fov_degrees", fov)

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.values.shape[1], self.values.shape[2]

    @property
    def is_metric(self) -> bool:
        return self.kind is DepthKind.METRIC

    def with_values(self, values: torch.Tensor) -> "Depth":
        """Same meaning and camera, new values. A per-image field of view that no longer lines up with the batch
        is dropped (use `select` to take images out of a batch with their cameras)."""
        fov = self.fov_degrees
        if fov is not None and len(fov) not in (1, values.shape[0]):
            fov = (fov[0],) if len(set(fov)) == 1 else None
        return Depth(values, self.kind, self.source, fov)

    def select(self, index: int) -> "Depth":
        """Image `index` of the batch, with its own field of view."""
        fov = self.fov_for(index)
        return Depth(self.values[index: index + 1], self.kind, self.source, None if fov is None else (fov,))

    def fov_for(self, index: int) -> float | None:
        """Horizontal field of view of image `index` in degrees, or None when the depth carries no camera."""
        if self.fov_degrees is None:
            return None
        return self.fov_degrees[index if len(self.fov_degrees) > 1 else 0]

    def with_fov(self, fov_degrees: float | tuple[float, ...] | None) -> "Depth":
        fov = (fov_degrees,) if isinstance(fov_degrees, (int, float)) else fov_degrees
        return Depth(self.values, self.kind, self.source, fov)

    def to(self, device: torch.device | str) -> "Depth":
        return self.with_values(self.values.to(device))

    def describe(self) -> str:
        unit = "metres" if self.is_metric else "relative inverse depth"
        camera = "" if self.fov_degrees is None else \
            f", horizontal field of view {', '.join(f'{f:.1f}' for f in self.fov_degrees)} degrees"
        return f"{self.batch_size}x{self.size[0]}x{self.size[1]} {unit} from {self.source}{camera}"


def fill_non_finite(values: torch.Tensor, fill: str = "far", kind: DepthKind = DepthKind.RELATIVE_INVERSE) -> torch.Tensor:
    """Replace NaN/inf per image with the farthest (or nearest) finite value, so nothing downstream divides by NaN.

    An image with no finite value at all becomes zeros.
    """
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return values
    far_is_small = kind is DepthKind.RELATIVE_INVERSE
    want_small = (fill == "far") == far_is_small
    big = torch.finfo(values.dtype).max
    candidates = torch.where(finite, values, torch.full_like(values, big if want_small else -big))
    per_image = candidates.flatten(1).amin(1) if want_small else candidates.flatten(1).amax(1)
    per_image = torch.where(finite.flatten(1).any(1), per_image, torch.zeros_like(per_image))
    return torch.where(finite, values, per_image.view(-1, 1, 1).expand_as(values))


def nearness(depth: Depth) -> torch.Tensor:
    """A [B,H,W] map where larger = nearer, finite everywhere: inverse depth for metric input."""
    values = fill_non_finite(depth.values, "far", depth.kind)
    if depth.is_metric:
        return 1.0 / values.clamp_min(1e-6)
    return values


def min_max_range(values: torch.Tensor, per_image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) of a batch [B,...], shaped [B,1,...] per item, or the whole batch's range repeated per item."""
    dims = tuple(range(1 if per_image else 0, values.ndim))
    shape = (values.shape[0],) + (1,) * (values.ndim - 1)
    return (values.amin(dim=dims, keepdim=True).expand(shape), values.amax(dim=dims, keepdim=True).expand(shape))


def unit_interval(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(values - low) / (high - low) clamped to 0..1; a flat range maps to 0 instead of dividing by zero."""
    span = high - low
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (values - low) / safe_span, torch.zeros_like(values)).clamp(0.0, 1.0)


def inverse_of_affine_depth(values: torch.Tensor, near_offset: float) -> torch.Tensor:
    """Relative inverse depth [B,H,W] from affine-invariant depth (larger = farther, scale and shift unknown):
    each image's nearest value moved to `near_offset`, then inverted. Keeps the order and, when the offset matches
    the scene's true near distance in the prediction's units, keeps planes planar (negation would not)."""
    nearest = values.flatten(1).amin(1).view(-1, *([1] * (values.ndim - 1)))
    return 1.0 / (values - nearest + near_offset)


def normalize_min_max(values: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Min-max normalize a batch [B,...] (e.g. [B,H,W] or [B,1,H,W]) to 0..1 per item or over the whole batch;
    a flat item becomes zeros."""
    return unit_interval(values, *min_max_range(values, per_image))


def normalized_nearness(depth: Depth, per_image: bool = True) -> torch.Tensor:
    """[B,H,W] in 0..1 with near = 1, the convention of depth pictures (near = white)."""
    return normalize_min_max(nearness(depth), per_image)


def depth_to_image(depth: Depth, per_image: bool = True) -> torch.Tensor:
    """Grayscale depth picture, IMAGE [B,H,W,3] float 0..1, near = white."""
    return normalized_nearness(depth, per_image).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


def depth_from_image(image: torch.Tensor) -> Depth:
    """Read a depth picture (IMAGE [B,H,W,C] or MASK-like [B,H,W], near = white) as relative inverse depth."""
    if image.ndim == 3:
        gray = image
    elif image.ndim == 4:
        gray = image[..., :3].mean(-1) if image.shape[-1] >= 3 else image[..., 0]
    else:
        raise ValueError(f"A depth image must be [B,H,W,C] or [B,H,W], got shape {tuple(image.shape)}.")
    return Depth(gray.float(), DepthKind.RELATIVE_INVERSE, "image")


def as_depth(value: "Depth | torch.Tensor") -> Depth:
    """Accept what a depth socket can carry: a Depth, or a depth picture from any pack or a loaded PNG."""
    if isinstance(value, Depth):
        return value
    if isinstance(value, torch.Tensor):
        return depth_from_image(value)
    raise TypeError(f"Expected a depth map or a depth image, got {type(value).__name__}.")


def resize_depth(depth: Depth, size: tuple[int, int]) -> Depth:
    """Resize to (height, width); bilinear, which keeps metric values meaningful."""
    if depth.size == tuple(size):
        return depth
    resized = F.interpolate(depth.values.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    return depth.with_values(resized.squeeze(1))


def match_depth_to_images(depth: Depth, batch_size: int, size: tuple[int, int]) -> Depth:
    """Make a depth batch line up with an image batch: resize to the image size, broadcast a single depth map.

    A depth batch of another length than 1 or `batch_size` cannot be paired and raises a ValueError naming the fix.
    """
    if depth.batch_size not in (1, batch_size):
        raise ValueError(
            f"Got {depth.batch_size} depth maps for {batch_size} images. Give one depth map per image, or a single "
            "depth map to use for every image."
        )
    depth = resize_depth(depth, size)
    if depth.batch_size != batch_size:
        depth = depth.with_values(depth.values.expand(batch_size, -1, -1).contiguous())
    return depth


def distance(depth: Depth, near: float = 1.0, far: float = 10.0, per_image: bool = True) -> torch.Tensor:
    """Distance along the optical axis, [B,H,W], in metres for metric depth, in scene units otherwise.

    Relative inverse depth is mapped linearly in *inverse* depth onto [1/far, 1/near]: disparity is affine in
    inverse depth, so this keeps planes planar, which a linear map onto [near, far] would not.
    """
    if depth.is_metric:
        return fill_non_finite(depth.values, "far", depth.kind).clamp_min(1e-6)
    if not 0 < near < far:
        raise ValueError(f"Need 0 < near < far for relative depth, got near={near}, far={far}.")
    t = normalized_nearness(depth, per_image)
    inverse = 1.0 / far + t * (1.0 / near - 1.0 / far)
    return 1.0 / inverse


def set_outside_mask_to_far(values: torch.Tensor, mask: torch.Tensor, kind: DepthKind) -> torch.Tensor:
    """Pixels where mask < 0.5 take the farthest depth among the kept pixels (the old "pre-depth" removal)."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"The mask must be [B,H,W] or [H,W], got shape {tuple(mask.shape)}.")
    if mask.shape[0] not in (1, values.shape[0]):
        raise ValueError(f"Got {mask.shape[0]} masks for {values.shape[0]} images: give one mask per image, or one "
                         "mask for all.")
    mask = mask.float().to(values.device)
    if mask.shape[-2:] != values.shape[-2:]:
        mask = F.interpolate(mask.unsqueeze(1), size=values.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    keep = (mask >= 0.5).expand_as(values)
    far_is_small = kind is DepthKind.RELATIVE_INVERSE
    big = torch.finfo(values.dtype).max
    fill_candidates = torch.where(keep, values, torch.full_like(values, big if far_is_small else -big))
    far = fill_candidates.flatten(1).amin(1) if far_is_small else fill_candidates.flatten(1).amax(1)
    all_masked = ~keep.flatten(1).any(1)
    far = torch.where(all_masked, values.flatten(1).amin(1) if far_is_small else values.flatten(1).amax(1), far)
    return torch.where(keep, values, far.view(-1, 1, 1).expand_as(values))
