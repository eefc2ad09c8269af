"""Building estimators from checkpoint files: recognised by their weights, loaded strictly, run end to end."""
from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

from depth_core.depth import DepthKind
from depth_core.estimate import DepthEstimator
from depth_core.loading import CorruptCheckpointError
from depth_core.models import depth_anything_v2
from depth_core.registry import DEPTH_FAMILIES, build_estimator, family_modules, identify, known_models


@pytest.fixture(scope="module")
def small_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return depth_anything_v2.build(depth_anything_v2.SMALL).state_dict()


def test_every_family_module_is_present_and_declares_its_models():
    assert [m.__name__.rsplit(".", 1)[-1] for m in family_modules()] == list(DEPTH_FAMILIES)
    for name in DEPTH_FAMILIES:
        module = importlib.import_module(f"depth_core.models.{name}")
        assert module.KNOWN_MODELS and callable(module.build) and callable(module.config_from_state_dict)
    names = known_models()
    assert "depth_anything_v2_vits.pth" in names and "dpt_hybrid-midas-501f0c75.pt" in names


def test_official_pth_loads_strictly_and_predicts(tmp_path, small_weights):
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(small_weights, path)
    estimator = build_estimator(path)
    loaded = estimator.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in small_weights.items())
    depth = estimator.predict(torch.rand(2, 48, 64, 3), resolution=(70, 98))
    assert depth.values.shape == (2, 48, 64) and depth.kind is DepthKind.RELATIVE_INVERSE
    assert torch.isfinite(depth.values).all()
    assert depth.source == "depth_anything_v2_vits"


def test_renamed_fp16_safetensors_is_recognised(tmp_path, small_weights):
    path = tmp_path / "my_renamed_small_fp16.safetensors"
    save_file({k: v.half() for k, v in small_weights.items()}, path)
    estimator = build_estimator(path, dtype=torch.float32)
    assert estimator.card.family == "depth_anything_v2" and estimator.name == "my_renamed_small_fp16"
    assert estimator.card.preprocess.multiple_of == 14
    assert torch.isfinite(estimator.infer(torch.rand(1, 3, 28, 28), net_size=(28, 28))).all()


def test_foreign_weights_are_refused_with_the_supported_list(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "not_depth.pth")
    with pytest.raises(CorruptCheckpointError, match="depth_anything_v2_vits.pth"):
        build_estimator(tmp_path / "not_depth.pth")
    assert identify({"conv.weight": torch.zeros(3, 3, 3, 3)}) is None


@pytest.mark.parametrize("damage", ["missing head tensor", "wrong shape"])
def test_damaged_weights_say_to_download_again(tmp_path, small_weights, damage):
    damaged = dict(small_weights)
    head_key = [k for k in damaged if k.startswith("depth_head.") and k.endswith("weight")][len(damaged) % 7]
    if damage == "missing head tensor":
        damaged.pop(head_key)
    else:
        damaged[head_key] = torch.zeros(1)
    torch.save(damaged, tmp_path / "depth_anything_v2_vits.pth")
    with pytest.raises(CorruptCheckpointError, match="download it again"):
        build_estimator(tmp_path / "depth_anything_v2_vits.pth")


def test_metric_depth_anything_files_are_not_misread_as_relative(tmp_path, small_weights):
    path = tmp_path / "depth_anything_v2_metric_hypersim_vits.pth"
    torch.save(small_weights, path)
    with pytest.raises(CorruptCheckpointError, match="ZoeDepth"):
        build_estimator(path)


def test_skipping_random_init_gives_the_same_network(tmp_path, small_weights):
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(small_weights, path)
    fast = build_estimator(path)
    slow = depth_anything_v2.build(depth_anything_v2.SMALL)
    slow.load_state_dict(small_weights, strict=True)
    image = torch.rand(1, 3, 42, 56)
    assert torch.allclose(fast.infer(image, (42, 56)), DepthEstimator(fast.card, slow).infer(image, (42, 56)))
