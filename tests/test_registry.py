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


@pytest.mark.parametrize(("filename", "variant", "max_depth"), [
    ("depth_anything_v2_metric_hypersim_vits.pth", "auto", 20.0),
    ("depth_anything_v2_metric_vkitti_vits.pth", "auto", 80.0),
    ("renamed_outdoor_model.pth", "metric outdoor", 80.0),
])
def test_metric_depth_anything_gives_metres(tmp_path, small_weights, filename, variant, max_depth):
    path = tmp_path / filename
    torch.save(small_weights, path)
    estimator = build_estimator(path, variant=variant)
    assert estimator.output_kind is DepthKind.METRIC and estimator.network.config.max_depth == max_depth
    depth = estimator.predict(torch.rand(1, 40, 52, 3), resolution=(42, 56))
    assert depth.kind is DepthKind.METRIC and depth.values.shape == (1, 40, 52)
    assert (depth.values > 0).all() and (depth.values < max_depth).all()


def test_metric_file_renamed_without_its_dataset_asks_for_the_variant(tmp_path, small_weights):
    path = tmp_path / "depth_anything_v2_metric_vits.pth"
    torch.save(small_weights, path)
    with pytest.raises(ValueError, match="Choose variant 'metric indoor' or 'metric outdoor' in Load Depth Model"):
        build_estimator(path)
    assert build_estimator(path, variant="metric indoor").network.config.max_depth == 20.0


def test_depth_anything_v1_by_name_or_override(tmp_path, small_weights):
    torch.save(small_weights, tmp_path / "depth_anything_vits14.pth")
    torch.save(small_weights, tmp_path / "renamed.pth")
    by_name = build_estimator(tmp_path / "depth_anything_vits14.pth")
    assert by_name.network.layers == (8, 9, 10, 11) and by_name.output_kind is DepthKind.RELATIVE_INVERSE
    assert not by_name.card.preprocess.upsample_align_corners  # v1's run.py upsamples without aligned corners
    assert build_estimator(tmp_path / "renamed.pth", variant="v1 relative").network.layers == (8, 9, 10, 11)
    assert build_estimator(tmp_path / "renamed.pth").network.layers == (2, 5, 8, 11)


def test_unknown_or_misapplied_variant_is_refused(tmp_path, small_weights):
    torch.save(small_weights, tmp_path / "depth_anything_v2_vits.pth")
    with pytest.raises(ValueError, match="Unknown model variant 'metric'; choose one of auto, relative"):
        build_estimator(tmp_path / "depth_anything_v2_vits.pth", variant="metric")
    from depth_core.models import midas_v21
    torch.save(midas_v21.build(midas_v21.SMALL).state_dict(), tmp_path / "midas.pt")
    with pytest.raises(ValueError, match="applies to Depth Anything files only.*Choose variant 'auto'"):
        build_estimator(tmp_path / "midas.pt", variant="metric indoor")


def test_skipping_random_init_gives_the_same_network(tmp_path, small_weights):
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(small_weights, path)
    fast = build_estimator(path)
    slow = depth_anything_v2.build(depth_anything_v2.SMALL)
    slow.load_state_dict(small_weights, strict=True)
    image = torch.rand(1, 3, 42, 56)
    assert torch.allclose(fast.infer(image, (42, 56)), DepthEstimator(fast.card, slow).infer(image, (42, 56)))
