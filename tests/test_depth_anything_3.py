"""Depth Anything 3 Mono / Metric Large: the released key layout (model.safetensors of the Hugging Face repos),
outputs equal to a plain reading of the authors' network on a random checkpoint, metres from the focal length,
strict loading and clear errors.

tests/data/keys/DA3MONO-LARGE.json is {key: shape} of the authors' DepthAnything3 API module for da3mono-large
(ByteDance-Seed/Depth-Anything-3 @ HEAD); da3metric-large has the same layout.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from depth_core import registry
from depth_core.depth import DepthKind
from depth_core.estimate import DepthEstimator
from depth_core.loading import CorruptCheckpointError
from depth_core.models import depth_anything_3 as da3
from depth_core.models import depth_anything_v2, depth_pro, midas_dpt

KEYS = Path(__file__).parent / "data" / "keys"
SMALL = da3.DepthAnything3Config(embed_dim=64, depth=4, layers=(0, 1, 2, 3), features=16, out_channels=(8, 16, 32, 32))


def _official_shapes() -> dict[str, list[int]]:
    return json.loads((KEYS / "DA3MONO-LARGE.json").read_text())


def test_state_dict_matches_the_released_layout():
    with torch.device("meta"):
        network = da3.build(da3.MONO_LARGE)
    assert {key: list(value.shape) for key, value in network.state_dict().items()} == _official_shapes()


def test_recognised_only_by_its_family_and_the_name_tells_metric():
    shapes = {k: torch.empty(v, device="meta") for k, v in _official_shapes().items()}
    config = da3.config_from_state_dict(shapes)
    assert config == da3.MONO_LARGE
    assert da3.config_for_variant(config, "auto", "DA3METRIC-LARGE.safetensors") == da3.METRIC_LARGE
    assert da3.config_for_variant(config, "auto", "model.safetensors") == da3.MONO_LARGE
    assert da3.config_for_variant(config, "metric outdoor", "model.safetensors") == da3.METRIC_LARGE
    with pytest.raises(ValueError, match="does not apply"):
        da3.config_for_variant(config, "v1 relative", "model.safetensors")
    for other in (depth_anything_v2, midas_dpt, depth_pro):
        assert other.config_from_state_dict(shapes) is None
    for stem in ("depth_anything_v2_vitl", "depth_pro"):
        foreign = {k: torch.empty(v, device="meta") for k, v in json.loads((KEYS / f"{stem}.json").read_text()).items()}
        assert da3.config_from_state_dict(foreign) is None
    # An any-view DA3 (camera token) is not a monocular one.
    assert da3.config_from_state_dict(shapes | {"model.backbone.pretrained.camera_token": torch.empty(1, 2, 1024)}) \
        is None


@pytest.fixture(scope="module")
def small() -> da3.DepthAnything3:
    torch.manual_seed(0)
    network = da3.build(SMALL).eval()
    with torch.no_grad():  # centre the sky map on the threshold: both sky and ground, so the sky fill is exercised
        _, sky = network.depth_and_sky(_input())
        network.model.head.scratch.sky_output_conv2[2].bias.add_(da3.SKY_THRESHOLD - sky.median())
    return network


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 70, 98, generator=torch.Generator().manual_seed(2))


# --- A plain reading of the authors' network (DinoVisionTransformer + DPT with sky head), test-only ---

def reference_tokens(vit, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's class token and patch embeddings with their position embedding resampled to the grid."""
    b, _, h, w = x.shape
    gh, gw = h // 14, w // 14
    tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat((vit.cls_token.expand(b, -1, -1), tokens), 1)
    side = int(math.sqrt(vit.pos_embed.shape[1] - 1))
    grid = vit.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
    tokens = tokens + torch.cat((vit.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)), 1)
    return tokens


