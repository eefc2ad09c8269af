"""The workflows in the real ComfyUI editor (headless Chromium): they load with no missing or red node, the editor
turns them into the same prompt as our converter, they queue and run, and the template browser lists them."""
from __future__ import annotations

import pytest

from harness import PACK_FOLDER, ROOT, WORKFLOW_DIR, check_history, load_workflow, prepare_prompt, workflow_paths
from ui_to_api import convert

WORKFLOWS = workflow_paths()


def without_meta(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


def server_inputs(prompt: dict, object_info: dict) -> dict:
    """A prompt reduced to the inputs the server's nodes declare: the editor also sends values of its own
    frontend-only widgets (PreviewAny's preview text, Preview3D's viewer image), which the server ignores."""
    reduced = {}
    for node_id, node in prompt.items():
        info = object_info.get(node["class_type"], {}).get("input", {})
        known = {**info.get("required", {}), **info.get("optional", {})}
        reduced[node_id] = {"class_type": node["class_type"],
                            "inputs": {k: v for k, v in node["inputs"].items() if k in known}}
    return reduced


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_in_editor(editor, comfy_server, uploaded_images, screenshot_dir, path):
    workflow = load_workflow(path)
    editor.console_errors.clear()
    editor.dismiss_dialogs()
    editor.load(workflow)

    nodes = editor.node_report()
    expected_nodes = workflow["nodes"]
    assert len(nodes) == len(expected_nodes), f"the editor shows {len(nodes)} nodes, the workflow has {len(expected_nodes)}"
    missing = [node for node in nodes if not node["registered"]]
    assert not missing, f"node types the editor does not know (missing or failed to import): {missing}"
    red = [node for node in nodes if node["has_errors"]]
    assert not red, f"nodes shown in error: {red}"

    object_info = comfy_server.object_info()
    ours = convert(workflow, object_info)
    assert server_inputs(editor.api_prompt(), object_info) == server_inputs(ours, object_info), \
        "tests/integration/ui_to_api.py and the editor turn this workflow into different prompts"

    for node_id, name, value in prepare_prompt(ours, object_info, uploaded_images):
        editor.set_widget(node_id, name, value)
    event = editor.queue_and_wait()
    if event["type"] != "execution_success":
        editor.page.wait_for_timeout(1000)  # the editor opens its error report just after the message
    editor.fit_view()
    editor.page.wait_for_timeout(1000)  # previews load after the success message
    screenshot = screenshot_dir / f"{path.stem}.png"
    editor.page.screenshot(path=str(screenshot))
    dialogs = editor.dismiss_dialogs()
    assert event["type"] == "execution_success", f"{event['type']}: {event['detail']}\n{comfy_server.log_tail(3000)}"
    entry = comfy_server.get_json(f"/history/{event['prompt_id']}")[event["prompt_id"]]
    check_history(comfy_server, without_meta(editor.api_prompt()), entry)
    assert not editor.console_errors, editor.console_errors
    assert not dialogs, f"the editor showed dialogs: {dialogs}"


def test_template_browser_lists_every_workflow(editor, comfy_server):
    if WORKFLOW_DIR.resolve() != (ROOT / "workflows").resolve():
        pytest.skip("DEPTHTOOLKIT_WORKFLOW_DIR points elsewhere: the template browser shows the pack's workflows/")
    expected = sorted(path.stem for path in WORKFLOWS)
    assert expected, "workflows/ is empty"
    listed = comfy_server.get_json("/workflow_templates")
    assert sorted(listed.get(PACK_FOLDER, [])) == expected

    page = editor.page
    editor.dismiss_dialogs()
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator("[role=dialog]")
    dialog.get_by_text(PACK_FOLDER, exact=True).first.click()
    page.wait_for_timeout(500)
    titles = set(dialog.locator("h3").all_inner_texts())
    editor.dismiss_dialogs()
    shown = sorted(name for name in expected if name in titles)
    assert shown == expected, f"template browser shows {sorted(titles)}"
