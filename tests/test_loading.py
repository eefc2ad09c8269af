"""Checkpoint reading and fetching: safe, atomic, and with errors that say what to do."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from depth_core.depth import DepthKind
from depth_core.loading import (CorruptCheckpointError, ModelFileMissingError, UnsafeCheckpointError, download,
                                load_state_dict)
from depth_core.model_files import ensure_model_file, find_model_file
from depth_core.models.base import HALF_MEAN, HALF_STD, KnownModel, ModelCard, Preprocess


def small_state_dict() -> dict[str, torch.Tensor]:
    return {"encoder.weight": torch.randn(4, 3), "encoder.bias": torch.randn(4), "head.scale": torch.tensor(2.0)}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_pth_and_safetensors_round_trip(tmp_path):
    weights = small_state_dict()
    torch.save(weights, tmp_path / "plain.pth")
    save_file(weights, tmp_path / "plain.safetensors")
    assert_same_tensors(load_state_dict(tmp_path / "plain.pth"), weights)
    assert_same_tensors(load_state_dict(tmp_path / "plain.safetensors"), weights)


def test_released_containers_are_unwrapped(tmp_path):
    weights = small_state_dict()
    torch.save({"model": weights, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 3},
               tmp_path / "midas_style.pt")
    torch.save({"depth_model": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "dataparallel.pth")
    assert_same_tensors(load_state_dict(tmp_path / "midas_style.pt"), weights)
    assert_same_tensors(load_state_dict(tmp_path / "dataparallel.pth"), weights)


class CodeThatRunsOnUnpickle:
    """A pickle payload that writes a marker file when loaded by an unsafe loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickle_that_would_execute_code_is_refused(tmp_path):
    marker = tmp_path / "executed.txt"
    torch.save({"weight": torch.zeros(2), "payload": CodeThatRunsOnUnpickle(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="would run code") as refused:
        load_state_dict(tmp_path / "evil.pth")
    assert not marker.exists(), "loading must not have executed the payload"
    assert "pathlib.Path" in str(refused.value)  # says what it would import
    assert "weights_only" not in str(refused.value) and "trusted" not in str(refused.value)


def old_format_evil_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(2), "payload": CodeThatRunsOnUnpickle(marker)}, path,
               _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("content", [
    pytest.param(lambda: np.random.default_rng(0).bytes(4096), id="random bytes"),
    pytest.param(lambda: b"\x80\x02" + np.random.default_rng(1).bytes(300), id="random after a pickle header"),
    pytest.param(lambda: b"PK\x03\x04" + np.random.default_rng(2).bytes(300), id="random after a zip header"),
    pytest.param(lambda: b"", id="empty"),
])
def test_a_corrupt_file_is_called_corrupt_never_unsafe(tmp_path, content):
    path = tmp_path / "depth_anything_v2_vits.pth"
    path.write_bytes(content())
    with pytest.raises(CorruptCheckpointError) as error:
        load_state_dict(path)
    message = str(error.value)
    assert not isinstance(error.value, UnsafeCheckpointError)
    assert "download it again" in message
    assert "weights_only" not in message and "trusted" not in message and "arbitrary code" not in message


def test_old_format_pickle_with_code_is_refused_as_unsafe(tmp_path):
    marker = tmp_path / "executed.txt"
    old_format_evil_checkpoint(tmp_path / "evil_legacy.pth", marker)
    with pytest.raises(UnsafeCheckpointError, match="pathlib"):
        load_state_dict(tmp_path / "evil_legacy.pth")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_checkpoint_gives_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save(small_state_dict(), path)
    else:
        save_file(small_state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="download it again"):
        load_state_dict(path)


def test_file_without_weights_is_rejected(tmp_path):
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(CorruptCheckpointError, match="no model weights"):
        load_state_dict(tmp_path / "empty.pth")


def test_find_model_file_looks_in_folders_and_subfolders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "nested").mkdir(parents=True)
    target = tmp_path / "b" / "nested" / "x.pth"
    target.write_bytes(b"1")
    assert find_model_file("x.pth", [tmp_path / "a", tmp_path / "b"]) == target
    assert find_model_file("y.pth", [tmp_path / "a", tmp_path / "b"]) is None


class FileServer:
    """Serves bytes on 127.0.0.1, optionally with a Hugging Face style X-Linked-ETag."""

    def __init__(self, payload: bytes, linked_etag: str | None = None) -> None:
        payload_, etag = payload, linked_etag

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload_)))
                if etag:
                    self.send_header("X-Linked-ETag", f'"{etag}"')
                self.end_headers()
                self.wfile.write(payload_)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/model.pth"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def known_model(filename: str, urls: tuple[str, ...], sha256: str | None) -> KnownModel:
    card = ModelCard("test", "test", Preprocess(64, 8, "lower_bound", HALF_MEAN, HALF_STD),
                     DepthKind.RELATIVE_INVERSE, 64)
    return KnownModel(card, None, filename, urls, sha256, "MIT")


def test_download_checks_hash_reports_progress_and_lands_atomically(tmp_path):
    payload = bytes(range(256)) * 10_000
    digest = hashlib.sha256(payload).hexdigest()
    reports = []
    with FileServer(payload) as server:
        path = download(server.url, tmp_path / "model.pth", digest, progress=lambda d, t: reports.append((d, t)))
    assert path.read_bytes() == payload
    assert reports[-1] == (len(payload), len(payload))
    assert list(tmp_path.iterdir()) == [path]


def test_download_with_wrong_hash_leaves_nothing_behind(tmp_path):
    with FileServer(b"tampered bytes") as server:
        with pytest.raises(CorruptCheckpointError, match="does not match"):
            download(server.url, tmp_path / "model.pth", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_uses_the_servers_digest_when_none_is_pinned(tmp_path):
    payload = b"weights" * 1000
    with FileServer(payload, linked_etag="f" * 64) as server:
        with pytest.raises(CorruptCheckpointError, match="does not match"):
            download(server.url, tmp_path / "model.pth", None)
    with FileServer(payload, linked_etag=hashlib.sha256(payload).hexdigest()) as server:
        assert download(server.url, tmp_path / "model.pth", None).read_bytes() == payload


def test_published_hash_prefix_is_accepted(tmp_path):
    payload = b"midas" * 1000
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    with FileServer(payload) as server:
        assert download(server.url, tmp_path / "midas-1234.pt", prefix).read_bytes() == payload


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/depth_anything_v2_vits.pth"


def test_offline_missing_model_error_names_file_folder_and_url(tmp_path):
    url = closed_port_url()
    known = known_model("depth_anything_v2_vits.pth", (url,), None)
    with pytest.raises(ModelFileMissingError) as error:
        ensure_model_file(known, [tmp_path / "depth"], tmp_path / "depth")
    message = str(error.value)
    assert "depth_anything_v2_vits.pth" in message and str(tmp_path / "depth") in message and url in message
    assert not (tmp_path / "depth" / "depth_anything_v2_vits.pth").exists()


def test_existing_model_file_is_used_without_downloading(tmp_path):
    (tmp_path / "depth").mkdir()
    existing = tmp_path / "depth" / "m.pth"
    existing.write_bytes(b"x")
    known = known_model("m.pth", (closed_port_url(),), None)
    assert ensure_model_file(known, [tmp_path / "depth"], tmp_path / "depth") == existing


def test_downloads_can_be_disallowed(tmp_path):
    known = known_model("m.pth", ("https://example.invalid/m.pth",), None)
    with pytest.raises(ModelFileMissingError, match="Download it from https://example.invalid/m.pth"):
        ensure_model_file(known, [tmp_path], tmp_path, allow_download=False)
