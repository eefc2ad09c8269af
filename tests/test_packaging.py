"""Packaging facts that ComfyUI Manager and the Comfy registry rely on."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_names(lines: list[str]) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.strip().startswith("#")]


def test_requirements_never_pin_torch_and_match_pyproject():
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    names = requirement_names(requirements)
    assert not {"torch", "torchvision", "torchaudio"} & set(names), "ComfyUI owns torch: never list it"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requirement_names(project["dependencies"]) == names
    stripped = [line.split("#", 1)[0].strip() for line in requirements if line.strip() and not line.startswith("#")]
    assert project["dependencies"] == stripped


def test_pyproject_has_the_registry_fields():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    assert re.fullmatch(r"[a-z][a-z0-9_.-]{0,99}", project["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"] == {"file": "LICENSE"} and (ROOT / "LICENSE").is_file()
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_layout_has_no_install_script_and_exports_web_directory():
    assert not (ROOT / "install.py").exists()
    module = ast.parse((ROOT / "__init__.py").read_text())
    assigned = {target.id for node in module.body if isinstance(node, ast.Assign) for target in node.targets}
    functions = {node.name for node in module.body if isinstance(node, ast.AsyncFunctionDef)}
    assert "WEB_DIRECTORY" in assigned and "comfy_entrypoint" in functions
    assert "NODE_CLASS_MAPPINGS" not in assigned, "a module with NODE_CLASS_MAPPINGS skips comfy_entrypoint"


def test_depth_core_imports_nothing_from_comfyui():
    comfy_modules = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution"}
    offenders = []
    for path in (ROOT / "depth_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name.split(".")[0] in comfy_modules]
    assert offenders == []


def test_no_code_is_fetched_or_installed_at_run_time():
    for path in [*ROOT.glob("depth_core/**/*.py"), *ROOT.glob("nodes/*.py")]:
        text = path.read_text()
        assert "torch.hub.load(" not in text, path
        imported = {alias.name for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import)
                    for alias in node.names}
        assert not {"subprocess", "pip"} & imported, f"{path}: no package installs at run time"


def fake_wheel(folder: Path, distribution: str, module: str, version: str) -> Path:
    """A minimal wheel standing in for a distribution a user's ComfyUI already has (no network, no build)."""
    import zipfile

    stem = f"{distribution.replace('-', '_')}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", f"__version__ = '{version}'\nSTAND_IN = '{distribution}'\n")
        wheel.writestr(f"{stem}.dist-info/METADATA",
                       f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        wheel.writestr(f"{stem}.dist-info/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{stem}.dist-info/RECORD", "")
    return path


ONNX_RUNTIMES = {"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-rocm",
                 "onnxruntime-silicon", "onnxruntime-openvino"}
OPENCV_DISTRIBUTIONS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python",
                        "opencv-contrib-python-headless"}


def test_requirements_leave_a_gpu_onnxruntime_alone(tmp_path):
    """`pip install -r requirements.txt` (what ComfyUI Manager runs) in an environment that has onnxruntime-gpu,
    torch and opencv-contrib-python: pip's own resolver plans the install, and nothing it plans replaces the GPU
    runtime or fills the onnxruntime folder again; the one OpenCV build it may add is the superset build."""
    import json
    import subprocess
    import sys
    import venv

    environment = tmp_path / "comfyui-env"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    wheels = [fake_wheel(tmp_path, "onnxruntime-gpu", "onnxruntime", "1.20.0"),
              fake_wheel(tmp_path, "torch", "torch", "2.9.0"), fake_wheel(tmp_path, "torchvision", "torchvision", "0.24.0"),
              fake_wheel(tmp_path, "opencv-contrib-python", "cv2", "4.10.0.84")]
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "--no-index", "--no-deps", "-q", *map(str, wheels)], check=True)
    report = tmp_path / "plan.json"
    subprocess.run([*pip, "install", "--dry-run", "-q", "--report", str(report), "-r", str(ROOT / "requirements.txt")],
                   check=True, timeout=300, capture_output=True)
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "rembg" in planned and "timm" in planned  # the plan is real: the pack's own requirements are in it
    assert not planned & ONNX_RUNTIMES, f"would install {planned & ONNX_RUNTIMES} over onnxruntime-gpu"
    assert not planned & {"torch", "torchvision"}
    assert planned & OPENCV_DISTRIBUTIONS <= {"opencv-contrib-python-headless"}
    stand_in = subprocess.run([str(python), "-c", "import onnxruntime; print(onnxruntime.STAND_IN)"],
                              capture_output=True, text=True, check=True)
    assert stand_in.stdout.strip() == "onnxruntime-gpu"
