"""What a real ComfyUI server says about the pack's nodes: all of them load, with ids, names and tooltips."""
from __future__ import annotations

import re

from harness import NODE_PREFIX, PACK_FOLDER, ROOT

SCHEMA_NODE_ID = re.compile(r"""node_id\s*=\s*["']([^"']+)["']""")


def declared_node_ids() -> set[str]:
    """Node ids written in the pack's node modules, read from the source so a module that fails to import (and
    so registers nothing) is still expected."""
    ids = set()
    for path in sorted((ROOT / "nodes").glob("*.py")):
        if not path.name.startswith("_"):
            ids.update(SCHEMA_NODE_ID.findall(path.read_text()))
    return ids


def pack_nodes(object_info: dict) -> dict[str, dict]:
    return {name: info for name, info in object_info.items()
            if info.get("python_module", "").split(".")[-1] == PACK_FOLDER or name.startswith(NODE_PREFIX)}


def inputs_of(info: dict) -> dict[str, list]:
    inputs = info.get("input", {})
    return {**inputs.get("required", {}), **inputs.get("optional", {})}


def test_every_declared_node_is_served(comfy_server):
    declared = declared_node_ids()
    served = set(pack_nodes(comfy_server.object_info()))
    assert declared, "no node_id=... found in nodes/*.py"
    missing = sorted(declared - served)
    assert not missing, (f"nodes declared in nodes/*.py but absent from /object_info (import error?): {missing}\n"
                         f"{comfy_server.log_tail()}")


def test_node_ids_are_prefixed_and_described(comfy_server):
    nodes = pack_nodes(comfy_server.object_info())
    assert nodes
    problems = []
    for name, info in nodes.items():
        if not name.startswith(NODE_PREFIX):
            problems.append(f"{name}: id does not start with {NODE_PREFIX}")
        if info.get("python_module", "").split(".")[-1] != PACK_FOLDER:
            problems.append(f"{name}: served by {info.get('python_module')}, not by the pack")
        if not info.get("display_name") or info["display_name"] == name:
            problems.append(f"{name}: no display name")
        if not (info.get("description") or "").strip():
            problems.append(f"{name}: no description")
        if not info.get("category", "").startswith("Depth Toolkit"):
            problems.append(f"{name}: category {info.get('category')!r} is not under 'Depth Toolkit'")
    assert not problems, "\n".join(problems)


def test_every_input_and_output_has_a_tooltip(comfy_server):
    problems = []
    for name, info in pack_nodes(comfy_server.object_info()).items():
        for input_name, spec in inputs_of(info).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not str(options.get("tooltip") or "").strip():
                problems.append(f"{name}: input {input_name!r} has no tooltip")
        output_names = info.get("output_name", [])
        tooltips = info.get("output_tooltips") or []
        for index, output_name in enumerate(output_names):
            tooltip = tooltips[index] if index < len(tooltips) else None
            if not str(tooltip or "").strip():
                problems.append(f"{name}: output {output_name!r} has no tooltip")
    assert not problems, "\n".join(problems)


def test_web_extension_is_served(comfy_server):
    """The frontend loads every .js file under web/ from /extensions/<pack folder>/."""
    served = set(comfy_server.get_json("/extensions"))
    expected = {f"/extensions/{PACK_FOLDER}/{path.relative_to(ROOT / 'web').as_posix()}"
                for path in (ROOT / "web").rglob("*.js")}
    assert expected, "web/ has no .js file"
    assert expected <= served, f"not served: {sorted(expected - served)}"
    for url in expected:
        body = comfy_server.request(url).decode()
        assert "registerExtension" in body or "export " in body
