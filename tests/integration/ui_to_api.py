"""Convert a UI-format ComfyUI workflow (what the editor saves) into the API-format prompt that POST /prompt takes.

The UI format stores each node's widget values as a positional list (`widgets_values`) and its connections as
links; the API format wants named inputs. The names and their order come from the server's `/object_info`, so this
converter needs no browser and follows whatever nodes the server has. It follows the editor's rules:
- every widget input (INT, FLOAT, STRING, BOOLEAN, COMBO, not `forceInput`) takes one value, in the node's input
  order, even when a link feeds it (the link then wins);
- an INT seed widget (`control_after_generate`, or named seed / noise_seed) is followed by the value of its
  "control after generate" widget, which the API prompt does not carry;
- a COMBO with an upload button (`image_upload`, `video_upload`, ...) is followed by the button's value;
- editor-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) vanish: links through a Reroute, a bypassed node
  (mode 4) or from a PrimitiveNode are resolved to their source; muted nodes (mode 2) are left out.
"""
from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "mesh_upload",
                "file_upload")
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_MUTED, MODE_BYPASSED = 2, 4


class ConversionError(ValueError):
    """The workflow cannot be turned into an API prompt (unknown node type, broken link, wrong widget count)."""


def _input_specs(info: dict) -> list[tuple[str, Any, dict]]:
    """(name, type, options) of a node's required then optional inputs, in the order the editor shows them."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {section: list(inputs.get(section, {})) for section in ("required", "optional")}
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = inputs.get(section, {}).get(name)
            if spec is None:
                continue
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, kind, options))
    return specs


def is_widget(kind: Any, options: dict) -> bool:
    if options.get("forceInput") or options.get("socketless") is False:
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def widget_names(info: dict) -> list[str]:
    return [name for name, kind, options in _input_specs(info) if is_widget(kind, options)]


def combo_options(kind: Any, options: dict) -> list | None:
    """The choices of a COMBO input in either spelling (old: the list itself; new: "COMBO" with options)."""
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return options.get("options", [])
    return None


def widget_default(kind: Any, options: dict) -> Any:
    """The value the editor gives a widget the workflow has no value for: its default, else a combo's first option."""
    if "default" in options:
        return options["default"]
    choices = combo_options(kind, options)
    return choices[0] if choices else None


def _has_control_widget(name: str, kind: Any, options: dict) -> bool:
    if options.get("control_after_generate"):
        return True
    return kind == "INT" and name in ("seed", "noise_seed")


def map_widget_values(node_type: str, info: dict, values: list | dict) -> dict[str, Any]:
    """Name each positional widget value of a node (see the module docstring for the rules)."""
    if isinstance(values, dict):  # some nodes save their widgets by name already
        return dict(values)
    named: dict[str, Any] = {}
    position = 0
    for name, kind, options in _input_specs(info):
        if not is_widget(kind, options):
            continue
        if position >= len(values):  # a widget added after the workflow was saved: the editor gives its default
            if (default := widget_default(kind, options)) is not None:
                named[name] = default
            continue
        named[name] = values[position]
        position += 1
        if _has_control_widget(name, kind, options) and position < len(values) and values[position] in CONTROL_VALUES:
            position += 1
        if any(options.get(flag) for flag in UPLOAD_FLAGS) and position < len(values) and isinstance(values[position], str):
            # The upload button's own value ("image"), saved after the combo, unless no more values follow
            remaining_widgets = sum(1 for n, k, o in _input_specs(info) if is_widget(k, o)) - len(named)
            if len(values) - position > remaining_widgets:
                position += 1
    if position < len(values) and not all(v in CONTROL_VALUES or v is None for v in values[position:]):
        raise ConversionError(
            f"node type {node_type}: the workflow has {len(values)} widget values but the server's node takes "
            f"{position} ({', '.join(named)}); left over: {values[position:]!r}. Re-save the workflow in the editor "
            f"or fix its widgets_values."
        )
    return named


def convert(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API prompt for a UI workflow: {node id: {"class_type", "inputs", "_meta": {"title"}}}."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise ConversionError("workflows with subgraphs are not supported by this converter; flatten the subgraph")
    nodes = {int(node["id"]): node for node in workflow.get("nodes", [])}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]), link.get("type"))
        else:
            link_id, from_node, from_slot, _to_node, _to_slot, link_type = link[:6]
            links[int(link_id)] = (int(from_node), int(from_slot), link_type)

    def source(link_id: int, seen: frozenset = frozenset()) -> tuple[int, int] | tuple[str, Any] | None:
        """Where a link's value really comes from: (node id, output slot), ("value", v) from a PrimitiveNode, or
        None when it comes from a muted node (the input is then left unset)."""
        if link_id in seen:
            raise ConversionError(f"link {link_id} loops through reroutes or bypassed nodes")
        if link_id not in links:
            raise ConversionError(f"link {link_id} is used by a node but missing from the workflow's links")
        from_id, from_slot, link_type = links[link_id]
        origin = nodes.get(from_id)
        if origin is None:
            raise ConversionError(f"link {link_id} comes from node {from_id}, which the workflow does not have")
        if origin["type"] == "Reroute":
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else source(upstream, seen | {link_id})
        if origin["type"] == "PrimitiveNode":
            return ("value", (origin.get("widgets_values") or [None])[0])
        if origin.get("mode") == MODE_MUTED:
            return None
        if origin.get("mode") == MODE_BYPASSED:
            # A bypassed node passes through its first input of the same type as the output that was used
            for node_input in origin.get("inputs", []):
                if node_input.get("link") is not None and node_input.get("type") == link_type:
                    return source(node_input["link"], seen | {link_id})
            return None
        return (from_id, from_slot)

    prompt: dict[str, dict] = {}
    for node_id, node in sorted(nodes.items()):
        node_type = node["type"]
        if node_type in FRONTEND_ONLY or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        info = object_info.get(node_type)
        if info is None:
            raise ConversionError(f"node {node_id} has type {node_type!r}, which the server does not know "
                                  f"(missing custom node or a failed import: check the server log)")
        inputs = map_widget_values(node_type, info, node.get("widgets_values") or [])
        for node_input in node.get("inputs", []):
            link_id = node_input.get("link")
            if link_id is None:
                continue
            origin = source(int(link_id))
            name = node_input["name"]
            if origin is None:
                inputs.pop(name, None)
            elif origin[0] == "value":
                inputs[name] = origin[1]
            else:
                inputs[name] = [str(origin[0]), origin[1]]
        prompt[str(node_id)] = {
            "class_type": node_type,
            "inputs": inputs,
            "_meta": {"title": node.get("title") or info.get("display_name") or node_type},
        }
    return prompt
