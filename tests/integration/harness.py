"""The end-to-end harness: a real ComfyUI server with this pack installed, shared by every integration test.

The server runs from the ComfyUI that tests/comfyui_location.py finds (COMFYUI_PATH, the ComfyUI the pack is installed
in, or ../shared/comfyui; read-only is fine) on 127.0.0.1 (a free port), on the CPU, with a temporary base directory holding
this repository as custom node `depth_toolkit`, test-built depth checkpoints in models/depth/ (random weights in the
official layout) and empty input/output/user folders. Without a ComfyUI every test here skips with that reason (fails under DEPTHTOOLKIT_REQUIRE_COMFYUI=1, as in CI).

Environment:
- COMFYUI_PATH: the ComfyUI checkout to use first (its requirements installed in the Python running pytest, or in
  COMFYUI_PYTHON).
- COMFYUI_PYTHON: the interpreter that runs ComfyUI (default: the one running pytest).
- DEPTHTOOLKIT_EXTRA_CUSTOM_NODES: more custom node folders to install beside the pack, os.pathsep-separated
  (for developing the harness against stub nodes; never needed in CI).
- DEPTHTOOLKIT_WORKFLOW_DIR: run the workflows of another folder instead of workflows/ (development).
- DEPTHTOOLKIT_E2E_NATIVE: run depth networks at the workflows' own resolution (default: a small 126 px, fast).
- DEPTH_TOOLKIT_CACHE: where the test-built checkpoints are kept between runs (default ~/.cache/depth-toolkit).
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
from comfyui_location import find_comfyui, skip_or_fail

import small_networks
from small_networks import SMALL_TEST_NETWORKS

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = Path(os.environ.get("DEPTHTOOLKIT_WORKFLOW_DIR") or ROOT / "workflows")
PACK_FOLDER = "depth_toolkit"
NODE_PREFIX = "DepthToolkit."
STARTUP_TIMEOUT_S = 240
_COMFYUI, NO_COMFYUI_REASON = find_comfyui()
COMFYUI_PATH = str(_COMFYUI or "")


def is_widget_spec(spec: list) -> bool:
    """Whether an /object_info input spec is shown as a widget (else it is a socket)."""
    from ui_to_api import is_widget

    return is_widget(spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})


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
            if entry and entry.get("status"):  # ComfyUI records a prompt in its history once it has finished
                return entry
            time.sleep(0.25)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout_s} s; server log:\n{self.log_tail()}")

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self.request(f"/view?{query}")


CHECKPOINT_FAMILIES: dict[str, str] = {}
"""Family module of each test-built checkpoint, by file name."""
KNOWN_FILE_FAMILIES: dict[str, str] = {}
"""Family module of every known release file name (built or not), by file name."""
DEPTH_NETWORK_FILES: set[str] = set()
"""Test-built checkpoints that are depth networks (not helper networks such as the boost merge net)."""
HELPER_NETWORK_FILES: set[str] = set()
"""Known files of helper networks (no model card)."""
TEST_DEPTH_NETWORK = "depth_anything_v2_vits.pth"
"""The depth network every workflow runs with: the smallest one (25 M parameters, 100 MB in fp32)."""
TEST_VIDEO_NETWORKS = {"video_depth_anything_vits.pth"}
"""Video networks built too when a workflow names them (a video model runs a different path than image models)."""
CHECKPOINT_CACHE = Path(os.environ.get("DEPTH_TOOLKIT_CACHE", Path.home() / ".cache" / "depth-toolkit")) / "e2e-models"


def checkpoint_for_test_run(value: str) -> str | None:
    """The test-built checkpoint to use where a workflow names the model file `value`: a helper network (card-less,
    e.g. the boost merge net) keeps its own file; any depth network becomes the small test depth network."""
    if value in CHECKPOINT_FAMILIES:
        return value
    if value in HELPER_NETWORK_FILES:
        return None
    return next(iter(sorted(DEPTH_NETWORK_FILES)), None)


def _known_models() -> list[tuple[str, object, object]]:
    """(family module name, family module, KnownModel) for every model the pack knows."""
    import importlib
    import pkgutil

    import depth_core.models as families  # importable: tests/conftest.py puts the repository root on sys.path

    found = []
    for module_info in pkgutil.iter_modules(families.__path__):
        if module_info.name.startswith("_") or module_info.name in ("base", "registry"):
            continue
        module = importlib.import_module(f"depth_core.models.{module_info.name}")
        if getattr(module, "build", None) is None:
            continue
        for entry in getattr(module, "KNOWN_MODELS", None) or []:
            found.append((module_info.name, module, entry))
    return found


def _referenced_strings(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in json.loads(path.read_text()).get("nodes", []):
            values = node.get("widgets_values") or []
            names.update(v for v in (values.values() if isinstance(values, dict) else values) if isinstance(v, str))
    return names


SHARED_MODEL_FOLDERS = [ROOT / "shared" / "models", ROOT.parent / "shared" / "models", Path("/work/shared/models")]
SHARED_TEST_MODELS = {"isnet-general-use-quint8.onnx": "rembg"}
"""Real small networks from the project's shared/models folder, by file name: the models/ subfolder they go to."""
EXTRA_TEST_MODELS: dict[str, Path] = {}
"""Shared model files installed for this session, by file name."""


