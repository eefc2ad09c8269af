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
