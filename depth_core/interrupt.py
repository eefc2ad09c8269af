"""Stopping long forward passes when the user cancels, without depth_core knowing who asks.

A host (the ComfyUI nodes) installs a check with `set_interrupt_check`: a function that raises when the user wants
to stop. Progress callbacks already give an interrupt point between images; `interruptible(network)` adds one before
every block of a network (its children, each element of its ModuleLists and Sequentials), so even a single huge image stops
within one block instead of running to the end. Without an installed check nothing is hooked and nothing is paid.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

InterruptCheck = Callable[[], None]
"""Returns when work may go on; raises (any exception) to stop it."""

_check: InterruptCheck | None = None


def set_interrupt_check(check: InterruptCheck | None) -> None:
    """Install the host's check (None removes it)."""
    global _check
    _check = check


def check_interrupt() -> None:
    """Raise if the host asked to stop; for long loops that have no progress callback."""
    if _check is not None:
        _check()


def network_blocks(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks of a network: its direct children and every element of its ModuleLists and Sequentials
    (transformer blocks, encoder stages, decoder levels), which is where a forward pass spends its time, in any
    family's code."""
    blocks = list(network.children())
    for module in network.modules():
        if isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
            blocks.extend(module.children())
    return blocks


@contextlib.contextmanager
def interruptible(network: torch.nn.Module) -> Iterator[None]:
    """While inside, the installed check runs before the network and before each of its blocks."""
    check = _check
    if check is None:
        yield
        return
    handles = [block.register_forward_pre_hook(lambda module, inputs: check())
               for block in [network, *network_blocks(network)]]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
