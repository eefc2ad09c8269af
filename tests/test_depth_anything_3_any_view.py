"""Depth Anything 3 any-view models (DA3-Small / DA3-Base) on one image: the released key layout, depth and field of
view equal to a plain reading of the authors' network on a random checkpoint, loading through the registry.

tests/data/keys/DA3-SMALL.json and DA3-BASE.json are {key: shape} of the authors' DepthAnything3Net built from
configs/da3-small.yaml and da3-base.yaml (ByteDance-Seed/Depth-Anything-3 @ HEAD), with the API module's `model.`
prefix.
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
from depth_core.loading import CorruptCheckpointError
from depth_core.models import depth_anything_3 as da3
from depth_core.models import depth_anything_v2, depth_pro, midas_dpt
from test_depth_anything_3 import reference_fusion, reference_tokens

KEYS = Path(__file__).parent / "data" / "keys"
TINY = replace(da3.ANY_VIEW_SMALL, embed_dim=64, features=16, out_channels=(8, 16, 32, 32))


def _official_shapes(name: str) -> dict[str, list[int]]:
    return json.loads((KEYS / f"{name}.json").read_text())


@pytest.mark.parametrize("name, config", [("DA3-SMALL", da3.ANY_VIEW_SMALL), ("DA3-BASE", da3.ANY_VIEW_BASE)])
def test_released_layout_is_recognised_and_loads_all_but_the_multi_view_parts(name, config):
    official = _official_shapes(name)
    with torch.device("meta"):
        network = da3.build(config)
    ours = {key: list(value.shape) for key, value in network.state_dict().items()}
    unused = set(official) - set(ours)
    assert ours == {key: shape for key, shape in official.items() if key not in unused}
    # What is left out is exactly the camera encoder and the ray branch of the head.
    assert unused == {key for key in official if da3.UNUSED_FOR_ONE_VIEW.match(key)}
    assert any(key.startswith("model.cam_enc.") for key in unused)
    assert any("refinenet4_aux" in key for key in unused)
    shapes = {key: torch.empty(shape, device="meta") for key, shape in official.items()}
    assert da3.config_from_state_dict(shapes) == config
    for other in (depth_anything_v2, midas_dpt, depth_pro):
        assert other.config_from_state_dict(shapes) is None
    mono = {k: torch.empty(v, device="meta") for k, v in _official_shapes("DA3MONO-LARGE").items()}
    assert isinstance(da3.config_from_state_dict(mono), da3.DepthAnything3Config)


@pytest.fixture(scope="module")
def tiny() -> da3.DepthAnything3AnyView:
    torch.manual_seed(0)
    network = da3.build(TINY).eval()
    with torch.no_grad():
        for parameter in network.parameters():  # away from the identity norms and zero tokens of a fresh build
            parameter.add_(0.05 * torch.randn_like(parameter))
        network.model.cam_dec.fc_fov[0].bias.copy_(torch.tensor([0.9, 1.1]))  # about 60 degrees wide
    return network


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 70, 98, generator=torch.Generator().manual_seed(2))


# --- A plain reading of the authors' network for one view (DinoVisionTransformer with RoPE + DualDPT + CameraDec) ---

def _rope(t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (j, j + d/4) of the row half and of the column half by position x 100^(-4j/d)."""
    d = t.shape[-1]
    out = t.clone()
    for axis in range(2):
        start = axis * d // 2
        for j in range(d // 4):
            angle = positions[:, axis].float() * 100.0 ** (-2 * j / (d // 2))
            a, b = t[..., start + j], t[..., start + j + d // 4]
            out[..., start + j] = a * angle.cos() - b * angle.sin()
            out[..., start + j + d // 4] = b * angle.cos() + a * angle.sin()
    return out


def _uv(channels: int, h: int, w: int, aspect: float) -> torch.Tensor:
    span_x, span_y = aspect / math.hypot(aspect, 1), 1 / math.hypot(aspect, 1)
    xs = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, w)
    ys = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h)
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter).float() / quarter)
    ax = xs[None, :, None] * omega  # [1, w, q]
    ay = ys[:, None, None] * omega  # [h, 1, q]
    parts = (ax.sin().expand(h, w, quarter), ax.cos().expand(h, w, quarter),
             ay.sin().expand(h, w, quarter), ay.cos().expand(h, w, quarter))
    return 0.1 * torch.cat(parts, -1).permute(2, 0, 1)


def _reference(net: da3.DepthAnything3AnyView, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vit, head, cam, config = net.model.backbone.pretrained, net.model.head, net.model.cam_dec, net.config
    b, _, h, w = x.shape
    gh, gw = h // 14, w // 14
    tokens = reference_tokens(vit, x)
    cells = torch.tensor([[r + 1, c + 1] for r in range(gh) for c in range(gw)])
    local_pos = torch.cat((torch.zeros(1, 2, dtype=torch.long), cells))
    global_pos = torch.cat((torch.zeros(1, 2, dtype=torch.long), torch.ones(gh * gw, 2, dtype=torch.long)))
    taken, local = [], tokens
    for i, block in enumerate(vit.blocks):
        if i == config.alt_start:
            tokens = tokens.clone()
            tokens[:, 0] = vit.camera_token[0, 0]
        a = block.attn
        y = block.norm1(tokens)
        q, k, v = a.qkv(y).reshape(b, -1, 3, a.num_heads, y.shape[-1] // a.num_heads).permute(2, 0, 3, 1, 4)
        if i >= config.alt_start:
            q = F.layer_norm(q, q.shape[-1:], a.q_norm.weight, a.q_norm.bias)
            k = F.layer_norm(k, k.shape[-1:], a.k_norm.weight, a.k_norm.bias)
            pos = global_pos if i % 2 == 1 else local_pos
            q, k = _rope(q, pos), _rope(k, pos)
        attention = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(-1)
        y = a.proj((attention @ v).transpose(1, 2).reshape(b, -1, y.shape[-1]))
        tokens = tokens + block.ls1.gamma * y
        tokens = tokens + block.ls2.gamma * block.mlp(block.norm2(tokens))
        if i < config.alt_start or i % 2 == 0:
            local = tokens
        if i in config.layers:
            taken.append(torch.cat((local, tokens), -1))
    camera_token = taken[-1][:, 0]
    c = config.embed_dim
    feats = [torch.cat((t[..., :c], F.layer_norm(t[..., c:], (c,), vit.norm.weight, vit.norm.bias, 1e-5)), -1)
             for t in taken]
    aspect = w / h
    s = head.scratch
    maps = []
    for i, t in enumerate(feats):
        m = head.projects[i](head.norm(t[:, 1:]).permute(0, 2, 1).reshape(b, -1, gh, gw))
        maps.append(head.resize_layers[i](m + _uv(m.shape[1], gh, gw, aspect)))
    out = reference_fusion(s, maps)
    neck = F.interpolate(s.output_conv1(out), size=(gh * 14, gw * 14), mode="bilinear", align_corners=True)
    depth = torch.exp(s.output_conv2(neck + _uv(neck.shape[1], gh * 14, gw * 14, aspect))[:, 0])
    fov_w = cam.fc_fov(cam.backbone(camera_token))[:, 1]
    # The authors turn the field of view into intrinsics: fx = (W/2) / tan(fov_w/2).
    fx = (w / 2) / torch.tan(fov_w / 2)
    return depth, torch.rad2deg(2 * torch.atan((w / 2) / fx))


def test_depth_and_field_of_view_match_the_authors_network(tiny):
    x = _input()
    with torch.no_grad():
        depth, fov = tiny.depth_and_fov(x)
        expected_depth, expected_fov = _reference(tiny, x)
        inverse, fov_out = tiny(x)
    assert depth.shape == (2, 70, 98)
    assert depth.std() > 1e-3 * depth.mean(), "a constant depth would prove nothing"
    assert torch.allclose(depth, expected_depth, rtol=1e-4)
    assert torch.allclose(fov, expected_fov, rtol=1e-4) and (fov > 20).all() and (fov < 120).all()
    assert torch.allclose(inverse, 1.0 / expected_depth, rtol=1e-4)
    assert torch.equal(fov_out, fov)


def test_the_camera_token_and_rope_take_part(tiny):
    x = _input()
    with torch.no_grad():
        depth, fov = tiny.depth_and_fov(x)
        camera = tiny.model.backbone.pretrained.camera_token
        saved = camera.clone()
        camera.add_(1.0)
        moved_depth, moved_fov = tiny.depth_and_fov(x)
        camera.copy_(saved)
        # The same image shifted by one patch row: RoPE's grid positions see the content move.
        shifted_depth, _ = tiny.depth_and_fov(torch.roll(x, 14, dims=-2))
    # The camera token reaches the depth through attention (weakly in a random network) and sets the camera.
    assert not torch.allclose(fov, moved_fov) and not torch.equal(depth, moved_depth)
    assert not torch.allclose(torch.roll(depth, 14, dims=-2), shifted_depth)


def test_loaded_through_the_registry_with_the_field_of_view_on_the_depth(tiny, tmp_path):
    path = tmp_path / "DA3-SMALL.safetensors"
    released = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    # The multi-view parts of a released file (any shapes: they are dropped unread).
    released |= {key: torch.zeros(1) for key in _official_shapes("DA3-SMALL") if da3.UNUSED_FOR_ONE_VIEW.match(key)}
    safetensors.torch.save_file(released, str(path))
    estimator = registry.build_estimator(path)
    assert estimator.output_kind is DepthKind.RELATIVE_INVERSE
    image = torch.rand(1, 56, 84, 3, generator=torch.Generator().manual_seed(4))
    depth = estimator.predict(image)
    x = estimator.prepare(image.permute(0, 3, 1, 2), estimator.input_size(56, 84))
    with torch.no_grad():
        _, fov = tiny.depth_and_fov(x)
    assert depth.fov_degrees == pytest.approx(fov.tolist(), rel=1e-5)
    assert estimator.predict(image, fov_degrees=70.0).fov_degrees == (70.0,)  # the user's camera wins
    with pytest.raises(ValueError, match="any-view"):
        registry.build_estimator(path, variant="metric outdoor")

    missing = tmp_path / "broken" / "DA3-SMALL.safetensors"
    missing.parent.mkdir()
    safetensors.torch.save_file({k: v for k, v in released.items() if "fc_t." not in k}, str(missing))
    with pytest.raises(CorruptCheckpointError, match="download it again"):
        registry.build_estimator(missing)
