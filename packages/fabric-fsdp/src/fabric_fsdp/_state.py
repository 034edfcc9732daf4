"""Turning a ``{name: object}`` state into the dict a sharded checkpoint holds, and checking names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

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

    Raises:
        TypeError: ``state`` is not a dict, or ``filter`` names an entry that has no state dict.
    """
    if not isinstance(state, dict):
        raise TypeError(
            f"The state to save must be a dict of names to objects, got {type(state).__name__}. "
            "Example: fabric.save(path, {'model': model, 'optimizer': optimizer, 'step': step})."
        )
    checkpoint: dict[str, Any] = {}
    for key, obj in state.items():
        if isinstance(obj, nn.Module):
            value: Any = module_state(obj)
        elif isinstance(obj, Optimizer):
            value = optimizer_state(module_for(obj, state), obj)
        elif callable(getattr(obj, "state_dict", None)):
            value = obj.state_dict()
        else:
            value = obj
        if filter is not None and key in filter:
            if not isinstance(value, dict):
                raise TypeError(
                    f"filter['{key}'] was given, but state['{key}'] is not a dict or a state dict."
                )
            keep = filter[key]
            value = {name: entry for name, entry in value.items() if keep(name, entry)}
        checkpoint[key] = value
    return checkpoint


def check_names(state: dict[str, Any], saved: list[str], strict: bool, path: Path) -> None:
    """Raise when ``strict`` and ``state`` names entries the checkpoint does not hold."""
    missing = [key for key in state if key not in saved]
    if strict and missing:
        raise KeyError(
            f"The checkpoint '{path}' has no entry {', '.join(map(repr, missing))} (it holds: "
            f"{', '.join(map(repr, saved)) or 'nothing'}). Pass strict=False to load the entries that exist."
        )
