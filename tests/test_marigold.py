"""Marigold through diffusers' MarigoldDepthPipeline: a tiny random pipeline in the official folder layout, loaded
from disk and run end to end (depth_core, and LoadDepthModel + Marigold Settings + Depth Estimate in ComfyUI)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from depth_core.depth import DepthKind
from depth_core.loading import CorruptCheckpointError, ModelFileMissingError
from depth_core.model_files import ModelFiles, ModelFolders
from depth_core.models import marigold
from depth_core.registry import build_estimator

from marigold_tiny import build_tiny_marigold

OFFICIAL_NAME = "marigold-depth-v1-1"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return build_tiny_marigold(tmp_path_factory.mktemp("models") / OFFICIAL_NAME)


@pytest.fixture(scope="module")
def tiny(tiny_folder) -> marigold.MarigoldEstimator:
    return build_estimator(tiny_folder)


def _images(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 20, 28, 3, generator=torch.Generator().manual_seed(seed))


def test_official_folder_layout_loads_from_safetensors_only(tiny_folder, tiny):
    assert json.loads((tiny_folder / "model_index.json").read_text())["_class_name"] == "MarigoldDepthPipeline"
    assert marigold.missing_components(tiny_folder) == []
    assert not list(tiny_folder.rglob("*.bin"))
    assert isinstance(tiny, marigold.MarigoldEstimator) and tiny.name == OFFICIAL_NAME
    assert set(tiny.network) == {"unet", "vae", "text_encoder"}


def test_affine_depth_becomes_relative_inverse_depth(tiny):
    """The pipeline's 0..1 depth (0 = near) turns into inverse depth: near = large, same order."""
    image = _images()
    settings = marigold.MarigoldSettings(seed=3)
    depth = tiny.predict(image, settings=settings)
    raw = tiny.pipeline(image.permute(0, 3, 1, 2), generator=torch.Generator().manual_seed(3),
                        output_type="pt").prediction[:, 0]
    assert depth.kind is DepthKind.RELATIVE_INVERSE and depth.values.shape == (1, 20, 28)
    expected = 1.0 / (raw - raw.min() + marigold.NEAR_OFFSET)
    torch.testing.assert_close(depth.values, expected)
    nearest = raw.flatten().argmin()
    assert depth.values.flatten()[nearest] == depth.values.max()


def test_seed_reproduces_and_settings_count_steps(tiny):
    image = _images(2)
    calls = []
    settings = marigold.MarigoldSettings(denoising_steps=3, ensemble_size=2, processing_resolution=16, seed=7)
    first = tiny.predict(image, settings=settings, progress=lambda done, total: calls.append((done, total)))
    again = tiny.predict(image, settings=settings)
    other = tiny.predict(image, settings=marigold.MarigoldSettings(3, 2, 16, seed=8))
    assert torch.equal(first.values, again.values)
    assert not torch.allclose(first.values, other.values)
    # steps x ensemble x images UNet evaluations, each reported before it runs, then the end.
    assert calls == [(i, 12) for i in range(12)] + [(12, 12)]


