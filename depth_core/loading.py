"""Fetching and safely reading checkpoint files (which file to fetch, and from where: model_files.py).

A checkpoint must never execute code: files are read with safetensors or `torch.load(weights_only=True)`, which
refuses pickled Python objects. Downloads go to a temporary name, are hashed while streaming and only renamed into
place when the digest matches, so an interrupted or tampered download never looks like a model.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import urllib.request
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from .files import atomic_path
from .progress import ProgressFn, no_progress

CHECKPOINT_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "depth_model", "net", "params")
DOWNLOAD_CHUNK_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects that would run code when loaded."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, not a checkpoint, or does not match the network."""


class ModelFileMissingError(FileNotFoundError):
    """The model file is not on disk and could not be downloaded."""


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without executing anything it contains."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(f"Model file {path} does not exist.")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "unsupported global" in str(error).lower():
            raise UnsafeCheckpointError(
                f"Refusing to load {path.name}: it contains Python objects that would run code when unpickled "
                f"({_first_line(error)}). Use the official release of this model, or a .safetensors version of it."
            ) from error
        raise CorruptCheckpointError(_corrupt_message(path, error)) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CorruptCheckpointError(_corrupt_message(path, error)) from error
    return unwrap_state_dict(loaded, path.name)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptCheckpointError(_corrupt_message(path, error)) from error


def unwrap_state_dict(loaded: object, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: released files wrap it in {"model": ...}, {"state_dict": ...}, add
    optimizer state, or keep DataParallel's "module." prefix."""
    current = loaded
    while isinstance(current, Mapping) and not _has_tensors(current):
        inner = next((current[key] for key in CONTAINER_KEYS if isinstance(current.get(key), Mapping)), None)
        if inner is None:
            break
        current = inner
    if not isinstance(current, Mapping) or not _has_tensors(current):
        raise CorruptCheckpointError(f"{name} holds no model weights (no tensors found).")
    tensors = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _has_tensors(mapping: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in mapping.values())


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _corrupt_message(path: Path, error: BaseException) -> str:
    return (
        f"Cannot read {path.name} as a checkpoint ({_first_line(error)}). The file is probably truncated or not a "
        f"model file: delete {path} and download it again."
    )


def download(url: str, destination: str | os.PathLike, expected_sha256: str | None = None,
             progress: ProgressFn = no_progress, timeout: float = 30.0) -> Path:
    """Stream `url` to `destination`, checking its sha256 against the expected one (or the server's own digest).

    The file appears under its final name only when complete and verified.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "DepthToolkit"})
    digest = hashlib.sha256()
    with atomic_path(destination) as partial:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            expected = (expected_sha256 or _server_sha256(response.headers) or "").lower()
            done = 0
            while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(done, max(total, done))
        actual = digest.hexdigest()
        if expected and not actual.startswith(expected):
            raise CorruptCheckpointError(
                f"Downloaded {destination.name} from {url} but its sha256 {actual} does not match the expected "
                f"{expected}. The download was discarded; try again, or download it by hand."
            )
    return destination


def _server_sha256(headers: Mapping[str, str]) -> str | None:
    """Hugging Face serves large files with their sha256 as the linked ETag."""
    for key in ("X-Linked-ETag", "x-linked-etag", "ETag"):
        value = (headers.get(key) or "").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", value):
            return value
    return None


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(DOWNLOAD_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
