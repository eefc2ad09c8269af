"""Depth Pro: the released key layout, the multi-resolution encoder against a plain reading of the authors'
algorithm, metres and focal length as the authors' `infer` computes them, strict loading and clear errors.

tests/data/keys/depth_pro.json is {key: shape} of the authors' DepthPro (apple/ml-depth-pro @ HEAD, timm 1.0) built
by their `create_model_and_transforms`. The full-size network (three ViT-L, 1536 px) was also compared with the
authors' code on one random checkpoint outside the test suite (benchmarks/modern_models.py does it again where the
authors' code is present); here the same algorithm runs on SMALL_DEPTH_PRO, which keeps the token geometry.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from small_networks import SMALL_DEPTH_PRO, small_depth_pro

from depth_core import registry
from depth_core.depth import DepthKind
from depth_core.loading import CorruptCheckpointError
from depth_core.models import depth_anything_v2, depth_pro, midas_dpt, zoedepth

KEYS = Path(__file__).parent / "data" / "keys"


def _official_shapes() -> dict[str, list[int]]:
    return json.loads((KEYS / "depth_pro.json").read_text())


def test_state_dict_matches_the_released_layout():
    with torch.device("meta"):
        network = depth_pro.build(depth_pro.DEPTH_PRO)
    ours = {key: list(value.shape) for key, value in network.state_dict().items()}
    assert ours == _official_shapes()


def test_config_recognised_only_by_its_family():
    shapes = {k: torch.empty(v, device="meta") for k, v in _official_shapes().items()}
    assert depth_pro.config_from_state_dict(shapes) == depth_pro.DEPTH_PRO
    for other in (depth_anything_v2, midas_dpt, zoedepth):
        assert other.config_from_state_dict(shapes) is None
    for stem in ("depth_anything_v2_vits", "dpt_beit_large_384", "ZoeD_M12_N"):
        foreign = {k: torch.empty(v, device="meta") for k, v in json.loads((KEYS / f"{stem}.json").read_text()).items()}
        assert depth_pro.config_from_state_dict(foreign) is None
    del shapes["encoder.fuse_lowres.weight"]
    assert depth_pro.config_from_state_dict(shapes) is None


@pytest.fixture(scope="module")
def small():
    return small_depth_pro(fov_degrees=60.0)


# --- A plain reading of the authors' forward pass, written independently of depth_core's (test-only) ---

def _reference_vit(vit: torch.nn.Module, x: torch.Tensor, hooks=()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    captured = {}
    handles = [vit.blocks[i].register_forward_hook(lambda m, i_, o, i=i: captured.__setitem__(i, o)) for i in hooks]
    try:
        out = vit.forward_features(x)  # timm's own path: patch_embed, pos_embed, blocks, norm
    finally:
        for handle in handles:
            handle.remove()
    return out, [captured[i] for i in hooks]


def _reference_grid(tokens: torch.Tensor) -> torch.Tensor:
    b, n, c = tokens.shape
    return tokens[:, 1:].reshape(b, 24, 24, c).permute(0, 3, 1, 2)


def _reference_split(x: torch.Tensor, size: int, overlap: float) -> torch.Tensor:
    stride = int(size * (1 - overlap))
    steps = int(math.ceil((x.shape[-1] - size) / stride)) + 1
    return torch.cat([x[..., j * stride:j * stride + size, i * stride:i * stride + size]
                      for j in range(steps) for i in range(steps)])


def _reference_merge(x: torch.Tensor, batch: int, padding: int) -> torch.Tensor:
    steps = int(math.sqrt(x.shape[0] // batch))
    rows, idx = [], 0
    for j in range(steps):
        row = []
        for i in range(steps):
            out = x[batch * idx: batch * (idx + 1)]
            if j != 0:
                out = out[..., padding:, :]
            if i != 0:
                out = out[..., :, padding:]
            if j != steps - 1:
                out = out[..., :-padding, :]
            if i != steps - 1:
                out = out[..., :, :-padding]
            row.append(out)
            idx += 1
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows, dim=-2)


def _reference_fusion(block, x, lateral=None):
    if lateral is not None:
        x = x + (lateral + block.resnet1.residual(lateral))
    x = x + block.resnet2.residual(x)
    if block.deconv is not None:
        x = block.deconv(x)
    return block.out_conv(x)


def _reference_forward(net: depth_pro.DepthPro, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    enc, size, b = net.encoder, net.config.backbone_size, x.shape[0]
    x1 = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    x2 = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
    p0, p1 = _reference_split(x, size, 0.25), _reference_split(x1, size, 0.5)
    tokens, (h0, h1) = _reference_vit(enc.patch_encoder, torch.cat((p0, p1, x2)), (5, 11))
    maps = _reference_grid(tokens)
    e0, e1, e2 = torch.split(maps, [len(p0), len(p1), len(x2)])
    latent0 = _reference_merge(_reference_grid(h0)[: b * 25], b, 3)
    latent1 = _reference_merge(_reference_grid(h1)[: b * 25], b, 3)
    f0, f1 = _reference_merge(e0, b, 3), _reference_merge(e1, b, 6)
    glob = _reference_grid(_reference_vit(enc.image_encoder, x2)[0])
    levels = [enc.upsample_latent0(latent0), enc.upsample_latent1(latent1), enc.upsample0(f0), enc.upsample1(f1),
              enc.fuse_lowres(torch.cat((enc.upsample2(e2), enc.upsample_lowres(glob)), 1))]
    dec = net.decoder
    lowres = dec.convs[-1](levels[-1])
    features = _reference_fusion(dec.fusions[-1], lowres)
    for i in range(3, -1, -1):
        features = _reference_fusion(dec.fusions[i], features, dec.convs[i](levels[i]))
    inverse = net.head(features)
    fov_vit, project = net.fov.encoder
    fov_tokens = project(_reference_vit(fov_vit, x2)[0])[:, 1:].permute(0, 2, 1)
    low = net.fov.downsample(lowres)
    fov = net.fov.head(fov_tokens.reshape_as(low) + low)
    return inverse[:, 0], fov.flatten()


def test_forward_matches_the_authors_algorithm(small):
    x = torch.randn(2, 3, SMALL_DEPTH_PRO.input_size, SMALL_DEPTH_PRO.input_size,
                    generator=torch.Generator().manual_seed(3))
    small.encoder.patch_chunk = 8  # chunked patch batches must not change anything
    with torch.no_grad():
        inverse, fov = small(x)
        expected_inverse, expected_fov = _reference_forward(small, x)
    small.encoder.patch_chunk = depth_pro.DEFAULT_PATCH_CHUNK
    assert inverse.shape == (2, 1536, 1536) and fov.shape == (2,)
    assert inverse.std() > 0 and not torch.equal(inverse[0], inverse[1])
    assert torch.allclose(inverse, expected_inverse, rtol=1e-4, atol=1e-6)
    assert torch.allclose(fov, expected_fov, rtol=1e-4, atol=1e-5)


def test_patches_split_and_merge_back_to_the_image():
    image = torch.arange(2 * 96 * 96, dtype=torch.float32).reshape(2, 1, 96, 96)
    patches = depth_pro.split_patches(image, 24, 0.25)
    assert patches.shape == (50, 1, 24, 24)
    # Stitching the pixel patches with the trim that matches a 6-pixel overlap gives the image back.
    assert torch.equal(depth_pro.merge_patches(patches, 2, 3), image)
    assert torch.equal(depth_pro.merge_patches(depth_pro.split_patches(image[:, :, :48, :48], 24, 0.5), 2, 6),
                       image[:, :, :48, :48])


@pytest.fixture(scope="module")
def small_file(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("depth_pro") / "my_renamed_depth_pro.pt"
    torch.save(small.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def estimated(small_file):
    """(estimator loaded from the file, a photo-sized input, its depth)."""
    estimator = registry.build_estimator(small_file)
    image = torch.rand(1, 50, 70, 3, generator=torch.Generator().manual_seed(5))
    return estimator, image, estimator.predict(image, resolution=126)  # a resolution choice does not apply


def test_loads_strictly_and_returns_metres_and_the_predicted_field_of_view(small, estimated):
    estimator, image, depth = estimated
    assert estimator.card.family == "depth_pro" and estimator.output_kind is DepthKind.METRIC
    assert estimator.card.preprocess.net_size == SMALL_DEPTH_PRO.input_size
    assert depth.is_metric and depth.size == (50, 70) and depth.fov_degrees is not None

    # The authors' infer: resize to the network size, canonical inverse depth x W / f_px, resize back, invert.
    x = F.interpolate(image.permute(0, 3, 1, 2), size=(384, 384), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        canonical, fov = small(x)
    f_px = 0.5 * 70 / torch.tan(0.5 * torch.deg2rad(fov))
    inverse = F.interpolate((canonical * (70 / f_px))[:, None], size=(50, 70), mode="bilinear", align_corners=False)
    expected = 1.0 / inverse.clamp(1e-4, 1e4)[:, 0]
    assert depth.fov_degrees == pytest.approx(tuple(fov.tolist()), rel=1e-5)
    assert torch.allclose(depth.values, expected, rtol=1e-4)

    # A known field of view replaces the estimate, in the depth's camera and in its metric scale.
    given = estimator.predict(image, fov_degrees=2 * fov.item())
    assert given.fov_degrees == pytest.approx((2 * fov.item(),))
    ratio = math.tan(math.radians(fov.item())) / math.tan(math.radians(fov.item() / 2))
    assert torch.allclose(given.values, depth.values / ratio, rtol=1e-4)


def test_fp16_copy_loads_and_matches(small, estimated, tmp_path):
    import safetensors.torch

    _, image, reference = estimated
    half = {k: v.half().contiguous() for k, v in small.state_dict().items()}
    path = tmp_path / "depth_pro_fp16.safetensors"
    safetensors.torch.save_file(half, str(path))
    loaded = registry.build_estimator(path).predict(image)
    assert torch.allclose(loaded.values, reference.values, rtol=5e-2)
    assert loaded.fov_degrees == pytest.approx(reference.fov_degrees, rel=1e-2)


def test_bad_files_get_clear_errors(small, small_file, tmp_path):
    truncated = tmp_path / "depth_pro.pt"
    truncated.write_bytes(small_file.read_bytes()[:100_000])
    with pytest.raises(CorruptCheckpointError, match="delete .* and download it again"):
        registry.build_estimator(truncated)

    # The right file name holding another network's weights.
    impostor = tmp_path / "renamed" / "depth_pro.pt"
    impostor.parent.mkdir()
    torch.save({"weight": torch.zeros(3)}, impostor)
    with pytest.raises(CorruptCheckpointError, match="does not hold the weights its name promises"):
        registry.build_estimator(impostor)

    # A Depth Pro whose parts do not fit together (a different variant, or damaged): refused, not half-loaded.
    state = dict(small.state_dict())
    state["head.0.weight"] = torch.zeros(3, 8, 3, 3)
    variant = tmp_path / "depth_pro_variant.pt"
    torch.save(state, variant)
    with pytest.raises(CorruptCheckpointError, match="do not fit the network"):
        registry.build_estimator(variant)
