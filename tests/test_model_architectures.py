"""The depth networks load the official checkpoints' state dicts unchanged and compute sensible outputs.

tests/data/keys/<checkpoint stem>.json lists {key: shape} of every official model, dumped from the authors' own
code (Depth-Anything-V2 @ GitHub HEAD; isl-org/MiDaS @ HEAD with timm 0.6.13, torchvision's ResNeXt-101 32x8d
for the WSL hub model and geffnet for gen-efficientnet-pytorch). Full-size networks are built on the meta device
(no memory); real forward passes use the small networks only.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from depth_core.models import depth_anything_v2, midas_dpt, midas_v21

KEYS_DIR = Path(__file__).parent / "data" / "keys"
FAMILIES = (depth_anything_v2, midas_dpt, midas_v21)
KNOWN = [(family, known) for family in FAMILIES for known in family.KNOWN_MODELS]


def _stem(filename: str) -> str:
    return filename.rsplit(".", 1)[0]


def _official_shapes(filename: str) -> dict[str, list[int]]:
    return json.loads((KEYS_DIR / f"{_stem(filename)}.json").read_text())


def _meta_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def _unset_network(family, config) -> torch.nn.Module:
    """Built without running timm's (slow) weight init: every tensor is to be loaded."""
    with torch.device("meta"):
        network = family.build(config)
    return network.to_empty(device="cpu").eval()


_LAST_LAYERS = ("scratch.output_conv.4.", "scratch.output_conv2.2.")


