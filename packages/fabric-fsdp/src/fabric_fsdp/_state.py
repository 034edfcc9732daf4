"""Turning a ``{name: object}`` state into the dict a sharded checkpoint holds, and checking names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from fabric_core.utilities.checkpoint import collect_state as core_collect_state

__all__ = ["Filter", "ModuleFinder", "check_names", "collect_state"]

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
    state taken together with the module it trains (DCP names optimizer state by parameter).
    """
    return core_collect_state(
        state,
        filter=filter,
        module_state=module_state,
        optimizer_state=lambda optimizer: optimizer_state(module_for(optimizer, state), optimizer),
    )


def check_names(state: dict[str, Any], saved: list[str], strict: bool, path: Path) -> None:
    """Raise when ``strict`` and ``state`` names entries the checkpoint does not hold."""
    missing = [key for key in state if key not in saved]
    if strict and missing:
        raise KeyError(
            f"The checkpoint '{path}' has no entry {', '.join(map(repr, missing))} (it holds: "
            f"{', '.join(map(repr, saved)) or 'nothing'}). Pass strict=False to load the entries that exist."
        )
