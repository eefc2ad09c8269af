"""The web extension (web/) in the real editor: after a run, dragging a histogram handle re-draws the clip preview
and sets the node's widgets; the stereo preview alternates the eyes (wiggle) and composites a red/cyan anaglyph.
Checked on screenshots of the previews."""
from __future__ import annotations

import io
import uuid

import numpy as np
import pytest

from harness import is_widget_spec

CLIP_NODE = "DepthToolkit.ClipRenormalize"
STEREO_NODES = ["DepthToolkit.StereoSBS", "DepthToolkit.Anaglyph"]


def socket_inputs(info: dict) -> list[tuple[str, str]]:
    """(name, type) of the sockets to feed: every required one, and the optional depth inputs (a node such as
    Anaglyph takes either a right view or a depth; the photo as its own depth gives a real parallax)."""
    sockets = []
    for section in ("required", "optional"):
        inputs = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(inputs)):
            kind = inputs[name][0]
            if is_widget_spec(inputs[name]):
                continue
            if section == "required" or "DEPTHTOOLKIT_DEPTH" in str(kind).split(","):
                sockets.append((name, kind))
    return sockets


def build_graph(editor, comfy_server, image_name: str, node_types: list[str]) -> dict[str, int]:
    """A fresh graph: one LoadImage of the test photo feeding every IMAGE-compatible socket of each node type
    (a photo is a valid depth IMAGE too). Returns the node id of each type."""
    object_info = comfy_server.object_info()
    plan = {}
    for node_type in node_types:
        sockets = socket_inputs(object_info[node_type])
        unfed = [(name, kind) for name, kind in sockets if "IMAGE" not in str(kind).split(",")]
        if unfed:
            pytest.skip(f"{node_type} needs inputs a photo cannot feed: {unfed}")
        plan[node_type] = [name for name, _ in sockets]
    return editor.page.evaluate("""([imageName, plan]) => {
        const graph = window.app.graph;
        graph.clear();
        const load = LiteGraph.createNode("LoadImage");
        load.pos = [40, 40];
        graph.add(load);
        const imageWidget = load.widgets.find((w) => w.name === "image");
        imageWidget.value = imageName;
        imageWidget.callback?.(imageName);
        const ids = {};
        let x = 400;
        for (const [type, sockets] of Object.entries(plan)) {
            const node = LiteGraph.createNode(type);
            node.pos = [x, 40];
            node.size = [360, Math.max(node.size[1], 560)];
            x += 400;
            graph.add(node);
            for (const name of sockets) load.connect(0, node, node.findInputSlot(name));
            ids[type] = node.id;
            if (!node.constructor.nodeData?.output_node) {
                // Only output nodes make ComfyUI run a prompt: show the node's first picture
                const slot = node.outputs.findIndex((output) => output.type === "IMAGE");
                const preview = LiteGraph.createNode("PreviewImage");
                preview.pos = [x - 400, 660];
                graph.add(preview);
                node.connect(slot, preview, 0);
            }
        }
        window.app.canvas.setDirty(true, true);
        return ids;
    }""", [image_name, plan])


def fresh_photo(comfy_server) -> str:
    """The test photo uploaded under a new name: a prompt ComfyUI has not cached, so every node runs and reports."""
    from harness import png_bytes, small_test_photo

    return comfy_server.upload_image(f"depthtoolkit_web_{uuid.uuid4().hex[:8]}.png", png_bytes(small_test_photo()))


def show_in_viewport(editor, element) -> None:
    """Fit the graph in the window now that the previews have their size, and check the element is on screen."""
    editor.fit_view()
    box = element.bounding_box()
    viewport = editor.page.viewport_size
    assert box and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] \
        and box["y"] + box["height"] <= viewport["height"], f"preview is not fully on screen: {box}"


