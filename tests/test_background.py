"""depth_core.background: model lookup and download policy, the ONNX runner, mask post-processing, mask_depth.

The real-network tests use the IS-Net file described in ../shared/models/README.md (or $DEPTH_TOOLKIT_TEST_ISNET);
each pass costs seconds on a CPU, so one module-scoped run over the four photos serves several tests.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from depth_core import background as bg
from depth_core import model_files as mf
from depth_core.depth import Depth, DepthKind

ROOT = Path(__file__).resolve().parents[1]
ISNET_PATH = Path(os.environ.get("DEPTH_TOOLKIT_TEST_ISNET",
                                 ROOT.parent / "shared" / "models" / "isnet-general-use-quint8.onnx"))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def patch_mean(mask: torch.Tensor, top: float, left: float, size: float = 0.06) -> float:
    """Mean of a square patch whose top-left corner is at fractions (top, left) of the mask."""
    h, w = mask.shape
    side = max(1, round(size * min(h, w)))
    y, x = round(top * (h - side)), round(left * (w - side))
    return float(mask[y:y + side, x:x + side].mean())


# --------------------------------------------------------------------------------------------------------------
# Real IS-Net


@pytest.fixture(scope="module")
def isnet():
    if not ISNET_PATH.is_file():
        pytest.skip(f"IS-Net test model not found at {ISNET_PATH}: set DEPTH_TOOLKIT_TEST_ISNET to "
                    "isnet-general-use-quint8.onnx (see shared/models/README.md).")
    return bg.load_network(ISNET_PATH)


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return {name: torch.from_numpy(getattr(data, name)()).float() / 255.0 for name in PHOTOS}


@pytest.fixture(scope="module")
def photo_run(isnet, photos):
    """One call over the four photos as a list of different sizes: 4 network passes."""
    calls = []
    result = bg.remove_background(isnet, [photos[name] for name in PHOTOS], bg.MaskSettings(threshold=0.5),
                                  background=None, progress=lambda done, total: calls.append((done, total)))
    return result, calls


def test_isnet_file_is_recognised_as_isnet(isnet):
    assert isnet.contract == bg.ISNET_CONTRACT
    assert isnet.input_size == (1024, 1024)
    assert isnet.max_batch == 1  # exported with batch 1: images go one at a time
    assert bg.load_network(ISNET_PATH) is isnet  # cached between runs


def test_subject_centre_is_foreground_and_top_corners_background(photo_run):
    result, _ = photo_run
    for name, mask in zip(PHOTOS, result.masks):
        assert patch_mean(mask, 0.5, 0.5, size=0.03) > 0.9, name
        assert patch_mean(mask, 0.0, 0.0) < 0.1, name
        assert patch_mean(mask, 0.0, 1.0) < 0.1, name


def test_mask_area_is_sane_and_binary(photo_run):
    result, _ = photo_run
    areas = {name: float(mask.mean()) for name, mask in zip(PHOTOS, result.masks)}
    for name, area in areas.items():
        assert 0.05 < area < 0.9, (name, area)
    # the rocket is a thin object in a wide scene, the cat fills most of its photo
    assert areas["rocket"] < areas["astronaut"] < areas["chelsea"]
    for mask in result.masks:
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}


def test_mixed_sizes_keep_their_sizes_and_report_progress(photo_run, photos):
    result, calls = photo_run
    for name, cutout, mask in zip(PHOTOS, result.cutouts, result.masks):
        h, w = photos[name].shape[:2]
        assert cutout.shape == (h, w, 4)
        assert mask.shape == (h, w)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(ValueError, match="different sizes"):
        result.stacked()


def test_cutout_equals_input_inside_the_mask(photo_run, photos):
    result, _ = photo_run
    for name, cutout, mask in zip(PHOTOS, result.cutouts, result.masks):
        assert torch.equal(cutout[..., :3], photos[name])
        assert torch.equal(cutout[..., 3], mask)
        on_green = bg.composite(photos[name], mask, (0.0, 1.0, 0.0))
        inside = mask == 1
        assert torch.equal(on_green[inside], photos[name][inside])
        assert torch.equal(on_green[~inside], torch.tensor([0.0, 1.0, 0.0]).expand(int((~inside).sum()), 3))


def test_no_subject_tiny_gray_and_rgba_images(isnet):
    black_gray = torch.zeros(1, 16, 16, 1)  # grayscale, no subject at all
    gray_rgba = torch.cat([torch.full((1, 1, 1, 3), 0.5), torch.zeros(1, 1, 1, 1)], -1)  # one RGBA pixel
    soft = bg.predict_foreground(isnet, [black_gray, gray_rgba])
    assert soft[0].shape == (16, 16) and soft[1].shape == (1, 1)
    # the probability is used as is: a min-max stretch (rembg.remove) would turn this black image into a subject
    assert float(soft[0].max()) < 0.2
    for mask in soft:
        assert torch.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1
    # (the rest of remove_background, reusing this pass: another IS-Net pass costs seconds)
    _, mask = bg.refine_mask(bg.to_rgb(black_gray)[0], soft[0], bg.MaskSettings(threshold=0.5))
    assert float(mask.sum()) == 0.0  # an empty mask is a valid answer
    assert torch.equal(bg.composite(bg.to_rgb(black_gray)[0], mask, (1.0, 1.0, 1.0)), torch.ones(16, 16, 3))


# --------------------------------------------------------------------------------------------------------------
# The runner with a stand-in network (fast): input handling, batching, output reading


class BrightnessNetwork:
    """Foreground probability = the pixel's brightness, at a 24x24 network size; records what it was fed."""

    def __init__(self, max_batch: int = 1, contract: bg.InputContract = bg.ISNET_CONTRACT):
        self.contract = contract
        self.input_size = (24, 24)
        self.max_batch = max_batch
        self.batches: list[np.ndarray] = []
        self.released: list[bool] = []

    def run(self, batch: np.ndarray, release_memory: bool = False) -> np.ndarray:
        self.batches.append(batch.copy())
        self.released.append(release_memory)
        mean = np.array(self.contract.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.array(self.contract.std, np.float32).reshape(1, 3, 1, 1)
        return (batch * std + mean).mean(1, keepdims=True)


def scene(seed: int, size=(40, 56)) -> torch.Tensor:
    """A bright square on a dark, slightly noisy background, [H,W,3]."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(*size, 3, generator=g) * 0.1
    h, w = size
    image[h // 4:3 * h // 4, w // 4:3 * w // 4] = 0.9
    return image


def test_rgba_and_gray_feed_the_network_the_same_pixels_as_rgb():
    rgb = scene(0)
    gray = rgb.mean(-1, keepdim=True).expand(-1, -1, 3).contiguous()
    network = BrightnessNetwork()
    bg.predict_foreground(network, [rgb, torch.cat([rgb, torch.rand(40, 56, 1)], -1), gray, gray[..., :1]])
    fed = network.batches
    assert np.array_equal(fed[0], fed[1])  # alpha is ignored
    assert np.array_equal(fed[2], fed[3])  # one channel is repeated
    assert fed[0].shape == (1, 3, 24, 24)
    # normalized per the IS-Net contract: (x - 0.5) / 1.0
    assert fed[0].min() >= -0.5 and fed[0].max() <= 0.5


def test_free_batch_dimension_is_used_in_chunks_with_the_same_result():
    images = torch.stack([scene(seed) for seed in range(7)])
    one_by_one, chunked = BrightnessNetwork(max_batch=1), BrightnessNetwork(max_batch=3)
    a = bg.predict_foreground(one_by_one, images)
    b = bg.predict_foreground(chunked, images)
    assert [len(batch) for batch in chunked.batches] == [3, 3, 1]
    assert chunked.released == [False, False, True]  # working memory is handed back after the last chunk
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-6)
    assert a[0].shape == (40, 56)


def test_output_reading_detects_logits():
    probabilities = torch.rand(2, 1, 8, 8)
    assert torch.equal(bg.output_to_probability(probabilities, None), probabilities[:, 0])
    logits = torch.randn(2, 1, 8, 8) * 5
    assert torch.allclose(bg.output_to_probability(logits, None), torch.sigmoid(logits[:, 0]))
    assert torch.allclose(bg.output_to_probability(logits, True), torch.sigmoid(logits[:, 0]))
    nan = torch.full((1, 4, 4), float("nan"))
    assert torch.equal(bg.output_to_probability(nan, False), torch.zeros(1, 4, 4))


def test_remove_background_on_a_colour_and_empty_batch():
    network = BrightnessNetwork()
    image = scene(1)
    result = bg.remove_background(network, image[None], bg.MaskSettings(threshold=0.5), background=(0.0, 0.0, 1.0))
    cutout, mask = result.stacked()
    assert cutout.shape == (1, 40, 56, 3)
    assert float(mask[0, 20, 28]) == 1.0 and float(mask[0, 0, 0]) == 0.0
    inside = mask[0] == 1
    assert torch.equal(cutout[0][inside], image[inside])
    assert torch.equal(cutout[0][~inside], torch.tensor([0.0, 0.0, 1.0]).expand(int((~inside).sum()), 3))
    with pytest.raises(ValueError, match="empty"):
        bg.remove_background(network, torch.zeros(0, 8, 8, 3))


def test_non_finite_pixels_give_a_finite_result():
    image = scene(2)
    image[5:9, 5:9] = float("nan")
    image[30, :] = float("inf")
    cutout, mask = bg.remove_background(BrightnessNetwork(), image[None], bg.MaskSettings(threshold=0.0)).stacked()
    assert torch.isfinite(cutout).all() and torch.isfinite(mask).all()
    assert float(mask[0, 20, 28]) > 0.8 and float(mask[0, 2, 2]) < 0.2


# --------------------------------------------------------------------------------------------------------------
# Mask post-processing


def test_threshold_zero_keeps_the_soft_mask():
    soft = torch.linspace(0, 1, 11).view(1, 1, 11)
    assert torch.equal(bg.threshold_mask(soft, 0.0), soft)
    assert bg.threshold_mask(soft, 0.5).tolist() == [[[0.0] * 5 + [1.0] * 6]]


def test_grow_makes_a_near_disk_and_shrink_undoes_it():
    dot = torch.zeros(1, 41, 41)
    dot[0, 20, 20] = 1
    grown = bg.grow_mask(dot, 10)
    area = float(grown.sum())
    assert abs(area - math.pi * 10.5 ** 2) / (math.pi * 10.5 ** 2) < 0.12  # octagon close to a disk
    assert float(grown[0, 20, 30]) == 1 and float(grown[0, 20, 31]) == 0  # radius exactly 10 along the axis
    assert float(grown[0, 27, 27]) == 1 and float(grown[0, 28, 28]) == 0  # and ~10 along the diagonal
    square = torch.zeros(1, 30, 30)
    square[0, 5:25, 5:25] = 1
    shrunk = bg.grow_mask(square, -3)
    assert float(shrunk.sum()) == 14 * 14
    full = torch.ones(1, 9, 9)
    assert torch.equal(bg.grow_mask(full, -2), full)  # the border is not treated as background


def test_feather_softens_an_edge_over_its_width():
    step = torch.zeros(1, 5, 60)
    step[..., 30:] = 1
    soft = bg.feather_mask(step, 6.0)[0, 2]
    assert torch.all(soft[1:] >= soft[:-1])  # monotone ramp
    assert 0.4 < float(soft[29:31].mean()) < 0.6
    assert float(soft[30 - 9]) < 0.05 and float(soft[30 + 8]) > 0.95  # transition within ~1.5 widths
    assert float(soft[30 - 3]) > 0.05  # but not a hard edge any more
    assert torch.equal(bg.feather_mask(step, 0), step)
    assert bg.feather_mask(torch.ones(1, 1, 1), 5.0).tolist() == [[[1.0]]]


def test_alpha_matting_recovers_the_true_edge_from_a_rough_mask():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = (((yy - 32) ** 2 + (xx - 32) ** 2) < 16 ** 2).float()
    image = torch.stack([0.9 * disk + 0.1, 0.2 + 0.0 * disk, 0.8 - 0.7 * disk], -1)
    rough = bg.grow_mask(disk[None], 3)[0]  # a mask that overshoots the subject by 3 px
    settings = bg.MaskSettings(threshold=0.5, alpha_matting=True, matting_erode=10)
    _, matted = bg.refine_mask(image, rough, settings)
    rough_error = float((rough - disk).abs().mean())
    matted_error = float((matted - disk).abs().mean())
    assert matted_error < rough_error / 2
    # an empty mask has no sure foreground: matting is skipped, the mask stays empty
    _, empty = bg.refine_mask(image, torch.zeros(64, 64), settings)
    assert float(empty.sum()) == 0


def test_mask_settings_and_colours_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        bg.MaskSettings(threshold=1.5)
    with pytest.raises(ValueError, match="feather"):
        bg.MaskSettings(feather=-1)
    assert bg.parse_colour("#00FF80") == (0.0, 1.0, 128 / 255)
    assert bg.parse_colour("fff") == (1.0, 1.0, 1.0)
    assert bg.parse_colour(" 255, 0, 51 ") == (1.0, 0.0, 0.2)
    for bad in ("green", "#12345", "300, 0, 0", "1, 2"):
        with pytest.raises(ValueError, match="#RRGGBB"):
            bg.parse_colour(bad)


# --------------------------------------------------------------------------------------------------------------
# Finding, downloading and opening model files


def background_files(folders, extra=(), allow_download=True) -> mf.ModelFiles:
    folders = mf.ModelFolders(depth=(), background=tuple(folders), background_extra=tuple(extra))
    return mf.ModelFiles(folders, allow_download=allow_download)


def test_known_models_match_the_installed_rembg():
    from rembg.sessions import sessions

    for name in bg.BACKGROUND_MODELS:
        assert name in sessions, name
    offered_birefnets = {name for name in sessions if name.startswith("birefnet")}
    assert offered_birefnets <= set(bg.BACKGROUND_MODELS)


def test_lookup_in_flat_and_rembg_layouts_and_custom_files(tmp_path):
    ours, theirs = tmp_path / "rembg", tmp_path / "home"
    (ours / "sub").mkdir(parents=True)
    (theirs / "models" / "u2netp").mkdir(parents=True)
    (ours / "isnet-general-use.onnx").write_bytes(b"x")
    (theirs / "models" / "u2netp" / "u2netp.onnx").write_bytes(b"x")
    (ours / "sub" / "my-net.onnx").write_bytes(b"x")
    (ours / "notes.txt").write_text("not a model")
    files = background_files([ours], extra=[theirs])
    assert files.locate_background_model("isnet-general-use") == ours / "isnet-general-use.onnx"
    assert files.locate_background_model("u2netp") == theirs / "models" / "u2netp" / "u2netp.onnx"
    assert files.locate_background_model("u2net") is None
    assert files.locate_background_model("sub/my-net.onnx") == (ours / "sub" / "my-net.onnx").resolve()
    # no climbing out of a folder
    assert background_files([theirs]).locate_background_model("../rembg/sub/my-net.onnx") is None
    choices = files.background_choices()
    assert choices[:len(bg.BACKGROUND_MODELS)] == list(bg.BACKGROUND_MODELS)
    assert choices[len(bg.BACKGROUND_MODELS):] == ["sub/my-net.onnx"]


def test_rembg_home_follows_its_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "r"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert mf.rembg_home_folders() == [tmp_path / "r", tmp_path / "x" / ".u2net"]
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u"))
    assert mf.rembg_home_folders() == [tmp_path / "u"]


def test_contract_from_file_name():
    assert bg.contract_for_file("isnet-general-use-quint8.onnx") == bg.ISNET_CONTRACT
    assert bg.contract_for_file("birefnet-general-lite-fp32.onnx") == bg.BIREFNET_CONTRACT
    assert bg.contract_for_file("u2netp_v2.onnx") == bg.U2NET_CONTRACT
    assert bg.contract_for_file("my-net.onnx") is None


def test_missing_model_offline_names_file_folder_and_address(tmp_path):
    with pytest.raises(ValueError) as error:
        background_files([tmp_path], allow_download=False).background_model("u2netp")
    message = str(error.value)
    assert "u2netp.onnx" in message and str(tmp_path) in message
    assert "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2netp.onnx" in message
    with pytest.raises(ValueError, match="not found"):
        background_files([tmp_path]).background_model("nothing-like-it.onnx")


def test_download_goes_into_our_folder_only(monkeypatch, tmp_path):
    import pooch

    fetched = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        fetched.append((url, known_hash, fname, path))
        Path(path, fname).write_bytes(b"onnx")
        return str(Path(path, fname))

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "users-own-home"))
    ours = tmp_path / "models" / "rembg"
    path = background_files([ours]).background_model("u2netp")
    assert path == ours / "u2netp.onnx" and path.is_file()
    url, known_hash, fname, where = fetched[0]
    assert url == bg.BACKGROUND_MODELS["u2netp"].url and known_hash.startswith("md5:")
    assert Path(where) == ours
    assert os.environ["U2NET_HOME"] == str(tmp_path / "users-own-home")  # restored afterwards
    assert not (tmp_path / "users-own-home").exists()
    # found on disk the second time: no download
    assert background_files([ours]).background_model("u2netp") == path
    assert len(fetched) == 1


def test_failed_download_is_a_clear_error(monkeypatch, tmp_path):
    import pooch

    def no_network(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(pooch, "retrieve", no_network)
    with pytest.raises(ValueError) as error:
        background_files([tmp_path]).background_model("silueta")
    message = str(error.value)
    assert "could not be downloaded" in message and "Name or service not known" in message
    assert bg.BACKGROUND_MODELS["silueta"].url in message and str(tmp_path / "silueta.onnx") in message


@pytest.mark.parametrize("content", [b"", b"\x08\x07 this is not a protobuf" * 50])
def test_corrupt_onnx_file_is_a_clear_error(tmp_path, content):
    broken = tmp_path / "isnet-general-use.onnx"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match="not a usable ONNX model.*delete it"):
        bg.load_network(broken)
    with pytest.raises(ValueError, match="does not exist"):
        bg.load_network(tmp_path / "absent.onnx")


def test_gpu_provider_is_chosen_when_onnxruntime_has_one(monkeypatch):
    assert bg.providers_for("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(bg, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert bg.providers_for("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert bg.providers_for("cpu") == ["CPUExecutionProvider"]


# --------------------------------------------------------------------------------------------------------------
# Masking an existing depth


def test_mask_depth_sets_background_to_the_subjects_farthest_depth():
    values = torch.arange(16.0).view(1, 4, 4) + 1
    mask = torch.zeros(1, 4, 4)
    mask[0, 1:3, 1:3] = 1  # keeps 6, 7, 10, 11
    relative = bg.mask_depth(Depth(values, DepthKind.RELATIVE_INVERSE), mask)
    assert relative.values[0, 1:3, 1:3].tolist() == [[6.0, 7.0], [10.0, 11.0]]
    assert relative.values[0, 0, 0] == 6.0 and relative.values[0, 3, 3] == 6.0  # larger = nearer, far = min
    metric = bg.mask_depth(Depth(values, DepthKind.METRIC), mask)
    assert metric.values[0, 0, 0] == 11.0 and metric.kind is DepthKind.METRIC  # metres: far = max


def test_mask_depth_resizes_broadcasts_and_checks():
    depth = Depth(torch.rand(1, 20, 30) + 1, DepthKind.RELATIVE_INVERSE)
    masks = torch.zeros(3, 10, 15)
    masks[1, 2:8, 3:12] = 1
    masks[2] = 1
    out = bg.mask_depth(depth, masks)
    assert out.values.shape == (3, 20, 30)
    assert torch.equal(out.values[2], depth.values[0])  # all kept
    assert torch.equal(out.values[0], torch.full((20, 30), float(depth.values.min())))  # nothing kept: all far
    kept = out.values[1][5:15, 7:23]
    assert torch.equal(kept, depth.values[0][5:15, 7:23])
    with pytest.raises(ValueError, match="one mask per depth"):
        bg.mask_depth(Depth(torch.rand(2, 4, 4), DepthKind.METRIC), torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="mask must be"):
        bg.mask_depth(depth, torch.ones(1, 1, 4, 4, 1))
    nan_depth = Depth(torch.tensor([[[1.0, float("nan")], [3.0, 4.0]]]), DepthKind.RELATIVE_INVERSE)
    assert torch.isfinite(bg.mask_depth(nan_depth, torch.ones(1, 2, 2)).values).all()


def test_without_onnxruntime_the_error_names_the_package_for_this_hardware(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a machine without any ONNX runtime has
    with pytest.raises(ModuleNotFoundError) as missing:
        bg.available_providers()
    message = str(missing.value)
    assert "python -m pip install onnxruntime " in message  # this machine: CPU only, Linux
    assert "onnxruntime-gpu for NVIDIA" in message
    assert bg.onnxruntime_package("Linux", nvidia=True, rocm=False) == "onnxruntime-gpu"
    assert bg.onnxruntime_package("Windows", nvidia=True, rocm=False) == "onnxruntime-gpu"
    assert bg.onnxruntime_package("Windows", nvidia=False, rocm=False) == "onnxruntime-directml"
    assert bg.onnxruntime_package("Linux", nvidia=False, rocm=True) == "onnxruntime-rocm"
    assert bg.onnxruntime_package("Darwin", nvidia=False, rocm=False) == "onnxruntime"
