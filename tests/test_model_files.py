"""The one resolver for model files (depth_core/model_files.py), used by the nodes and the command line."""
from __future__ import annotations

import urllib.request

import pytest

from depth_core.loading import ModelFileMissingError
from depth_core.files import is_inside_name
from depth_core.model_files import ModelFiles, ModelFolders, files_in, find_model_file
from depth_core.registry import known_models


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture()
def offline(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)


def test_depth_choices_list_known_models_then_files_on_disk_but_not_helper_networks(tmp_path):
    ours, theirs = tmp_path / "depth", tmp_path / "depthanything"
    touch(ours / "latest_net_G.pth")
    touch(ours / "edge-model.pth")
    touch(ours / "mine" / "my_depth.safetensors")
    touch(ours / "notes.txt")
    touch(theirs / "depth_anything_v2_vits_fp16.safetensors")
    choices = ModelFiles(ModelFolders.of([ours, theirs])).depth_choices()
    known = list(known_models())
    assert choices[:len(known)] == known
    assert choices[-2:] == ["mine/my_depth.safetensors", "depth_anything_v2_vits_fp16.safetensors"]
    assert not {"latest_net_G.pth", "edge-model.pth", "notes.txt"} & set(choices)


def test_depth_network_found_in_any_folder_or_a_clear_error(tmp_path, offline):
    ours, theirs = tmp_path / "depth", tmp_path / "depthanything"
    ours.mkdir()
    found = touch(theirs / "depth_anything_v2_vits.pth")
    files = ModelFiles(ModelFolders.of([ours, theirs]))
    assert files.depth_network("depth_anything_v2_vits.pth") == found
    with pytest.raises(ModelFileMissingError) as missing:
        files.depth_network("depth_anything_v2_vitb.pth")  # known: download tried, fails offline
    assert str(ours) in str(missing.value) and "huggingface.co/depth-anything" in str(missing.value)
    assert list(ours.iterdir()) == []
    with pytest.raises(ModelFileMissingError, match="Put it there"):
        files.depth_network("unknown.pth")
    with pytest.raises(ValueError, match="outside the model folders"):
        files.depth_network("../depthanything/depth_anything_v2_vits.pth")


def test_names_that_leave_their_folder_are_never_looked_up(tmp_path):
    touch(tmp_path / "outside.pth")
    assert not is_inside_name("../outside.pth") and not is_inside_name(str(tmp_path / "outside.pth"))
    assert is_inside_name("sub/model.pth")
    assert find_model_file("../outside.pth", [tmp_path / "depth"]) is None


def test_symlinked_folders_are_followed(tmp_path):
    elsewhere = touch(tmp_path / "disk2" / "models" / "big.safetensors").parent
    (tmp_path / "depth").mkdir()
    (tmp_path / "depth" / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert files_in([tmp_path / "depth"], (".safetensors",)) == ["linked/big.safetensors"]
    assert ModelFiles(ModelFolders.of([tmp_path / "depth"])).depth_network("linked/big.safetensors").is_file()


def test_merge_network_auto_uses_the_file_only_when_present(tmp_path, offline):
    depth, legacy = tmp_path / "depth", tmp_path / "pix2pix"
    depth.mkdir()
    files = ModelFiles(ModelFolders.of([depth], merge_extra=[legacy]))
    assert files.merge_network("auto") is None
    assert files.merge_network("frequency split") is None
    with pytest.raises(ModelFileMissingError, match="latest_net_G.pth"):
        files.merge_network("pix2pix")
    with pytest.raises(ValueError, match="Unknown merge method"):
        files.merge_network("best")
    old = touch(legacy / "latest_net_G.pth")
    assert files.merge_network("auto") == old == files.merge_network("pix2pix")
    assert ModelFiles(ModelFolders.of([depth]), allow_download=False).merge_network("frequency split") is None


def test_inpainting_networks_only_when_all_three_are_present(tmp_path):
    files = ModelFiles(ModelFolders.of([tmp_path]))
    touch(tmp_path / "edge-model.pth")
    touch(tmp_path / "depth-model.pth")
    assert files.inpainting_networks() is None
    touch(tmp_path / "nets" / "color-model.pth")
    edge, depth, colour = files.inpainting_networks()
    assert (edge.name, depth.name, colour) == ("edge-model.pth", "depth-model.pth", tmp_path / "nets" / "color-model.pth")