def install_shared_models(models_dir: Path) -> dict[str, Path]:
    """Link the shared real networks (e.g. the background-removal IS-Net) into the server's models folders, so
    workflows that need them run offline. A missing file is left out; such workflows then fail with the node's
    own message."""
    folders = [Path(p) for p in os.environ.get("DEPTHTOOLKIT_SHARED_MODELS", "").split(os.pathsep) if p]
    for name, subfolder in SHARED_TEST_MODELS.items():
        source = next((folder / name for folder in folders + SHARED_MODEL_FOLDERS if (folder / name).is_file()), None)
        if source is None:
            continue
        (models_dir / subfolder).mkdir(parents=True, exist_ok=True)
        # A copy, not a link: loaders rightly refuse a file whose real path leaves their models folder
        shutil.copyfile(source, models_dir / subfolder / name)
        EXTRA_TEST_MODELS[name] = models_dir / subfolder / name
    return dict(EXTRA_TEST_MODELS)


def build_test_checkpoints(models_dir: Path, workflows: list[Path]) -> dict[str, Path]:
    """Random-weight checkpoints in the official key layout (the pack's loader recognises a file by its keys, so
    these go through the real loading path): the small test depth network, plus each helper network (no model card,
    e.g. the boost merge net) that a workflow names. Built once per family source and kept in CHECKPOINT_CACHE."""
    import hashlib
    import inspect

    import torch

    known = _known_models()
    referenced = _referenced_strings(workflows)
    models_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for family, module, entry in known:
        KNOWN_FILE_FAMILIES[entry.filename] = family
        is_depth_network = getattr(entry, "card", None) is not None
        if not is_depth_network:
            HELPER_NETWORK_FILES.add(entry.filename)
        # Large networks a workflow names run as a small network of their own architecture (same loading and
        # camera path, a fraction of the compute), e.g. Depth Pro
        small = SMALL_TEST_NETWORKS.get(entry.filename) if entry.filename in referenced else None
        if small is None and not ((is_depth_network and entry.filename == TEST_DEPTH_NETWORK) or
                (entry.filename in referenced and (not is_depth_network or entry.filename in TEST_VIDEO_NETWORKS))):
            continue
        source = inspect.getsource(module).encode() + repr(entry.config).encode()
        if small is not None:
            source += inspect.getsource(small_networks).encode()
        cached = CHECKPOINT_CACHE / hashlib.sha256(source).hexdigest()[:16] / entry.filename
        if not cached.is_file():
            torch.manual_seed(0)
            network = small() if small is not None else module.build(entry.config)
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(cached.name + ".partial")
            # The official releases are plain state dicts saved with torch.save (.pth/.pt) or safetensors
            if cached.suffix == ".safetensors":
                from safetensors.torch import save_file
                save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(partial))
            else:
                torch.save(network.state_dict(), partial)
            os.replace(partial, cached)
        path = models_dir / entry.filename
        path.symlink_to(cached)
        built[entry.filename] = path
        CHECKPOINT_FAMILIES[entry.filename] = family
        if is_depth_network:
            DEPTH_NETWORK_FILES.add(entry.filename)
    built.update(build_test_marigold_folders(models_dir, referenced))
    return built


