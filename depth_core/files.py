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
from typing import Iterator, Sequence


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


@contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Like `atomic_path` for several files that belong together (a node's video and meshes): yields one temporary
    path per file; all of them get their final names when the block succeeds, none on any failure or interrupt
    (a file already renamed is removed again)."""
    finals = [Path(path) for path in paths]
    temporaries = [temporary_sibling(path) for path in finals]
    placed: list[Path] = []
    try:
        yield temporaries
        for temporary, final in zip(temporaries, finals):
            os.replace(temporary, final)
            placed.append(final)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def write_files_atomic(folder: str | os.PathLike, files: dict[str, bytes]) -> list[Path]:
    """Write several files as one: all appear, or (on any failure) none of them, not even ones already renamed."""
    folder = Path(folder)
    with atomic_paths([folder / name for name in files]) as temporaries:
        for temporary, data in zip(temporaries, files.values()):
            with open(temporary, "xb") as stream:
                stream.write(data)
    return [folder / name for name in files]


def is_inside_name(name: str) -> bool:
    """Whether a file name chosen from a list stays inside the folder it is looked up in: not absolute, no `..`.
    Checked on the name, not on the resolved path, so a symlink the user put inside the folder (to a folder on
    another disk) still counts as inside."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and not path.drive and ".." not in path.parts