def test_interrupt_stops_between_steps(tiny):
    evaluations = []
    hook = tiny.pipeline.unet.register_forward_hook(lambda *_: evaluations.append(1))

    def cancel_at_third_step(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt("cancelled")

    try:
        with pytest.raises(KeyboardInterrupt):
            tiny.predict(_images(), settings=marigold.MarigoldSettings(denoising_steps=10),
                         progress=cancel_at_third_step)
    finally:
        hook.remove()
    assert len(evaluations) == 2
    assert tiny.predict(_images()).values.isfinite().all()  # the pipeline is usable afterwards


def test_disparity_models_are_kept_as_they_are(tmp_path):
    folder = build_tiny_marigold(tmp_path / "marigold-disparity", prediction_type="disparity", scheduler="lcm")
    estimator = build_estimator(folder)
    image = _images()
    depth = estimator.predict(image)
    raw = estimator.pipeline(image.permute(0, 3, 1, 2), generator=torch.Generator().manual_seed(0),
                             output_type="pt").prediction[:, 0]
    torch.testing.assert_close(depth.values, raw)


def test_folder_missing_a_component_says_what_to_do(tiny_folder, tmp_path):
    broken = tmp_path / OFFICIAL_NAME
    shutil.copytree(tiny_folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CorruptCheckpointError, match=r"lacks vae/.*download the whole repository again"):
        build_estimator(broken)


def test_known_folders_are_listed_and_unknown_ones_found(tiny_folder, tmp_path):
    depth_folder = tmp_path / "depth"
    shutil.copytree(tiny_folder, depth_folder / "my-marigold-finetune")
    files = ModelFiles(ModelFolders.of([depth_folder]), allow_download=False)
    choices = files.depth_choices()
    assert {"marigold-depth-v1-0", "marigold-depth-v1-1", "marigold-depth-lcm-v1-0"} <= set(choices)
    assert "my-marigold-finetune" in choices
    assert not [name for name in choices if name.startswith("my-marigold-finetune/")]  # no parts listed
    assert files.depth_network("my-marigold-finetune") == depth_folder / "my-marigold-finetune"


def test_offline_error_names_folder_and_address(tmp_path):
    files = ModelFiles(ModelFolders.of([tmp_path / "depth"]), allow_download=False)
    with pytest.raises(ModelFileMissingError, match=r"marigold-depth-lcm-v1-0 was not found in .*depth.*"
                                                    r"https://huggingface.co/prs-eth/marigold-depth-lcm-v1-0"):
        files.depth_network("marigold-depth-lcm-v1-0")


def test_download_fetches_each_missing_file_with_progress(tmp_path, monkeypatch):
    fetched, reports = [], []

    def fake_download(url, destination, expected_sha256=None, progress=None, timeout=30.0):
        fetched.append(url)
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_text("{}")
        progress(1, 1)
        return Path(destination)

    monkeypatch.setattr(marigold, "download", fake_download)
    known = marigold.known_folders()["marigold-depth-v1-0"]
    (tmp_path / known.folder / "unet").mkdir(parents=True)
    (tmp_path / known.folder / "unet" / "config.json").write_text("{}")  # already there: not fetched again
    folder = marigold.ensure_folder(known, [tmp_path], tmp_path, progress=lambda d, t: reports.append((d, t)))
    assert folder == tmp_path / known.folder
    assert len(fetched) == len(known.files) - 1
    assert all(url.startswith("https://huggingface.co/prs-eth/marigold-depth-v1-0/resolve/main/") for url in fetched)
    assert reports[-1] == (1, 1) and max(d / t for d, t in reports) == 1

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(marigold, "download", offline)
    with pytest.raises(ModelFileMissingError, match="could not be downloaded.*prs-eth/marigold-depth-lcm-v1-0"):
        marigold.ensure_folder(marigold.known_folders()["marigold-depth-lcm-v1-0"], [tmp_path], tmp_path)


def test_pack_import_does_not_import_diffusers():
    code = ("import sys, depth_core.registry, depth_core.model_files, depth_core.models.marigold, depth_core.tiling; "
            "print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "False"


def test_marigold_end_to_end_through_the_nodes(pack, tiny_folder, tmp_path, monkeypatch):
    import folder_paths

    depth_folder = tmp_path / "depth"
    shutil.copytree(tiny_folder, depth_folder / OFFICIAL_NAME)
    extensions = {".pth", ".pt", ".safetensors", ".ckpt", ".bin"}
    for name in ("depth", "depthanything"):
        (tmp_path / name).mkdir(exist_ok=True)
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(tmp_path / name)], extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    nodes = pack.nodes.depth_estimate
    listed = nodes.model_choices()
    new_models = {OFFICIAL_NAME, "marigold-depth-v1-0", "marigold-depth-lcm-v1-0",
                  *(f"depth_anything_vit{size}14.pth" for size in "sbl"),
                  *(f"depth_anything_v2_metric_{data}_vit{size}.pth"
                    for data in ("hypersim", "vkitti") for size in "sbl")}
    assert new_models <= set(listed)
    assert not [name for name in listed if name.startswith(OFFICIAL_NAME + "/")]
    model = nodes.LoadDepthModel.execute(model=OFFICIAL_NAME, device="cpu", precision="auto").result[0]
    settings = pack.nodes.marigold.MarigoldSettingsNode.execute(
        denoising_steps=2, ensemble_size=2, processing_resolution=24, seed=5).result[0]
    images = _images(2, seed=4)
    depth, picture = nodes.DepthEstimate.execute(images=images, depth_model=model, resolution="native",
                                                 custom_resolution=518, normalize="per image",
                                                 marigold_settings=settings).result
    assert depth.kind is pack.depth_core.depth.DepthKind.RELATIVE_INVERSE
    assert depth.values.shape == (2, 20, 28)
    assert picture.shape == (2, 20, 28, 3) and picture.max() == 1
    direct = model.estimator.predict(images, settings=pack.depth_core.models.marigold.MarigoldSettings(2, 2, 24, 5))
    torch.testing.assert_close(depth.values, direct.values)

    import comfy.model_management

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            nodes.DepthEstimate.execute(images=images, depth_model=model, resolution="native",
                                        custom_resolution=518, normalize="per image", marigold_settings=settings)
    finally:
        comfy.model_management.interrupt_current_processing(False)


def test_command_line_runs_a_marigold_folder_tileable(tiny_folder, tmp_path, capsys):
    from PIL import Image

    from depth_core.cli import main

    photo = tmp_path / "texture.png"
    Image.fromarray((_images(1)[0].numpy() * 255).astype("uint8")).save(photo)
    out = tmp_path / "out"
    assert main([str(photo), "--model", str(tiny_folder), "--steps", "2", "--seed", "3", "--tileable",
                 "--resolution", "24", "--out", str(out), "--outputs", "depth"]) == 0
    assert (out / "texture_depth.png").is_file()
    with pytest.raises(SystemExit, match="Unknown model variant 'metric'"):
        main([str(photo), "--model", str(tiny_folder), "--variant", "metric", "--out", str(out)])
    with pytest.raises(SystemExit, match="applies to Depth Anything files only"):
        main([str(photo), "--model", str(tiny_folder), "--variant", "metric indoor", "--out", str(out)])