def build_test_marigold_folders(models_dir: Path, referenced: set[str]) -> dict[str, Path]:
    """A tiny random Marigold pipeline in the official diffusers folder layout under each Marigold folder name a
    workflow chooses, so Marigold workflows run Marigold (through diffusers) and not a stand-in network."""
    import importlib.util

    from depth_core.models import marigold

    spec = importlib.util.spec_from_file_location("marigold_tiny", ROOT / "tests" / "marigold_tiny.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    built = {}
    for name in sorted(referenced & set(marigold.known_folders())):
        built[name] = tiny.build_tiny_marigold(models_dir / name)
        CHECKPOINT_FAMILIES[name] = "marigold"
    return built


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
        skip_or_fail(NO_COMFYUI_REASON)
    base_dir = tmp_path_factory.mktemp("comfyui")
    for folder in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base_dir / folder).mkdir()
    (base_dir / "custom_nodes" / PACK_FOLDER).symlink_to(ROOT, target_is_directory=True)
    for extra in filter(None, os.environ.get("DEPTHTOOLKIT_EXTRA_CUSTOM_NODES", "").split(os.pathsep)):
        extra_path = Path(extra).resolve()
        (base_dir / "custom_nodes" / extra_path.name).symlink_to(extra_path, target_is_directory=extra_path.is_dir())
    checkpoints = build_test_checkpoints(base_dir / "models" / "depth", workflow_paths())
    install_shared_models(base_dir / "models")

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


def small_test_panorama(height: int = 64):
    """A 2:1 picture that wraps around like a 360° panorama (a real photo and its mirror image side by side, so the
    left and right edges meet), uint8 RGB."""
    import numpy as np

    half = small_test_photo(height, height)
    return np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))


@pytest.fixture(scope="session")
def uploaded_images(comfy_server) -> dict[str, str]:
    """Small photos uploaded to the server's input folder, by role: "photo" (RGB), "second" (another RGB photo of
    the same size, e.g. a stereo right view), "mask" (a PNG with alpha, for LoadImageMask-style inputs) and
    "panorama" (2:1, wrapping around; for loaders whose workflow file name mentions a panorama), and "video" (a short
    clip in the input folder, for core Load Video)."""
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
        "panorama": comfy_server.upload_image("depthtoolkit_test_panorama.png", png_bytes(small_test_panorama())),
        "video": small_test_clip(comfy_server.input_dir / "depthtoolkit_test_clip.mp4"),
    }


def small_test_clip(path: Path) -> str:
    """A 20-frame 64x48 pan over a real photo, written into the server's input folder; returns its name."""
    from video_clips import pan_frames, write_clip  # tests/ is on sys.path (tests/conftest.py)

    write_clip(path, pan_frames(20, 48, 64), fps=12)
    return path.name


SMALL_NETWORK_SIZE = 0 if os.environ.get("DEPTHTOOLKIT_E2E_NATIVE") else 126
"""Network input size the end-to-end runs use instead of a workflow's own (0: keep the workflow's)."""
FAST_SETTINGS = {"frames": 6, "supersampling": 1}
"""Pack node INT inputs lowered to at most these values in end-to-end runs: a wiring test needs a few video
frames, not a 90-frame render, on a 2-core CPU."""
IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image", "LoadImageOutput": "image"}
VIDEO_LOADERS = {"LoadVideo": "file"}


