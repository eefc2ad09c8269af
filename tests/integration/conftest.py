"""A real ComfyUI server with this pack installed, shared by every integration test of a session.

The server runs from $COMFYUI_PATH on 127.0.0.1 (a free port), on the CPU, with a temporary base directory holding
this repository as custom node `depth_toolkit`, test-built depth checkpoints in models/depth/ (random weights in the
official layout) and empty input/output/user folders. Without COMFYUI_PATH every test here skips with that reason.

Environment:
- COMFYUI_PATH: the ComfyUI checkout (its requirements installed in the Python running pytest, or in
  COMFYUI_PYTHON).
- COMFYUI_PYTHON: the interpreter that runs ComfyUI (default: the one running pytest).
- DEPTHTOOLKIT_EXTRA_CUSTOM_NODES: more custom node folders to install beside the pack, os.pathsep-separated
  (for developing the harness against stub nodes; never needed in CI).
- DEPTHTOOLKIT_KEEP_SERVER_DIR: keep the server's base directory (and its log) after the session.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / "workflows"
PACK_FOLDER = "depth_toolkit"
NODE_PREFIX = "DepthToolkit."
STARTUP_TIMEOUT_S = 240
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
NO_COMFYUI_REASON = (
    "COMFYUI_PATH is not set: point it at a ComfyUI checkout whose requirements are installed to run the "
    "end-to-end tests against a real ComfyUI server."
)


def workflow_paths() -> list[Path]:
    return sorted(WORKFLOW_DIR.glob("*.json"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerError(AssertionError):
    pass


@dataclass
class ComfyServer:
    """A running ComfyUI and the folders it uses, with the few HTTP calls the tests need."""

    url: str
    base_dir: Path
    log_path: Path
    process: subprocess.Popen
    checkpoints: dict[str, Path] = field(default_factory=dict)
    """Test-built model files in models/depth/, by file name."""
    _object_info: dict | None = None

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                method: str | None = None, timeout: float = 60) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            raise ServerError(f"{method or ('POST' if data else 'GET')} {path} -> HTTP {error.code}: {body[:4000]}")

    def get_json(self, path: str):
        return json.loads(self.request(path))

    def post_json(self, path: str, payload) -> dict:
        raw = self.request(path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        return json.loads(raw) if raw else {}

    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.get_json("/object_info")
        return self._object_info

    def upload_image(self, name: str, png: bytes, image_type: str = "input") -> str:
        """Upload PNG bytes through /upload/image; returns the name LoadImage takes."""
        boundary = uuid.uuid4().hex
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             f"Content-Type: image/png\r\n\r\n").encode() + png + b"\r\n",
            (f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\n{image_type}\r\n').encode(),
            (f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n').encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        answer = json.loads(self.request("/upload/image", b"".join(parts),
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        payload = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        return self.post_json("/prompt", payload)["prompt_id"]

    def wait_history(self, prompt_id: str, timeout_s: float = 300) -> dict:
        """The /history entry of a prompt once it has finished (success or error)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited (code {self.process.returncode}) while running {prompt_id}:\n"
                                  f"{self.log_tail()}")
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.25)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout_s} s; server log:\n{self.log_tail()}")

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self.request(f"/view?{query}")


def build_test_checkpoints(models_dir: Path) -> dict[str, Path]:
    """Random-weight checkpoints in the official key layout, one for the smallest known model of each family
    (the pack's loader recognises a file by its keys, so these exercise the real loading path).

    Families whose module does not exist yet are left out; workflows that need them then fail with a clear
    message from the loader node."""
    import importlib
    import pkgutil

    import torch

    import depth_core.models as families  # importable: tests/conftest.py puts the repository root on sys.path
    built: dict[str, Path] = {}
    models_dir.mkdir(parents=True, exist_ok=True)
    for module_info in pkgutil.iter_modules(families.__path__):
        if module_info.name.startswith("_") or module_info.name in ("base", "registry"):
            continue
        module = importlib.import_module(f"depth_core.models.{module_info.name}")
        known = getattr(module, "KNOWN_MODELS", None) or getattr(module, "PRESETS", None)
        build = getattr(module, "build", None)
        if not known or build is None or not hasattr(known[0], "filename"):
            continue
        for entry in _smallest_first(known, build)[:1]:
            torch.manual_seed(0)
            network = build(entry.config)
            path = models_dir / entry.filename
            # The official releases are plain state dicts saved with torch.save (.pth) or safetensors
            if path.suffix == ".safetensors":
                from safetensors.torch import save_file
                save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
            else:
                torch.save(network.state_dict(), path)
            built[entry.filename] = path
    return built


