"""The one place that tells ComfyUI about the pack's model folders, and the resolver every node uses.

Registration happens when the extension loads (DepthToolkitExtension.on_load) and again, idempotently, on first
use, so importing a node module changes nothing in ComfyUI. Folders a user configured in extra_model_paths.yaml
under these names stay first; the default folder under models/ is added after them.
"""
from __future__ import annotations

import os

import folder_paths

from ..depth_core.loading import CHECKPOINT_EXTENSIONS
from ..depth_core.model_files import ONNX_SUFFIX, ModelFiles, ModelFolders
from ..depth_core.progress import ProgressFn, no_progress

DEPTH_FOLDER = "depth"
"""models/depth: depth networks, BoostMerge's merge network, the 3D-photo inpainting networks; downloads go here."""
LEGACY_DEPTH_FOLDERS = ("depthanything",)
"""Folders other depth packs download into, searched too so users' existing files are reused."""
BACKGROUND_FOLDER = "rembg"
"""models/rembg: background-removal ONNX models; downloads go here."""
CORE_BACKGROUND_FOLDER = "background_removal"
"""Core ComfyUI's own background-removal folder (newer releases); searched when it is registered."""
LEGACY_PIX2PIX_FOLDER = "pix2pix"
"""models/pix2pix/, where the old A1111 extension kept latest_net_G.pth; searched for the merge network."""

FOLDERS = {DEPTH_FOLDER: CHECKPOINT_EXTENSIONS, **{name: CHECKPOINT_EXTENSIONS for name in LEGACY_DEPTH_FOLDERS},
           BACKGROUND_FOLDER: (ONNX_SUFFIX,)}

_registered: set[str] = set()


def register_model_folders() -> None:
    """Add each folder name with its default path under models/ (once per process) and our file extensions."""
    for name, extensions in FOLDERS.items():
        default_path = os.path.join(folder_paths.models_dir, name)
        paths, known_extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        if name not in _registered or name not in folder_paths.folder_names_and_paths:
            if default_path not in paths:
                paths = [*paths, default_path]
            _registered.add(name)
        folder_paths.folder_names_and_paths[name] = (paths, set(known_extensions) | set(extensions))


def folders_of(name: str) -> list[str]:
    register_model_folders()
    if name not in folder_paths.folder_names_and_paths:
        return []
    return folder_paths.get_folder_paths(name)


def model_folders() -> ModelFolders:
    """Every model folder as ComfyUI is configured now (including extra_model_paths.yaml)."""
    depth = [path for name in (DEPTH_FOLDER, *LEGACY_DEPTH_FOLDERS) for path in folders_of(name)]
    background = [*folders_of(BACKGROUND_FOLDER), *folders_of(CORE_BACKGROUND_FOLDER)]
    legacy_pix2pix = os.path.join(folder_paths.models_dir, LEGACY_PIX2PIX_FOLDER)
    return ModelFolders.of(dict.fromkeys(depth), dict.fromkeys(background), [legacy_pix2pix])


def model_files(allow_download: bool = True, progress: ProgressFn = no_progress) -> ModelFiles:
    return ModelFiles(model_folders(), allow_download, progress)