def prepare_prompt(prompt: dict, object_info: dict, images: dict[str, str]) -> list[tuple[str, str, object]]:
    """Point a converted workflow at the test inputs, in place: its image loaders at the uploaded test photos
    (the first loader gets "photo", the next ones "second"; mask loaders the RGBA picture) and every model choice at
    the test-built checkpoint of the same family. Returns the changes as (node id, input name, new value)."""
    changes = []
    loaders_seen = 0
    for node_id, node in sorted(prompt.items(), key=lambda item: int(item[0])):
        inputs = node["inputs"]
        video_field = VIDEO_LOADERS.get(node["class_type"])
        if video_field and isinstance(inputs.get(video_field), str) and "video" in images:
            changes.append((node_id, video_field, images["video"]))
            inputs[video_field] = images["video"]
            continue
        field_name = IMAGE_LOADERS.get(node["class_type"])
        if field_name and isinstance(inputs.get(field_name), str):
            role = "mask" if node["class_type"] == "LoadImageMask" else ("photo" if loaders_seen == 0 else "second")
            if "panorama" in inputs[field_name] and "panorama" in images:
                role = "panorama"
            loaders_seen += 1
            changes.append((node_id, field_name, images[role]))
            inputs[field_name] = images[role]
            continue
        info = object_info.get(node["class_type"], {})
        specs = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        for name, value in list(inputs.items()):
            spec = specs.get(name)
            if not spec or not isinstance(value, str):
                continue
            options = spec[0] if isinstance(spec[0], list) else (spec[1].get("options") if len(spec) > 1 else None)
            extra = sorted(set(options or []) & set(EXTRA_TEST_MODELS))
            if extra:  # a choice of networks that includes a shared real one: use it
                if value not in extra:
                    changes.append((node_id, name, extra[0]))
                    inputs[name] = extra[0]
                continue
            if not options or not (set(options) & (set(KNOWN_FILE_FAMILIES) | set(CHECKPOINT_FAMILIES))):
                continue  # not a model choice
            replacement = checkpoint_for_test_run(value)
            if replacement == value:
                continue
            if replacement is None:
                pytest.skip(f"node {node_id} ({node['class_type']}) needs model {value!r} and no test checkpoint "
                            f"could be built for it (its family module is missing)")
            changes.append((node_id, name, replacement))
            inputs[name] = replacement
        if node["class_type"].startswith(NODE_PREFIX):
            for name, fast in FAST_SETTINGS.items():
                if name in specs and specs[name][0] == "INT" and isinstance(inputs.get(name), int) and inputs[name] > fast:
                    changes.append((node_id, name, fast))
                    inputs[name] = fast
        if SMALL_NETWORK_SIZE and "custom" in str(specs.get("resolution", "")) and "custom_resolution" in specs:
            # The network's native size (518 px) costs tens of seconds per image on a shared 2-core CPU with no
            # benefit for a wiring test: run the network small instead
            changes += [(node_id, "resolution", "custom"), (node_id, "custom_resolution", SMALL_NETWORK_SIZE)]
            inputs["resolution"] = "custom"
            inputs["custom_resolution"] = SMALL_NETWORK_SIZE
    return changes


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi"}
MESH_SUFFIXES = {".glb", ".gltf", ".obj", ".ply", ".stl"}


def file_refs(value) -> list[dict]:
    """Every {filename, subfolder, type} reference inside a ui value, however nested (e.g. {"left": ref})."""
    if isinstance(value, dict):
        if isinstance(value.get("filename"), str):
            return [value]
        return [ref for item in value.values() for ref in file_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in file_refs(item)]
    return []


