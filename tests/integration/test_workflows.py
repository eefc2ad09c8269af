"""Every workflow in workflows/ runs in a real ComfyUI: converted to an API prompt, fed small test photos and
test-built checkpoints, queued through /prompt, and its outputs checked in /history and on disk."""
from __future__ import annotations

import time

import pytest

from harness import check_history, load_workflow, prepare_prompt, workflow_paths
from ui_to_api import convert

WORKFLOWS = workflow_paths()
RUN_TIMEOUT_S = 300


def test_workflows_exist():
    assert WORKFLOWS, "workflows/ has no .json workflow"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.stem for path in WORKFLOWS])
def test_workflow_runs(comfy_server, uploaded_images, path):
    object_info = comfy_server.object_info()
    prompt = convert(load_workflow(path), object_info)
    changes = prepare_prompt(prompt, object_info, uploaded_images)
    started = time.monotonic()
    prompt_id = comfy_server.queue(prompt)
    entry = comfy_server.wait_history(prompt_id, RUN_TIMEOUT_S)
    found = check_history(comfy_server, prompt, entry)
    print(f"\n{path.name}: ran in {time.monotonic() - started:.1f} s; inputs changed: {changes}; outputs: {found}")
