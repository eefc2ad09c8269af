"""ComfyUI node classes. Each module here exposes `NODES`, the list of its io.ComfyNode classes."""
from __future__ import annotations

import importlib
import pkgutil

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io


def node_modules() -> list:
    """Every public module of this package, in name order, so node registration needs no central list."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f".{name}", __name__) for name in names]


def all_nodes() -> list[type[io.ComfyNode]]:
    return [node for module in node_modules() for node in getattr(module, "NODES", [])]


class DepthToolkitExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        from ._common import install_interrupt_check
        from ._model_folders import register_model_folders

        register_model_folders()
        install_interrupt_check()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        await self.on_load()  # ComfyUI 0.8 asks for the node list but never calls on_load; both are idempotent
        return all_nodes()
