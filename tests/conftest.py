"""Shared test fixtures.

Pure-algorithm tests import `depth_core` directly (the repository root is put on sys.path). Tests of the ComfyUI
nodes need real ComfyUI, found as tests/comfyui_location.py says (COMFYUI_PATH, the ComfyUI the pack is installed in,
or ../shared/comfyui); without one they skip with that reason, or fail where DEPTHTOOLKIT_REQUIRE_COMFYUI=1 (CI).
ComfyUI is imported with a temporary base directory, so a read-only checkout works and nothing is written into it.
The `pack` fixture imports this repository the way ComfyUI does, as a package named after its folder, so node tests
must build their inputs from `pack.depth_core` (a second copy of depth_core, not the top-level one).
"""
from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from comfyui_location import REQUIRE_COMFYUI, find_comfyui, skip_or_fail  # noqa: E402  (tests/ is on sys.path)

COMFYUI, NO_COMFYUI_REASON = find_comfyui()
COMFYUI_PATH = str(COMFYUI or "")

requires_comfyui = pytest.mark.skipif(not COMFYUI_PATH and not REQUIRE_COMFYUI, reason=NO_COMFYUI_REASON)

PACK_MODULE_NAME = "depth_toolkit_under_test"


def _import_comfyui() -> None:
    if not COMFYUI_PATH:
        skip_or_fail(NO_COMFYUI_REASON)
    if COMFYUI_PATH not in sys.path:
        sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported: no GPU here
    if "folder_paths" not in sys.modules:  # models/, input/, output/ in a temporary folder, never in the checkout
        args.base_directory = tempfile.mkdtemp(prefix="comfyui-base-")


@pytest.fixture(scope="session")
def pack():
    """This repository imported as ComfyUI imports a custom node pack, with real ComfyUI on sys.path."""
    _import_comfyui()
    if PACK_MODULE_NAME in sys.modules:
        return sys.modules[PACK_MODULE_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE_NAME] = module
    spec.loader.exec_module(module)
    importlib.import_module(f"{PACK_MODULE_NAME}.depth_core")
    nodes = importlib.import_module(f"{PACK_MODULE_NAME}.nodes")
    run_coroutine(nodes.DepthToolkitExtension().get_node_list())  # what ComfyUI calls at start-up
    return module


def run_coroutine(coroutine):
    """Run a coroutine to completion in a thread of its own: the end-to-end tests' Playwright browser keeps an event
    loop running in the main thread for the whole session, where asyncio.run would refuse to start."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def run_async():
    """`run_coroutine` for tests that call ComfyUI's async entry points."""
    return run_coroutine


@pytest.fixture()
def comfy_output_dir(pack, tmp_path):
    """Point ComfyUI's output and temp folders at a fresh temporary folder for one test."""
    import folder_paths

    old_output, old_temp = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    (tmp_path / "output").mkdir()
    (tmp_path / "temp").mkdir()
    yield tmp_path / "output"
    folder_paths.set_output_directory(old_output)
    folder_paths.set_temp_directory(old_temp)


@pytest.fixture(scope="session")
def motorcycle():
    """The real Middlebury stereo pair shipped with scikit-image: (left, right, disparity) as float arrays."""
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    return left, right, disparity