def _random_network(family, config, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The network with random weights in the official layout, without paying for timm's weight init.

    Weights ~ N(0, 1/fan_in), norms ~ 1, and a non-negative last layer so the final ReLU does not zero the output.
    """
    network = _unset_network(family, config)
    persistent = set(network.state_dict())
    assert {name for name, _ in network.named_buffers()} <= persistent, "uninitialised non-persistent buffers"
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, value in network.state_dict().items():
        if not value.is_floating_point():
            state_dict[key] = torch.zeros_like(value)
            continue
        noise = torch.randn(value.shape, generator=generator)
        if value.ndim >= 2:
            value = noise / max(1, value[0].numel()) ** 0.5
        elif key.endswith("running_var"):
            value = 1 + 0.1 * noise.abs()
        elif key.endswith("bias") or key.endswith("running_mean"):
            value = 0.02 * noise
        else:  # norm scales and layer-scale gammas
            value = 1 + 0.1 * noise
        if key.startswith(_LAST_LAYERS):
            value = value.abs() if key.endswith("weight") else torch.full_like(value, 0.01)
        state_dict[key] = value
    network.load_state_dict(state_dict, strict=True)
    return network, state_dict


@pytest.mark.parametrize(("family", "known"), KNOWN, ids=[k.filename for _, k in KNOWN])
def test_state_dict_matches_official_layout(family, known):
    with torch.device("meta"):
        network = family.build(known.config)
    ours = {key: list(value.shape) for key, value in network.state_dict().items()}
    official = _official_shapes(known.filename)
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


@pytest.mark.parametrize(("family", "known"), KNOWN, ids=[k.filename for _, k in KNOWN])
def test_config_recognised_from_official_keys_only_by_its_family(family, known):
    state_dict = _meta_state_dict(_official_shapes(known.filename))
    config = family.config_from_state_dict(state_dict)
    if hasattr(family, "config_for_variant"):  # what only the official file name can tell
        config = family.config_for_variant(config, "auto", known.filename)
    assert config == known.config
    for other in FAMILIES:
        if other is not family:
            assert other.config_from_state_dict(state_dict) is None, other.__name__


def test_every_known_model_has_an_official_layout_dump():
    dumped = {path.stem for path in KEYS_DIR.glob("*.json")}
    assert {_stem(known.filename) for _, known in KNOWN} <= dumped


def test_foreign_state_dicts_are_rejected():
    import torchvision

    with torch.device("meta"):
        resnet = torchvision.models.resnet50().state_dict()
    truncated = _meta_state_dict(_official_shapes("depth_anything_v2_vits.pth"))
    del truncated["depth_head.projects.2.weight"]
    for state_dict in (resnet, {}, {"weight": torch.zeros(3)}, truncated):
        for family in FAMILIES:
            assert family.config_from_state_dict(state_dict) is None


def test_cards_follow_the_authors_preprocessing():
    cards = {known.filename: known.card for _, known in KNOWN}
    for letter in "sbl":
        card = cards[f"depth_anything_v2_vit{letter}.pth"]
        pre = card.preprocess
        assert (pre.net_size, pre.multiple_of, pre.resize_rule) == (518, 14, "lower_bound")
        assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
        assert card.receptive_field == 518
    for filename, size in [("dpt_beit_large_512.pt", 512), ("dpt_beit_large_384.pt", 384),
                           ("dpt_large-midas-2f21e586.pt", 384), ("dpt_hybrid-midas-501f0c75.pt", 384)]:
        pre = cards[filename].preprocess
        assert (pre.net_size, pre.multiple_of, pre.resize_rule, pre.mean, pre.std) == (
            size, 32, "minimal", (0.5,) * 3, (0.5,) * 3)
        assert cards[filename].receptive_field == size
    for filename, size in [("midas_v21-f6b98070.pt", 384), ("midas_v21_small-70d6b9c8.pt", 256)]:
        pre = cards[filename].preprocess
        assert (pre.net_size, pre.multiple_of, pre.resize_rule) == (size, 32, "upper_bound")
        assert pre.mean == (0.485, 0.456, 0.406)
        assert cards[filename].receptive_field == size
    for _, known in KNOWN:
        metric = "_metric_" in known.filename
        assert known.card.output_kind.value == ("metric" if metric else "relative_inverse")
        assert all(url.startswith("https://") and url.rstrip("/").split("/")[-1].split("?")[0] for url in known.urls)
        assert known.sha256 is None or len(known.sha256) == 64


def _input(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _check_forward(network: torch.nn.Module, x: torch.Tensor, expected: tuple[int, int, int]) -> torch.Tensor:
    with torch.no_grad():
        out = network(x)
        changed = network(x.flip(-1) * 0.5)
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    assert out.std() > 0
    assert (out - changed).abs().max() > 1e-3 * out.abs().max()
    return out


@pytest.fixture(scope="module")
def da_small():
    return _random_network(depth_anything_v2, depth_anything_v2.SMALL)


@pytest.mark.parametrize("fmt", ["pth", "fp16.safetensors"])
def test_depth_anything_small_roundtrip_and_forward(da_small, tmp_path, fmt):
    reference, state_dict = da_small
    path = tmp_path / f"renamed_model.{fmt}"
    if fmt == "pth":
        torch.save(state_dict, path)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    else:
        to_save = {k: (v.half() if fmt.startswith("fp16") and v.is_floating_point() else v).contiguous()
                   for k, v in state_dict.items()}
        safetensors.torch.save_file(to_save, str(path))
        loaded = safetensors.torch.load_file(str(path))
    config = depth_anything_v2.config_from_state_dict(loaded)
    assert config == depth_anything_v2.SMALL
    network = _unset_network(depth_anything_v2, config)
    network.load_state_dict(loaded, strict=True)
    x = _input(2, 3, 70, 98)
    out = _check_forward(network, x, (2, 70, 98))
    with torch.no_grad():
        expected = reference(x)
    tolerance = 2e-2 if fmt.startswith("fp16") else 1e-5
    assert (out - expected).abs().max() <= tolerance * expected.abs().max()


def test_depth_anything_tolerates_a_dropped_mask_token_but_nothing_else():
    state_dict = _meta_state_dict(_official_shapes("depth_anything_v2_vits.pth"))
    with torch.device("meta"):
        network = depth_anything_v2.build(depth_anything_v2.SMALL)
    without_mask = {k: v for k, v in state_dict.items() if k != "pretrained.mask_token"}
    network.load_state_dict(without_mask, strict=True, assign=True)
    without_norm = {k: v for k, v in state_dict.items() if k != "pretrained.norm.weight"}
    with pytest.raises(RuntimeError, match="pretrained.norm.weight"):
        network.load_state_dict(without_norm, strict=True, assign=True)


def _load_into(family, config, state_dict) -> torch.nn.Module:
    network = _unset_network(family, config)
    network.load_state_dict(state_dict, strict=True)
    return network


def test_depth_anything_v1_taps_the_last_four_blocks_and_v2_spreads_them(da_small):
    """v1 and V2 share every weight; v1 feeds the decoder DINOv2's last four blocks (get_intermediate_layers(x, 4)),
    V2 blocks 2, 5, 8, 11 (ViT-S). Checked against timm's own intermediate-layer API on the same ViT."""
    v2, state_dict = da_small
    v1 = _load_into(depth_anything_v2, depth_anything_v2.KNOWN_MODELS[-3].config, state_dict)
    assert v1.layers == (8, 9, 10, 11) and v2.layers == (2, 5, 8, 11)
    large = depth_anything_v2.config_for_variant(depth_anything_v2.LARGE, "v1 relative", "any.pth")
    assert depth_anything_v2._ENCODERS["vitl"].taps(large) == (20, 21, 22, 23)
    x = _input(1, 3, 56, 70)
    native = _input(1, 3, 518, 518)  # timm's API runs at the ViT's own size only
    with torch.no_grad():
        ours = depth_anything_v2.dinov2_intermediate(v1.pretrained, native, v1.layers)
        timm_taps = v1.pretrained.forward_intermediates(native, indices=[8, 9, 10, 11], norm=True,
                                                        output_fmt="NLC", intermediates_only=True,
                                                        return_prefix_tokens=True)
        for (patches, cls), (timm_patches, timm_prefix) in zip(ours, timm_taps):
            torch.testing.assert_close(patches, timm_patches, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(cls, timm_prefix[:, 0], atol=1e-5, rtol=1e-5)
        assert (v1(x) - v2(x)).abs().max() > 1e-3 * v2(x).abs().max()


def test_metric_depth_anything_is_a_sigmoid_head_scaled_to_metres(da_small):
    """Metric V2: the relative network's head with its last ReLU replaced by a sigmoid, times 20 m or 80 m."""
    relative, state_dict = da_small
    indoor = _load_into(depth_anything_v2, depth_anything_v2.KNOWN_MODELS[3].config, state_dict)
    outdoor = _load_into(depth_anything_v2, depth_anything_v2.KNOWN_MODELS[6].config, state_dict)
    x = _input(2, 3, 42, 56)
    features = {}
    hook = relative.depth_head.scratch.output_conv2[2].register_forward_hook(
        lambda module, inputs, output: features.setdefault("pre", output))
    with torch.no_grad():
        relative(x)
        metres_in, metres_out = indoor(x), outdoor(x)
    hook.remove()
    expected = torch.sigmoid(features["pre"]).squeeze(1)
    torch.testing.assert_close(metres_in, 20 * expected)
    torch.testing.assert_close(metres_out, 80 * expected)
    assert (metres_in > 0).all() and (metres_in < 20).all()


@pytest.mark.parametrize(("filename", "variant"), [
    ("depth_anything_v2_vits.pth", "relative"),
    ("depth_anything_v2_vitl_fp16.safetensors", "relative"),
    ("depth_anything_vitb14.pth", "v1 relative"),
    ("depth_anything_v2_metric_hypersim_vitl.pth", "metric indoor"),
    ("Depth_Anything_V2_Metric_VKITTI_vits_fp32.safetensors", "metric outdoor"),
    ("my_depth_model.pth", "relative"),
])
def test_depth_anything_variant_from_official_names(filename, variant):
    assert depth_anything_v2.variant_from_filename(filename) == variant


def test_depth_anything_variant_errors_say_what_to_do():
    with pytest.raises(depth_anything_v2.UnknownVariantError, match="metric indoor' or 'metric outdoor"):
        depth_anything_v2.variant_from_filename("depth_anything_v2_metric_vits_renamed.pth")
    with pytest.raises(ValueError, match="choose one of auto, relative"):
        depth_anything_v2.config_for_variant(depth_anything_v2.SMALL, "metric", "x.pth")
    override = depth_anything_v2.config_for_variant(depth_anything_v2.SMALL, "metric outdoor", "renamed.pth")
    assert override.max_depth == 80.0 and override.taps == "spread"


def test_dinov2_position_embedding_resampling():
    pos = torch.randn(1, 1 + 37 * 37, 8)
    assert depth_anything_v2.dinov2_pos_embed(pos, 37, 37) is pos
    resized = depth_anything_v2.dinov2_pos_embed(pos, 5, 7)
    assert resized.shape == (1, 1 + 35, 8)
    assert torch.equal(resized[:, 0], pos[:, 0])
    # A smooth (linear) embedding stays monotone along each axis after resampling.
    ramp = torch.arange(37.0).repeat(37, 1).T.reshape(1, 37 * 37, 1)
    grid = depth_anything_v2.dinov2_pos_embed(torch.cat((torch.zeros(1, 1, 1), ramp), 1), 9, 4)[0, 1:, 0]
    rows = grid.reshape(9, 4)[:, 0]
    assert (rows[1:] > rows[:-1]).all()


def test_midas_v21_small_safetensors_roundtrip_and_forward(tmp_path):
    _, state_dict = _random_network(midas_v21, midas_v21.SMALL)
    path = tmp_path / "any_name.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    loaded = safetensors.torch.load_file(str(path))
    config = midas_v21.config_from_state_dict(loaded)
    assert config == midas_v21.SMALL
    rebuilt = _unset_network(midas_v21, config)
    rebuilt.load_state_dict(loaded, strict=True)
    _check_forward(rebuilt, _input(2, 3, 64, 96), (2, 64, 96))


def test_midas_dpt_hybrid_forward_at_non_native_size():
    network, _ = _random_network(midas_dpt, midas_dpt.HYBRID_384)
    _check_forward(network, _input(1, 3, 32, 64), (1, 32, 64))


@pytest.fixture(scope="module")
def beit_l_384_meta():
    with torch.device("meta"):
        return midas_dpt.build(midas_dpt.BEIT_L_384).eval()


@pytest.mark.parametrize(
    ("config", "size"),
    [(midas_dpt.BEIT_L_512, (384, 512)), (midas_dpt.VIT_L_384, (320, 448)), (midas_v21.LARGE, (288, 352))],
)
def test_large_networks_trace_shapes_on_meta(config, size):
    family = midas_dpt if isinstance(config, midas_dpt.MidasDPTConfig) else midas_v21
    with torch.device("meta"):
        network = family.build(config).eval()
        out = network(torch.empty(2, 3, *size))
    assert tuple(out.shape) == (2, *size)


def test_beit_intermediates_for_metric_heads_on_meta(beit_l_384_meta):
    with torch.device("meta"):
        depth, named = beit_l_384_meta.forward_with_intermediates(torch.empty(1, 3, 384, 512))
    assert tuple(depth.shape) == (1, 384, 512)
    assert tuple(named["out_conv"].shape) == (1, 32, 384, 512)
    assert tuple(named["l4_rn"].shape) == (1, 256, 12, 16)
    assert [tuple(named[f"r{i}"].shape[-2:]) for i in (4, 3, 2, 1)] == [(24, 32), (48, 64), (96, 128), (192, 256)]


def test_beit_relative_position_index_matches_timm():
    import timm

    attn = timm.create_model("beit_base_patch16_224", pretrained=False, depth=1).blocks[0].attn
    assert torch.equal(midas_dpt.beit_relative_position_index(*attn.window_size), attn.relative_position_index)


def test_beit_bias_resizing_keeps_native_table_and_shape():
    table = torch.randn((2 * 4 - 1) ** 2 + 3, 2)
    native_index = midas_dpt.beit_relative_position_index(4, 4)
    native = midas_dpt.beit_relative_position_bias(table, (4, 4), (4, 4), native_index)
    assert native.shape == (1, 2, 17, 17)
    assert torch.equal(native[0, :, 0, 0], table[-1])  # class -> class entry
    index = midas_dpt.beit_relative_position_index(3, 5)
    resized = midas_dpt.beit_relative_position_bias(table, (4, 4), (3, 5), index)
    assert resized.shape == (1, 2, 16, 16)
    assert torch.equal(resized[0, :, 0, 0], table[-1])
    # Zero offset (a patch attending to itself) sits at the table's centre, before and after resizing.
    assert torch.allclose(resized[0, :, 1, 1], table[(2 * 4 - 1) * 3 + 3])


def test_midas_dpt_tolerates_dropped_beit_position_index_buffers(beit_l_384_meta):
    shapes = _official_shapes("dpt_beit_large_384.pt")
    state_dict = {k: torch.empty(v, device="meta") for k, v in shapes.items() if "relative_position_index" not in k}
    beit_l_384_meta.load_state_dict(state_dict, strict=True, assign=True)
    del state_dict["pretrained.model.blocks.3.attn.qkv.weight"]
    with pytest.raises(RuntimeError, match="blocks.3.attn.qkv.weight"):
        beit_l_384_meta.load_state_dict(state_dict, strict=True, assign=True)


def test_digests_agree_with_the_hash_prefix_in_torch_hub_style_file_names():
    import re

    prefixed = [known for _, known in KNOWN if re.search(r"-[0-9a-f]{8}\.pt$", known.filename)]
    assert len(prefixed) == 4
    for known in prefixed:
        prefix = known.filename[-11:-3]
        assert known.sha256 is not None and known.sha256.startswith(prefix), known.filename
