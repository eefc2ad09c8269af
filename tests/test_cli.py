"""`python -m depth_core`: the weight-free demo and estimating depth for files with a checkpoint."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depth_core.cli import main
from depth_core.models import depth_anything_v2

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_every_output_from_the_real_stereo_pair(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    psnr = float(printed.split("right view synthesized from the left photo: ")[1].split(" dB")[0])
    assert psnr > 23.0
    depth = np.asarray(Image.open(tmp_path / "motorcycle_depth.png"))
    assert depth.dtype == np.uint16 and depth.shape == (500, 741) and depth.min() == 0 and depth.max() == 65535
    for name in ("normal", "sbs", "anaglyph"):
        picture = Image.open(tmp_path / f"motorcycle_{name}.png")
        assert picture.mode == "RGB"
        assert picture.size == ((741 * 2, 500) if name == "sbs" else (741, 500))


def test_images_with_a_checkpoint_file(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "small.pth"
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), checkpoint)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)).save(photos / "a.png")
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(photos / "b.jpg")
    out = tmp_path / "out"
    assert main([str(photos), "--model", str(checkpoint), "--resolution", "56", "--out", str(out),
                 "--outputs", "depth,mesh"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_depth.png", "a_mesh.glb", "b_depth.png", "b_mesh.glb"]
    assert np.asarray(Image.open(out / "a_depth.png")).shape == (30, 40)


def test_bad_arguments_explain_themselves(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--outputs", "hologram"])
    result = subprocess.run([sys.executable, "-m", "depth_core", str(tmp_path / "x.png")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--model" in result.stderr


def step_depth_png(path: Path, height: int, width: int) -> Path:
    """A near left half and a far right half, as a 16-bit depth PNG (near = bright)."""
    values = np.full((height, width), 20000, np.uint16)
    values[:, : width // 2] = 60000
    Image.fromarray(values).save(path)
    return path


def test_photo3d_output_writes_the_camera_move_and_the_layered_mesh(tmp_path):
    import av

    photo = tmp_path / "room.png"
    Image.fromarray((np.random.default_rng(3).random((24, 32, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main([str(photo), "--depth", str(step_depth_png(tmp_path / "d.png", 24, 32)), "--outputs", "photo3d",
                 "--frames", "3", "--fps", "6", "--photo3d-mesh", "glb", "--out", str(out),
                 "--models-dir", str(tmp_path / "models" / "depth")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["room_photo3d.glb", "room_photo3d.mp4"]
    with av.open(str(out / "room_photo3d.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (24, 32, 3)
    assert not np.array_equal(frames[0], frames[1])  # the camera moves
    import trimesh

    mesh = trimesh.load(out / "room_photo3d.glb", force="mesh")
    assert len(mesh.faces) > 24 * 32  # the photo's grid plus the hidden background behind the depth edge


def test_boost_runs_boost_merge_with_the_merge_it_is_given(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "small.pth"
    torch.save(depth_anything_v2.build(depth_anything_v2.SMALL).state_dict(), checkpoint)
    photo = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((28, 36, 3)) * 255).astype(np.uint8)).save(photo)
    models = tmp_path / "models" / "depth"
    out = tmp_path / "out"
    common = [str(photo), "--model", str(checkpoint), "--boost", "--max-whole-size", "64", "--outputs", "depth",
              "--models-dir", str(models), "--out", str(out), "--no-download"]
    assert main([*common, "--merge", "frequency split"]) == 0
    assert "frequency split" in capsys.readouterr().out
    depth = np.asarray(Image.open(out / "a_depth.png"))
    assert depth.shape == (28, 36) and depth.max() > depth.min()
    with pytest.raises(Exception, match="latest_net_G.pth"):  # offline and missing: names the file to get
        main([*common, "--merge", "pix2pix"])
    with pytest.raises(SystemExit):
        main([str(photo), "--depth", str(photo), "--boost"])  # boosting needs a network


ISNET = ROOT.parent / "shared" / "models" / "isnet-general-use-quint8.onnx"


@pytest.mark.skipif(not ISNET.is_file(), reason="the real IS-Net ONNX model of shared/models is not here")
def test_background_removal_writes_cutout_and_mask_and_masks_the_depth(tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[::4, ::4]).save(photo)  # 128x128, a person in front of a backdrop
    rembg_folder = tmp_path / "models" / "rembg"
    rembg_folder.mkdir(parents=True)
    (rembg_folder / ISNET.name).symlink_to(ISNET)
    depth = np.tile(np.linspace(10000, 60000, 128, dtype=np.uint16), (128, 1))
    Image.fromarray(depth).save(tmp_path / "d.png")
    out = tmp_path / "out"
    assert main([str(photo), "--depth", str(tmp_path / "d.png"), "--outputs", "cutout,mask,depth", "--mask-depth",
                 "--background-model", ISNET.name, "--models-dir", str(tmp_path / "models" / "depth"),
                 "--out", str(out), "--no-download"]) == 0
    cutout = Image.open(out / "astronaut_cutout.png")
    mask = np.asarray(Image.open(out / "astronaut_mask.png"))
    assert cutout.mode == "RGBA" and cutout.size == (128, 128)
    assert np.array_equal(np.asarray(cutout)[..., 3], mask)
    subject = mask > 127
    assert 0.1 < subject.mean() < 0.9  # the astronaut, not everything or nothing
    masked = np.asarray(Image.open(out / "astronaut_depth.png")).astype(np.int64)
    # Outside the subject, depth is the subject's farthest (darkest after normalization: 0).
    assert (masked[~subject & (mask < 64)] == 0).all() and masked[subject].max() == 65535
