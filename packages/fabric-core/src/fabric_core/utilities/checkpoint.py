"""Turning a ``{name: object}`` state into a checkpoint dict and back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["apply_checkpoint", "collect_state"]


def collect_state(
    state: dict[str, Any],
    strategy: Strategy | None = None,
    filter: dict[str, Callable[[str, Any], bool]] | None = None,
    *,
    module_state: Callable[[nn.Module], dict[str, Any]] | None = None,
    optimizer_state: Callable[[Optimizer], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Replace each module, optimizer and stateful object in ``state`` by its state dict.

    Modules and optimizers go through ``module_state``/``optimizer_state`` when given (a
    sharded strategy gathers or names its shards there), else through the strategy's
    ``get_module_state_dict``/``get_optimizer_state``.

    Raises:
        TypeError: ``state`` is not a dict, or ``filter`` names an entry that has no state dict.
    """
    if module_state is None or optimizer_state is None:
        assert strategy is not None, "collect_state needs a strategy or both state getters"
        module_state = module_state or strategy.get_module_state_dict
        optimizer_state = optimizer_state or strategy.get_optimizer_state
    if not isinstance(state, dict):
        raise TypeError(
            f"The state to save must be a dict of names to objects, got {type(state).__name__}. "
            "Example: fabric.save(path, {'model': model, 'optimizer': optimizer, 'step': step})."
        )
    checkpoint: dict[str, Any] = {}
    for key, obj in state.items():
        if isinstance(obj, nn.Module):
            value = module_state(obj)
        elif isinstance(obj, Optimizer):
            value = optimizer_state(obj)
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


def apply_checkpoint(
    state: dict[str, Any], checkpoint: dict[str, Any], strategy: Strategy, strict: bool = True
) -> dict[str, Any]:
    """Restore the objects in ``state`` from ``checkpoint`` in place.

    Modules, optimizers and objects with ``load_state_dict`` load their entry; any other
    entry replaces the value in ``state``.

    Returns:
        The checkpoint entries that ``state`` did not ask for.

    Raises:
        KeyError: ``strict`` is true and ``state`` names an entry the checkpoint lacks.
    """
    missing = [key for key in state if key not in checkpoint]
    if strict and missing:
        raise KeyError(
            f"The checkpoint has no entry {', '.join(map(repr, missing))} (it holds: "
            f"{', '.join(map(repr, checkpoint)) or 'nothing'}). Pass strict=False to load the entries that exist."
        )
    remaining = dict(checkpoint)
    for key, obj in state.items():
        if key not in remaining:
            continue
        value = remaining.pop(key)
        if isinstance(obj, nn.Module):
            strategy.load_module_state_dict(obj, value, strict=strict)
        elif callable(getattr(obj, "load_state_dict", None)):
            obj.load_state_dict(value)
        else:
            state[key] = value
    return remaining
