"""One home for model files: where each kind of model file is looked for, what a model list offers, which file an
"auto" choice means, and how a missing known file is fetched.

The ComfyUI nodes (folders from folder_paths, see nodes/_model_folders.py) and the command line (folders from its
options) both go through `ModelFiles`, so a file found by one is found by the other. The catalogues stay with their
code: depth networks in each family module's `KNOWN_MODELS` (gathered by registry.known_models(), so a newly added
family needs nothing here), BoostMerge's merge network in models/pix2pix.py, the 3D-photo inpainting networks in
photo3d/networks.py, rembg's models in background.py.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .files import is_inside_name
from .loading import CHECKPOINT_EXTENSIONS, ModelFileMissingError, download
from .models.base import KnownModel
from .progress import ProgressFn, no_progress

log = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
MERGE_METHODS = ("auto", "pix2pix", "frequency split")
"""BoostMerge's merge choices: auto = the pix2pix network when its file is on disk, else the weight-free split."""


# ---------------------------------------------------------------------------------------------------------------
# Names and folders


def find_model_file(filename: str, folders: Iterable[str | os.PathLike]) -> Path | None:
    """The first existing `filename` in `folders` (also one level of sub-folders), or None. A name that would leave
    its folder is never looked up."""
    if not is_inside_name(filename):
        return None
    for folder in folders:
        folder = Path(folder)
        for candidate in (folder / filename, *sorted(folder.glob(f"*/{filename}"))):
            if candidate.is_file():
                return candidate
    return None


def files_in(folders: Iterable[str | os.PathLike], suffixes: Sequence[str]) -> list[str]:
    """Every file with one of `suffixes` under the folders (following symlinked folders), as a path relative to
    its folder, in the order the folders are given."""
    found: list[str] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for root, directories, names in os.walk(folder, followlinks=True):
            directories.sort()
            for name in sorted(names):
                if name.lower().endswith(tuple(suffixes)):
                    relative = (Path(root) / name).relative_to(folder).as_posix()
                    if relative not in found:
                        found.append(relative)
    return found


def folder_list(folders: Iterable[str | os.PathLike]) -> str:
    return ", ".join(str(Path(f)) for f in folders) or "(no model folders)"


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def ensure_model_file(known: KnownModel, folders: Sequence[str | os.PathLike], download_folder: str | os.PathLike,
                      allow_download: bool = True, progress: ProgressFn = no_progress) -> Path:
    """Path of a known model file: found in `folders`, or downloaded into `download_folder`.

    Offline (or with downloads disallowed) the error names the file, the folder and where to get it.
    """
    found = find_model_file(known.filename, folders)
    if found is not None:
        return found
    destination = Path(download_folder) / known.filename
    where = f"Download it from {known.urls[0]} and put it in {Path(download_folder)}" if known.urls else \
        f"Put it in {Path(download_folder)}"
    if not allow_download:
        raise ModelFileMissingError(f"Model file {known.filename} was not found in {folder_list(folders)}. {where}.")
    failures = []
    for url in known.urls:
        try:
            return download(url, destination, known.sha256, progress)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            failures.append(f"{url}: {_first_line(error)}")
    raise ModelFileMissingError(
        f"Model file {known.filename} was not found in {folder_list(folders)} and could not be downloaded "
        f"({'; '.join(failures) or 'no download address known'}). {where}."
    )


# ---------------------------------------------------------------------------------------------------------------
# rembg's own folders and downloads