def png_array(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    height, width = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float(np.abs(a[:height, :width] - b[:height, :width]).mean())


def run_graph(editor, comfy_server):
    editor.fit_view()
    event = editor.queue_and_wait()
    assert event["type"] == "execution_success", f"{event['detail']}\n{comfy_server.log_tail(3000)}"


@pytest.fixture()
def fresh_editor(editor):
    editor.console_errors.clear()
    editor.dismiss_dialogs()
    yield editor
    editor.dismiss_dialogs()
    assert not editor.console_errors, editor.console_errors


def test_dragging_a_histogram_handle_redraws_the_clip_preview(fresh_editor, comfy_server, screenshot_dir):
    if CLIP_NODE not in comfy_server.object_info():
        pytest.skip(f"{CLIP_NODE} is not served by this checkout")
    editor = fresh_editor
    node_id = build_graph(editor, comfy_server, fresh_photo(comfy_server), [CLIP_NODE])[CLIP_NODE]
    run_graph(editor, comfy_server)
    root = editor.page.locator(f'.depthtoolkit-clip[data-node-id="{node_id}"]')
    preview = root.locator("canvas.depthtoolkit-clip-image")
    histogram = root.locator("canvas.depthtoolkit-histogram")
    preview.wait_for(state="visible", timeout=30_000)
    show_in_viewport(editor, root)
    before = png_array(preview.screenshot())
    widgets_before = widget_values(editor, node_id)

    # Drag the handle nearest the histogram's right end (near) to 35 % of the axis
    box = histogram.bounding_box()
    y = box["y"] + box["height"] * 0.6
    editor.page.mouse.move(box["x"] + box["width"] * 0.995, y)
    editor.page.mouse.down()
    editor.page.mouse.move(box["x"] + box["width"] * 0.35, y, steps=8)
    editor.page.mouse.up()
    editor.page.wait_for_timeout(300)
    after = png_array(preview.screenshot())
    editor.page.screenshot(path=str(screenshot_dir / "web_clip_after_drag.png"))
    widgets_after = widget_values(editor, node_id)

    change = mean_difference(before, after)
    assert change > 8, f"the preview changed by only {change:.2f} gray levels on average after the drag"
    # Clipping the near end lower can only brighten: every pixel is stretched towards white
    assert after.mean() > before.mean() + 5, (before.mean(), after.mean())
    changed = {name for name in ("near", "far") if widgets_before.get(name) != widgets_after.get(name)}
    assert changed, f"no near/far widget changed: {widgets_before} -> {widgets_after}"
    shown = root.get_attribute("data-near"), root.get_attribute("data-far")
    assert [float(v) for v in shown] == [float(widgets_after["near"]), float(widgets_after["far"])]


def widget_values(editor, node_id: int) -> dict:
    return editor.page.evaluate("""(id) => Object.fromEntries(
        (window.app.graph.getNodeById(id).widgets || []).map((w) => [w.name, w.value]))""", node_id)


@pytest.mark.parametrize("node_type", STEREO_NODES)
def test_stereo_preview_wiggles_and_composites_an_anaglyph(fresh_editor, comfy_server, screenshot_dir, node_type):
    if node_type not in comfy_server.object_info():
        pytest.skip(f"{node_type} is not served by this checkout")
    editor = fresh_editor
    node_id = build_graph(editor, comfy_server, fresh_photo(comfy_server), [node_type])[node_type]
    run_graph(editor, comfy_server)
    root = editor.page.locator(f'.depthtoolkit-stereo[data-node-id="{node_id}"]')
    canvas = root.locator("canvas.depthtoolkit-stereo-image")
    canvas.wait_for(state="visible", timeout=30_000)
    show_in_viewport(editor, root)
    assert root.get_attribute("data-mode") == "wiggle"

    frames = []
    for _ in range(8):  # the eyes swap every 140 ms: eight shots 90 ms apart see both
        frames.append(png_array(canvas.screenshot()))
        editor.page.wait_for_timeout(90)
    spread = max(mean_difference(frames[0], frame) for frame in frames[1:])
    assert spread > 1.0, f"wiggle frames differ by at most {spread:.3f}: the eyes do not alternate"

    root.locator("button.depthtoolkit-anaglyph").click()
    editor.page.wait_for_function(
        f"""() => document.querySelector('.depthtoolkit-stereo[data-node-id="{node_id}"]')?.dataset.mode === 'anaglyph'""")
    editor.page.wait_for_timeout(200)
    anaglyph = png_array(canvas.screenshot())
    editor.page.screenshot(path=str(screenshot_dir / f"web_{node_type.split('.')[-1]}_anaglyph.png"))
    assert min(mean_difference(anaglyph, frame) for frame in frames) > 1.0, "anaglyph looks like a plain eye"
    # Red comes from one eye and green/blue from the other: the anaglyph's channels each match some wiggle frame
    red_match = min(float(np.abs(anaglyph[..., 0] - f[..., 0]).mean()) for f in frames)
    cyan_match = min(float(np.abs(anaglyph[..., 1:] - f[..., 1:]).mean()) for f in frames)
    assert red_match < 3 and cyan_match < 3, (red_match, cyan_match)
    still = png_array(canvas.screenshot())
    assert mean_difference(anaglyph, still) < 0.5, "the anaglyph should hold still"