def output_files(history_outputs: dict) -> dict[str, list[dict]]:
    """The file references each output node reported, by node id."""
    return {node_id: file_refs(ui) for node_id, ui in history_outputs.items() if file_refs(ui)}


def decode_output(path: Path) -> str:
    """Open a produced file with a real decoder; returns a short description; raises if it does not decode."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            return f"{image.format} {image.size[0]}x{image.size[1]} {image.mode}"
    if suffix in VIDEO_SUFFIXES:
        import av

        with av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames > 0, f"{path.name}: no video frame decodes"
        return f"video {frames} frames"
    if suffix in MESH_SUFFIXES:
        import trimesh

        loaded = trimesh.load(str(path))
        faces = sum(len(g.faces) for g in loaded.geometry.values()) if hasattr(loaded, "geometry") else len(loaded.faces)
        assert faces > 0, f"{path.name}: mesh has no faces"
        return f"mesh {faces} faces"
    assert path.stat().st_size > 0, f"{path.name} is empty"
    return f"{path.stat().st_size} bytes"


def check_history(server: ComfyServer, prompt: dict, entry: dict) -> dict[str, list[str]]:
    """Assert a finished prompt succeeded and every output node's files exist and decode; returns what was found."""
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        errors = [message for message in status.get("messages", []) if message[0] == "execution_error"]
        detail = json.dumps(errors[0][1], indent=1)[:4000] if errors else json.dumps(status)[:2000]
        raise AssertionError(f"prompt failed: {detail}\n--- server log ---\n{server.log_tail(4000)}")
    object_info = server.object_info()
    output_nodes = [node_id for node_id, node in prompt.items()
                    if object_info.get(node["class_type"], {}).get("output_node")]
    outputs = entry.get("outputs", {})
    files = output_files(outputs)
    found: dict[str, list[str]] = {}
    for node_id in output_nodes:
        class_type = prompt[node_id]["class_type"]
        assert node_id in outputs, (
            f"output node {node_id} ({class_type}) reported no ui output: whatever it saves is invisible in the "
            f"editor and in /history (return io.NodeOutput(..., ui=...) with the saved files); nodes that did "
            f"report: {list(outputs)}")
        for ref in files.get(node_id, []):
            base = {"output": server.output_dir, "temp": server.base_dir / "temp", "input": server.input_dir}[
                ref.get("type", "output")]
            path = base / ref.get("subfolder", "") / ref["filename"]
            assert path.is_file(), f"node {node_id} ({class_type}) reported {path}, which does not exist"
            found.setdefault(node_id, []).append(f"{ref['filename']}: {decode_output(path)}")
    assert found or not output_nodes, f"no output node produced a file: {json.dumps(outputs)[:2000]}"
    return found


def load_workflow(path: Path) -> dict:
    return json.loads(path.read_text())


CHROMIUM = os.environ.get("DEPTHTOOLKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,  # else the template browser opens over the canvas on the first visit
    "Comfy.Minimap.Visible": False,
}


