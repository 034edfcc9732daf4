"""Core's checkpoint state loop, with each optimizer handled together with the module it trains.

DCP names optimizer state by parameter, so getting and setting it needs the module whose
parameters the optimizer trains; a :data:`ModuleFinder` finds it in the state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from fabric_core.utilities.checkpoint import apply_checkpoint
from fabric_core.utilities.checkpoint import collect_state as core_collect_state

__all__ = ["Filter", "ModuleFinder", "apply_state", "collect_state"]

ModuleFinder = Callable[[Optimizer, dict[str, Any]], nn.Module]
"""``(optimizer, state) -> the module whose parameters the optimizer trains``."""

Filter = dict[str, Callable[[str, Any], bool]]
"""For a name in the state, a predicate ``(key, value) -> bool`` keeping part of its state dict."""


def collect_state(
    state: dict[str, Any],
    filter: Filter | None,
    module_state: Callable[[nn.Module], dict[str, Any]],
    optimizer_state: Callable[[nn.Module, Optimizer], dict[str, Any]],
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Replace each module, optimizer and stateful object by its state dict (as the getters make it).

    Core's :func:`~fabric_core.utilities.checkpoint.collect_state`, with each optimizer's
    state taken together with the module it trains.
    """
    return core_collect_state(
        state,
        filter=filter,
        module_state=module_state,
        optimizer_state=lambda optimizer: optimizer_state(module_for(optimizer, state), optimizer),
    )


def apply_state(
    state: dict[str, Any] | nn.Module | Optimizer | None,
    checkpoint: dict[str, Any],
    strict: bool,
    path: Path,
    load_module: Callable[[nn.Module, Any, bool], None],
    load_optimizer: Callable[[nn.Module, Optimizer, Any], None],
    module_for: ModuleFinder,
) -> dict[str, Any]:
    """Restore ``state`` from ``checkpoint`` in place (as the setters load it); return the entries left.

    Core's :func:`~fabric_core.utilities.checkpoint.apply_checkpoint`, with each optimizer's
    state loaded together with the module it trains.
    """
    named = state if isinstance(state, dict) else {}

    def load_with_module(optimizer: Optimizer, value: Any) -> None:
        load_optimizer(module_for(optimizer, named), optimizer, value)

    return apply_checkpoint(
        state, checkpoint, strict=strict, path=path, load_module=load_module, load_optimizer=load_with_module
    )
