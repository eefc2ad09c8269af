"""Fixtures of the end-to-end tests; the harness itself (server, checkpoints, test images) is in harness.py."""
from harness import comfy_server, pack_node_ids, uploaded_images  # noqa: F401  (pytest finds fixtures by name)
