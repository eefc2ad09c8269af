"""Writing files so that a failure never leaves a half-written one in the user's folder.

Everything is written under a hidden temporary name in the destination folder (same file system, so the final
rename is atomic) and renamed into place only when complete; on any error the temporary file is removed.
Plain `open` is used rather than mkstemp so files get the usual permissions from the umask.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A hidden, unique name beside `path` with the same extension (some writers pick the format from it)."""
    final = Path(path)
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.part{final.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; it becomes `path` when the block succeeds and vanishes otherwise."""
    final = Path(path)
    temporary = temporary_sibling(final)
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "xb") as stream:
        stream.write(data)
    return path


def write_files_atomic(folder: str | os.PathLike, files: dict[str, bytes]) -> list[Path]:
    """Write several files as one: all appear, or (on any failure) none of them, not even ones already renamed."""
    folder = Path(folder)
    temporary = {name: temporary_sibling(folder / name) for name in files}
    placed: list[Path] = []
    try:
        for name, data in files.items():
            with open(temporary[name], "xb") as stream:
                stream.write(data)
        for name in files:
            os.replace(temporary[name], folder / name)
            placed.append(folder / name)
    except BaseException:
        for path in [*temporary.values(), *placed]:
            path.unlink(missing_ok=True)
        raise
    return placed
