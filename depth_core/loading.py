"""Fetching and safely reading checkpoint files (which file to fetch, and from where: model_files.py).

A checkpoint must never execute code: files are read with safetensors or `torch.load(weights_only=True)`, which
refuses pickled Python objects. Downloads go to a temporary name, are hashed while streaming and only renamed into
place when the digest matches, so an interrupted or tampered download never looks like a model.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
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
        # torch refuses garbage and code alike with the same error (and advice to turn safe loading off, never
        # passed on): only a pickle that parses and names code outside torch's own types is unsafe.
        code = code_globals(path)
        if code:
            raise UnsafeCheckpointError(
                f"Refusing to load {path.name}: it holds Python objects that would run code when loaded "
                f"({', '.join(code[:3])}). Use the official release of this model, or a .safetensors version of it."
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


TENSOR_PICKLE_MODULES = ("torch", "collections", "_codecs")
"""Modules whose names a plain tensor checkpoint's pickle refers to (torch's rebuild functions and storages,
OrderedDict, the byte-string codec); anything else is code that loading would import and run."""

MAX_PICKLES_SCANNED = 5
"""torch's legacy (non-zip) format is a few pickles in a row (magic number, protocol, system info, the object, the
storage keys) followed by raw tensor bytes."""


def code_globals(path: str | os.PathLike) -> list[str] | None:
    """The importable names (module.name) a checkpoint's pickle refers to outside `TENSOR_PICKLE_MODULES`, or None
    when the file is no readable pickle at all (random bytes, a truncated or damaged file). Reads opcodes only;
    nothing is imported or run."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                streams = [io.BytesIO(archive.read(name))]
        else:
            streams = [io.BytesIO(path.read_bytes())]
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError):
        return None
    stream = streams[0]
    found: list[str] = []
    for index in range(MAX_PICKLES_SCANNED):
        if stream.tell() >= len(stream.getbuffer()):
            break
        try:
            found += _pickle_globals(stream)
        except (ValueError, EOFError):  # genops' error for a byte that is no opcode, or a pickle cut short
            if index == 0:
                return None
            break
    return [name for name in dict.fromkeys(found) if name.split(".")[0] not in TENSOR_PICKLE_MODULES]


def _pickle_globals(stream: io.BytesIO) -> list[str]:
    """module.name of every GLOBAL / STACK_GLOBAL of one pickle, read up to its STOP."""
    found, strings, memo = [], [], {}
    for opcode, argument, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL":
            found.append(str(argument).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(argument, str) and ("UNICODE" in opcode.name or "STRING" in opcode.name):
            strings.append(str(argument))
        elif opcode.name == "MEMOIZE" and strings:
            memo[len(memo)] = strings[-1]
        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
            memo[argument] = strings[-1]
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET") and argument in memo:
            strings.append(memo[argument])
        if opcode.name == "STOP":
            break
    return found


SAFE_LOADING_ADVICE = ("weights_only", "weights only", "trusted source", "arbitrary code", "file an issue",
                       "check the documentation")
"""Lines of torch's errors that advise turning safe loading off; never shown to users."""


def _reason(error: BaseException) -> str:
    """The informative part of an error: its first line that is not advice to disable safe loading."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not any(advice in line.lower() for advice in SAFE_LOADING_ADVICE)]
    return useful[0] if useful else type(error).__name__


def _corrupt_message(path: Path, error: BaseException) -> str:
    return (
        f"Cannot read {path.name} as a checkpoint ({_reason(error)}). The file is probably truncated or not a "
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
