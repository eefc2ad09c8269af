"""The UI-to-API workflow converter on its own (no server): widget naming, seeds, upload buttons, links through
editor-only nodes, bypassed and muted nodes, and clear errors."""
from __future__ import annotations

import pytest

from ui_to_api import ConversionError, convert, map_widget_values

OBJECT_INFO = {
    "LoadImage": {
        "input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
    },
    "KSamplerLike": {
        "input": {
            "required": {
                "model": ["MODEL", {}],
                "seed": ["INT", {"default": 0, "control_after_generate": True}],
                "steps": ["INT", {"default": 20}],
                "sampler": ["COMBO", {"options": ["euler", "dpm"]}],
                "denoise": ["FLOAT", {"default": 1.0}],
            },
            "optional": {"strength": ["FLOAT", {"default": 0.5}], "latent": ["LATENT", {}]},
        },
        "input_order": {"required": ["model", "seed", "steps", "sampler", "denoise"], "optional": ["strength", "latent"]},
    },
    "Filter": {
        "input": {"required": {"images": ["IMAGE", {}], "amount": ["FLOAT", {"default": 1.0}],
                               "forced": ["INT", {"forceInput": True}]}},
        "input_order": {"required": ["images", "amount", "forced"]},
    },
    "SaveImage": {
        "input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
        "input_order": {"required": ["images", "filename_prefix"]},
    },
}


def node(node_id, node_type, widgets=(), inputs=(), mode=0):
    return {"id": node_id, "type": node_type, "mode": mode, "widgets_values": list(widgets),
            "inputs": [{"name": name, "type": kind, "link": link} for name, kind, link in inputs]}


def test_seed_control_value_is_skipped_and_optional_widgets_follow():
    named = map_widget_values("KSamplerLike", OBJECT_INFO["KSamplerLike"], [7, "randomize", 30, "dpm", 0.6, 0.25])
    assert named == {"seed": 7, "steps": 30, "sampler": "dpm", "denoise": 0.6, "strength": 0.25}


def test_seed_without_saved_control_value_and_a_widget_added_later_takes_its_default():
    """A workflow saved before `strength` existed: the editor fills the new widget with its default, and so do we
    (test_frontend.py checks the editor's prompt equals ours for every shipped workflow)."""
    named = map_widget_values("KSamplerLike", OBJECT_INFO["KSamplerLike"], [7, 30, "euler", 1.0])
    assert named == {"seed": 7, "steps": 30, "sampler": "euler", "denoise": 1.0, "strength": 0.5}


def test_a_missing_combo_without_default_takes_its_first_option():
    named = map_widget_values("KSamplerLike", OBJECT_INFO["KSamplerLike"], [7, 30])
    assert named == {"seed": 7, "steps": 30, "sampler": "euler", "denoise": 1.0, "strength": 0.5}


def test_upload_button_value_is_skipped():
    assert map_widget_values("LoadImage", OBJECT_INFO["LoadImage"], ["b.png", "image"]) == {"image": "b.png"}
    assert map_widget_values("LoadImage", OBJECT_INFO["LoadImage"], ["b.png"]) == {"image": "b.png"}


def test_too_many_widget_values_is_a_clear_error():
    with pytest.raises(ConversionError, match="widget values"):
        map_widget_values("Filter", OBJECT_INFO["Filter"], [0.5, 3, "extra"])


def test_links_resolve_through_reroute_primitive_and_bypass():
    workflow = {
        "nodes": [
            node(1, "LoadImage", ["a.png", "image"]),
            node(2, "Reroute", inputs=[("", "*", 1)]),
            node(3, "Filter", [0.3], inputs=[("images", "IMAGE", 2), ("forced", "INT", 3)], mode=4),  # bypassed
            node(4, "PrimitiveNode", [12]),
            node(5, "Filter", [0.7], inputs=[("images", "IMAGE", 4), ("forced", "INT", 5)]),
            node(6, "SaveImage", ["depth"], inputs=[("images", "IMAGE", 6)]),
            node(7, "Note", ["a note"]),
            node(8, "SaveImage", ["muted"], inputs=[("images", "IMAGE", 7)], mode=2),
        ],
        "links": [
            [1, 1, 0, 2, 0, "IMAGE"],
            [2, 2, 0, 3, 0, "IMAGE"],
            [3, 4, 0, 3, 2, "INT"],
            [4, 3, 0, 5, 0, "IMAGE"],
            [5, 4, 0, 5, 2, "INT"],
            [6, 5, 0, 6, 0, "IMAGE"],
            [7, 5, 0, 8, 0, "IMAGE"],
        ],
    }
    prompt = convert(workflow, OBJECT_INFO)
    assert set(prompt) == {"1", "5", "6"}
    assert prompt["1"]["inputs"] == {"image": "a.png"}
    # The bypassed filter passes the reroute's source straight through; the primitive becomes a plain value
    assert prompt["5"]["inputs"] == {"amount": 0.7, "images": ["1", 0], "forced": 12}
    assert prompt["6"] == {"class_type": "SaveImage", "inputs": {"filename_prefix": "depth", "images": ["5", 0]},
                           "_meta": {"title": "SaveImage"}}


def test_unknown_node_type_names_the_type():
    with pytest.raises(ConversionError, match="DepthToolkit.Missing"):
        convert({"nodes": [node(1, "DepthToolkit.Missing")], "links": []}, OBJECT_INFO)


def test_dangling_link_is_reported():
    workflow = {"nodes": [node(6, "SaveImage", ["x"], inputs=[("images", "IMAGE", 9)])], "links": []}
    with pytest.raises(ConversionError, match="link 9"):
        convert(workflow, OBJECT_INFO)
