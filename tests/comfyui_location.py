"""Where the real ComfyUI that the node and end-to-end tests use is found.

Searched in this order, the first that is a ComfyUI checkout wins:
1. `COMFYUI_PATH`;
2. the ComfyUI this pack is installed in (the repository is `ComfyUI/custom_nodes/<pack>`), as users run tests;
3. `../shared/comfyui` beside the repository (every developer machine and CI run has it; read-only there, so the
   tests run it with a temporary `--base-directory`).

Run as a script it prints the path (empty when none is found); `.ci/bootstrap` uses that to install ComfyUI's
requirements. Standard library only: it runs before the test environment exists.
"""
from __future__ import annotations

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
NOT_FOUND_REASON = (
    "no ComfyUI found: set COMFYUI_PATH to a ComfyUI checkout, install this pack in ComfyUI/custom_nodes/, or "
    "put ComfyUI at ../shared/comfyui, to run the tests that need real ComfyUI (see README 'Tests')."
)


REQUIRE_COMFYUI = os.environ.get("DEPTHTOOLKIT_REQUIRE_COMFYUI") == "1"
"""Set by .ci/run: a test that would skip for lack of ComfyUI or its browser fails instead."""


def skip_or_fail(reason: str) -> None:
    """Skip a test that lacks ComfyUI or Chromium, except where they are required (CI): there it fails."""
    import pytest

    if REQUIRE_COMFYUI:
        pytest.fail(f"{reason} (DEPTHTOOLKIT_REQUIRE_COMFYUI=1: this machine must run every test)")
    pytest.skip(reason)


def is_comfyui_checkout(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy_api").is_dir() and (path / "folder_paths.py").is_file()


def candidates(repository: Path = REPOSITORY) -> list[tuple[Path, str]]:
    found = []
    if os.environ.get("COMFYUI_PATH"):
        found.append((Path(os.environ["COMFYUI_PATH"]), "COMFYUI_PATH"))
    if repository.parent.name == "custom_nodes":
        found.append((repository.parent.parent, "the ComfyUI this pack is installed in"))
    found.append((repository.parent / "shared" / "comfyui", "../shared/comfyui"))
    return found


def find_comfyui(repository: Path = REPOSITORY) -> tuple[Path | None, str]:
    """The ComfyUI checkout to test against and how it was found, or (None, why not)."""
    for path, how in candidates(repository):
        if is_comfyui_checkout(path):
            return path.resolve(), how
        if how == "COMFYUI_PATH":
            return None, f"COMFYUI_PATH={path} is not a ComfyUI checkout (no main.py, comfy_api/ or folder_paths.py)"
    return None, NOT_FOUND_REASON


if __name__ == "__main__":
    path, _ = find_comfyui()
    print(path or "")