def rembg_home_folders() -> list[Path]:
    """Where rembg itself keeps models (read only here): its current home and its legacy ~/.u2net folder.

    Same rules as rembg's BaseSession.rembg_home/legacy_home, computed without importing rembg (which loads
    pymatting and numba, seconds at ComfyUI start-up).
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    legacy = os.environ.get("U2NET_HOME") or os.path.join(xdg or "~", ".u2net")
    home = os.environ.get("U2NET_HOME") or os.environ.get("REMBG_HOME") or (
        os.path.join(xdg, "rembg") if xdg else os.path.join("~", ".rembg"))
    folders: list[Path] = []
    for folder in (home, legacy):
        path = Path(os.path.expanduser(folder))
        if path not in folders:
            folders.append(path)
    return folders


@contextlib.contextmanager
def _rembg_home_pinned_to(folder: Path) -> Iterator[None]:
    """rembg reads its home from the environment on every call; point both its variables at `folder` for the
    duration of one download so nothing it fetches (even a base model fetched for a conversion) lands elsewhere."""
    saved = {key: os.environ.get(key) for key in ("U2NET_HOME", "REMBG_HOME")}
    os.environ["U2NET_HOME"] = str(folder)
    os.environ["REMBG_HOME"] = str(folder)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_download_lock = threading.Lock()


def download_with_rembg(model, folder: str | os.PathLike) -> Path:
    """Fetch a known background model (background.BackgroundModel) with rembg's own download code (its URL and
    checksum) into `folder`/<name>.onnx."""
    from rembg.sessions import sessions  # heavy import, only when a download is needed

    session_class = sessions.get(model.name)
    if session_class is None:
        raise ValueError(f"The installed rembg does not offer the model {model.name}; update rembg "
                         "(pip install -U rembg) or choose another model.")
    target = Path(folder)

    def here(cls, *args, **kwargs) -> str:
        return str(target)

    # rembg stores files under <home>/models/<name>/; a subclass puts them straight into our folder instead.
    pinned = type(f"{session_class.__name__}InFolder", (session_class,), {
        "rembg_home": classmethod(here), "legacy_home": classmethod(here), "model_dir": classmethod(here)})
    target.mkdir(parents=True, exist_ok=True)
    with _download_lock, _rembg_home_pinned_to(target):
        log.info("Downloading %s from %s into %s", model.name, model.url, target)
        return Path(pinned.download_models())


# ---------------------------------------------------------------------------------------------------------------
# The resolver


@dataclass(frozen=True)
class ModelFolders:
    """Where each kind of model file lives. The first folder of a kind is where its downloads go."""

    depth: tuple[Path, ...]
    """Depth networks and their helper networks (BoostMerge's pix2pix, the 3D-photo inpainting networks)."""
    background: tuple[Path, ...] = ()
    """Folders users drop background-removal ONNX files into (listed in the model choices)."""
    merge_extra: tuple[Path, ...] = ()
    """Further folders searched for the merge network (the old extension's models/pix2pix/)."""
    background_extra: tuple[Path, ...] = field(default_factory=lambda: tuple(rembg_home_folders()))
    """Further folders searched for known background models but not listed (rembg's own home, which also holds
    SAM and cloth-segmentation files that are not foreground models)."""

    @classmethod
    def of(cls, depth: Iterable[str | os.PathLike], background: Iterable[str | os.PathLike] = (),
           merge_extra: Iterable[str | os.PathLike] = ()) -> "ModelFolders":
        return cls(tuple(map(Path, depth)), tuple(map(Path, background)), tuple(map(Path, merge_extra)))


@dataclass
class ModelFiles:
    """Finds, lists and fetches every model file of the pack in one set of folders."""

    folders: ModelFolders
    allow_download: bool = True
    progress: ProgressFn = no_progress

    # Depth networks -------------------------------------------------------------------------------------------

    @staticmethod
    def helper_network_files() -> set[str]:
        """Networks that live in the depth folder but are not depth networks."""
        from .models.pix2pix import PIX2PIX_FILENAME
        from .photo3d.networks import NETWORK_FILES

        return {PIX2PIX_FILENAME, *NETWORK_FILES}

    def depth_choices(self) -> list[str]:
        """Known depth networks first (downloaded on first use), then every other checkpoint found on disk and
        every other Marigold diffusers folder."""
        from .models import marigold
        from .registry import known_models

        known = [*known_models(), *marigold.known_folders()]
        helpers = self.helper_network_files()
        diffusers_folders = list(dict.fromkeys(
            entry.name for folder in self.folders.depth if folder.is_dir() for entry in sorted(folder.iterdir())
            if marigold.is_marigold_folder(entry)))
        # The weights inside a diffusers folder are parts of that model, not models of their own.
        skip = {*marigold.known_folders(), *diffusers_folders}
        on_disk = [name for name in files_in(self.folders.depth, CHECKPOINT_EXTENSIONS)
                   if Path(name).name not in helpers and name not in known and Path(name).parts[0] not in skip]
        return known + on_disk + [name for name in diffusers_folders if name not in known]

    def depth_network(self, choice: str) -> Path:
        """The file (or Marigold folder) of a depth network chosen by name (known or relative to a depth folder),
        downloaded when it is a known model that is missing."""
        from .models import marigold
        from .registry import known_models

        if not is_inside_name(choice):
            raise ValueError(f"The model name {choice!r} points outside the model folders "
                             f"({folder_list(self.folders.depth)}); choose a model from the list.")
        for folder in self.folders.depth:
            if (folder / choice).is_file() or marigold.is_marigold_folder(folder / choice):
                return folder / choice
        if choice in marigold.known_folders():
            return marigold.ensure_folder(marigold.known_folders()[choice], self.folders.depth,
                                          self.folders.depth[0], self.allow_download, self.progress)
        known = known_models().get(choice)
        if known is None:
            raise ModelFileMissingError(f"Model file {choice} was not found in {folder_list(self.folders.depth)}. "
                                        "Put it there, or choose another model.")
        return self.known_file(known, self.folders.depth)

    def known_file(self, known: KnownModel, folders: Sequence[Path]) -> Path:
        if not self.folders.depth:
            raise ModelFileMissingError(f"No model folder is configured for {known.filename}.")
        return ensure_model_file(known, folders, self.folders.depth[0], self.allow_download, self.progress)

    # BoostMerge ------------------------------------------------------------------------------------------------

    def merge_network(self, method: str) -> Path | None:
        """The pix2pix merge network for a merge method, or None for the weight-free frequency split: "auto" uses
        the network when its file is on disk, "pix2pix" downloads it when missing."""
        from .models import pix2pix

        if method not in MERGE_METHODS:
            raise ValueError(f"Unknown merge method {method!r}: choose one of {', '.join(MERGE_METHODS)}.")
        if method == "frequency split":
            return None
        folders = (*self.folders.depth, *self.folders.merge_extra)
        found = find_model_file(pix2pix.PIX2PIX_FILENAME, folders)
        if found is not None or method == "auto":
            return found
        return self.known_file(pix2pix.KNOWN_MODELS[0], folders)

    # 3D photo --------------------------------------------------------------------------------------------------

    def inpainting_networks(self) -> tuple[Path, Path, Path] | None:
        """The edge, depth and colour inpainting networks of Shih et al. when all three are on disk, else None
        (the 3D photo then fills the hidden background without networks)."""
        from .photo3d.networks import NETWORK_FILES

        paths = [find_model_file(name, self.folders.depth) for name in NETWORK_FILES]
        return tuple(paths) if all(paths) else None  # type: ignore[return-value]

    # Background removal ----------------------------------------------------------------------------------------

    def background_choices(self) -> list[str]:
        """Known rembg model names (downloadable), then every other ONNX file in the background folders."""
        from .background import BACKGROUND_MODELS

        known_files = {model.file_name for model in BACKGROUND_MODELS.values()}
        on_disk = [name for name in files_in(self.folders.background, (ONNX_SUFFIX,))
                   if Path(name).name not in known_files]
        return list(BACKGROUND_MODELS) + on_disk

    def locate_background_model(self, choice: str) -> Path | None:
        """The file for a known model name (flat, or in rembg's models/<name>/ layout) or a relative file name."""
        from .background import BACKGROUND_MODELS

        known = BACKGROUND_MODELS.get(choice)
        for folder in (*self.folders.background, *self.folders.background_extra):
            if known is not None:
                candidates = [folder / known.file_name, folder / "models" / known.name / known.file_name]
            elif is_inside_name(choice):
                candidates = [folder / choice]
            else:
                candidates = []
            for path in candidates:
                if path.is_file():
                    return path
        return None

    def background_model(self, choice: str) -> Path:
        """Path of the chosen background model: found, else (known models only) downloaded into the first
        background folder. Every failure is a ValueError naming the file, the folders and, for known models, the
        address to fetch it from by hand."""
        from .background import BACKGROUND_MODELS

        found = self.locate_background_model(choice)
        if found is not None:
            return found
        folders = (*self.folders.background, *self.folders.background_extra)
        searched = folder_list(folders)
        known = BACKGROUND_MODELS.get(choice)
        if known is None:
            raise ValueError(f"Background removal model file {choice} was not found in {searched}. Put the .onnx "
                             "file there, or choose one of the known models.")
        destination = next(iter(self.folders.background), None)
        by_hand = (f"Download {known.url} and save it as {destination / known.file_name}" if destination
                   else f"Download {known.url} and save it as {known.file_name} in one of those folders")
        if not self.allow_download or destination is None:
            raise ValueError(f"Background removal model file {known.file_name} ({choice}) was not found in "
                             f"{searched} and downloading is turned off. {by_hand}, or turn downloading on.")
        try:
            return download_with_rembg(known, destination)
        except ValueError:
            raise
        except Exception as error:  # network errors, checksum mismatches, missing converters: all end the same way
            raise ValueError(f"Background removal model file {known.file_name} ({choice}) was not found in "
                             f"{searched} and could not be downloaded ({type(error).__name__}: {error}). "
                             f"{by_hand}.") from error