@pytest.fixture(scope="session")
def browser(comfy_server):
    """Headless Debian Chromium driven by Playwright (never Playwright's own browser download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (pip install playwright; its browser download is not "
                    "needed: the tests drive Debian's chromium)")
    if not Path(CHROMIUM).is_file():
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DEPTHTOOLKIT_CHROMIUM)")
    for key, value in FRONTEND_SETTINGS.items():
        comfy_server.request(f"/settings/{key}", json.dumps(value).encode(), {"Content-Type": "application/json"})
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("DEPTHTOOLKIT_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class EditorPage:
    """The ComfyUI editor in a browser tab, with what the tests do in it."""

    def __init__(self, page, server: ComfyServer):
        self.page = page
        self.server = server
        self.console_errors: list[str] = []
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        page.goto(server.url + "/")
        page.wait_for_function("() => window.app && window.app.graph && window.app.vueAppReady === true",
                               timeout=90_000)
        page.evaluate("""() => {
            window.__depthtoolkitEvents = [];
            const api = window.comfyAPI.api.api;
            for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
                api.addEventListener(type, (event) => window.__depthtoolkitEvents.push(
                    {type, prompt_id: event.detail?.prompt_id, detail: JSON.stringify(event.detail).slice(0, 3000)}));
            }
        }""")

    def load(self, workflow: dict) -> None:
        self.page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
        self.page.wait_for_timeout(300)

    def node_report(self) -> list[dict]:
        return self.page.evaluate("""() => window.app.graph._nodes.map((node) => ({
            id: node.id, type: node.type,
            registered: Boolean(LiteGraph.registered_node_types[node.type]),
            has_errors: Boolean(node.has_errors),
        }))""")

    def api_prompt(self) -> dict:
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")

    def set_widget(self, node_id, name: str, value) -> None:
        found = self.page.evaluate("""([id, name, value]) => {
            const node = window.app.graph.getNodeById(Number(id));
            const widget = node?.widgets?.find((w) => w.name === name);
            if (!widget) return false;
            widget.value = value;
            widget.callback?.(value);
            return true;
        }""", [node_id, name, value])
        assert found, f"node {node_id} has no widget {name!r} in the editor"

    def queue_and_wait(self, timeout_s: float = 300) -> dict:
        """Queue the loaded graph as the Run button does (the editor's graphToPrompt, then its api client) and wait
        for the end of that prompt; returns the final event ({type, prompt_id, detail})."""
        queued = self.page.evaluate("""async () => {
            const prompt = await window.app.graphToPrompt();
            try {
                const answer = await window.comfyAPI.api.api.queuePrompt(0, prompt);
                return {prompt_id: answer.prompt_id, node_errors: answer.node_errors};
            } catch (error) {
                return {error: String(error?.message ?? error), detail: JSON.stringify(error?.response ?? null)};
            }
        }""")
        assert "error" not in queued, f"the server refused the prompt queued from the editor: {queued}"
        prompt_id = queued["prompt_id"]
        self.page.wait_for_function(
            "(id) => window.__depthtoolkitEvents.some((event) => event.prompt_id === id)", arg=prompt_id,
            timeout=timeout_s * 1000)
        return self.page.evaluate(
            "(id) => window.__depthtoolkitEvents.find((event) => event.prompt_id === id)", prompt_id)

    def open_dialogs(self) -> list[str]:
        return self.page.evaluate("""() => Array.from(document.querySelectorAll('[role=dialog]'))
            .map((dialog) => dialog.innerText.slice(0, 500))""")

    def dismiss_dialogs(self) -> list[str]:
        """Close the editor's dialogs (an error report stays open over the canvas); returns their text."""
        texts = self.open_dialogs()
        for _ in range(4):
            if not self.open_dialogs():
                break
            # The template browser ignores Escape; every dialog has a close button (an "x" icon)
            self.page.evaluate("""() => document.querySelectorAll('[role=dialog] button').forEach((button) => {
                if (button.matches('.p-dialog-close-button, [aria-label=Close]') || button.querySelector('.pi-times'))
                    button.click();
            })""")
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)
        assert not self.open_dialogs(), f"could not close the editor's dialogs: {self.open_dialogs()}"
        return texts

    def fit_view(self) -> None:
        """Fit the whole graph in the window. The canvas learns a node's bounds when it draws the node, so it draws
        once first: nodes added since the last frame would otherwise count as empty, and the view would zoom in on
        nothing (the previews then sit off screen and the editor hides them)."""
        self.page.evaluate("""async () => {
            const canvas = window.app.canvas;
            canvas.draw(true, true);
            await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
            canvas.setDirty(true, true);
        }""")
        self.page.wait_for_timeout(300)


@pytest.fixture(scope="session")
def editor(browser, comfy_server) -> EditorPage:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    yield EditorPage(page, comfy_server)
    page.close()
