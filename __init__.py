"""Depth Toolkit for ComfyUI: depth maps and everything they make possible.

ComfyUI imports this file from `custom_nodes/<folder>/`; the nodes register through `comfy_entrypoint` (the
schema API). The algorithms live in `depth_core/`, which does not need ComfyUI.
"""
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import DepthToolkitExtension

    return DepthToolkitExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
