"""LeReS and ZoeDepth: the networks written here have exactly the released checkpoints' parameter names and shapes
(dumped from the authors' code into tests/data/keys), load release-shaped files strictly, and run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from depth_core.depth import DepthKind
from depth_core.estimate import DepthEstimator
from depth_core import registry
from depth_core.models import leres, zoedepth

KEYS = Path(__file__).parent / "data" / "keys"


def meta_shapes(module_builder) -> dict[str, list[int]]:
    with torch.device("meta"):
        network = module_builder()
    return {key: list(value.shape) for key, value in network.state_dict().items()}


def meta_state(expected: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in expected.items()}


def test_leres_matches_the_released_key_layout():
    expected = json.loads((KEYS / "res101.json").read_text())
    assert meta_shapes(leres.build) == expected
    assert leres.config_from_state_dict(meta_state(expected)) == leres.LeReSConfig()


@pytest.mark.parametrize("stem, config", [("ZoeD_M12_N", zoedepth.ZOE_N), ("ZoeD_M12_K", zoedepth.ZOE_K),
                                          ("ZoeD_M12_NK", zoedepth.ZOE_NK)])
def test_zoedepth_matches_the_released_key_layout(stem, config):
    expected = json.loads((KEYS / f"{stem}.json").read_text())
    assert meta_shapes(lambda: zoedepth.build(config)) == expected
    assert zoedepth.config_from_state_dict(meta_state(expected)) == config


def test_families_recognise_only_their_own_checkpoints():
    shapes = {stem: meta_state(json.loads((KEYS / f"{stem}.json").read_text()))
              for stem in ("res101", "ZoeD_M12_N", "dpt_beit_large_384")}
    assert zoedepth.config_from_state_dict(shapes["res101"]) is None
    assert zoedepth.config_from_state_dict(shapes["dpt_beit_large_384"]) is None
    assert leres.config_from_state_dict(shapes["ZoeD_M12_N"]) is None
    assert leres.config_from_state_dict(shapes["dpt_beit_large_384"]) is None


def test_released_leres_file_loads_strictly_and_predicts_inverse_depth(tmp_path):
    torch.manual_seed(0)
    network = leres.build()
    # As released: the weights under "depth_model", saved from DataParallel (every key prefixed "module."), next to
    # non-weight entries.
    release = {"depth_model": {f"module.{k}": v for k, v in network.state_dict().items()}, "epoch": 40}
    path = tmp_path / "res101.pth"
    torch.save(release, path)

    estimator = registry.build_estimator(path)
    assert estimator.card.family == "leres" and estimator.card.receptive_field == 448
    assert estimator.output_kind is DepthKind.RELATIVE_INVERSE
    for key, value in estimator.network.state_dict().items():
        assert torch.equal(value, network.state_dict()[key])

    image = torch.rand(1, 3, 50, 70)
    raw = estimator.infer(image, 64)
    assert raw.shape == (1, 50, 70) and torch.isfinite(raw).all() and (raw > 0).all()
    # Larger = nearer: the inverse of the network's own depth output.
    with torch.inference_mode():
        prepared = estimator.prepare(image, (64, 64))
        depth = estimator.network.predict_depth(prepared)
        inverse = estimator.network(prepared)
    assert torch.allclose(inverse, 1.0 / (depth - depth.amin() + leres.DEPTH_SHIFT))


@pytest.fixture(scope="module")
def zoe_n() -> zoedepth.ZoeDepth:
    torch.manual_seed(0)
    network = zoedepth.build(zoedepth.ZOE_N).eval()
    with torch.no_grad():  # heads with some spread, so the bins are not degenerate
        for name, parameter in network.named_parameters():
            if not name.startswith("core."):
                parameter.normal_(0, 0.1)
    return network


def test_zoedepth_predicts_metres_with_padding_and_flip_averaging(zoe_n):
    card = zoedepth.KNOWN_MODELS[0].card
    assert card.output_kind is DepthKind.METRIC and card.receptive_field == 384
    estimator = DepthEstimator(card, zoe_n)
    image = torch.rand(1, 3, 48, 80)
    metres = estimator.infer(image, 64)
    assert metres.shape == (1, 48, 80) and torch.isfinite(metres).all() and (metres > 0).all()

    x = estimator.prepare(image, (64, 96))
    with torch.inference_mode():
        single = zoe_n.metric_depth(x)
        averaged = zoe_n(x)
        mirrored = zoe_n(x.flip(-1))
    # The flip average makes the prediction of a mirrored image the mirror of the prediction.
    assert torch.allclose(mirrored, averaged.flip(-1), atol=1e-4)
    assert single.shape == averaged.shape == (1, 64, 96)
    # Softplus bins: metres are a probability-weighted mean of positive bin centres.
    assert (single > 0).all()


def test_zoedepth_nk_routes_each_image_to_one_head(monkeypatch):
    # The heads only: the BEiT core is left unbuilt (meta) and replaced by random decoder features of its shapes.
    with torch.device("meta"):
        network = zoedepth.build(zoedepth.ZOE_NK)
    network = network.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        for head in network.conditional_log_binomial.values():
            transform = head.log_binomial_transform
            transform.k_idx.copy_(torch.arange(transform.k_idx.numel()).view(1, -1, 1, 1))
            transform.K_minus_1.fill_(transform.k_idx.numel() - 1)

    def fake_core(x):
        b, _, h, w = x.shape
        features = {"l4_rn": torch.randn(b, 256, h // 32, w // 32, generator=generator),
                    "out_conv": torch.randn(b, 32, h, w, generator=generator).relu()}
        for level, stride in zip(("r4", "r3", "r2", "r1"), (16, 8, 4, 2)):
            features[level] = torch.randn(b, 256, h // stride, w // stride, generator=generator)
        return torch.rand(b, h, w, generator=generator), features

    monkeypatch.setattr(network.core.core, "forward_with_intermediates", fake_core)
    calls = []
    original = network._head

    def spy(head, *args):
        calls.append(head.name)
        return original(head, *args)

    monkeypatch.setattr(network, "_head", spy)
    with torch.inference_mode():
        depth = network.metric_depth(torch.randn(2, 3, 64, 64))
    assert calls == ["nyu", "kitti"] and depth.shape == (2, 64, 64) and torch.isfinite(depth).all()
    assert (depth > 0).all()