def _smallest_first(known: list, build) -> list:
    """Known models ordered by their size on disk where the module says, else by name hints."""
    order = {"vits": 0, "small": 0, "s": 0, "vitb": 1, "base": 1, "vitl": 2, "large": 2, "vitg": 3, "giant": 3}

    def size(entry) -> tuple:
        if getattr(entry, "size_bytes", None):
            return (entry.size_bytes, entry.filename)
        hint = min((rank for key, rank in order.items() if f"_{key}" in entry.filename.lower()), default=5)
        return (float("inf") if hint == 5 else hint, entry.filename)

    return sorted(known, key=size)


def _start_server(base_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    command = [
        python, "main.py",
        "--listen", "127.0.0.1", "--port", str(port),
        "--cpu", "--disable-auto-launch",
        "--base-directory", str(base_dir),
        "--database-url", "sqlite:///:memory:",
        "--disable-api-nodes",
        "--log-stdout",
    ]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded during a test
    log = open(log_path, "wb")
    return subprocess.Popen(command, cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)


def _wait_until_up(server: ComfyServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"ComfyUI exited with code {server.process.returncode} while starting:\n"
                              f"{server.log_tail()}")
        try:
            server.get_json("/system_stats")
            return
        except (urllib.error.URLError, ConnectionError, OSError, ServerError):
            time.sleep(0.5)
    raise ServerError(f"ComfyUI did not answer within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory) -> ComfyServer:
    if not COMFYUI_PATH:
        pytest.skip(NO_COMFYUI_REASON)
    if not (Path(COMFYUI_PATH) / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} is not a ComfyUI checkout (no main.py).")
    base_dir = tmp_path_factory.mktemp("comfyui")
    for folder in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base_dir / folder).mkdir()
    (base_dir / "custom_nodes" / PACK_FOLDER).symlink_to(ROOT, target_is_directory=True)
    for extra in filter(None, os.environ.get("DEPTHTOOLKIT_EXTRA_CUSTOM_NODES", "").split(os.pathsep)):
        extra_path = Path(extra).resolve()
        (base_dir / "custom_nodes" / extra_path.name).symlink_to(extra_path, target_is_directory=extra_path.is_dir())
    checkpoints = build_test_checkpoints(base_dir / "models" / "depth")

    log_path = base_dir / "comfyui.log"
    process = _start_server(base_dir, free_port(), log_path)
    port = int(process.args[process.args.index("--port") + 1])
    server = ComfyServer(f"http://127.0.0.1:{port}", base_dir, log_path, process, checkpoints)
    try:
        _wait_until_up(server)
        log = server.log_tail(200_000)
        if "IMPORT FAILED" in log and PACK_FOLDER in log.split("IMPORT FAILED", 1)[1][:400]:
            raise ServerError(f"ComfyUI could not import the pack:\n{server.log_tail()}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        if os.environ.get("DEPTHTOOLKIT_KEEP_SERVER_DIR"):
            print(f"\nComfyUI base directory kept at {base_dir}")
        else:
            shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pack_node_ids(comfy_server) -> list[str]:
    return sorted(name for name in comfy_server.object_info() if name.startswith(NODE_PREFIX))


def png_bytes(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def small_test_photo(height: int = 96, width: int = 128):
    """A real photo (scikit-image's astronaut) scaled to a small size, uint8 RGB."""
    from PIL import Image
    from skimage import data

    return __import__("numpy").asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC))


@pytest.fixture(scope="session")
def test_images(comfy_server) -> dict[str, str]:
    """Small photos uploaded to the server's input folder, by role: "photo" (RGB), "second" (another RGB photo of
    the same size, e.g. a stereo right view) and "mask" (a PNG with alpha, for LoadImageMask-style inputs)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = small_test_photo()
    right = np.asarray(Image.fromarray(data.stereo_motorcycle()[1]).resize((128, 96), Image.BICUBIC))
    rgba = np.dstack([photo, np.where(np.arange(128)[None, :] < 64, 255, 0).repeat(96, 0).astype(np.uint8)])
    return {
        "photo": comfy_server.upload_image("depthtoolkit_test_photo.png", png_bytes(photo)),
        "second": comfy_server.upload_image("depthtoolkit_test_second.png", png_bytes(right)),
        "mask": comfy_server.upload_image("depthtoolkit_test_rgba.png", png_bytes(rgba)),
    }