def _reference(net: da3.DepthAnything3, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vit, head, config = net.model.backbone.pretrained, net.model.head, net.config
    b, _, h, w = x.shape
    gh, gw = h // 14, w // 14
    tokens = reference_tokens(vit, x)
    taken = []
    for i, block in enumerate(vit.blocks):
        a = block.attn
        y = block.norm1(tokens)
        q, k, v = a.qkv(y).reshape(b, -1, 3, a.num_heads, y.shape[-1] // a.num_heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(-1)
        y = a.proj((attention @ v).transpose(1, 2).reshape(b, -1, y.shape[-1]))
        tokens = tokens + block.ls1.gamma * y
        tokens = tokens + block.ls2.gamma * block.mlp(block.norm2(tokens))
        if i in config.layers:
            normed = F.layer_norm(tokens, (tokens.shape[-1],), vit.norm.weight, vit.norm.bias, eps=1e-5)
            taken.append(normed[:, 1:])
    s = head.scratch
    maps = [head.resize_layers[i](head.projects[i](t.permute(0, 2, 1).reshape(b, -1, gh, gw)))
            for i, t in enumerate(taken)]
    out = reference_fusion(s, maps)
    neck = F.interpolate(s.output_conv1(out), size=(gh * 14, gw * 14), mode="bilinear", align_corners=True)
    depth = torch.exp(s.output_conv2(neck))[:, 0]
    sky = torch.relu(s.sky_output_conv2(neck))[:, 0]
    for i in range(b):
        ground = sky[i] < 0.3
        if ground.sum() > 10 and (~ground).sum() > 10:
            depth[i][~ground] = torch.quantile(depth[i][ground], 0.99)
    return depth, sky


def reference_fusion(s, maps: list[torch.Tensor]) -> torch.Tensor:
    """The authors' DPT scratch (without a lateral unit on the coarsest level) on the four level maps."""
    rn = [getattr(s, f"layer{i + 1}_rn")(m) for i, m in enumerate(maps)]

    def unit(u, t):
        return u.conv2(F.relu(u.conv1(F.relu(t)))) + t

    def fuse(block, top, lateral=None, size=None):
        if lateral is not None:
            top = top + unit(block.resConfUnit1, lateral)
        top = unit(block.resConfUnit2, top)
        top = F.interpolate(top, **({"size": size} if size else {"scale_factor": 2}), mode="bilinear",
                            align_corners=True)
        return block.out_conv(top)

    out = fuse(s.refinenet4, rn[3], size=rn[2].shape[2:])
    out = fuse(s.refinenet3, out, rn[2], size=rn[1].shape[2:])
    out = fuse(s.refinenet2, out, rn[1], size=rn[0].shape[2:])
    return fuse(s.refinenet1, out, rn[0])


def test_outputs_match_the_authors_network(small):
    x = _input()
    with torch.no_grad():
        depth, sky = small.depth_and_sky(x)
        expected_depth, expected_sky = _reference(small, x)
        relative = small(x)
    sky_fraction = (sky >= 0.3).float().mean().item()
    assert 0.05 < sky_fraction < 0.95, "the test needs both sky and ground"
    assert torch.allclose(sky, expected_sky, rtol=1e-4, atol=1e-6)
    assert torch.allclose(depth, expected_depth, rtol=1e-4)
    assert torch.allclose(relative, 1.0 / expected_depth, rtol=1e-4)


def test_metric_depth_follows_the_focal_length(small, tmp_path):
    # The same weights read as DA3Metric, from a safetensors file, strictly.
    path = tmp_path / "DA3METRIC-LARGE.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(path))
    network = da3.build(replace(SMALL, metric=True)).eval()
    network.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    card = da3.KNOWN_MODELS[1].card
    assert card.output_kind is DepthKind.METRIC and card.focal_scaled
    estimator = DepthEstimator(card, network)
    image = torch.rand(1, 56, 84, 3, generator=torch.Generator().manual_seed(4))
    depth = estimator.predict(image)
    assert depth.fov_degrees == (55.0,)  # no estimate of its own: the default camera, carried with the depth
    # metres = focal length in network pixels x output / 300
    x = estimator.prepare(image.permute(0, 3, 1, 2), estimator.input_size(56, 84))
    with torch.no_grad():
        out, _ = network.depth_and_sky(x)
    focal = 0.5 * x.shape[-1] / math.tan(math.radians(55.0) / 2)
    expected = F.interpolate((focal * out / 300)[:, None], size=(56, 84), mode="bilinear", align_corners=False)
    assert torch.allclose(depth.values, expected[:, 0], rtol=1e-4)
    wider = estimator.predict(image, fov_degrees=90.0)
    ratio = math.tan(math.radians(27.5)) / math.tan(math.radians(45.0))
    assert torch.allclose(wider.values, depth.values * ratio, rtol=1e-4)


def test_bad_files_are_refused_with_what_to_do(tmp_path):
    truncated = tmp_path / "DA3MONO-LARGE.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    with pytest.raises(CorruptCheckpointError, match="download it again"):
        registry.build_estimator(truncated)
    wrong = tmp_path / "renamed" / "DA3METRIC-LARGE.safetensors"
    wrong.parent.mkdir()
    safetensors.torch.save_file({"weight": torch.zeros(3)}, str(wrong))
    with pytest.raises(CorruptCheckpointError, match="does not hold the weights its name promises"):
        registry.build_estimator(wrong)
